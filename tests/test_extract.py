"""captioning/features/extract.py: image files -> frozen ResNet50 -> HDF5 rows, in table order; several files
(the features stage's parts) through one pool of decoding workers; every kind of image file, decoded by load_rgb
(captioning/data/images.py) or skipped or refused per data.on_bad_image."""

from __future__ import annotations

import io
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from fixtures_real import image_bytes
from PIL import Image
from tiny_repo import leftovers

from captioning.data.images import MAX_PIXELS, BadImageError, load_rgb, resize_to_array
from captioning.errors import CaptioningError
from captioning.features import extract as extract_module
from captioning.features.encoder import FEATURE_DIM, FrozenEncoder, build_encoder
from captioning.features.extract import ExtractionReport, encoder_fingerprint, extract_features, extract_parts
from captioning.features.parts import extract_in_parts, merge_parts
from captioning.features.store import FeatureStore
from captioning.io import atomic_path

pytestmark = pytest.mark.usefixtures("torch_single_thread")
IMAGE_SIZE = 64  # 2 x 2 regions


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("none", seed=0)


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for seed, name in enumerate(["c.png", "a.png", "b.png"]):
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, size=(30 + seed * 7, 40, 3), dtype=np.uint8)).save(root / name)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


def extract(encoder, root, names, output, **options):
    return extract_features(
        encoder, root, names, output, image_size=IMAGE_SIZE, batch_size=2, precision="fp32", num_workers=0, **options
    )


def direct_features(encoder, root, names) -> np.ndarray:
    images = torch.stack([torch.from_numpy(resize_to_array(load_rgb(root / n), IMAGE_SIZE)) for n in names])
    with torch.inference_mode():
        return encoder(images).numpy()


def test_rows_are_written_in_the_given_order_with_the_encoder_features(encoder, image_root, tmp_path):
    names = ["b.png", "c.png", "a.png"]
    report = extract(encoder, image_root, names, tmp_path / "features.h5", attrs={"weights": "none"})
    assert report.written == 3 and report.skipped == []
    store = FeatureStore(tmp_path / "features.h5")
    assert store.names == names
    assert store.shape == (3, (IMAGE_SIZE // 32) ** 2, FEATURE_DIM)
    assert store.attrs == {"weights": "none"} and store.skipped == set()
    stored = store.rows(np.arange(3)).astype(np.float32)
    expected = direct_features(encoder, image_root, names)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(stored, expected, rtol=1e-2, atol=1e-3 * scale)
    assert not np.allclose(stored[0], stored[1])  # different images, different features


def test_a_corrupt_or_missing_image_is_skipped_and_recorded(encoder, image_root, tmp_path, caplog):
    names = ["a.png", "bad.png", "b.png", "gone.png", "c.png"]
    with caplog.at_level(logging.WARNING, logger="captioning.features.extract"):
        report = extract(encoder, image_root, names, tmp_path / "features.h5")
    assert report.written == 3 and report.skipped == ["bad.png", "gone.png"]
    assert isinstance(report, ExtractionReport) and report.images_per_second > 0
    store = FeatureStore(tmp_path / "features.h5")
    assert store.names == ["a.png", "b.png", "c.png"]
    assert store.skipped == {"bad.png", "gone.png"}
    assert "bad.png" in caplog.text and "gone.png" in caplog.text


def test_on_bad_image_error_stops_naming_the_file(encoder, image_root, tmp_path):
    with pytest.raises(BadImageError, match=r"bad\.png: cannot decode image") as caught:
        extract(encoder, image_root, ["a.png", "bad.png"], tmp_path / "features.h5", on_bad_image="error")
    assert "data.on_bad_image: skip" in str(caught.value)


def test_features_float16_cannot_hold_stop_the_run_naming_the_image_and_leave_no_part(image_root, tmp_path):
    too_large = FrozenEncoder(torchvision.models.resnet50(weights=None), output_scale=2.0**12)  # maps up to ~2^19
    part = tmp_path / "parts" / "part-00000.h5"
    part.parent.mkdir()
    with pytest.raises(CaptioningError) as caught:
        extract_parts(too_large, image_root, [(["c.png", "a.png"], part)], image_size=IMAGE_SIZE, num_workers=0)
    assert str(caught.value).startswith("c.png: its features exceed float16's range (65,504)")
    assert list(part.parent.iterdir()) == []


def test_the_encoder_stays_frozen_in_eval_mode(encoder):
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())


def test_encoder_fingerprint_follows_the_weights(encoder):
    assert encoder_fingerprint(encoder) == encoder_fingerprint(build_encoder("none", seed=0))
    assert encoder_fingerprint(encoder) != encoder_fingerprint(build_encoder("none", seed=1))


def test_an_image_size_that_is_not_a_multiple_of_32_is_stored_or_refused(encoder, image_root, tmp_path):
    size = 80
    with torch.inference_mode():
        regions = encoder(torch.zeros(1, 3, size, size, dtype=torch.uint8)).shape[1]
    try:
        extract_features(encoder, image_root, ["a.png"], tmp_path / "features.h5", image_size=size, num_workers=0)
    except CaptioningError as error:  # refusing it, naming the parameter, is fine too
        assert "features.image_size" in str(error)
    else:
        assert FeatureStore(tmp_path / "features.h5").shape == (1, regions, FEATURE_DIM)


# Several parts, one pool of workers: 11 images (one undecodable) in parts of 4, batches of 3 (4 = 3 + 1 per part).
PART_NAMES = [f"{i:02d}.png" for i in range(5)] + ["bad.png"] + [f"{i:02d}.png" for i in range(5, 10)]
PART_SIZE, PART_BATCH = 4, 3


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many_images")
    for seed, name in enumerate(n for n in PART_NAMES if n != "bad.png"):
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, size=(30 + seed, 40, 3), dtype=np.uint8)).save(root / name)
    (root / "bad.png").write_bytes(b"not an image")
    return root


