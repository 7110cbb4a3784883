"""The caption table: one record per image (file, split, reference captions), shared by every stage.

Stored as `data/dataset.json`:
    {"dataset": "scenes", "image_root": "images",
     "images": [{"image": "scene_000000.png", "split": "train",
                 "captions": ["a red circle ...", ...],
                 "tokens": [["a", "red", ...], ...]   # optional, e.g. Karpathy tokens
                 "objects": [...],                    # optional, generated scenes only
                 "sha256": "9f86d0..."}]}             # optional: the file's content, real datasets only
`image_root` is relative to the table's folder unless absolute. A real dataset is read in place, from a folder
that differs between machines: its `image_root` starts with `${data.root}` (e.g. `${data.root}/flickr30k-images`),
which whoever reads the images replaces by their own data.root. The table then names no folder of the machine
that made it, and identifies each image by name and content: the same images in another folder give the same
table, byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from captioning.errors import CaptioningError
from captioning.io import read_json, write_json
from captioning.text.tokenizer import tokenize

SPLITS = ("train", "val", "test")
DATA_ROOT = "${data.root}"  # in a stored image_root: the folder params.yaml's data.root names where the table is read
_DRIVE = re.compile(r"^[A-Za-z]:")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
    sha256: str | None = None  # the image file's content (real datasets; None: not found when the table was made)

    def tokenized(self) -> list[list[str]]:
        """The captions as words: the dataset's own tokens when it ships them, else our tokenizer."""
        return self.tokens if self.tokens is not None else [tokenize(c) for c in self.captions]

    def to_json(self) -> dict:
        record = {"image": self.image, "split": self.split, "captions": self.captions}
        if self.tokens is not None:
            record["tokens"] = self.tokens
        if self.objects is not None:
            record["objects"] = self.objects
        if self.sha256 is not None:
            record["sha256"] = self.sha256
        return record


@dataclass
class CaptionTable:
    dataset: str
    image_root: Path | None  # None: under data.root, and the table was read without it (see read_table)
    images: list[ImageRecord] = field(default_factory=list)
    data_root: Path | None = None  # set when image_root lies under data.root (a real dataset read in place)

    def split(self, name: str) -> list[ImageRecord]:
        return [record for record in self.images if record.split == name]

    def indices(self, name: str) -> list[int]:
        return [index for index, record in enumerate(self.images) if record.split == name]

    def image_path(self, record: ImageRecord) -> Path:
        if self.image_root is None:
            raise CaptioningError(
                f"the {self.dataset} images are read in place under data.root, and this table was read without it"
            )
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
    if table.data_root is not None:
        inside = Path(os.path.relpath(table.image_root, table.data_root)).as_posix()
        root = DATA_ROOT if inside == "." else f"{DATA_ROOT}/{inside}"
    else:
        root = Path(table.image_root)
        root = str(root if root.is_absolute() else Path(os.path.relpath(root, path.parent)))
    write_json(
        path,
        {"dataset": table.dataset, "image_root": root, "images": [r.to_json() for r in table.images]},
        indent=None,
    )


def read_table(path: str | Path, data_root: str | Path | None = None) -> CaptionTable:
    """Read and check the caption table; every problem names the row.

    `data_root` (params.yaml's data.root) locates the images of a table made from a real dataset; the stages
    that only read captions leave it out, and such a table's image_root is then None.
    """
    path = Path(path)
    document = read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise CaptioningError(f"{path}: expected an object with an 'images' list")
    stored = str(document.get("image_root", "images"))
    base = None
    if stored == DATA_ROOT or stored.startswith(DATA_ROOT + "/"):
        if data_root is not None and str(data_root):
            base = Path(data_root).expanduser().resolve()
        root = base / stored[len(DATA_ROOT) :].lstrip("/") if base is not None else None
    else:
        root = Path(stored) if Path(stored).is_absolute() else path.parent / stored
    table = CaptionTable(dataset=str(document.get("dataset", "")), image_root=root, data_root=base)
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
        sha256 = raw.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and _SHA256.match(sha256)):
            raise CaptioningError(f"{where} ({raw['image']}): 'sha256' must be 64 lowercase hex digits")
        record = ImageRecord(name, raw["split"], captions, raw.get("tokens"), raw.get("objects"), sha256)
        table.images.append(record)
    return table


def file_sha256(path: Path) -> str | None:
    """The file's content as a sha256 hex digest; None when there is no such file."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return digest.hexdigest()


def image_contents(table: CaptionTable, records: list[ImageRecord], threads: int = 4) -> list[str | None]:
    """file_sha256 of each record's image file under the table's image root, in `records`' order."""
    with ThreadPoolExecutor(threads) as pool:  # hashlib releases the GIL: the reads overlap
        return list(pool.map(lambda record: file_sha256(table.image_path(record)), records))


def differing_images(table: CaptionTable, records: list[ImageRecord]) -> list[str]:
    """The images of `records` whose file under the table's image root is not the content the table records
    (another file of that name, e.g. from another copy of the dataset): their names, in `records`' order. Images
    the table records no content for, and files now missing, are left to the readers (data.on_bad_image)."""
    recorded = [record for record in records if record.sha256 is not None]
    found = image_contents(table, recorded)
    return [record.image for record, sha256 in zip(recorded, found) if sha256 not in (None, record.sha256)]


def check_contents(table: CaptionTable, records: list[ImageRecord], source: str | Path) -> None:
    """Stop, naming them, when image files under the table's image root are not the ones the table records."""
    differing = differing_images(table, records)
    if differing:
        shown = ", ".join(differing[:5]) + (", ..." if len(differing) > 5 else "")
        raise CaptioningError(
            f"{source}: {len(differing)} images in {table.image_root} are not the files this table was made from "
            f"({shown}): another copy of the dataset, or changed since; rerun the data stage (dvc repro) to record them"
        )


def changed_contents(previous: CaptionTable, table: CaptionTable) -> list[str]:
    """The images both tables list whose recorded content differs (one of them may record none)."""
    before = {record.image: record.sha256 for record in previous.images}
    return [r.image for r in table.images if r.image in before and before[r.image] != r.sha256]
