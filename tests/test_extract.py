"""captioning/features/extract.py: image files -> frozen ResNet50 -> HDF5 rows, in table order; several files
(the features stage's parts) through one pool of decoding workers."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data.images import BadImageError, load_rgb, resize_to_array
from captioning.errors import CaptioningError
from captioning.features import extract as extract_module
from captioning.features.encoder import FEATURE_DIM, build_encoder
from captioning.features.extract import ExtractionReport, encoder_fingerprint, extract_features, extract_parts
from captioning.features.parts import extract_in_parts, merge_parts
from captioning.features.store import FeatureStore

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
