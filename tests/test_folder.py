"""Your own photos (captioning/data/readers/folder.py): captions.csv or captions.jsonl beside the images, read
through read_dataset as the data stage reads them; every bad row is one error naming the file and line."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from fixtures_real import captions_for, write_jpeg
from tiny_repo import TINY, copy_project, run_stage_here, write_params

from captioning.data.readers.dataset import read_dataset
from captioning.data.table import read_table
from captioning.errors import CaptioningError

NAMES = [f"photo_{index:02d}.jpg" for index in range(10)] + ["holidays/beach.jpg", "holidays/snow.jpg"]


def write_folder(root: Path, names: list[str] = NAMES) -> dict[str, list[str]]:
    """The images (real JPEGs, two in a subfolder) and the captions each should read back: three each."""
    for seed, name in enumerate(names):
        write_jpeg(root / name, seed, (64, 48))
    return {name: captions_for(index, count=3) for index, name in enumerate(names)}


def write_csv(path: Path, rows: list[list[str]], header=("image", "caption")) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def caption_rows(captions: dict[str, list[str]]) -> list[tuple[str, str]]:
    """One (image, caption) a line, the images interleaved so that an image's captions are not adjacent."""
    return [(name, caps[j]) for j in range(3) for name, caps in captions.items()]


def split_of(index: int) -> str:
    return {0: "val", 1: "test"}.get(index % 4, "train")


def test_csv_gathers_the_captions_of_each_image_and_keeps_its_split(tmp_path):
    captions = write_folder(tmp_path)
    splits = {name: split_of(index) for index, name in enumerate(captions)}
    write_csv(
        tmp_path / "captions.csv",
        [[splits[name], name, caption] for name, caption in caption_rows(captions)],
        header=("split", "image", "caption"),  # any column order
    )
    table = read_dataset("folder", tmp_path)
    assert {r.image: r.captions for r in table.images} == captions  # quoted commas, non-ASCII and all
    assert {r.image: r.split for r in table.images} == splits
    assert table.image_root == tmp_path.resolve() and all(r.sha256 for r in table.images)


def test_jsonl_reads_the_same_table_as_csv(tmp_path):
    captions = write_folder(tmp_path / "csv")
    write_folder(tmp_path / "jsonl")
    splits = {name: split_of(index) for index, name in enumerate(captions)}
    rows = caption_rows(captions)
    write_csv(tmp_path / "csv/captions.csv", [[n, c, splits[n]] for n, c in rows], ("image", "caption", "split"))
    write_jsonl(tmp_path / "jsonl/captions.jsonl", [{"image": n, "caption": c, "split": splits[n]} for n, c in rows])
    from_csv, from_jsonl = read_dataset("folder", tmp_path / "csv"), read_dataset("folder", tmp_path / "jsonl")
    assert [r.to_json() for r in from_jsonl.images] == [r.to_json() for r in from_csv.images]
    assert {r.image: r.captions for r in from_jsonl.images} == captions


@pytest.mark.parametrize("format", ["csv", "jsonl"])
def test_without_a_split_every_image_gets_the_seeded_split(tmp_path, caplog, format):
    captions = write_folder(tmp_path)
    if format == "csv":
        write_csv(tmp_path / "captions.csv", caption_rows(captions))
    else:
        write_jsonl(tmp_path / "captions.jsonl", [{"image": n, "caption": c} for n, c in caption_rows(captions)])
    with caplog.at_level(logging.WARNING):
        first = read_dataset("folder", tmp_path, seed=3)
    splits = {r.image: r.split for r in first.images}
    assert sorted(splits.values()).count("val") == 2 and sorted(splits.values()).count("test") == 2  # 8 / 2 / 2
    assert {r.image: r.split for r in read_dataset("folder", tmp_path, seed=3).images} == splits  # deterministic
    assert {r.image: r.split for r in read_dataset("folder", tmp_path, seed=4).images} != splits  # the seed's
    assert any("no split column found; using a seeded random split (data.seed=3)" in m for m in caplog.messages)


