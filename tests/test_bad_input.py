"""Faults and bad input: one row per case, each with its exact outcome.

An outcome is either a one-line CaptioningError naming the file, row or key (through a stage entry
point: exit status 1, a single `error: ...` line on stderr, no traceback) or a counted and logged
skip. Either way no partial output is left behind: no target file, no `.NAME.tmp-*` leftovers.

Tables: PARAM_CASES (params.yaml values), STAGE_CASES (a stage's entry point in a scratch folder: in this
process, and a few as `python -m stages.<name>` for the exit status and stderr of a real process),
CAPTION_CASES (caption files through the dataset readers), IMAGE_CASES (image files through load_rgb
and extract_features under both data.on_bad_image policies), FEATURE_FILE_CASES (damaged HDF5).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures_real import write_jpeg
from PIL import Image
from repo_params import repo_document
from tiny_repo import run_stage_here, stage_command

from captioning.data.images import MAX_PIXELS, BadImageError, load_rgb
from captioning.data.readers.dataset import read_dataset
from captioning.errors import CaptioningError
from captioning.features.encoder import FEATURE_DIM, build_encoder
from captioning.features.extract import extract_features
from captioning.features.recipe import FeatureRecipe
from captioning.features.store import FeatureStore, FeatureWriter
from captioning.io import atomic_path
from captioning.params import TrainParams, load_params

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 64  # 2 x 2 regions
THOUSAND_WORDS = " ".join(f"word{i % 50}" for i in range(1000))


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders of atomic_path that were not cleaned up."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp-*"))


def warnings_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("captioning") and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------------------------------------------------------
# params.yaml: wrong-typed, out-of-range and unknown values. load_params names the key and what it accepts.

KNOWN_TRAIN_KEYS = ", ".join(f.name for f in fields(TrainParams))

PARAM_CASES = [
    pytest.param("train", "train: {lr: 0}", "params.yaml: train.lr must be a number > 0, got 0.0", id="lr-zero"),
    pytest.param(
        "train", "train: {lr: -0.001}", "params.yaml: train.lr must be a number > 0, got -0.001", id="lr-negative"
    ),
    pytest.param("train", "train: {lr: .nan}", "params.yaml: train.lr must be a number > 0, got nan", id="lr-nan"),
    pytest.param("train", "train: {lr: fast}", "params.yaml: train.lr must be a number, got 'fast'", id="lr-text"),
    pytest.param(
        "train",
        "train: {gamma: 1.5}",
        "params.yaml: train.gamma must be a number in (0, 1], got 1.5",
        id="gamma-above-1",
    ),
    pytest.param(
        "train", "train: {epochs: 2.5}", "params.yaml: train.epochs must be an integer, got 2.5", id="epochs-float"
    ),
    pytest.param(
        "evaluate",
        "evaluate: {beam_size: 0}",
        "params.yaml: evaluate.beam_size must be an integer >= 1, got 0",
        id="beam-zero",
    ),
    pytest.param(
        "evaluate",
        "evaluate: {beam_size: true}",
        "params.yaml: evaluate.beam_size must be an integer, got True",
        id="beam-bool",
    ),
    pytest.param(
        "data",
        "data: {dataset: imagenet}",
        "params.yaml: data.dataset must be one of scenes, flickr30k, flickr8k, coco, got 'imagenet'",
        id="unknown-dataset",
    ),
    pytest.param(
        "features",
        "features: {weights: resnet101}",
        "params.yaml: features.weights must be none, imagenet or the path of a .pth/.pt state dict, got 'resnet101'",
        id="unknown-weights",
    ),
    pytest.param(
        "data",
        "data: {on_bad_image: ignore}",
        "params.yaml: data.on_bad_image must be one of skip, error, got 'ignore'",
        id="unknown-bad-image-policy",
    ),
    pytest.param(
        "train",
        "train: {learning_rate: 0.1}",
        f"params.yaml: train.learning_rate must be one of the known keys ({KNOWN_TRAIN_KEYS}), got 'unknown key'",
        id="unknown-key",
    ),
    pytest.param(
        "embeddings",
        "embeddings: {finetune: 'yes'}",
        "params.yaml: embeddings.finetune must be true or false, got 'yes'",
        id="bool-as-text",
    ),
    pytest.param(
        "train", "train: 5", "params.yaml: train must be a mapping of keys to values, got 5", id="section-scalar"
    ),
    pytest.param(
        "train",
        "train:\n  lr: 0.001\n  epochs: 10\n  lr: 0.01",
        "{path}:4: duplicate key train.lr",
        id="duplicate-key",
    ),
    pytest.param("train", "train: [\n", "{path}: not valid YAML (while parsing a flow node)", id="broken-yaml"),
    pytest.param("train", None, "{path}: params file not found (run from the repository root)", id="no-params-file"),
]


@pytest.mark.parametrize(("section", "text", "message"), PARAM_CASES)
def test_bad_params(tmp_path: Path, section: str, text: str | None, message: str):
    path = tmp_path / "params.yaml"
    if text is not None:
        path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(CaptioningError) as caught:
        load_params(section, path)
    assert str(caught.value) == message.format(path=path)


# ---------------------------------------------------------------------------------------------------------------------
# Stage entry points: exit 1, one `error:` line, no traceback, no outputs, no temporary leftovers.

DATA_OUTPUTS = ("data/images", "data/dataset.json")
VOCAB_OUTPUTS = ("data/vocab.json", "data/captions.npz", "metrics/vocab.json")


def flickr30k_files(annotation: str, content: str | bytes, images=("a.jpg", "b.jpg", "c.jpg")):
    """A flickr30k download under `f30k/`: one annotation file and tiny JPEGs in f30k/flickr30k-images."""

    def write(folder: Path) -> None:
        root = folder / "f30k"
        root.mkdir()
        data = content.encode("utf-8") if isinstance(content, str) else content
        (root / annotation).write_bytes(data)
        for seed, name in enumerate(images):
            write_jpeg(root / "flickr30k-images" / name, seed, (16, 12))

    return write


def table_file(images: list[dict], image_files: dict[str, bytes] | None = None, text: str | None = None):
    """data/dataset.json (images in data/images), or `text` written verbatim as the table."""

    def write(folder: Path) -> None:
        (folder / "data/images").mkdir(parents=True)
        document = {"dataset": "scenes", "image_root": "images", "images": images}
        (folder / "data/dataset.json").write_text(text if text is not None else json.dumps(document))
        for name, data in (image_files or {}).items():
            (folder / "data/images" / name).write_bytes(data)

    return write


def png_bytes(size=(40, 30), color=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


F30K = {"data": {"dataset": "flickr30k", "root": "f30k"}}
ROW = {"split": "train", "captions": ["a red circle"]}


def karpathy(images: list[tuple[str, str]], sentences: list | None = None) -> str:
    """A Karpathy split file of (filename, split) pairs, one sentence each unless `sentences` is given."""
    return json.dumps(
        {
            "dataset": "flickr30k",
            "images": [
                {"filename": name, "split": split, "sentences": sentences if sentences is not None else
                 [{"raw": f"A {name} .", "tokens": ["a", name]}]}
                for name, split in images
            ],
        }
    )  # fmt: skip


def vocab_file(folder: Path) -> None:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data/vocab.json").write_text(json.dumps({"words": ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]}))


def also(*writers: Callable[[Path], None]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        for writer in writers:
            writer(folder)

    return write


def word2vec_text(text: str) -> Callable[[Path], None]:
    return also(vocab_file, lambda folder: (folder / "vectors.txt").write_text(text, encoding="utf-8"))


def features_without(skipped: list[str], kept: list[str]) -> Callable[[Path], None]:
    """data/features.h5 with features for `kept` and `skipped` recorded as unreadable by the features stage."""

    def write(folder: Path) -> None:
        recipe = FeatureRecipe("none", "IMAGENET1K_V2", 0, 64, "fp32", "1.0e+00")  # as the features stage writes it
        writer = FeatureWriter(folder / "data/features.h5", len(kept), 4, 8, recipe.to_dict())
        writer.append(kept, np.ones((len(kept), 4, 8), dtype=np.float32))
        writer.close(skipped)

    return write


@dataclass
class StageCase:
    stage: str
    params: dict | None  # changes to the repository's params.yaml, per section; None: no params file at all
    error: str  # the expected stderr line; {tmp} is the (resolved) folder the stage runs in
    outputs: tuple[str, ...]  # files the stage writes, none of which may exist afterwards
    files: Callable[[Path], None] = lambda folder: None
    in_subprocess: bool = False  # a real `python -m stages.<name>`, else the same entry point in this process


STAGE_CASES = [
    pytest.param(
        StageCase(
            "data",
            {"data": {"dataset": "imagenet"}},
            "error: params.yaml: data.dataset must be one of scenes, flickr30k, flickr8k, coco, got 'imagenet'",
            DATA_OUTPUTS,
            in_subprocess=True,
        ),
        id="data-unknown-dataset",
    ),
    pytest.param(
        StageCase(
            "data",
            {"data": {"num_train": "many"}},
            "error: params.yaml: data.num_train must be an integer, got 'many'",
            DATA_OUTPUTS,
        ),
        id="data-wrong-type",
    ),
    pytest.param(
        StageCase(
            "data",
            F30K,
            "error: data.root={tmp}/f30k: folder not found; download flickr30k there "
            "(python -m captioning download flickr30k {tmp}/f30k)",
            DATA_OUTPUTS,
        ),
        id="data-root-missing",
    ),
    pytest.param(
        StageCase(
            "data",
            F30K,
            "error: data.root={tmp}/f30k: no flickr30k captions found; expected one of dataset_flickr30k.json, "
            "flickr_annotations_30k.csv, results.csv, results_20130124.token in it or up to 3 folders below "
            "(python -m captioning download flickr30k {tmp}/f30k)",
            DATA_OUTPUTS,
            lambda folder: (folder / "f30k/flickr30k-images").mkdir(parents=True),
        ),
        id="data-no-caption-file",
    ),
    pytest.param(
        StageCase(
            "data",
            F30K,
            "error: {tmp}/f30k/results_20130124.token: no captioned images found",
            DATA_OUTPUTS,
            flickr30k_files("results_20130124.token", b""),
        ),
        id="data-empty-caption-file",
    ),
    pytest.param(
        StageCase(
            "data",
            F30K,
            "error: {tmp}/f30k/results_20130124.token: line 3: not UTF-8 text (byte 15: invalid continuation byte); "
            "save it as UTF-8",
            DATA_OUTPUTS,
            flickr30k_files(
                "results_20130124.token",
                "a.jpg#0\tA dog .\nb.jpg#0\tA cat .\nc.jpg#0\tUn garçon au café .\n".encode("latin-1"),
            ),
        ),
        id="data-latin1-caption-file",
    ),
    pytest.param(
        StageCase(
            "data",
            F30K,
            "error: {tmp}/f30k/results_20130124.token: line 2: image name '../../secret.jpg' must be a relative path "
            "inside the image folder (no absolute path, no '..')",
            DATA_OUTPUTS,
            flickr30k_files("results_20130124.token", "a.jpg#0\tA dog .\n../../secret.jpg#0\tA cat .\n"),
        ),
        id="data-path-traversal",
    ),
    pytest.param(
        StageCase(
            "data",
            {"data": {"dataset": "flickr30k", "root": "flickr30k.zip"}},
            "error: data.root={tmp}/flickr30k.zip is a file, not a folder: probably the downloaded archive; unpack "
            "it and set data.root to the folder it gives",
            DATA_OUTPUTS,
            lambda folder: (folder / "flickr30k.zip").write_bytes(b"PK\x03\x04" + bytes(100)),
        ),
        id="data-root-is-the-archive",
    ),
    pytest.param(
        StageCase(
            "data",
            F30K,
            "error: flickr30k in data.root=f30k: no test images: the split file or the captions give none, and every "
            "split needs at least one (train to learn, val to choose the epoch, test to score)",
            DATA_OUTPUTS,
            flickr30k_files(
                "dataset_flickr30k.json", karpathy([("a.jpg", "train"), ("b.jpg", "val"), ("c.jpg", "val")])
            ),
        ),
        id="data-karpathy-file-without-test-images",
    ),
    pytest.param(
        StageCase(
            "data",
            F30K,
            "error: flickr30k in data.root=f30k: no val images: the split file or the captions give none, and every "
            "split needs at least one (train to learn, val to choose the epoch, test to score)",
            DATA_OUTPUTS,
            flickr30k_files(
                "flickr_annotations_30k.csv",
                'raw,sentids,split,filename,img_id\n"[""A dog .""]",[0],train,a.jpg,0\n'
                '"[""A cat .""]",[1],test,b.jpg,1\n"[""A cow .""]",[2],train,c.jpg,2\n',
            ),
        ),
        id="data-hf-csv-without-val-images",
    ),
    pytest.param(
        StageCase(
            "vocab", None, "error: params.yaml: params file not found (run from the repository root)", VOCAB_OUTPUTS
        ),
        id="vocab-no-params-file",
    ),
    pytest.param(
        StageCase(
            "vocab",
            {},
            "error: data/dataset.json: images[1]: image a.png (as ./a.png) is listed twice",
            VOCAB_OUTPUTS,
            table_file([{"image": "a.png", **ROW}, {"image": "./a.png", **ROW, "split": "test"}]),
        ),
        id="vocab-same-image-under-two-spellings",
    ),
    pytest.param(
        StageCase(
            "vocab",
            {},
            "error: data/dataset.json: images[1]: image sub/a.png (as sub//./a.png) is listed twice",
            VOCAB_OUTPUTS,
            table_file([{"image": "sub/a.png", **ROW}, {"image": "sub//./a.png", **ROW}]),
        ),
        id="vocab-same-image-with-doubled-slash",
    ),
    pytest.param(
        StageCase(
            "vocab",
            {"vocab": {"min_word_freq": 1000}},
            "error: params.yaml: vocab.min_word_freq=1000 keeps no word: the most frequent of the 4 training words "
            "('a') appears 2 times; lower it to at most 2",
            VOCAB_OUTPUTS,
            table_file([{"image": "a.png", **ROW}, {"image": "b.png", "split": "train", "captions": ["a dog"]}]),
        ),
        id="vocab-only-special-tokens",
    ),
    pytest.param(
        StageCase(
            "embeddings",
            {"embeddings": {"word2vec_path": "vectors.txt", "dim": 4}},
            "error: embeddings.word2vec_path: vectors.txt is not a valid text word2vec file: line 3: expected a word "
            "and 4 numbers, got 'dog' and 3 values",
            ("data/embeddings.npy", "metrics/embeddings.json"),
            word2vec_text("3 4\na 1 2 3 4\ndog 1 2 3\ncat 1 2 3 4\n"),
        ),
        id="embeddings-word2vec-line-too-short",
    ),
    pytest.param(
        StageCase(
            "embeddings",
            {"embeddings": {"word2vec_path": "vectors.txt", "dim": 4}},
            "error: embeddings.word2vec_path: vectors.txt is not a valid text word2vec file: line 2: 'x' (of 'a') is "
            "not a number",
            ("data/embeddings.npy", "metrics/embeddings.json"),
            word2vec_text("2 4\na 1 x 3 4\ndog 1 2 3 4\n"),
        ),
        id="embeddings-word2vec-value-not-a-number",
    ),
    pytest.param(
        StageCase(
            "embeddings",
            {"embeddings": {"word2vec_path": "vectors.txt", "dim": 4}},
            "error: embeddings.word2vec_path: vectors.txt is not a valid text word2vec file: it has 1 vectors but its "
            "first line announces 5",
            ("data/embeddings.npy", "metrics/embeddings.json"),
            word2vec_text("5 4\na 1 2 3 4\n"),
        ),
        id="embeddings-word2vec-fewer-vectors-than-announced",
    ),
    pytest.param(
        StageCase(
            "vocab",
            {"vocab": {"max_len": 0}},
            "error: params.yaml: vocab.max_len must be an integer >= 1, got 0",
            VOCAB_OUTPUTS,
        ),
        id="vocab-max-len-zero",
    ),
    pytest.param(
        StageCase("vocab", {}, "error: data/dataset.json: file not found", VOCAB_OUTPUTS, in_subprocess=True),
        id="vocab-table-missing",
    ),
    pytest.param(
        StageCase(
            "vocab",
            {},
            "error: data/dataset.json: not valid JSON (Unterminated string starting at: line 1 column 53 (char 52))",
            VOCAB_OUTPUTS,
            table_file([], text='{"dataset": "scenes", "images": [{"image": "a.png", "sp'),
        ),
        id="vocab-table-truncated",
    ),
    pytest.param(
        StageCase(
            "vocab",
            {},
            "error: data/dataset.json: images[2]: image a.png is listed twice",
            VOCAB_OUTPUTS,
            table_file([{"image": "a.png", **ROW}, {"image": "b.png", **ROW}, {"image": "a.png", **ROW}]),
        ),
        id="vocab-duplicate-image",
    ),
    pytest.param(
        StageCase(
            "vocab",
            {},
            "error: data/dataset.json: images[0]: image name '/etc/passwd' must be a relative path inside the image "
            "folder (no absolute path, no '..')",
            VOCAB_OUTPUTS,
            table_file([{"image": "/etc/passwd", **ROW}]),
        ),
        id="vocab-absolute-image-name",
    ),
    pytest.param(
        StageCase(
            "embeddings",
            {"embeddings": {"finetune": "yes"}},
            "error: params.yaml: embeddings.finetune must be true or false, got 'yes'",
            ("data/embeddings.npy", "metrics/embeddings.json"),
        ),
        id="embeddings-bool-as-text",
    ),
    pytest.param(
        StageCase(
            "train",
            {"train": {"lr": 0}},
            "error: params.yaml: train.lr must be a number > 0, got 0.0",
            ("models/model.pt", "metrics/train"),
            in_subprocess=True,
        ),
        id="train-lr-zero",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        StageCase(
            "train",
            {},
            "error: data/dataset.json: no val images left: the features stage skipped all 2 of them (missing or "
            "unreadable, e.g. b.png; see its warnings); restore them and rerun the features stage",
            ("models/model.pt", "metrics/train"),
            also(
                table_file(
                    [
                        {"image": "a.png", **ROW},
                        {"image": "b.png", **ROW, "split": "val"},
                        {"image": "c.png", **ROW, "split": "val"},
                        {"image": "d.png", **ROW, "split": "test"},
                    ]
                ),
                vocab_file,
                features_without(["b.png", "c.png"], ["a.png", "d.png"]),
            ),
        ),
        id="train-val-split-emptied-by-skipped-images",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        StageCase(
            "evaluate",
            {"evaluate": {"beam_size": 0}},
            "error: params.yaml: evaluate.beam_size must be an integer >= 1, got 0",
            ("metrics/evaluate.json", "reports/predictions.json"),
        ),
        id="evaluate-beam-zero",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        StageCase(
            "features",
            {
                "data": {"on_bad_image": "error"},
                "features": {"image_size": IMAGE_SIZE, "batch_size": 2, "num_workers": 0, "precision": "fp32"},
            },
            "error: data/images/notes.jpg: cannot decode image (cannot identify image file 'data/images/notes.jpg') "
            "(set data.on_bad_image: skip to skip such images)",
            ("data/features.h5",),
            table_file(
                [{"image": "ok.png", **ROW}, {"image": "notes.jpg", **ROW}],
                {"ok.png": png_bytes(), "notes.jpg": b"shopping list: eggs, milk\n"},
            ),
        ),
        id="features-bad-image-error-policy",
        marks=pytest.mark.slow,
    ),
]


def run_stage(folder: Path, stage: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    return subprocess.run(stage_command(stage), cwd=folder, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", STAGE_CASES)
def test_stage_stops_with_one_error_line(tmp_path: Path, monkeypatch, capsys, case: StageCase):
    folder = tmp_path.resolve()
    if case.params is not None:
        (folder / "params.yaml").write_text(yaml.safe_dump(repo_document(case.params)), encoding="utf-8")
    case.files(folder)
    if case.in_subprocess:
        result = run_stage(folder, case.stage)
    else:
        result = run_stage_here(folder, case.stage, monkeypatch, capsys)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [case.error.format(tmp=folder)], result.stderr
    assert [name for name in case.outputs if (folder / name).exists()] == []
    assert leftovers(folder) == []


def test_a_1000_word_caption_is_kept_and_only_training_truncates_it(tmp_path: Path, monkeypatch, capsys):
    """The reference stays whole in the table; the vocab stage cuts the training copy to vocab.max_len and counts it."""
    flickr30k_files(
        "results_20130124.token", f"a.jpg#0\t{THOUSAND_WORDS}\na.jpg#1\tA dog .\nb.jpg#0\tA cat .\nc.jpg#0\tA cow .\n"
    )(tmp_path)
    table = read_dataset("flickr30k", tmp_path / "f30k")
    assert {r.image: r.captions for r in table.images}["a.jpg"] == [THOUSAND_WORDS, "A dog ."]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_document({"vocab": {"max_len": 24}})), encoding="utf-8")
    rows = [
        {"image": "a.png", "split": "train", "captions": [THOUSAND_WORDS, "a dog"]},
        {"image": "b.png", "split": "test", "captions": [THOUSAND_WORDS]},
    ]
    table_file(rows)(tmp_path)
    result = run_stage_here(tmp_path, "vocab", monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "metrics/vocab.json").read_text())["truncated_train_captions"] == 1
    encoded = np.load(tmp_path / "data/captions.npz")
    assert encoded["captions"].shape == (2, 24 + 2) and encoded["lengths"].tolist() == [26, 4]
    assert json.loads((tmp_path / "data/dataset.json").read_text())["images"][1]["captions"] == [THOUSAND_WORDS]


# ---------------------------------------------------------------------------------------------------------------------
# Caption files through the dataset readers: errors name file and line; skips are counted in one warning.


@dataclass
class Fails:
    message: str  # {root} is the dataset folder


@dataclass
class Reads:
    captions: dict[str, list[str]]
    warnings: list[str] = field(default_factory=list)  # besides the seeded-split notice; {root}, {images} expand


def token_file(text: str | bytes) -> dict:
    return {"results_20130124.token": text}


KAGGLE_HEADER = "image_name| comment_number| comment\n"
KARPATHY_TWO_SPLITS = json.dumps(
    {
        "dataset": "flickr30k",
        "images": [
            {"filename": name, "split": split, "sentences": [{"raw": f"A {name} .", "tokens": ["a", name]}]}
            for name, split in (("a.jpg", "train"), ("b.jpg", "val"), ("c.jpg", "test"), ("a.jpg", "test"))
        ],
    }
)


def image_bytes(format: str, color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), color).save(buffer, format)
    return buffer.getvalue()


BOM = b"\xef\xbb\xbf"
HF_HEADER = "raw,sentids,split,filename,img_id\n"

CAPTION_CASES = [
    pytest.param(
        "flickr30k",
        token_file("a.jpg#0\tA cat .\na.jpg#1\t   \nb.jpg#0\tA dog .\nc.jpg#0\tA  bird\t sings .\nd.jpg#0\t \t \n"),
        Reads(
            {"a.jpg": ["A cat ."], "b.jpg": ["A dog ."], "c.jpg": ["A bird sings ."]},
            [
                "{root}/results_20130124.token: skipped 2 empty captions",
                "{root}/results_20130124.token: dropped 1 images without any caption (e.g. d.jpg)",
            ],
        ),
        id="empty-and-whitespace-captions",
    ),
    pytest.param(
        "flickr30k",
        token_file(f"a.jpg#0\t{THOUSAND_WORDS}\nb.jpg#0\tA dog .\nc.jpg#0\tA cat .\n"),
        Reads({"a.jpg": [THOUSAND_WORDS], "b.jpg": ["A dog ."], "c.jpg": ["A cat ."]}),
        id="1000-word-caption-kept",
    ),
    pytest.param(
        "flickr30k",
        token_file("a.jpg#0\tA dog .\nb.jpg#0\tA cat .\nc.jpg#0\tA cow .\na.jpg#0\tA dog .\na.jpg#1\tA puppy .\n"),
        Reads({"a.jpg": ["A dog .", "A dog .", "A puppy ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."]}),
        id="image-listed-twice-gathers-its-captions",
    ),
    pytest.param(
        "flickr30k",
        {"dataset_flickr30k.json": KARPATHY_TWO_SPLITS},
        Fails(
            "{root}/dataset_flickr30k.json: images[3]: a.jpg is listed again, in the test split; "
            "it is already in the train split"
        ),
        id="image-listed-in-two-splits",
    ),
    pytest.param(
        "flickr30k",
        {
            "dataset_flickr30k.json": karpathy(
                [("a.jpg", "train"), ("b.jpg", "val"), ("c.jpg", "test"), ("./a.jpg", "test")]
            )
        },
        Fails(
            "{root}/dataset_flickr30k.json: images[3]: a.jpg is listed again, in the test split; "
            "it is already in the train split"
        ),
        id="same-image-under-two-spellings-in-two-splits",
    ),
    pytest.param(
        "flickr30k",
        token_file("a.jpg#0\tA dog .\n./a.jpg#1\tA puppy .\nb.jpg#0\tA cat .\n.//c.jpg#0\tA cow .\n"),
        Reads({"a.jpg": ["A dog .", "A puppy ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."]}),
        id="same-image-under-two-spellings-gathers-its-captions",
    ),
    pytest.param(
        "flickr30k",
        {"dataset_flickr30k.json": BOM + karpathy([("a.jpg", "train"), ("b.jpg", "val"), ("c.jpg", "test")]).encode()},
        Reads({"a.jpg": ["A a.jpg ."], "b.jpg": ["A b.jpg ."], "c.jpg": ["A c.jpg ."]}),
        id="karpathy-json-with-byte-order-mark",
    ),
    pytest.param(
        "flickr30k",
        {
            "dataset_flickr30k.json": json.dumps(
                {
                    "images": [
                        {
                            "filename": "a.jpg",
                            "split": "train",
                            "sentences": [{"raw": "A dog .", "tokens": ["a", "dog"]}],
                        },
                        {
                            "filename": "b.jpg",
                            "split": "val",
                            "sentences": [{"raw": "A cat .", "tokens": ["a", "cat"]}],
                        },
                        {
                            "filename": "c.jpg",
                            "split": "test",
                            "sentences": [{"raw": "A cow .", "tokens": ["a", "cow"]}],
                        },
                        {"filename": "d.jpg", "split": "test", "sentences": []},
                    ]
                }
            )
        },
        Reads(
            {"a.jpg": ["A dog ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."]},
            ["{root}/dataset_flickr30k.json: dropped 1 images without any caption (e.g. d.jpg)"],
        ),
        id="karpathy-image-with-empty-sentences",
    ),  # fmt: skip
    pytest.param(
        "flickr30k",
        {
            "flickr_annotations_30k.csv": HF_HEADER + '"[""A dog .""]",[0],train,a.jpg,0\n"[]",[],train,b.jpg,1\n'
            '"[""A cow .""]",[2],test,c.jpg,2\n'
        },
        Reads(
            {"a.jpg": ["A dog ."], "c.jpg": ["A cow ."]},
            ["{root}/flickr_annotations_30k.csv: dropped 1 images without any caption (e.g. b.jpg)"],
        ),
        id="hf-csv-image-with-empty-raw",
    ),
    pytest.param(
        "flickr30k",
        token_file(
            "a.jpg#0\tA dog .\na.jpg#1\t!!! ...\nb.jpg#0\t\U0001f600\U0001f436\nb.jpg#1\tA cat .\n"
            "c.jpg#0\t- - -\nc.jpg#1\tA cow .\ne.jpg#0\t\u200b\u200d\n"
        ),
        Reads(
            {"a.jpg": ["A dog ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."]},
            [
                "{root}/results_20130124.token: skipped 4 captions without any word (only punctuation, symbols or "
                "invisible characters, e.g. '!!! ...')",
                "{root}/results_20130124.token: dropped 1 images without any caption (e.g. e.jpg)",
            ],
        ),
        id="captions-without-any-word",
    ),
    pytest.param(
        "flickr30k",
        {
            "dataset_flickr30k.json": json.dumps(
                {
                    "images": [
                        {
                            "filename": "a.jpg",
                            "split": "train",
                            "sentences": [
                                {"raw": "A dog .", "tokens": []},
                                {"raw": "A puppy .", "tokens": ["a", "puppy"]},
                            ],
                        },
                        {
                            "filename": "b.jpg",
                            "split": "val",
                            "sentences": [{"raw": "A cat .", "tokens": ["a", "cat"]}],
                        },
                        {
                            "filename": "c.jpg",
                            "split": "test",
                            "sentences": [{"raw": "A cow .", "tokens": ["a", "cow"]}],
                        },
                    ]
                }
            )
        },
        Reads(
            {"a.jpg": ["A puppy ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."]},
            [
                "{root}/dataset_flickr30k.json: skipped 1 captions without any word (only punctuation, symbols or "
                "invisible characters, e.g. 'A dog .')"
            ],
        ),
        id="karpathy-caption-with-no-tokens",
    ),  # fmt: skip
    pytest.param(
        "flickr30k",
        {
            "results_20130124.token": "a.webp#0\tA dog .\nb.bmp#0\tA cat .\nc.tiff#0\tA cow .\nd.TIF#0\tA hen .\n",
            "images/a.webp": image_bytes("WEBP"),
            "images/b.bmp": image_bytes("BMP"),
            "images/c.tiff": image_bytes("TIFF"),
            "images/d.TIF": image_bytes("TIFF"),
        },
        Reads({"a.webp": ["A dog ."], "b.bmp": ["A cat ."], "c.tiff": ["A cow ."], "d.TIF": ["A hen ."]}),
        id="webp-bmp-tiff-names",
    ),
    pytest.param(
        "flickr30k",
        token_file("a.jpg#0\tA dog .\nb.jpg#0\tA cat .\nc.jpg#0\tA cow .\nd.jpg#0\tA hen .\n"),
        Reads(
            {"a.jpg": ["A dog ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."], "d.jpg": ["A hen ."]},
            [
                "{images}: 1 of 4 images named in the captions are missing (e.g. d.jpg); "
                "data.on_bad_image decides what the features stage does with them"
            ],
        ),
        id="image-file-missing",
    ),
    pytest.param(
        "flickr30k",
        token_file("a.jpg#0\tA dog .\n/etc/secret.jpg#0\tA cat .\n"),
        Fails(
            "{root}/results_20130124.token: line 2: image name '/etc/secret.jpg' must be a relative path inside the "
            "image folder (no absolute path, no '..')"
        ),
        id="absolute-image-name",
    ),
    pytest.param(
        "flickr30k",
        token_file("a.jpg#0\tA dog .\nb.jpg#0\tA cat .\nc.jpg#0\tÀ la plage .\n".encode("cp1252")),
        Fails("{root}/results_20130124.token: line 3: not UTF-8 text (byte 9: invalid start byte); save it as UTF-8"),
        id="cp1252-token-file",
    ),
    pytest.param(
        "flickr30k",
        {"results.csv": KAGGLE_HEADER + "a.jpg| 0| A dog | runs .\nb.jpg| 0| A cat .\nc.jpg| 0| A cow .\n"},
        Reads({"a.jpg": ["A dog | runs ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."]}),
        id="kaggle-extra-separator-kept-in-caption",
    ),
    pytest.param(
        "flickr30k",
        {"results.csv": KAGGLE_HEADER + "a.jpg| 0| A dog .\nb.jpg| 0   A cat .\nc.jpg| 0| A cow .\n"},
        Reads(
            {"a.jpg": ["A dog ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."]},
            ["{root}/results.csv: line 3: repaired a row without its second '|' (b.jpg, comment 0)"],
        ),
        id="kaggle-missing-second-separator-repaired",
    ),
    pytest.param(
        "flickr30k",
        {"results.csv": KAGGLE_HEADER + "a.jpg| 0| A dog .\nb.jpg 0 A cat .\n"},
        Fails("{root}/results.csv: line 3: expected 'image_name| comment_number| comment', got 'b.jpg 0 A cat .'"),
        id="kaggle-missing-separators",
    ),
    pytest.param(
        "flickr30k",
        {"results.csv": ""},
        Fails("{root}/results.csv: no captioned images found"),
        id="kaggle-empty-file",
    ),
    pytest.param(
        "flickr30k",
        {"results.csv": KAGGLE_HEADER},
        Fails("{root}/results.csv: no captioned images found"),
        id="kaggle-header-only",
    ),
    pytest.param(
        "flickr8k",
        {"captions.txt": "image,caption\na.jpg,A dog runs .\nb.jpg,A dog, wet, runs .\n"},
        Fails("{root}/captions.txt: line 3: expected 2 fields (image,caption), got 4; quote fields that hold commas"),
        id="csv-unquoted-commas",
    ),
    pytest.param(
        "flickr8k",
        {"captions.txt": "image,caption\na.jpg,A dog runs .\nb.jpg\n"},
        Fails("{root}/captions.txt: line 3: expected 2 fields (image,caption), got 1; quote fields that hold commas"),
        id="csv-missing-separator",
    ),
    pytest.param(
        "flickr8k",
        {"captions.txt": 'image,caption\na.jpg,"A dog, wet, runs ."\nb.jpg,A cat .\nc.jpg,A cow .\n'},
        Reads({"a.jpg": ["A dog, wet, runs ."], "b.jpg": ["A cat ."], "c.jpg": ["A cow ."]}),
        id="csv-quoted-commas-kept",
    ),
    pytest.param(
        "flickr8k",
        {"captions.txt": ""},
        Fails("{root}/captions.txt: line 1: missing column(s) image, caption (expected image,caption)"),
        id="csv-empty-file",
    ),
    pytest.param(
        "flickr8k",
        {"captions.txt": "image,caption\na.jpg,A dog .\nb.jpg,Un garçon .\n".encode("latin-1")},
        Fails("{root}/captions.txt: line 3: not UTF-8 text (byte 13: invalid continuation byte); save it as UTF-8"),
        id="csv-latin1",
    ),
]


@pytest.mark.parametrize(("dataset", "files", "outcome"), CAPTION_CASES)
def test_caption_files(tmp_path: Path, caplog, dataset: str, files: dict, outcome: Fails | Reads):
    root = tmp_path / "download"
    images = root / "images"
    for seed, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        write_jpeg(images / name, seed, (16, 12))
    for name, content in files.items():
        (root / name).write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    expand = {"root": root, "images": images}
    if isinstance(outcome, Fails):
        with pytest.raises(CaptioningError) as caught:
            read_dataset(dataset, root)
        assert str(caught.value) == outcome.message.format(**expand)
        return
    with caplog.at_level(logging.WARNING):
        table = read_dataset(dataset, root)
    assert {record.image: record.captions for record in table.images} == outcome.captions
    skips = [m for m in warnings_logged(caplog) if "seeded random split" not in m]
    assert skips == [w.format(**expand) for w in outcome.warnings]


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


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("none", seed=0)


def extract(encoder, root: Path, names: list[str], output: Path, on_bad_image: str):
    return extract_features(
        encoder,
        root,
        names,
        output,
        image_size=IMAGE_SIZE,
        batch_size=2,
        precision="fp32",
        num_workers=0,
        on_bad_image=on_bad_image,
    )


def matches(refused: Refused, path: Path, message: str) -> bool:
    if refused.pattern:
        return re.fullmatch(refused.message.format(path=re.escape(str(path))), message) is not None
    return message == refused.message.format(path=path)


@pytest.mark.parametrize(("name", "write", "outcome"), IMAGE_CASES)
def test_image_files(tmp_path: Path, caplog, encoder, name: str, write, outcome: Decodes | Refused):
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
        report = extract(encoder, root, names, temporary, "skip")
    store = FeatureStore(target)
    if isinstance(outcome, Decodes):
        assert (report.written, report.skipped, store.names, store.skipped) == (2, [], names, set())
        assert store.shape == (2, (IMAGE_SIZE // 32) ** 2, FEATURE_DIM)
        assert np.isfinite(store.rows(np.arange(2)).astype(np.float32)).all()
        store.close()
        return
    assert (report.written, report.skipped, store.names, store.skipped) == (1, [name], ["ok.png"], {name})
    store.close()
    assert warnings_logged(caplog) == [f"skipped: {message}"]

    # extract_features with data.on_bad_image: error: stops naming the file; nothing is left behind
    target.unlink()
    with pytest.raises(BadImageError) as caught, atomic_path(target) as temporary:
        extract(encoder, root, names, temporary, "error")
    assert str(caught.value) == f"{message} (set data.on_bad_image: skip to skip such images)"
    assert not target.exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------------------------------
# The HDF5 features file: truncated, empty, corrupt or missing is one CaptioningError naming it.


def written_features(path: Path) -> int:
    writer = FeatureWriter(path, 8, 4, FEATURE_DIM)
    writer.append([f"{i}.jpg" for i in range(8)], np.ones((8, 4, FEATURE_DIM), dtype=np.float32))
    writer.close(["bad.jpg"])
    return path.stat().st_size


RERUN = "; rerun the features stage"
FEATURE_FILE_CASES = [
    pytest.param(
        lambda data: data[: len(data) // 2],
        lambda size: (
            r"{path}: not a readable features file \(.*truncated file: eof = "
            + f"{size // 2}, .*stored_eof = {size}"
            + r"\)\)"
            + re.escape(RERUN)
        ),
        id="truncated-to-half",
    ),
    pytest.param(
        lambda data: data[:-1],
        lambda size: (
            r"{path}: not a readable features file \(.*truncated file: eof = "
            + f"{size - 1}, .*stored_eof = {size}"
            + r"\)\)"
            + re.escape(RERUN)
        ),
        id="truncated-by-one-byte",
    ),
    pytest.param(
        lambda data: b"",
        lambda size: r"{path}: not a readable features file \(.*file signature not found\)\)" + re.escape(RERUN),
        id="zero-bytes",
    ),
    pytest.param(
        lambda data: data[:-8000] + bytes(4000) + data[-4000:],  # the heap of the image names, written last
        lambda size: r"{path}: not a readable features file \(.+\)" + re.escape(RERUN),
        id="zeroed-metadata",
    ),
    pytest.param(None, lambda size: r"{path}: features file not found \(run the features stage\)", id="missing"),
]


@pytest.mark.parametrize(("damage", "expected"), FEATURE_FILE_CASES)
def test_damaged_features_file(tmp_path: Path, damage, expected):
    path = tmp_path / "features.h5"
    size = written_features(path)
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CaptioningError) as caught:
        FeatureStore(path)
    pattern = expected(size).format(path=re.escape(str(path)))
    assert re.fullmatch(pattern, str(caught.value)), str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# Model files: every field load_model and its callers read is checked; one line names the file and the field.

MODEL_WORDS = ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]


def drop(field: str) -> Callable[[dict], object]:
    return lambda payload: {k: v for k, v in payload.items() if k != field}


def replace(field: str, value: object) -> Callable[[dict], object]:
    return lambda payload: {**payload, field: value}


def retrain(problem: str, field: str, meaning: str) -> str:
    return (
        f"{{path}}: the model file {problem} '{field}' ({meaning}): it is damaged or was not written by the train "
        "stage; retrain (dvc repro train)"
    )


MODEL_FILE_CASES = [
    pytest.param(drop("words"), retrain("has no", "words", "the vocabulary it was trained with"), id="no-words"),
    pytest.param(drop("config"), retrain("has no", "config", "the decoder configuration"), id="no-config"),
    pytest.param(drop("state_dict"), retrain("has no", "state_dict", "the weights"), id="no-state-dict"),
    pytest.param(
        drop("feature_recipe"),
        retrain("has no", "feature_recipe", "the recipe of the features it was trained on"),
        id="no-feature-recipe",
    ),
    pytest.param(
        replace("words", "a dog"),
        retrain("has a str instead of a list as its", "words", "the vocabulary it was trained with"),
        id="words-not-a-list",
    ),
    pytest.param(
        replace("words", [0, 1, 2]),
        "{path}: the model file's 'words' must all be strings; retrain (dvc repro train)",
        id="words-not-strings",
    ),
    pytest.param(
        "empty",
        "{path}: the model file is empty (0 bytes; an interrupted copy?): retrain or copy it again",
        id="zero-bytes",
    ),
    pytest.param(
        "pickled",
        "{path}: not a plain state dict (it holds pickled Python objects, which can run code): not loaded, for safety",
        id="pickled-object",
    ),
]


class RunsCode:
    """What a malicious model file holds: unpickling it would run a command."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > unpickled.txt",))


