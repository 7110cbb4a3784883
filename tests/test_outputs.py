"""captioning/reports/outputs.py: the predictions file, and figures and a gallery limited as the params say."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from repo_params import repo_params

from captioning.data.table import CaptionTable, ImageRecord
from captioning.reports.outputs import write_figures_and_gallery, write_predictions
from captioning.scoring.split import EvaluationImages

NAMES = ["a.png", "b.png", "c.png"]
CAPTIONS = {"a.png": "a red square", "b.png": "a blue circle", "c.png": "a green star"}
REFERENCES = [["a red box"], ["a blue disc", "blue circle"], ["a star"]]


def test_predictions_pair_each_caption_with_its_references(tmp_path):
    images = EvaluationImages(NAMES, np.arange(3), REFERENCES)
    write_predictions(tmp_path / "predictions.json", images, CAPTIONS)
    assert json.loads((tmp_path / "predictions.json").read_text()) == [
        {"image": name, "caption": CAPTIONS[name], "references": references}
        for name, references in zip(NAMES, REFERENCES)
    ]


def test_figures_and_gallery_take_the_first_images_only(tmp_path):
    for name in NAMES:
        Image.new("RGB", (64, 64), (200, 40, 40)).save(tmp_path / name)
    table = CaptionTable("scenes", tmp_path, [ImageRecord(name, "test", refs) for name, refs in zip(NAMES, REFERENCES)])
    images = EvaluationImages(NAMES, np.arange(3), REFERENCES)
    weights = [np.full((4, 4), 0.25, dtype=np.float32) for _ in NAMES]  # 3 words + <end>, 2 x 2 regions
    params = repo_params("evaluate", figures=1, gallery_images=2, beam_size=3)
    attention, gallery = tmp_path / "reports" / "attention", tmp_path / "reports" / "gallery.html"
    write_figures_and_gallery(table, images, CAPTIONS, weights, {"bleu_4": 0.5}, attention, gallery, params)
    assert sorted(path.name for path in attention.iterdir()) == ["a.png"]
    page = gallery.read_text(encoding="utf-8")
    assert page.count("<figure>") == 2 and "a blue circle" in page and "a green star" not in page
    assert "scenes test split, beam 3" in page and 'href="attention/a.png"' in page
