"""Dataset readers (captioning/data/readers/) on miniature copies of the real downloads."""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from fixtures_real import (
    LONG_CAPTION,
    THOUSAND_WORDS,
    image_bytes,
    karpathy,
    make_coco,
    make_flickr8k,
    make_flickr30k,
    write_jpeg,
)
from repo_params import repo_document, repo_section

from captioning.data.readers.dataset import detect_format, read_dataset
from captioning.data.readers.split import KARPATHY_SIZES, seeded_split, split_sizes
from captioning.data.table import check_image_name, read_table, write_table
from captioning.errors import CaptioningError, ParamError
from captioning.params import parse_section

REPO = Path(__file__).resolve().parents[1]
DOWNLOADS = {  # every real format, as the data stage finds it in its download folder
    "flickr30k-karpathy": ("flickr30k", lambda root: make_flickr30k(root, layout="karpathy")),
    "flickr30k-kaggle-csv": ("flickr30k", lambda root: make_flickr30k(root, layout="kaggle", karpathy_json=True)),
    "flickr30k-token": ("flickr30k", lambda root: make_flickr30k(root, layout="token")),
    "flickr30k-hf-csv": ("flickr30k", lambda root: make_flickr30k(root, layout="hf")),
    "flickr8k-token": ("flickr8k", lambda root: make_flickr8k(root, layout="token")),
    "flickr8k-kaggle-csv": ("flickr8k", lambda root: make_flickr8k(root, layout="kaggle")),
    "coco-karpathy": ("coco", make_coco),
}


def by_name(table):
    return {record.image: record for record in table.images}


def captions_of(table):
    return {record.image: record.captions for record in table.images}


@pytest.mark.parametrize(
    ("layout", "format"), [("kaggle", "kaggle_csv"), ("token", "token"), ("hf", "hf_csv"), ("karpathy", "karpathy")]
)
def test_flickr30k_layouts_read_back_every_caption(tmp_path, layout, format):
    mini = make_flickr30k(tmp_path / "flickr30k", layout)
    assert detect_format("flickr30k", mini.root) == (format, mini.annotation)
    table = read_dataset("flickr30k", mini.root)
    assert table.dataset == "flickr30k"
    assert table.image_root == mini.image_dir.resolve() and table.image_root.is_absolute()
    assert captions_of(table) == mini.captions  # quirks kept: non-ASCII, 2 and 80 words, duplicates
    assert all(table.image_path(record).is_file() for record in table.images)
    if layout in ("hf", "karpathy"):
        assert {r.image: r.split for r in table.images} == mini.splits
    if layout == "karpathy":
        assert {r.image: r.tokens for r in table.images} == mini.tokens
    else:
        assert all(record.tokens is None for record in table.images)


def test_quirky_captions_are_kept_in_full(tmp_path):
    table = read_dataset("flickr30k", make_flickr30k(tmp_path, "token").root)
    captions = [caption for record in table.images for caption in record.captions]
    assert "Un garçon joue près du café à São Paulo ." in captions
    assert "dogs racing" in captions
    assert LONG_CAPTION in captions and len(LONG_CAPTION.split()) == 81
    duplicated = table.images[3].captions
    assert duplicated[0] == duplicated[1] and len(duplicated) == 5
    # and they survive the caption table file
    write_table(tmp_path / "dataset.json", table)
    again = read_table(tmp_path / "dataset.json", tmp_path)
    assert captions_of(again) == captions_of(table) and again.image_root == table.image_root


def test_kaggle_malformed_row_is_repaired(tmp_path, caplog):
    mini = make_flickr30k(tmp_path, "kaggle")
    lines = mini.annotation.read_text(encoding="utf-8").splitlines()
    assert any(line.startswith("2199200615.jpg| 4   ") for line in lines)  # the second '|' is missing
    with caplog.at_level(logging.WARNING):
        table = read_dataset("flickr30k", mini.root)
    record = by_name(table)["2199200615.jpg"]
    assert len(record.captions) == 5 and record.captions[4] == mini.captions["2199200615.jpg"][4]
    assert "repaired" in caplog.text and "2199200615.jpg" in caplog.text


def test_the_real_malformed_row(tmp_path):
    root = tmp_path / "flickr30k_images"
    write_jpeg(root / "flickr30k_images" / "2199200615.jpg", 0)
    for name in ("a.jpg", "b.jpg"):
        write_jpeg(root / "flickr30k_images" / name, 1)
    (root / "results.csv").write_text(
        "image_name| comment_number| comment\n"
        "2199200615.jpg| 3| A dog in the grass .\n"
        "2199200615.jpg| 4   A dog runs across the grass .\n"
        "a.jpg| 0| A cat .\nb.jpg| 0| A bird .\n",
        encoding="utf-8",
    )
    table = read_dataset("flickr30k", tmp_path)
    assert by_name(table)["2199200615.jpg"].captions == ["A dog in the grass .", "A dog runs across the grass ."]