@pytest.mark.parametrize(("edit", "message"), MODEL_FILE_CASES)
def test_model_files(tmp_path: Path, monkeypatch, capsys, edit, message: str):
    from captioning.__main__ import main
    from captioning.checkpoint import load_model, save_model
    from captioning.model import CaptionDecoder, DecoderConfig

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pt"
    config = DecoderConfig(
        vocab_size=6,
        embed_dim=4,
        feature_dim=8,
        decoder_dim=4,
        attention_dim=4,
        dropout=0.0,
        attention="soft",
        deep_output=False,
    )
    save_model(path, CaptionDecoder(config), MODEL_WORDS, {"weights": "none"})
    if edit == "empty":
        path.write_bytes(b"")
    elif edit == "pickled":
        torch.save({"format": "captioning-model/1", "config": RunsCode()}, path)
    else:
        torch.save(edit(torch.load(path, weights_only=True)), path)
    with pytest.raises(CaptioningError) as caught:
        load_model(path)
    assert str(caught.value) == message.format(path=path)
    # the caption command says the same in one line, exit status 1, no traceback
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["caption", str(image), "--model", str(path)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message.format(path=path)}"]
    assert not (tmp_path / "unpickled.txt").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Outputs that cannot be written: a full disk or a read-only folder is one line naming the output, the previous
