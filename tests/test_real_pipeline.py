"""Every real dataset format, data -> evaluate: miniature downloads (real JPEGs, exact file formats)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from fixtures_real import make_coco, make_flickr8k, make_flickr30k
from tiny_repo import TINY, copy_project, run, stage_command, write_params

STAGES = ("data", "vocab", "features", "embeddings", "train", "finetune", "evaluate")  # dvc.yaml's order
FORMATS = {
    "flickr30k-karpathy": ("flickr30k", lambda root: make_flickr30k(root, layout="karpathy")),
    "flickr30k-kaggle-csv": ("flickr30k", lambda root: make_flickr30k(root, layout="kaggle", karpathy_json=True)),
    "flickr30k-token": ("flickr30k", lambda root: make_flickr30k(root, layout="token")),
    "flickr30k-hf-csv": ("flickr30k", lambda root: make_flickr30k(root, layout="hf")),
    "flickr8k-token": ("flickr8k", lambda root: make_flickr8k(root, layout="token")),
    "flickr8k-kaggle-csv": ("flickr8k", lambda root: make_flickr8k(root, layout="kaggle")),
    "coco-karpathy": ("coco", make_coco),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMATS)
def test_pipeline_runs_on_a_miniature_download(name: str, tmp_path: Path):
    dataset, make = FORMATS[name]
    mini = make(tmp_path / "download")
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_project(repo)
    write_params(repo, {**TINY, "data": {"dataset": dataset, "root": str(mini.root)}, "evaluate": {"figures": 1}})
    for stage in STAGES:
        run(stage_command(stage), repo)

    table = json.loads((repo / "data/dataset.json").read_text())
    images = {record["image"] for record in table["images"]}
    assert images <= set(mini.captions) and len(images) >= len(mini.captions) - 1  # split files may drop one
    with h5py.File(repo / "data/features.h5") as features:
        assert features["features"].shape == (len(images), 4, 2048)  # 64 x 64 images: 2 x 2 regions
    predictions = json.loads((repo / "reports/predictions.json").read_text())
    test_images = {record["image"] for record in table["images"] if record["split"] == "test"}
    assert test_images and {p["image"] for p in predictions} == test_images  # each test image decoded once
    for prediction in predictions:  # scored against every full reference, never the truncated ones
        assert prediction["references"] == mini.captions[prediction["image"]]
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert {"bleu_4", "meteor", "cider"} <= set(metrics) and "position_accuracy" not in metrics
    assert len(list((repo / "reports/attention").glob("*.png"))) == 1
