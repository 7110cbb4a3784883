"""captioning/data/table.py: the caption table round-trips and every problem names its row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captioning.data.table import (
    CaptionTable,
    ImageRecord,
    changed_contents,
    check_contents,
    check_image_name,
    file_sha256,
    read_table,
    write_table,
)
from captioning.errors import CaptioningError


def small_table(image_root: Path) -> CaptionTable:
    return CaptionTable(
        "scenes",
        image_root,
        [
            ImageRecord("a.png", "train", ["A red circle.", "a big red circle"], objects=[{"color": "red"}]),
            ImageRecord("sub/b.jpg", "val", ["two dogs"], tokens=[["two", "dogs"]]),
            ImageRecord("c.png", "test", ["a man's hat"]),
            ImageRecord("d.png", "train", ["x"]),
        ],
    )


def write_raw(path: Path, images: list, image_root: str = "images") -> Path:
    path.write_text(json.dumps({"dataset": "x", "image_root": image_root, "images": images}), encoding="utf-8")
    return path


def test_round_trip_keeps_every_record_and_the_image_root(tmp_path):
    table = small_table(tmp_path / "images")
    write_table(tmp_path / "dataset.json", table)
    read = read_table(tmp_path / "dataset.json")
    assert read.dataset == "scenes"
    assert read.image_root == tmp_path / "images"
    assert [r.to_json() for r in read.images] == [r.to_json() for r in table.images]
    assert read.images[1].tokens == [["two", "dogs"]] and read.images[0].tokens is None
    assert read.images[0].objects == [{"color": "red"}] and read.images[2].objects is None


def test_a_relative_image_root_is_stored_relative_to_the_table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_table(Path("data/dataset.json"), small_table(Path("data/images")))
    assert json.loads(Path("data/dataset.json").read_text())["image_root"] == "images"
    read = read_table(Path("data/dataset.json"))
    assert read.image_root == Path("data/images")
    assert read.image_path(read.images[1]) == Path("data/images/sub/b.jpg")


def real_dataset(root: Path) -> CaptionTable:
    """A table of images read in place under data.root = `root`, each with its content recorded."""
    (root / "photos" / "sub").mkdir(parents=True)
    table = CaptionTable("flickr30k", root / "photos", small_table(root).images, data_root=root)
    for index, record in enumerate(table.images):
        table.image_path(record).write_bytes(bytes([index]) * 100)
        record.sha256 = file_sha256(table.image_path(record))
    return table


def test_a_real_dataset_is_stored_under_data_root_and_read_from_anothers(tmp_path):
    write_table(tmp_path / "dataset.json", real_dataset(tmp_path / "mine"))
    stored = json.loads((tmp_path / "dataset.json").read_text())
    assert stored["image_root"] == "${data.root}/photos" and str(tmp_path) not in json.dumps(stored)
    assert stored["images"][0]["sha256"] == file_sha256(tmp_path / "mine" / "photos" / "a.png")

    theirs = read_table(tmp_path / "dataset.json", tmp_path / "theirs")
    assert theirs.image_root == tmp_path / "theirs" / "photos" and theirs.data_root == tmp_path / "theirs"
    assert theirs.image_path(theirs.images[1]) == tmp_path / "theirs" / "photos" / "sub" / "b.jpg"
    write_table(tmp_path / "again.json", theirs)  # written back from another folder: the same bytes
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "dataset.json").read_bytes()

    captions_only = read_table(tmp_path / "dataset.json")  # the stages that never open an image
    assert captions_only.image_root is None and captions_only.images[2].captions == ["a man's hat"]
    with pytest.raises(CaptioningError, match=r"flickr30k images are read in place under data.root"):
        captions_only.image_path(captions_only.images[0])


def test_images_whose_content_differs_from_the_table_are_named(tmp_path):
    table = real_dataset(tmp_path)
    check_contents(table, table.images, "dataset.json")  # the files it was made from
    (tmp_path / "photos" / "sub" / "b.jpg").write_bytes(b"another photo")
    (tmp_path / "photos" / "d.png").unlink()  # missing: left to data.on_bad_image, not a content error
    with pytest.raises(
        CaptioningError,
        match=r"^dataset.json: 1 images in .*photos are not the files this table was made from \(sub/b.jpg\)",
    ):
        check_contents(table, table.images, "dataset.json")
    check_contents(table, table.split("test"), "dataset.json")  # only the records asked about are read

    changed = real_dataset(tmp_path / "copy")
    changed.images[1].sha256 = file_sha256(tmp_path / "photos" / "sub" / "b.jpg")
    changed.images[3].sha256 = None
    assert changed_contents(table, changed) == ["sub/b.jpg", "d.png"]
    assert changed_contents(table, real_dataset(tmp_path / "same")) == []


def test_a_malformed_content_hash_names_the_row(tmp_path):
    path = write_raw(
        tmp_path / "dataset.json", [{"image": "a.png", "split": "train", "captions": ["x"], "sha256": "abc"}]
    )
    with pytest.raises(CaptioningError, match=r"images\[0\] \(a.png\): 'sha256' must be 64 lowercase hex digits"):
        read_table(path)


def test_splits_and_indices():
    table = small_table(Path("images"))
    assert [r.image for r in table.split("train")] == ["a.png", "d.png"]
    assert table.indices("train") == [0, 3]
    assert table.indices("val") == [1] and table.indices("test") == [2]


def test_tokenized_prefers_the_dataset_tokens_else_our_tokenizer():
    table = small_table(Path("images"))
    assert table.images[0].tokenized() == [["a", "red", "circle"], ["a", "big", "red", "circle"]]
    assert table.images[1].tokenized() == [["two", "dogs"]]
    assert table.images[2].tokenized() == [["a", "man's", "hat"]]


@pytest.mark.parametrize("name", ["a.png", "sub/dir/b.jpg", "x..y.png", "sub\\c.png"])
def test_check_image_name_accepts_relative_names(name):
    assert check_image_name(name, "here") == name


@pytest.mark.parametrize(
    "name", ["", "/etc/passwd", "\\server\\x.png", "C:/x.png", "../x.png", "a/../../x.png", "a\\..\\x"]
)
def test_check_image_name_refuses_names_outside_the_root(name):
    with pytest.raises(CaptioningError, match="^where: image name"):
        check_image_name(name, "where")


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        ([{"image": "a.png", "split": "dev", "captions": ["x"]}], r"images\[0\] \(a\.png\): split must be one of"),
        ([{"image": "a.png", "split": "train", "captions": []}], r"images\[0\] \(a\.png\): 'captions' must be"),
        ([{"image": "a.png", "split": "train", "captions": [3]}], r"images\[0\] \(a\.png\): 'captions' must be"),
        ([{"split": "train", "captions": ["x"]}], r"images\[0\]: expected an object with an 'image'"),
        ([{"image": "../a.png", "split": "train", "captions": ["x"]}], r"images\[0\]: image name '\.\./a\.png'"),
        (
            [
                {"image": "a.png", "split": "train", "captions": ["x"]},
                {"image": "a.png", "split": "val", "captions": ["y"]},
            ],
            r"images\[1\]: image a\.png is listed twice",
        ),
    ],
)
def test_read_table_errors_name_file_and_row(tmp_path, images, expected):
    path = write_raw(tmp_path / "dataset.json", images)
    with pytest.raises(CaptioningError, match=expected) as caught:
        read_table(path)
    assert str(caught.value).startswith(str(path))


def test_read_table_refuses_a_document_without_images(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('{"dataset": "x"}', encoding="utf-8")
    with pytest.raises(CaptioningError, match="expected an object with an 'images' list"):
        read_table(path)
    with pytest.raises(CaptioningError, match="file not found"):
        read_table(tmp_path / "missing.json")