# version and the resumable state are kept, nothing partial is left; a long stage checks before it starts.

NO_SPACE = (
    "{path}: no space left on device (the partial file was removed; the previous version and any resumable state "
    "are kept: free some space and rerun)"
)


@pytest.fixture
def full_disk(monkeypatch):
    """Every file captioning.io writes goes to /dev/full: the kernel's own ENOSPC, on the real write call."""
    import builtins

    import captioning.io

    def open_full(path, mode="r", *args, **kwargs):
        return builtins.open("/dev/full" if "w" in mode else path, mode, *args, **kwargs)

    monkeypatch.setattr(captioning.io, "open", open_full, raising=False)


def test_disk_full_while_saving_the_model(tmp_path: Path, full_disk):
    from captioning.checkpoint import save_model
    from captioning.model import CaptionDecoder, DecoderConfig

    path = tmp_path / "models/model.pt"
    path.parent.mkdir()
    path.write_bytes(b"the previous model")
    config = DecoderConfig(
        vocab_size=6,
        embed_dim=4,
        feature_dim=8,
        decoder_dim=4,
        attention_dim=4,
        dropout=0.0,
        attention="soft",
        deep_output=False,
    )
    with pytest.raises(CaptioningError) as caught:
        save_model(path, CaptionDecoder(config), MODEL_WORDS, {"weights": "none"})
    assert str(caught.value) == NO_SPACE.format(path=path)
    assert path.read_bytes() == b"the previous model" and leftovers(tmp_path) == []


