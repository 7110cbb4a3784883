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
    """The image name if it stays inside the image root, else a CaptioningError naming `where`."""
    parts = re.split(r"[/\\]", name)
    if not name or "\0" in name or name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
        raise CaptioningError(
            f"{where}: image name {name!r} must be a relative path inside the image folder (no absolute path, no '..')"
        )
    return name


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
        check_image_name(raw["image"], where)
        if raw.get("split") not in SPLITS:
            raise CaptioningError(f"{where} ({raw['image']}): split must be one of {', '.join(SPLITS)}")
        captions = raw.get("captions")
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise CaptioningError(f"{where} ({raw['image']}): 'captions' must be a non-empty list of strings")
        if raw["image"] in seen:
            raise CaptioningError(f"{where}: image {raw['image']} is listed twice")
        seen.add(raw["image"])
        table.images.append(ImageRecord(raw["image"], raw["split"], captions, raw.get("tokens"), raw.get("objects")))
    return table
