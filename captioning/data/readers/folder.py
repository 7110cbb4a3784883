"""Your own photos (data.dataset: folder): a folder of images and one captions file beside them.

- `captions.csv`: a real CSV (quote captions that hold commas), header `image,caption` or
  `image,caption,split` (columns in any order);
- `captions.jsonl`: one JSON object per line, `{"image": "...", "caption": "...", "split": "..."}`,
  `split` optional.

One caption per line: an image with several captions is listed on several lines. Image names are
paths relative to the folder that holds the captions file (`dogs/rex.jpg`), which is the image root.
`split` is train, val or test, given on every line or on none; an image listed with two different
splits is an error naming both lines. Without a split every image gets the seeded split of split.py.

Own data is checked strictly: a bad header, a malformed JSON line, a missing column or key, an unknown
one, an empty caption, an unknown split and an image file that is not there are each an error naming
the file and line. What the other readers share (whitespace normalisation, captions without a word
skipped with a warning, names that are not image files skipped) is common.py's.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from captioning.data.images import IMAGE_EXTENSIONS
from captioning.data.readers.common import Captions, csv_rows, numbered_lines
from captioning.data.table import SPLITS, check_image_name
from captioning.errors import CaptioningError

FOLDER_FILES = {"csv": ("captions.csv",), "jsonl": ("captions.jsonl",)}
REQUIRED = ("image", "caption")
FIELDS = ("image", "caption", "split")
LAYOUT = "image,caption[,split]"


class _Lines:
    """The rows read so far: where each image was first listed and with which split, to name both lines of a
    contradiction, and whether the file gives splits at all."""

    def __init__(self, path: Path):
        self.path = path
        self.captions = Captions(path)
        self.first: dict[str, tuple[int, str | None]] = {}
        self.split_line: tuple[int, bool] | None = None  # (first line, whether it has a split)

    def add(self, number: int, image: object, caption: object, split: object) -> None:
        where = f"{self.path}: line {number}"
        for key, value in (("image", image), ("caption", caption), ("split", split)):
            if not isinstance(value, str) and (value is not None or key != "split"):
                raise CaptioningError(f"{where}: {key} must be text, got {json.dumps(value)[:80]}")
        if not image.strip():
            raise CaptioningError(f"{where}: empty image name; write the image's path relative to {self.path.parent}")
        name = check_image_name(image.strip(), where)
        if not caption.strip():
            raise CaptioningError(f"{where}: empty caption of {name}; write one or remove the line")
        if split is not None:
            split = split.strip()
            if split not in SPLITS:
                raise CaptioningError(
                    f"{where}: split {split!r} of {name} is not one of {', '.join(SPLITS)}; "
                    "or leave the split out everywhere for a seeded split"
                )
        self._check_split(where, number, name, split)
        self.captions.add(name, caption, where, split=split)

    def _check_split(self, where: str, number: int, name: str, split: str | None) -> None:
        if self.split_line is None:
            self.split_line = (number, split is not None)
        elif self.split_line[1] != (split is not None):
            has, lacks = (number, self.split_line[0]) if split is not None else (self.split_line[0], number)
            raise CaptioningError(
                f"{where}: line {has} gives a split and line {lacks} none; give every line a split, or none"
            )
        first = self.first.get(name)
        if first is None:
            if name.lower().endswith(IMAGE_EXTENSIONS) and not (self.path.parent / name).is_file():
                raise CaptioningError(f"{where}: image file {name} not found in {self.path.parent}")
            self.first[name] = (number, split)
        elif first[1] != split:
            raise CaptioningError(
                f"{where}: {name} is in the {split} split here and in the {first[1]} split on line {first[0]}; "
                "give each image one split"
            )


def _csv_header(path: Path) -> list[str]:
    line = next((text for _, text in numbered_lines(path)), "")
    columns = [column.strip() for column in next(csv.reader([line]), [])]
    problems = [
        ("missing column(s)", [name for name in REQUIRED if name not in columns]),
        ("unknown column(s)", [name for name in columns if name not in FIELDS]),
        ("repeated column(s)", sorted({name for name in columns if columns.count(name) > 1})),
    ]
    for problem, names in problems:
        if names:
            raise CaptioningError(f"{path}: line 1: {problem} {', '.join(names)} (expected the header {LAYOUT})")
    return columns


def read_folder_csv(path: Path) -> Captions:
    """captions.csv: `image,caption[,split]`, one caption a row."""
    lines = _Lines(path)
    has_split = "split" in _csv_header(path)
    for number, row in csv_rows(path, REQUIRED):
        lines.add(number, row["image"], row["caption"], row["split"] if has_split else None)
    return lines.captions


def _json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise CaptioningError(
                f"{where}: not valid JSON ({error.msg}, column {error.colno}); write one object a line, "
                '{"image": "a.jpg", "caption": "..."}'
            ) from None
        if not isinstance(value, dict):
            raise CaptioningError(f"{where}: expected a JSON object with keys {LAYOUT}, got {line.strip()[:80]!r}")
        missing = [key for key in REQUIRED if key not in value]
        unknown = [key for key in value if key not in FIELDS]
        if missing or unknown:
            problem = f"missing key(s) {', '.join(missing)}" if missing else f"unknown key(s) {', '.join(unknown)}"
            raise CaptioningError(f"{where}: {problem} (expected the keys {LAYOUT})")
        yield number, value


def read_folder_jsonl(path: Path) -> Captions:
    """captions.jsonl: one `{"image": ..., "caption": ..., "split": ...}` a line, split optional."""
    lines = _Lines(path)
    for number, value in _json_objects(path):
        lines.add(number, value["image"], value["caption"], value.get("split"))
    return lines.captions