def test_disk_full_while_writing_json(tmp_path: Path, full_disk):
    from captioning.io import write_json

    path = tmp_path / "metrics/evaluate.json"
    with pytest.raises(CaptioningError) as caught:
        write_json(path, {"bleu_4": 0.5})
    assert str(caught.value) == NO_SPACE.format(path=path)
    assert not path.exists() and leftovers(tmp_path) == []


def test_a_read_only_output_folder_is_found_before_the_work_starts(tmp_path: Path, monkeypatch):
    """check_writable, which the train and features stages call before their first epoch or image.

    Tests run as root here, and root may write in a chmod-ed folder: so os.access is patched to answer as it
    does for another user (EACCES) or on a read-only mount (with ST_RDONLY). What this proves is the decision and
    the message, not the kernel's answer.
    """
    import captioning.io
    from captioning.io import check_writable

    check_writable(tmp_path / "models/model.pt")  # writable: nothing happens, the folder is created
    assert (tmp_path / "models").is_dir()
    monkeypatch.setattr(captioning.io.os, "access", lambda path, mode: False)
    with pytest.raises(CaptioningError) as caught:
        check_writable(tmp_path / "models/model.pt")
    message = f"{tmp_path}/models/model.pt: cannot write it, its folder is read-only for this user (permission denied)"
    assert str(caught.value) == message
    monkeypatch.setattr(captioning.io, "_on_read_only_mount", lambda folder: True)
    with pytest.raises(CaptioningError) as caught:
        check_writable(tmp_path / "models/model.pt")
    assert str(caught.value) == f"{tmp_path}/models/model.pt: cannot write it, the file system is read-only"


