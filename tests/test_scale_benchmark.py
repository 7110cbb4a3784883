"""benchmarks/scale.py: the rehearsal's dataset is Flickr30k's format, read by the real reader."""

import importlib.util
import json
import sys
from pathlib import Path

from PIL import Image

from captioning.data.readers.dataset import read_dataset

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "scale.py"


def load_scale():
    spec = importlib.util.spec_from_file_location("scale_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_split_keeps_flickr30k_proportions():
    scale = load_scale()
    assert scale.split_sizes(31_014) == {"train": 29_000, "val": 1_014, "test": 1_000}
    small = scale.split_sizes(1_500)
    assert sum(small.values()) == 1_500 and small["val"] == 49 and small["test"] == 48


def test_rehearsal_dataset_reads_as_karpathy_flickr30k(tmp_path):
    scale = load_scale()
    info = scale.write_dataset(tmp_path / "flickr30k", 40, jobs=1)
    assert info["captions"] == 200 and info["train"] + info["val"] + info["test"] == 40

    table = read_dataset("flickr30k", tmp_path / "flickr30k", format="karpathy")
    assert len(table.images) == 40
    assert {split: len(table.split(split)) for split in ("train", "val", "test")} == {
        "train": info["train"],
        "val": info["val"],
        "test": info["test"],
    }
    sizes = {Image.open(table.image_path(record)).size for record in table.images}
    assert sizes == {(500, 375), (375, 500)}
    entry = json.loads((tmp_path / "flickr30k" / "dataset_flickr30k.json").read_text())["images"][0]
    sentence = entry["sentences"][0]
    assert sentence["raw"].endswith(".") and sentence["tokens"][-1] != "."  # punctuation in raw only
    assert all(len(record.captions) == 5 for record in table.images)

    again = scale.write_dataset(tmp_path / "flickr30k", 40, jobs=1)  # complete: reused, not rewritten
    assert again == info