def test_karpathy_json_beside_results_csv_gives_the_split(tmp_path):
    mini = make_flickr30k(tmp_path, "kaggle", karpathy_json=True)
    table = read_dataset("flickr30k", mini.root, "kaggle_csv")
    assert {r.image: r.split for r in table.images} == mini.splits
    assert captions_of(table) == mini.captions and all(r.tokens is None for r in table.images)
    assert detect_format("flickr30k", mini.root)[0] == "karpathy"  # auto prefers the file with tokens


def test_images_outside_the_split_file_are_dropped(tmp_path, caplog):
    mini = make_flickr30k(tmp_path, "token", karpathy_json=True)
    document = json.loads((tmp_path / "dataset_flickr30k.json").read_text(encoding="utf-8"))
    left_out = document["images"].pop(0)["filename"]
    (tmp_path / "dataset_flickr30k.json").write_text(json.dumps(document), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        table = read_dataset("flickr30k", mini.root, "token")
    assert left_out not in by_name(table) and len(table.images) == len(mini.captions) - 1
    assert "dropped 1 images" in caplog.text


def test_seeded_split_without_a_split_file(tmp_path, caplog):
    mini = make_flickr30k(tmp_path, "token", count=40)
    with caplog.at_level(logging.WARNING):
        table = read_dataset("flickr30k", mini.root, seed=3)
    assert "seeded random split" in caplog.text
    counts = tuple(len(table.split(s)) for s in ("train", "val", "test"))
    assert counts == split_sizes(40, KARPATHY_SIZES["flickr30k"]) == (38, 1, 1)
    again = read_dataset("flickr30k", mini.root, seed=3)
    assert [r.split for r in again.images] == [r.split for r in table.images]


def test_split_sizes_follow_the_karpathy_proportions():
    sizes = KARPATHY_SIZES["flickr30k"]
    assert split_sizes(31_014, sizes) == (29_000, 1_014, 1_000)
    assert split_sizes(31_783, sizes) == (29_769, 1_014, 1_000)  # every other image trains
    assert split_sizes(3_101, sizes) == (2_900, 101, 100)
    assert split_sizes(3, sizes) == (1, 1, 1)
    with pytest.raises(CaptioningError, match="at least 3 images"):
        split_sizes(2, sizes)
    names = [f"{i}.jpg" for i in range(100)]
    split = seeded_split(names, sizes, seed=0)
    assert split == seeded_split(list(reversed(names)), sizes, seed=0)  # order of the file does not matter
    assert split != seeded_split(names, sizes, seed=1)


def test_flickr8k_token_files(tmp_path, caplog):
    mini = make_flickr8k(tmp_path, "token")
    with caplog.at_level(logging.WARNING):
        table = read_dataset("flickr8k", mini.root)
    assert "2258277193_586949ec62.jpg.1" in caplog.text and "not an image file" in caplog.text
    assert table.image_root == (tmp_path / "Flicker8k_Dataset").resolve()
    assert {r.image: r.split for r in table.images} == mini.splits  # the unlisted image is dropped
    assert all(captions_of(table)[name] == mini.captions[name] for name in mini.splits)


def test_flickr8k_kaggle_csv_keeps_quoted_commas(tmp_path):
    mini = make_flickr8k(tmp_path, "kaggle")
    assert 'A man, a woman and a dog stand by a sign that reads "open" .' in mini.annotation.read_text(
        encoding="utf-8"
    ).replace('""', '"')
    table = read_dataset("flickr8k", mini.root)
    assert captions_of(table) == mini.captions
    assert table.image_root == (tmp_path / "Images").resolve()
    assert {r.split for r in table.images} == {"train", "val", "test"}


def test_coco_karpathy_json(tmp_path):
    mini = make_coco(tmp_path)
    table = read_dataset("coco", mini.root)
    records = by_name(table)
    assert captions_of(table) == mini.captions and {r.image: r.split for r in table.images} == mini.splits
    assert "train2014/COCO_train2014_000000000100.jpg" in records
    assert len(records["train2014/COCO_train2014_000000000100.jpg"].captions) == 7
    assert len(records["train2014/COCO_train2014_000000000137.jpg"].captions) == 6
    assert {r.image: r.tokens for r in table.images} == mini.tokens
    assert all(table.image_path(r).is_file() for r in table.images)


def test_empty_captions_are_skipped_and_counted(tmp_path, caplog):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        write_jpeg(tmp_path / "flickr30k-images" / name, 0)
    (tmp_path / "results_20130124.token").write_text(
        "a.jpg#0\tA cat .\na.jpg#1\t   \nb.jpg#0\tA dog .\nc.jpg#0\tA  bird\t sings .\nd.jpg#0\t\n\n", encoding="utf-8"
    )
    with caplog.at_level(logging.WARNING):
        table = read_dataset("flickr30k", tmp_path)
    assert captions_of(table) == {"a.jpg": ["A cat ."], "b.jpg": ["A dog ."], "c.jpg": ["A bird sings ."]}
    assert "skipped 2 empty captions" in caplog.text and "dropped 1 images without any caption" in caplog.text


@pytest.mark.parametrize("name", ["../secret.jpg", "/etc/secret.jpg", "images/../../secret.jpg", "C:\\x.jpg", ".."])
def test_names_that_leave_the_image_folder_are_refused(tmp_path, name):
    write_jpeg(tmp_path / "flickr30k-images" / "a.jpg", 0)
    (tmp_path / "results_20130124.token").write_text(f"a.jpg#0\tA cat .\n{name}#0\tA dog .\n", encoding="utf-8")
    with pytest.raises(
        CaptioningError, match=r"results_20130124\.token: line 2: image name .* inside the image folder"
    ):
        read_dataset("flickr30k", tmp_path)


def test_read_table_refuses_names_that_leave_the_image_root(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": [{"image": "../x.jpg", "split": "train", "captions": ["a"]}]}))
    with pytest.raises(CaptioningError, match=r"dataset\.json: images\[0\]: image name '../x.jpg'"):
        read_table(path)
    assert check_image_name("train2014/x.jpg", "here") == "train2014/x.jpg"
    assert check_image_name("a..b.jpg", "here") == "a..b.jpg"


def test_missing_files_name_what_was_expected(tmp_path):
    with pytest.raises(CaptioningError, match=r"folder not found"):
        read_dataset("flickr30k", tmp_path / "nowhere")
    with pytest.raises(CaptioningError) as caught:
        read_dataset("flickr30k", tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "\n" not in message
    for name in ("dataset_flickr30k.json", "results.csv", "results_20130124.token", "flickr_annotations_30k.csv"):
        assert name in message
    with pytest.raises(CaptioningError, match=r"data.format=hf_csv needs flickr_annotations_30k.csv"):
        read_dataset("flickr30k", tmp_path, "hf_csv")
    with pytest.raises(CaptioningError, match=r"not a flickr8k format"):
        read_dataset("flickr8k", tmp_path, "kaggle_csv")


def test_missing_images_are_an_error(tmp_path):
    (tmp_path / "results_20130124.token").write_text("a.jpg#0\tA cat .\n", encoding="utf-8")
    with pytest.raises(CaptioningError, match=r"token: a seeded train/val/test split needs at least 3 images, got 1"):
        read_dataset("flickr30k", tmp_path)
    (tmp_path / "results_20130124.token").write_text("a.jpg#0\tA .\nb.jpg#0\tB .\nc.jpg#0\tC .\n", encoding="utf-8")
    with pytest.raises(CaptioningError, match=r"no folder below it holds the images .* a\.jpg"):
        read_dataset("flickr30k", tmp_path)


@pytest.mark.parametrize(
    ("filename", "text", "match"),
    [
        ("results_20130124.token", "a.jpg#0\tA cat .\na.jpg A dog .\n", r"token: line 2: expected 'NAME.jpg#N<TAB>"),
        ("results.csv", "image_name,comment_number,comment\n", r"results.csv: line 1: expected the header"),
        ("results.csv", "image_name| comment_number| comment\na.jpg A dog\n", r"results.csv: line 2: expected"),
        (
            "flickr_annotations_30k.csv",
            "raw,sentids,split,filename,img_id\nnot json,[],train,a.jpg,0\n",
            r"flickr_annotations_30k.csv: line 2: column raw must be a JSON list",
        ),
        (
            "flickr_annotations_30k.csv",
            'raw,sentids,split,filename,img_id\n"[""A cat""]",[],dev,a.jpg,0\n',
            r"flickr_annotations_30k.csv: line 2: split 'dev'",
        ),
        ("flickr_annotations_30k.csv", "raw,filename\n", r"line 1: missing column\(s\) split \(expected raw,split,"),
        ("dataset_flickr30k.json", '{"images": [], "dataset": "coco"}', r"Karpathy file of coco"),
    ],
)
def test_malformed_files_name_the_row(tmp_path, filename, text, match):
    (tmp_path / filename).write_text(text, encoding="utf-8")
    with pytest.raises(CaptioningError, match=match):
        read_dataset("flickr30k", tmp_path)


def test_non_utf8_file_is_a_clear_error(tmp_path):
    (tmp_path / "results_20130124.token").write_bytes("a.jpg#0\tUn garçon .\n".encode("latin-1"))
    with pytest.raises(CaptioningError, match=r"not UTF-8"):
        read_dataset("flickr30k", tmp_path)


def test_data_params_check_the_format():
    params = parse_section(
        "data", repo_section("data", dataset="flickr30k", root="downloads/f30k", format="kaggle_csv")
    )
    assert params.format == "kaggle_csv"
    with pytest.raises(ParamError, match=r"data.format must be one of auto, karpathy, flickr8k_token"):
        parse_section("data", repo_section("data", dataset="flickr8k", root="x", format="kaggle_csv"))
    with pytest.raises(ParamError, match=r"data.root must be the folder holding the flickr30k download"):
        parse_section("data", repo_section("data", dataset="flickr30k"))


def run_data_stage(work: Path, monkeypatch, data: dict) -> None:
    """stages/data.py's main() in `work`, in this process, with params.yaml's data section updated by `data`."""
    work.mkdir(exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(repo_document({"data": data})))
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["stages/data.py", "--images", "data/images", "--table", "data/dataset.json"])
    spec = importlib.util.spec_from_file_location("data_stage", REPO / "stages" / "data.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    stage.main()


def test_data_stage_reads_a_real_dataset_in_place(tmp_path, monkeypatch):
    mini = make_flickr30k(tmp_path / "downloads" / "flickr30k", "hf")
    work = tmp_path / "project"
    run_data_stage(work, monkeypatch, {"dataset": "flickr30k", "root": "../downloads/flickr30k"})
    table = read_table(work / "data" / "dataset.json", "../downloads/flickr30k")
    assert table.image_root == mini.image_dir.resolve() and captions_of(table) == mini.captions
    assert sorted(p.name for p in (work / "data" / "images").iterdir()) == ["MANIFEST.txt"]
    manifest = (work / "data" / "images" / "MANIFEST.txt").read_text(encoding="utf-8")
    assert manifest == "flickr30k: 12 images are read in place from flickr30k-images/ under data.root (params.yaml)\n"


def test_the_same_images_in_another_folder_give_the_same_table(tmp_path, monkeypatch, caplog):
    """The table names images by name and content, not by folder (a teammate's copy of a pulled run's dataset);
    rerun over its previous table, the stage names the images whose content differs."""
    mini = make_flickr30k(tmp_path / "mine", "karpathy")
    run_data_stage(tmp_path / "a", monkeypatch, {"dataset": "flickr30k", "root": str(mini.root)})
    shared = (tmp_path / "a" / "data" / "dataset.json").read_bytes()
    assert str(tmp_path).encode() not in shared  # no folder of this machine
    theirs = tmp_path / "elsewhere" / "f30k"
    theirs.parent.mkdir()
    mini.root.rename(theirs)
    run_data_stage(tmp_path / "b", monkeypatch, {"dataset": "flickr30k", "root": str(theirs)})
    assert (tmp_path / "b" / "data" / "dataset.json").read_bytes() == shared

    changed = theirs / mini.image_dir.relative_to(mini.root) / "1000092795.jpg"
    write_jpeg(changed, seed=99)
    with caplog.at_level(logging.INFO):
        run_data_stage(tmp_path / "b", monkeypatch, {"dataset": "flickr30k", "root": str(theirs)})
    named = [r.getMessage() for r in caplog.records if "differ from the previous caption table" in r.getMessage()]
    assert len(named) == 1 and named[0].startswith("1 images differ") and "1000092795.jpg" in named[0]
    assert (tmp_path / "b" / "data" / "dataset.json").read_bytes() != shared


@pytest.mark.parametrize("name", DOWNLOADS)
def test_data_stage_writes_the_table_of_every_real_download(tmp_path, monkeypatch, name):
    """The table the later stages read, from each format (test_real_pipeline.py runs them all on COCO's)."""
    dataset, make = DOWNLOADS[name]
    mini = make(tmp_path / "download")
    run_data_stage(tmp_path / "project", monkeypatch, {"dataset": dataset, "root": str(mini.root)})
    table = read_table(tmp_path / "project" / "data" / "dataset.json", mini.root)
    images = captions_of(table)
    assert set(images) <= set(mini.captions) and len(images) >= len(mini.captions) - 1  # split files may drop one
    assert all(captions == mini.captions[image] for image, captions in images.items())  # full, untruncated
    assert {record.split for record in table.images} == {"train", "val", "test"}
    assert all(table.image_path(record).is_file() for record in table.images)


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
KARPATHY_TWO_SPLITS = karpathy([("a.jpg", "train"), ("b.jpg", "val"), ("c.jpg", "test"), ("a.jpg", "test")])

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
def test_caption_files(tmp_path: Path, caplog, captioning_warnings, dataset: str, files: dict, outcome: Fails | Reads):
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
    skips = [m for m in captioning_warnings() if "seeded random split" not in m]
    assert skips == [w.format(**expand) for w in outcome.warnings]
