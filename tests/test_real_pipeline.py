"""A real dataset format, data -> evaluate: a miniature COCO download (real JPEGs, the exact file format, image
names in subfolders, 5-7 references per image), scored with METEOR 1.5 itself. The other six formats go through
the data stage in-process in test_readers.py; past it, every format is the same table.

The stages up to finetune run in this process, each main() with dvc.yaml's arguments; evaluate runs as its own
process, METEOR's Java beside it. The stages as separate processes under `dvc repro` are test_pipeline.py's."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from fixtures_real import make_coco
from tiny_repo import TINY, copy_project, run, run_stage_here, stage_command, write_params

from captioning.scoring.metrics import METEOR_SWITCH, java_available

STAGES = ("data", "vocab", "features", "embeddings", "train", "finetune")  # dvc.yaml's order, then evaluate


@pytest.mark.slow
def test_pipeline_runs_on_a_miniature_coco_download(tmp_path: Path, monkeypatch, capsys):
    mini = make_coco(tmp_path / "download")
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_project(repo)
    write_params(repo, {**TINY, "data": {"dataset": "coco", "root": str(mini.root)}, "evaluate": {"figures": 1}})
    for stage in STAGES:
        result = run_stage_here(repo, stage, monkeypatch, capsys)
        assert result.returncode == 0, f"{stage}:\n{result.stderr}"
    monkeypatch.setenv(METEOR_SWITCH, "on")  # the one stage run of the suite scored with METEOR's Java
    run(stage_command("evaluate"), repo)

    table = json.loads((repo / "data/dataset.json").read_text())
    images = {record["image"] for record in table["images"]}
    assert images <= set(mini.captions) and len(images) >= len(mini.captions) - 1  # split files may drop one
    assert any("/" in image for image in images)  # COCO's names keep their folder, train2014/ or val2014/
    with h5py.File(repo / "data/features.h5") as features:
        assert features["features"].shape == (len(images), 4, 2048)  # 64 x 64 images: 2 x 2 regions
    predictions = json.loads((repo / "reports/predictions.json").read_text())
    test_images = {record["image"] for record in table["images"] if record["split"] == "test"}
    assert test_images and {p["image"] for p in predictions} == test_images  # each test image decoded once
    for prediction in predictions:  # scored against every full reference, never the truncated ones
        assert prediction["references"] == mini.captions[prediction["image"]]
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())
    assert {"bleu_4", "cider"} <= set(metrics) and "position_accuracy" not in metrics
    if java_available():
        assert 0.0 <= metrics["meteor"] <= 1.0
    assert len(list((repo / "reports/attention").glob("*.png"))) == 1
