"""The caption command end to end: a tiny decoder over a seeded random ResNet50, on 64-pixel images (2 x 2 regions)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_model import write_tiny_model

from captioning.__main__ import main
from captioning.commands.caption import Captioner, attention_path, attention_paths
from captioning.data.images import load_rgb
from captioning.features.encoder import build_encoder
from captioning.features.extract import encoder_fingerprint, extract_features
from captioning.features.store import FeatureStore
from captioning.reports.figures import figure_pixels
from captioning.text.vocabulary import SPECIALS

WORDS = [*SPECIALS, "a", "red", "blue", "square", "circle"]
IMAGE_SIZE = 64
MAX_LEN = 3
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fingerprint() -> str:
    return encoder_fingerprint(build_encoder("none", 0))


def write_model(path: Path, fingerprint: str, **recipe) -> Path:
    return write_tiny_model(path, WORDS, IMAGE_SIZE, fingerprint, recipe, epoch=1)


@pytest.fixture(scope="module")
def model(tmp_path_factory, fingerprint) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "model.pt", fingerprint)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """One file of each kind the command must take, plus a corrupt one and a missing one."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = {kind: folder / name for kind, name in [
        ("jpeg", "photo.jpg"), ("png", "drawing.png"), ("gray", "gray.png"), ("rgba", "transparent.png"),
        ("corrupt", "corrupt.jpg"), ("missing", "missing.png"),
    ]}  # fmt: skip
    Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(paths["jpeg"], quality=90)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(paths["png"])
    Image.fromarray(rng.integers(0, 256, (90, 120), dtype=np.uint8), "L").save(paths["gray"])
    Image.fromarray(rng.integers(0, 256, (100, 80, 4), dtype=np.uint8), "RGBA").save(paths["rgba"])
    paths["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return paths


def caption_lines(output: str) -> dict[str, list[str]]:
    lines = [line.split("\t") for line in output.splitlines() if "\t" in line]
    return {path: caption.split() for path, caption in lines}


def test_every_kind_of_image_gets_a_caption(model, images, capsys):
    kinds = ["jpeg", "png", "gray", "rgba"]
    status = main(["caption", *(str(images[k]) for k in kinds), "--model", str(model), "--max-len", str(MAX_LEN)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    captions = caption_lines(captured.out)
    assert list(captions) == [str(images[k]) for k in kinds]  # one line per image, in order
    for words in captions.values():
        assert len(words) == MAX_LEN and set(words) <= set(WORDS[4:])


def test_unreadable_files_are_reported_and_the_others_still_captioned(model, images, capsys):
    order = ["missing", "jpeg", "corrupt", "png"]
    status = main(["caption", *(str(images[k]) for k in order), "--model", str(model), "--max-len", str(MAX_LEN)])
    captured = capsys.readouterr()
    assert status == 1
    assert list(caption_lines(captured.out)) == [str(images["jpeg"]), str(images["png"])]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {images['missing']}: image file not found",
        next(line for line in errors if line.startswith(f"error: {images['corrupt']}: cannot decode image")),
    ]


def test_features_match_the_features_stage(model, images, tmp_path):
    """The command sees an image exactly as extract_features stored it for training."""
    captioner = Captioner.load(model, torch.device("cpu"))
    assert captioner.image_size == IMAGE_SIZE and captioner.precision == "fp32"
    names = [images[k].name for k in ("jpeg", "gray", "rgba")]
    output = extract_features(
        captioner.encoder, images["jpeg"].parent, names, tmp_path / "f.h5", image_size=IMAGE_SIZE, num_workers=0
    )
    assert output.written == 3
    stored = FeatureStore(tmp_path / "f.h5").rows(np.arange(3))
    computed = captioner.features([captioner.prepare(load_rgb(images["jpeg"].parent / n)) for n in names])
    assert computed.shape == (3, (IMAGE_SIZE // 32) ** 2, 2048)
    np.testing.assert_array_equal(computed.numpy(), stored)


def test_attention_figure_has_one_panel_per_word(model, images, tmp_path, capsys):
    out = tmp_path / "attention.png"
    status = main(["caption", str(images["jpeg"]), "--model", str(model), "--max-len", str(MAX_LEN), "--attention",
                   str(out)])  # fmt: skip
    assert status == 0
    (words,) = caption_lines(capsys.readouterr().out).values()
    with Image.open(out) as figure:
        assert figure.format == "PNG" and figure.size == figure_pixels(1 + len(words))
    assert [p.name for p in tmp_path.iterdir()] == ["attention.png"]  # no temporary file left behind


def test_attention_figures_are_numbered_by_position(model, images, tmp_path, capsys):
    order = ["png", "missing", "gray"]
    out = tmp_path / "att.png"
    status = main(["caption", *(str(images[k]) for k in order), "--model", str(model), "--max-len", "2",
                   "--attention", str(out), "--beam", "2"])  # fmt: skip
    assert status == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["att_1.png", "att_3.png"]
    assert attention_path(out, 3, 3) == tmp_path / "att_3.png" and attention_path(out, 1, 1) == out


def test_attention_figures_go_into_an_existing_folder_named_after_each_image(model, images, tmp_path, capsys):
    folder = tmp_path / "figures"
    folder.mkdir()
    order = ["png", "missing", "jpeg"]
    status = main(["caption", *(str(images[k]) for k in order), "--model", str(model), "--max-len", "2",
                   "--attention", str(folder)])  # fmt: skip
    assert status == 1  # the missing image
    assert sorted(p.name for p in folder.iterdir()) == ["drawing.png", "photo.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]  # nothing beside the folder
    words = caption_lines(capsys.readouterr().out)[str(images["jpeg"])]
    with Image.open(folder / "photo.png") as figure:
        assert figure.format == "PNG" and figure.size == figure_pixels(1 + len(words))
    one = tmp_path / "one"
    one.mkdir()
    assert main(["caption", str(images["gray"]), "--model", str(model), "--max-len", "2", "--attention", str(one)]) == 0
    assert [p.name for p in one.iterdir()] == ["gray.png"]  # a folder holds the figure even for one image


def test_images_sharing_a_name_get_numbered_figures_in_a_folder(tmp_path):
    assert attention_paths(tmp_path, ["a/photo.jpg", "b/photo.png", "c/other.webp"]) == [
        tmp_path / "photo_1.png", tmp_path / "photo_2.png", tmp_path / "other.png"
    ]  # fmt: skip
    file = tmp_path / "att.png"  # not a folder: numbered beside it, as before
    assert attention_paths(file, ["x.jpg", "y.jpg"]) == [tmp_path / "att_1.png", tmp_path / "att_2.png"]


def test_an_unwritable_attention_figure_is_one_line_and_the_next_images_are_still_captioned(
    model, images, tmp_path, capsys
):
    """A folder where the second figure goes: that image's figure fails in one line; the third is still done."""
    order = ["png", "gray", "jpeg"]
    out = tmp_path / "att.png"
    (tmp_path / "att_2.png" / "inside").mkdir(parents=True)
    status = main(["caption", *(str(images[k]) for k in order), "--model", str(model), "--max-len", "2",
                   "--attention", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 1
    assert list(caption_lines(captured.out)) == [str(images[k]) for k in order]  # every image captioned
    assert [line for line in captured.err.splitlines() if line.strip()] == [
        f"error: {tmp_path}/att_2.png: cannot replace this folder with the new output (Is a directory); remove it"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["att_1.png", "att_2.png", "att_3.png"]
    assert (tmp_path / "att_1.png").is_file() and (tmp_path / "att_3.png").is_file()


@pytest.fixture
def read_only_folder(tmp_path: Path):
    """A read-only tmpfs (a real EROFS; root ignores a chmod-ed folder). Needs mount rights, else skipped."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_attention_figures_in_a_read_only_folder_are_one_line_each(model, images, read_only_folder, capsys):
    order = ["png", "gray"]
    status = main(["caption", *(str(images[k]) for k in order), "--model", str(model), "--max-len", "2",
                   "--attention", str(read_only_folder / "att.png")])  # fmt: skip
    captured = capsys.readouterr()
    assert status == 1
    assert list(caption_lines(captured.out)) == [str(images[k]) for k in order]
    assert [line for line in captured.err.splitlines() if line.strip()] == [
        f"error: {read_only_folder}/att_{i}.png: cannot write it, the file system is read-only" for i in (1, 2)
    ]


def test_fingerprint_mismatch_is_a_clear_error(images, fingerprint, tmp_path, capsys):
    model = write_model(tmp_path / "model.pt", "1.000000e+00")
    assert main(["caption", str(images["png"]), "--model", str(model)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {model}: the encoder rebuilt from features.weights='none' (seed 0) has fingerprint")
    assert fingerprint in err and "1.000000e+00" in err and len(err.splitlines()) == 1


def test_missing_encoder_weights_file_is_a_clear_error(images, fingerprint, tmp_path, capsys):
    weights = tmp_path / "resnet50.pth"
    model = write_model(tmp_path / "model.pt", fingerprint, weights=str(weights))
    assert main(["caption", str(images["png"]), "--model", str(model)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {model}: cannot rebuild the encoder its features came from: features.weights: {weights} not found "
        "(expected a ResNet50 state dict .pth)"
    )


def test_missing_model_and_bad_arguments(images, tmp_path, capsys):
    assert main(["caption", str(images["png"]), "--model", str(tmp_path / "none.pt")]) == 1
    assert "model file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["caption", str(images["png"]), "--beam", "0"])
    assert exit_info.value.code == 2
    assert main(["frobnicate"]) == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err
    assert main([]) == 2


def test_python_dash_m_captioning(model, images):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "captioning", "caption", str(images["rgba"]), "--model", str(model), "--max-len", "2"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    path, caption = line.split("\t")
    assert path == str(images["rgba"]) and len(caption.split()) == 2


def test_a_url_is_refused_by_name_and_the_others_still_captioned(model, images, capsys):
    urls = ["http://example.com/dog.jpg", "https://example.com/a//b.png"]
    status = main(["caption", urls[0], str(images["jpeg"]), urls[1], "--model", str(model), "--max-len", str(MAX_LEN)])
    captured = capsys.readouterr()
    assert status == 1
    assert list(caption_lines(captured.out)) == [str(images["jpeg"])]
    assert [line for line in captured.err.splitlines() if line.startswith("error:")] == [
        f"error: {url}: URLs are not supported; download the image and give its file" for url in urls
    ]


def test_webp_content_is_captioned_whatever_its_name(model, tmp_path, capsys):
    """The same policy as the features stage: the content decides (load_rgb), not the extension."""
    paths = [tmp_path / "photo.webp", tmp_path / "really_webp.jpg", tmp_path / "scan.bmp", tmp_path / "scan.tiff"]
    for path, kind in zip(paths, ["WEBP", "WEBP", "BMP", "TIFF"]):
        Image.new("RGB", (40, 30), (200, 30, 30)).save(path, kind)
    status = main(["caption", *map(str, paths), "--model", str(model), "--max-len", str(MAX_LEN)])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert list(caption_lines(captured.out)) == [str(p) for p in paths]