def in_parts(folder: Path) -> list[tuple[list[str], Path]]:
    chunks = [PART_NAMES[i : i + PART_SIZE] for i in range(0, len(PART_NAMES), PART_SIZE)]
    return [(chunk, folder / f"part-{i}.h5") for i, chunk in enumerate(chunks)]


@pytest.fixture(scope="module")
def one_loader_per_part(encoder, many_images, tmp_path_factory) -> list[Path]:
    """The parts as each part's own extract_features call (a DataLoader each) writes them."""
    parts = in_parts(tmp_path_factory.mktemp("one_loader_per_part"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the tests run (torch_single_thread): the features follow the number of threads
    try:
        for names, path in parts:
            options = dict(image_size=IMAGE_SIZE, batch_size=PART_BATCH, num_workers=0)
            extract_features(encoder, many_images, names, path, **options)
    finally:
        torch.set_num_threads(threads)
    return [path for _, path in parts]


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_parts_through_one_pool_are_the_bytes_of_one_loader_per_part(
    encoder, many_images, one_loader_per_part, tmp_path, workers
):
    options = dict(image_size=IMAGE_SIZE, batch_size=PART_BATCH, precision="fp32", num_workers=workers)
    report = extract_parts(encoder, many_images, in_parts(tmp_path / "parts"), **options)
    assert report.written == len(PART_NAMES) - 1 and report.skipped == ["bad.png"]
    for (_, path), expected in zip(in_parts(tmp_path / "parts"), one_loader_per_part, strict=True):
        assert path.read_bytes() == expected.read_bytes(), path.name
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["part-0.h5", "part-1.h5", "part-2.h5"]

    # and the merged features file, through the features stage's function, is today's to the byte
    merge_parts(one_loader_per_part, tmp_path / "expected.h5", capacity=len(PART_NAMES), attrs={"weights": "none"})
    output = tmp_path / "features.h5"
    extract_in_parts(
        lambda: encoder, many_images, PART_NAMES, output, tmp_path / "scratch", "key", chunk_size=PART_SIZE,
        attrs={"weights": "none"}, **options,
    )  # fmt: skip
    assert output.read_bytes() == (tmp_path / "expected.h5").read_bytes()


def test_the_decoding_workers_start_once_for_all_the_parts(encoder, many_images, tmp_path, monkeypatch):
    """Each worker records its start (worker_init_fn): 2 workers, 3 parts, 2 starts (a DataLoader a part made 6)."""
    starts = tmp_path / "starts.txt"
    ignore_ctrl_c = extract_module.ignore_ctrl_c

    def record_start(worker_id: int) -> None:
        with open(starts, "a") as file:
            file.write(f"{os.getpid()} {worker_id}\n")
        ignore_ctrl_c(worker_id)

    monkeypatch.setattr(extract_module, "ignore_ctrl_c", record_start)
    options = dict(image_size=IMAGE_SIZE, batch_size=PART_BATCH, precision="fp32", num_workers=2)
    extract_parts(encoder, many_images, in_parts(tmp_path / "parts"), **options)
    lines = starts.read_text().splitlines()
    assert sorted(line.split()[1] for line in lines) == ["0", "1"] and len({line.split()[0] for line in lines}) == 2


def test_a_failed_part_leaves_the_parts_before_it_and_no_temporary(encoder, many_images, tmp_path):
    folder = tmp_path / "parts"
    options = dict(image_size=IMAGE_SIZE, batch_size=PART_BATCH, precision="fp32", num_workers=1)
    with pytest.raises(BadImageError, match=r"bad\.png"):
        extract_parts(encoder, many_images, in_parts(folder), on_bad_image="error", **options)
    assert [p.name for p in folder.iterdir()] == ["part-0.h5"]  # part 1 holds bad.png: not written, nor part 2


# ---------------------------------------------------------------------------------------------------------------------
# Image files: decoded to RGB the same way everywhere, or refused with the file's name; extract_features skips
# (counted, logged, recorded in the HDF5 `skipped` dataset) or stops, per data.on_bad_image.


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds no pixel data: costs nothing to write or to refuse."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def save(image: Image.Image, format: str, **options) -> Callable[[Path], None]:
    return lambda path: image.save(path, format, **options)


def write_bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def half_of(image: Image.Image, format: str) -> Callable[[Path], None]:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def exif_rotated(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (8, 4), (0, 0, 255)).save(path, "JPEG", exif=exif.tobytes())


def animated_gif(path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), color) for color in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rgba(path: Path) -> None:
    image = Image.new("RGBA", (2, 1))
    image.putdata([(255, 0, 0, 0), (0, 0, 255, 255)])  # transparent red, opaque blue
    image.save(path, "PNG")


def bilevel_bomb(path: Path) -> None:
    """A real, decodable 10,000 x 10,000 PNG of ~12 kB (mode 1: 12.5 MB in memory while it is written)."""
    Image.new("1", (10_000, 10_000)).save(path, "PNG")


@dataclass
class Decodes:
    size: tuple[int, int]
    pixels: dict[tuple[int, int], tuple[int, int, int]]


@dataclass
class Refused:
    message: str  # {path} is the image file; a regular expression where it says so
    pattern: bool = False


LIMIT = f"{MAX_PIXELS:,}-pixel limit"

IMAGE_CASES = [
    pytest.param(
        "one.png",
        save(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
        Decodes((1, 1), {(0, 0): (1, 2, 3)}),
        id="1x1-pixel",
    ),
    pytest.param(
        "gray.png", save(Image.new("L", (5, 4), 77), "PNG"), Decodes((5, 4), {(4, 3): (77, 77, 77)}), id="grayscale"
    ),
    pytest.param(
        "cmyk.jpg",
        save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"),
        Decodes((8, 8), {(0, 0): (255, 0, 0)}),
        id="cmyk-jpeg",
    ),
    pytest.param(
        "deep.png",
        save(Image.fromarray(np.full((3, 5), 32768, np.uint16)), "PNG"),
        Decodes((5, 3), {(0, 0): (128, 128, 128)}),
        id="16-bit-png",
    ),
    pytest.param("alpha.png", rgba, Decodes((2, 1), {(0, 0): (255, 255, 255), (1, 0): (0, 0, 255)}), id="rgba"),
    pytest.param("moving.gif", animated_gif, Decodes((6, 6), {(3, 3): (255, 0, 0)}), id="animated-gif-first-frame"),
    pytest.param("turned.jpg", exif_rotated, Decodes((4, 8), {(2, 4): (0, 0, 254)}), id="exif-orientation"),
    pytest.param(
        "photo.webp", write_bytes(image_bytes("WEBP", (0, 0, 255))), Decodes((12, 10), {(5, 5): (0, 0, 255)}), id="webp"
    ),
    pytest.param(
        "photo.bmp", write_bytes(image_bytes("BMP", (0, 0, 255))), Decodes((12, 10), {(5, 5): (0, 0, 255)}), id="bmp"
    ),
    pytest.param(
        "photo.tiff", write_bytes(image_bytes("TIFF", (0, 0, 255))), Decodes((12, 10), {(5, 5): (0, 0, 255)}), id="tiff"
    ),
    pytest.param(
        "named.jpg",
        write_bytes(image_bytes("WEBP", (0, 0, 255))),
        Decodes((12, 10), {(5, 5): (0, 0, 255)}),
        id="webp-content-named-jpg",
    ),
    pytest.param(
        "photo.png",
        write_bytes(image_bytes("BMP", (0, 0, 255))),
        Decodes((12, 10), {(5, 5): (0, 0, 255)}),
        id="bmp-content-named-png",
    ),
    pytest.param("missing.jpg", None, Refused("{path}: image file not found"), id="missing-file"),
    pytest.param(
        "empty.jpg",
        write_bytes(b""),
        Refused("{path}: cannot decode image (cannot identify image file '{path}')"),
        id="zero-bytes",
    ),
    pytest.param(
        "notes.jpg",
        write_bytes(b"shopping list: eggs, milk\n"),
        Refused("{path}: cannot decode image (cannot identify image file '{path}')"),
        id="text-named-jpg",
    ),
    pytest.param(
        "cut.jpg",
        half_of(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG"),
        Refused(r"{path}: cannot decode image \(.+\)", pattern=True),
        id="truncated-jpeg",
    ),
    pytest.param(
        "cut.png",
        half_of(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG"),
        Refused(r"{path}: cannot decode image \(.+\)", pattern=True),
        id="truncated-png",
    ),
    pytest.param(
        "bomb.png",
        write_bytes(png_header_only(10_000, 10_000)),
        Refused(f"{{path}}: 10000x10000 pixels is over the {LIMIT}"),
        id="10000x10000-header-only",
    ),
    pytest.param(
        "bilevel.png",
        bilevel_bomb,
        Refused(f"{{path}}: 10000x10000 pixels is over the {LIMIT}"),
        id="10000x10000-real-png",
    ),
    pytest.param(
        "huge.png",
        write_bytes(png_header_only(30_000, 30_000)),
        Refused(
            f"{{path}}: over the {LIMIT} (Image size (900000000 pixels) exceeds limit of 178956970 pixels, "
            "could be decompression bomb DOS attack.)"
        ),
        id="30000x30000-over-pil-limit",
    ),
]


def matches(refused: Refused, path: Path, message: str) -> bool:
    if refused.pattern:
        return re.fullmatch(refused.message.format(path=re.escape(str(path))), message) is not None
    return message == refused.message.format(path=path)


@pytest.mark.parametrize(("name", "write", "outcome"), IMAGE_CASES)
def test_image_files(
    tmp_path: Path, caplog, captioning_warnings, encoder, name: str, write, outcome: Decodes | Refused
):
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(root / "ok.png")
    path = root / name
    if write is not None:
        write(path)
    names = ["ok.png", name]

    # load_rgb, as the features stage and the caption command use it
    if isinstance(outcome, Decodes):
        image = load_rgb(path)
        assert (image.mode, image.size) == ("RGB", outcome.size)
        assert {xy: image.getpixel(xy) for xy in outcome.pixels} == outcome.pixels
    else:
        with pytest.raises(BadImageError) as caught:
            load_rgb(path)
        message = str(caught.value)
        assert matches(outcome, path, message), message

    # extract_features with data.on_bad_image: skip
    target = tmp_path / "features.h5"
    with caplog.at_level(logging.WARNING), atomic_path(target) as temporary:
        report = extract(encoder, root, names, temporary, on_bad_image="skip")
    store = FeatureStore(target)
    if isinstance(outcome, Decodes):
        assert (report.written, report.skipped, store.names, store.skipped) == (2, [], names, set())
        assert store.shape == (2, (IMAGE_SIZE // 32) ** 2, FEATURE_DIM)
        assert np.isfinite(store.rows(np.arange(2)).astype(np.float32)).all()
        store.close()
        return
    assert (report.written, report.skipped, store.names, store.skipped) == (1, [name], ["ok.png"], {name})
    store.close()
    assert captioning_warnings() == [f"skipped: {message}"]

    # extract_features with data.on_bad_image: error: stops naming the file; nothing is left behind
    target.unlink()
    with pytest.raises(BadImageError) as caught, atomic_path(target) as temporary:
        extract(encoder, root, names, temporary, on_bad_image="error")
    assert str(caught.value) == f"{message} (set data.on_bad_image: skip to skip such images)"
    assert not target.exists() and leftovers(tmp_path) == []