def test_both_caption_files_in_one_folder_is_an_error(tmp_path):
    captions = write_folder(tmp_path)
    write_csv(tmp_path / "captions.csv", caption_rows(captions))
    write_jsonl(tmp_path / "captions.jsonl", [{"image": n, "caption": c} for n, c in caption_rows(captions)])
    with pytest.raises(CaptioningError, match=r"both captions.csv and captions.jsonl; keep one"):
        read_dataset("folder", tmp_path)
    assert len(read_dataset("folder", tmp_path, format="jsonl").images) == len(NAMES)


GOOD = "image,caption\na.jpg,A dog runs .\nb.jpg,A cat sits .\nc.jpg,A cow eats .\n"

BAD_FILES = [
    pytest.param("captions.csv", "", "line 1: missing column(s) image, caption (expected the header "
                 "image,caption[,split])", id="csv-empty"),
    pytest.param("captions.csv", "image,text\na.jpg,A dog .\n", "line 1: missing column(s) caption (expected the "
                 "header image,caption[,split])", id="csv-missing-column"),
    pytest.param("captions.csv", "image,caption,splits\na.jpg,A dog .,train\n", "line 1: unknown column(s) splits "
                 "(expected the header image,caption[,split])", id="csv-unknown-column"),
    pytest.param("captions.csv", "image,caption\na.jpg,A dog .\nb.jpg\n", "line 3: expected 2 fields "
                 "(image,caption), got 1; quote fields that hold commas", id="csv-missing-field"),
    pytest.param("captions.csv", GOOD + "b.jpg,  \n", "line 5: empty caption of b.jpg; write one or remove the line",
                 id="csv-empty-caption"),
    pytest.param("captions.csv", "image,caption,split\na.jpg,A dog .,train\nb.jpg,A cat .,dev\n", "line 3: split "
                 "'dev' of b.jpg is not one of train, val, test; or leave the split out everywhere for a seeded "
                 "split", id="csv-unknown-split"),
    pytest.param("captions.csv", "image,caption,split\na.jpg,A dog .,train\nb.jpg,A cat .,val\na.jpg,A pup .,"
                 "test\n", "line 4: a.jpg is in the test split here and in the train split on line 2; give each "
                 "image one split", id="csv-two-splits"),
    pytest.param("captions.csv", GOOD + "d.jpg,A hen .\n", "line 5: image file d.jpg not found in {root}",
                 id="csv-image-missing"),
    pytest.param("captions.csv", GOOD + "../a.jpg,A dog .\n", "line 5: image name '../a.jpg' must be a relative "
                 "path inside the image folder (no absolute path, no '..')", id="csv-name-leaves-the-folder"),
    pytest.param("captions.jsonl", '{"image": "a.jpg", "caption": "A dog ."}\n{"image": "b.jpg", "caption": "A cat'
                 ' .}\n', "line 2: not valid JSON (Unterminated string starting at, column 31); write one object a "
                 'line, {"image": "a.jpg", "caption": "..."}', id="jsonl-malformed"),
    pytest.param("captions.jsonl", '{"image": "a.jpg", "caption": "A dog ."}\n\n["b.jpg", "A cat ."]\n', "line 3: "
                 "expected a JSON object with keys image,caption[,split], got '[\"b.jpg\", \"A cat .\"]'",
                 id="jsonl-not-an-object"),
    pytest.param("captions.jsonl", '{"image": "a.jpg", "text": "A dog ."}\n', "line 1: missing key(s) caption "
                 "(expected the keys image,caption[,split])", id="jsonl-missing-key"),
    pytest.param("captions.jsonl", '{"image": "a.jpg", "caption": "A dog .", "splt": "val"}\n', "line 1: unknown "
                 "key(s) splt (expected the keys image,caption[,split])", id="jsonl-unknown-key"),
    pytest.param("captions.jsonl", '{"image": "a.jpg", "caption": ["A dog ."]}\n', "line 1: caption must be text,"
                 ' got ["A dog ."]', id="jsonl-caption-not-text"),
    pytest.param("captions.jsonl", '{"image": "a.jpg", "caption": ""}\n', "line 1: empty caption of a.jpg; write "
                 "one or remove the line", id="jsonl-empty-caption"),
    pytest.param("captions.jsonl", '{"image": "a.jpg", "caption": "A dog .", "split": "train"}\n{"image": "b.jpg",'
                 ' "caption": "A cat ."}\n', "line 2: line 1 gives a split and line 2 none; give every line a "
                 "split, or none", id="jsonl-split-on-some-lines"),
    pytest.param("captions.jsonl", '{"image": "a.jpg", "caption": "A dog .", "split": "val"}\n{"image": "a.jpg",'
                 ' "caption": "A pup .", "split": "train"}\n', "line 2: a.jpg is in the train split here and in the "
                 "val split on line 1; give each image one split", id="jsonl-two-splits"),
    pytest.param("captions.jsonl", '{"image": "sub/a.jpg", "caption": "A dog ."}\n', "line 1: image file sub/a.jpg"
                 " not found in {root}", id="jsonl-image-missing"),
]  # fmt: skip