def test_a_full_disk_outside_atomic_writes_is_one_line_too(capsys):
    """E.g. DVCLive writing metrics/train/: cli.run reports the file and the cause, exit status 1."""
    import errno

    from captioning.cli import run

    def main():
        raise OSError(errno.ENOSPC, "No space left on device", "metrics/train/metrics.json")

    with pytest.raises(SystemExit) as stopped:
        run(main)
    assert stopped.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: metrics/train/metrics.json: no space left on device (any resumable state is kept: free some space "
        "and rerun)"
    ]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 256 kB tmpfs: a real full disk. Needs root and mount rights (a container without them skips)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def _features_stage_on_24_images(folder: Path, chunk_size: int, **paths: Path) -> subprocess.CompletedProcess:
    """The features stage run by hand on 24 images of 16 kB of features each, in parts of chunk_size images."""
    names = [f"{i:02d}.png" for i in range(24)]
    table_file([{"image": name, **ROW} for name in names], {name: png_bytes() for name in names})(folder)
    features = {
        "image_size": IMAGE_SIZE,
        "batch_size": 8,
        "num_workers": 1,
        "precision": "fp32",
        "chunk_size": chunk_size,
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(repo_document({"features": features})), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    return subprocess.run(
        stage_command("features", **paths), cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_features_stage_on_a_full_disk_stops_with_one_line_and_keeps_its_parts(tmp_path: Path, small_disk: Path):
    """HDF5 used to crash (exit 139) closing a file after a failed write: now one line and exit status 1."""
    folder = tmp_path.resolve()
    output = small_disk.resolve() / "features.h5"
    result = _features_stage_on_24_images(folder, chunk_size=8, output=output)  # 3 parts, 384 kB on a 256 kB disk
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: " + NO_SPACE.format(path=output)
    ]
    assert list(small_disk.iterdir()) == [] and leftovers(folder) == []
    assert len(list((folder / "scratch/features").glob("*/part-*.h5"))) == 3  # the resumable parts are kept


@pytest.mark.slow
def test_features_parts_on_a_full_disk_stop_with_one_line(tmp_path: Path, small_disk: Path):
    """The resumable parts (.part-*.h5.tmp-PID) on the full disk: h5py's flush failure at close is one line too."""
    folder = tmp_path.resolve()
    scratch = small_disk.resolve() / "scratch"
    result = _features_stage_on_24_images(folder, chunk_size=24, scratch=scratch)  # one 384 kB part
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (part,) = scratch.glob("*/")  # the run's folder, named by its key
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: " + NO_SPACE.format(path=part / "part-00000.h5")
    ]
    assert leftovers(small_disk) == [] and not (folder / "data/features.h5").exists()


