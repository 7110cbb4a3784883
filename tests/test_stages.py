"""The stage entry points (stages/*.py, run inside captioning.cli.run) on bad input: one row per case.

Each stops with exit status 1 and a single `error: ...` line naming the file, row or key, with no traceback, no
output written and no `.NAME.tmp-*` leftovers. Most rows run the entry point in this process (tiny_repo's
run_stage_here); a few as a real `python -m stages.<name>` for the exit status and stderr of a real process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures_real import flickr30k_files, image_bytes, karpathy
from repo_params import repo_document
from tiny_repo import leftovers, run_stage, run_stage_here, table_file

from captioning.features.recipe import FeatureRecipe
from captioning.features.store import FeatureWriter

IMAGE_SIZE = 64  # 2 x 2 regions
DATA_OUTPUTS = ("data/images", "data/dataset.json")
VOCAB_OUTPUTS = ("data/vocab.json", "data/captions.npz", "metrics/vocab.json")
F30K = {"data": {"dataset": "flickr30k", "root": "f30k"}}
ROW = {"split": "train", "captions": ["a red circle"]}
OK_PNG = image_bytes("PNG", (10, 200, 30), (40, 30))


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
        recipe = FeatureRecipe("resnet50", "none", "IMAGENET1K_V2", 0, 64, "fp32", "1.0e+00")  # as the stage writes it
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
            "error: params.yaml: data.dataset must be one of scenes, flickr30k, flickr8k, coco, folder, got 'imagenet'",
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
                {"ok.png": OK_PNG, "notes.jpg": b"shopping list: eggs, milk\n"},
            ),
        ),
        id="features-bad-image-error-policy",
        marks=pytest.mark.slow,
    ),
]


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
