"""The caption table: one record per image (file, split, reference captions), shared by every stage.

Stored as `data/dataset.json`:
    {"dataset": "scenes", "image_root": "images",
     "images": [{"image": "scene_000000.png", "split": "train",
                 "captions": ["a red circle ...", ...],
                 "tokens": [["a", "red", ...], ...]   # optional, e.g. Karpathy tokens
                 "objects": [...]}]}                   # optional, generated scenes only
`image_root` is relative to the table's folder unless absolute.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from captioning.errors import CaptioningError
from captioning.io import read_json, write_json
from captioning.text.tokenizer import tokenize

SPLITS = ("train", "val", "test")
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_image_name(name: str, where: str) -> str:
    """The image name in its one spelling (see normal_image_name) if it stays inside the image root.

    Otherwise a CaptioningError naming `where`.
    """
    parts = re.split(r"[/\\]", name)
    if not name or "\0" in name or name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
        raise CaptioningError(
            f"{where}: image name {name!r} must be a relative path inside the image folder (no absolute path, no '..')"
        )
    normal = normal_image_name(name)
    if not normal:
        raise CaptioningError(f"{where}: image name {name!r} names the image folder itself, not a file in it")
    return normal


def normal_image_name(name: str) -> str:
    """One spelling per file: `./1000.jpg`, `a//b.jpg` and `a/./b.jpg` are `1000.jpg` and `a/b.jpg`.

    Duplicates and an image listed in two splits are found on this spelling. Case is kept: the file
    systems the datasets live on here are case-sensitive, so `A.jpg` and `a.jpg` are two files.
    """
    return "/".join(part for part in name.split("/") if part not in ("", "."))


@dataclass
class ImageRecord:
    image: str
    split: str
    captions: list[str]
    tokens: list[list[str]] | None = None
    objects: list[dict] | None = None

    def tokenized(self) -> list[list[str]]:
        """The captions as words: the dataset's own tokens when it ships them, else our tokenizer."""
        return self.tokens if self.tokens is not None else [tokenize(c) for c in self.captions]

    def to_json(self) -> dict:
        record = {"image": self.image, "split": self.split, "captions": self.captions}
        if self.tokens is not None:
            record["tokens"] = self.tokens
        if self.objects is not None:
            record["objects"] = self.objects
        return record


@dataclass
class CaptionTable:
    dataset: str
    image_root: Path
    images: list[ImageRecord] = field(default_factory=list)

    def split(self, name: str) -> list[ImageRecord]:
        return [record for record in self.images if record.split == name]

    def indices(self, name: str) -> list[int]:
        return [index for index, record in enumerate(self.images) if record.split == name]

    def image_path(self, record: ImageRecord) -> Path:
        return self.image_root / record.image

    def tokenized_captions(self, split: str) -> tuple[list[list[str]], list[int]]:
        """The split's captions as words, in table order, and for each the index of its image in the table."""
        captions, image_index = [], []
        for index, record in enumerate(self.images):
            if record.split == split:
                tokenized = record.tokenized()
                captions.extend(tokenized)
                image_index.extend([index] * len(tokenized))
        return captions, image_index


def check_splits(table: CaptionTable, source: str | Path, skipped: set[str] = frozenset()) -> None:
    """Every split must keep at least one image, or training, validation or the test cannot run.

    `skipped`: images the features stage could not read (data.on_bad_image: skip). Checked by the data
    stage on the table and at the start of training on what the features stage kept.
    """
    for split in SPLITS:
        names = [record.image for record in table.split(split)]
        if not names:
            raise CaptioningError(
                f"{source}: no {split} images: the split file or the captions give none, and every split needs "
                "at least one (train to learn, val to choose the epoch, test to score)"
            )
        if all(name in skipped for name in names):
            raise CaptioningError(
                f"{source}: no {split} images left: the features stage skipped all {len(names)} of them (missing or "
                f"unreadable, e.g. {names[0]}; see its warnings); restore them and rerun the features stage"
            )


def write_table(path: str | Path, table: CaptionTable) -> None:
    path = Path(path)
    root = Path(table.image_root)
    if not root.is_absolute():
        root = Path(os.path.relpath(root, path.parent))
    write_json(
        path,
        {"dataset": table.dataset, "image_root": str(root), "images": [r.to_json() for r in table.images]},
        indent=None,
    )


def read_table(path: str | Path) -> CaptionTable:
    """Read and check the caption table; every problem names the row."""
    path = Path(path)
    document = read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise CaptioningError(f"{path}: expected an object with an 'images' list")
    root = Path(document.get("image_root", "images"))
    if not root.is_absolute():
        root = path.parent / root
    table = CaptionTable(dataset=str(document.get("dataset", "")), image_root=root)
    seen = set()
    for row, raw in enumerate(document["images"]):
        where = f"{path}: images[{row}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("image"), str):
            raise CaptioningError(f"{where}: expected an object with an 'image' file name")
        name = check_image_name(raw["image"], where)
        if raw.get("split") not in SPLITS:
            raise CaptioningError(f"{where} ({raw['image']}): split must be one of {', '.join(SPLITS)}")
        captions = raw.get("captions")
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise CaptioningError(f"{where} ({raw['image']}): 'captions' must be a non-empty list of strings")
        if name in seen:
            spelled = "" if name == raw["image"] else f" (as {raw['image']})"
            raise CaptioningError(f"{where}: image {name}{spelled} is listed twice")
        seen.add(name)
        table.images.append(ImageRecord(name, raw["split"], captions, raw.get("tokens"), raw.get("objects")))
    return table