@pytest.mark.parametrize(("filename", "content", "message"), BAD_FILES)
def test_a_bad_row_is_one_error_naming_file_and_line(tmp_path, filename, content, message):
    for seed, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        write_jpeg(tmp_path / name, seed, (16, 12))
    (tmp_path / filename).write_text(content, encoding="utf-8")
    with pytest.raises(CaptioningError) as caught:
        read_dataset("folder", tmp_path)
    assert str(caught.value) == f"{tmp_path.resolve() / filename}: {message.replace('{root}', str(tmp_path.resolve()))}"


def test_no_captions_file_says_what_to_put_there(tmp_path):
    write_folder(tmp_path)
    with pytest.raises(CaptioningError, match=r"expected one of captions.csv, captions.jsonl .*docs/real_data.md"):
        read_dataset("folder", tmp_path)


STAGES = ("data", "vocab", "features", "embeddings", "train", "finetune", "evaluate")  # dvc.yaml's order


@pytest.mark.slow
def test_pipeline_runs_on_a_folder_of_own_photos(tmp_path: Path, monkeypatch, capsys):
    """captions.jsonl in a subfolder of data.root, no split: the data stage's table, then every stage after it."""
    photos = tmp_path / "photos"
    captions = write_folder(photos / "mine")
    write_jsonl(photos / "mine/captions.jsonl", [{"image": n, "caption": c} for n, c in caption_rows(captions)])
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_project(repo)
    write_params(repo, {**TINY, "data": {"dataset": "folder", "root": str(photos)}, "evaluate": {"figures": 1}})
    for stage in STAGES:
        result = run_stage_here(repo, stage, monkeypatch, capsys)
        assert result.returncode == 0, f"{stage}:\n{result.stderr}"

    table = read_table(repo / "data/dataset.json", photos)
    assert {r.image: r.captions for r in table.images} == captions
    assert {r.split for r in table.images} == {"train", "val", "test"}
    assert json.loads((repo / "data/dataset.json").read_text())["image_root"] == "${data.root}/mine"
    manifest = (repo / "data/images/MANIFEST.txt").read_text(encoding="utf-8")
    assert manifest == "folder: 12 images are read in place from mine/ under data.root (params.yaml)\n"
    predictions = json.loads((repo / "reports/predictions.json").read_text())
    assert {p["image"] for p in predictions} == {r.image for r in table.images if r.split == "test"}
    assert {"bleu_4", "cider"} <= set(json.loads((repo / "metrics/evaluate.json").read_text()))
