"""docs/walkthrough.py on a tiny model: the 49 x 2048 regions, the step written out equal to decoder.step, a figure."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from PIL import Image
from tiny_model import write_tiny_model

from captioning.text.vocabulary import SPECIALS

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "walkthrough.py"
WORDS = [*SPECIALS, "a", "red", "blue", "square", "circle"]


@pytest.fixture(scope="module")
def walkthrough():
    spec = importlib.util.spec_from_file_location("walkthrough", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_output(printed: str, figure: Path, words: str) -> None:
    assert "regions a: 49 x 2048" in printed
    assert "features (B, L, D) float16" in printed and "(1, 49, 2048)" in printed
    assert "step written out == decoder.step: scores, h_1, c_1, alpha_1 all close" in printed
    assert re.search(rf"attention: {words} words x 49 regions", printed)
    assert figure.is_file() and Image.open(figure).size[0] > 0


def test_the_walkthrough_runs_on_a_tiny_model_file_and_an_image(walkthrough, tmp_path, capsys):
    model = write_tiny_model(tmp_path / "model.pt", WORDS, 224, epoch=1)  # never ends: max_len words
    image = tmp_path / "photo.png"
    Image.new("RGB", (300, 200), (200, 40, 40)).save(image)
    figure = tmp_path / "figures" / "attention.png"
    argv = ["--model", str(model), "--image", str(image), "--out", str(figure), "--beam", "2", "--max-len", "3"]
    assert walkthrough.main(argv) == 0
    printed = capsys.readouterr().out
    check_output(printed, figure, words="3")
    assert f"{model}: CaptionDecoder, trained (epoch 1)" in printed


def test_without_a_model_file_it_builds_a_tiny_random_model_and_draws_a_scene(walkthrough, tmp_path, capsys):
    figure = tmp_path / "attention.png"
    assert walkthrough.main(["--tiny", "--out", str(figure), "--beam", "2", "--max-len", "2"]) == 0
    printed = capsys.readouterr().out
    assert "a tiny randomly initialised CaptionDecoder" in printed and "image: a generated scene" in printed
    check_output(printed, figure, words="[12]")


def test_a_missing_model_file_is_one_line_not_a_silent_tiny_model(walkthrough, tmp_path, capsys):
    assert walkthrough.main(["--model", str(tmp_path / "missing.pt")]) == 1
    assert "model file not found" in capsys.readouterr().err