def test_save_model_on_a_full_disk(small_disk: Path):
    """torch.save's own writer said only `unexpected pos`; saved through memory, the kernel's ENOSPC names the file."""
    from captioning.checkpoint import save_model
    from captioning.model import CaptionDecoder, DecoderConfig

    path = small_disk / "model.pt"
    config = DecoderConfig(
        vocab_size=500,
        embed_dim=64,
        feature_dim=64,
        decoder_dim=64,
        attention_dim=64,
        dropout=0,
        attention="soft",
        deep_output=False,
    )
    with pytest.raises(CaptioningError) as caught:
        save_model(path, CaptionDecoder(config), MODEL_WORDS, {"weights": "none"})
    assert str(caught.value) == NO_SPACE.format(path=path)
    assert list(small_disk.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------------
# Leftovers and interruptions: temporaries of killed runs are removed when a stage starts; Ctrl-C is one line.


def dead_pid() -> int:
    """The process id of a process that has exited (pids are not reused within a test's lifetime)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_killed_runs_are_removed_when_a_stage_starts(tmp_path: Path):
    folder = tmp_path.resolve()
    dead, alive = dead_pid(), os.getpid()
    stale = [f"data/.images.tmp-{dead}/scene_000000.png", f"models/.model.pt.tmp-{dead}",
             f"scratch/features/0123abcd/.part-00000.h5.tmp-{dead}"]  # fmt: skip
    running = f"data/.other.json.tmp-{alive}"  # a live process's: left alone
    for name in [*stale, running]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"partial")
    data = {"num_train": 3, "num_val": 1, "num_test": 1, "image_size": 32}
    (folder / "params.yaml").write_text(yaml.safe_dump(repo_document({"data": data})), encoding="utf-8")
    result = run_stage(folder, "data")
    assert result.returncode == 0, result.stderr
    assert leftovers(folder) == [running]
    assert (folder / "data/dataset.json").is_file()


def test_a_failed_final_rename_removes_its_temporary(tmp_path: Path):
    target = tmp_path / "model.pt"
    (target / "inside").mkdir(parents=True)  # the target is a folder: a file cannot replace it
    with pytest.raises(CaptioningError) as caught, atomic_path(target) as temporary:
        temporary.write_bytes(b"new model")
    assert str(caught.value) == f"{target}: cannot replace this folder with the new output (Is a directory); remove it"
    assert leftovers(tmp_path) == [] and (target / "inside").is_dir()


INTERRUPTED = "interrupted: no partial output was written (dvc checkout restores the last recorded one); "


@pytest.mark.parametrize(
    ("stage", "kept"),
    [
        ("train", "the state after the last completed epoch is kept in scratch/train/; rerun the stage (dvc repro) to "
                  "continue after it"),
        ("features", "the finished parts in scratch/features/ are kept; rerun the stage (dvc repro) to continue from "
                     "them"),
        ("finetune", "the state after the last completed SCST epoch is kept in scratch/finetune/; rerun the stage "
                     "(dvc repro) to continue after it"),
        ("vocab", "rerun the stage (dvc repro) to run it again"),
    ],
)  # fmt: skip
def test_ctrl_c_is_one_line_saying_what_was_kept(tmp_path: Path, stage: str, kept: str):
    """A real SIGINT, sent by the stage to itself while it sleeps: no race, the signal is pending when sleep starts."""
    script = tmp_path / "stages" / f"{stage}.py"
    script.parent.mkdir()
    script.write_text(
        "import os, signal, time\nfrom captioning.cli import run\n\n\n"
        "def main():\n    os.kill(os.getpid(), signal.SIGINT)\n    time.sleep(60)\n\n\n"
        # as in a terminal: a shell's background jobs (a CI runner's, say) start with SIGINT ignored
        "signal.signal(signal.SIGINT, signal.default_int_handler)\nrun(main)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 130
    assert result.stderr.splitlines() == [INTERRUPTED + kept]
