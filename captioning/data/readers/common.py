"""What every dataset reader shares: gathering captions by image, and finding files under data.root.

Caption policy (the same for every format):
- whitespace is normalised (runs of spaces, tabs and newlines become one space, ends stripped);
  the text is otherwise kept exactly, non-ASCII included, whatever its length (training truncation
  happens in the vocab stage, scoring uses the full references);
- empty or whitespace-only captions, and captions without any word (only punctuation, emoji or
  invisible characters: they would train as `<start> <end>` and be scored as empty references), are
  skipped and counted in one logged warning each; an image without any caption (an empty Karpathy
  `sentences` list, a `raw` of `[]`) is dropped and counted;
- duplicate captions of one image are kept, as the datasets ship them, so scores match published ones;
- an image listed more than once gathers the captions of all its entries; listed in two splits, it is an error;
- image names are kept in one spelling (`./a.jpg` is `a.jpg`, see table.normal_image_name);
- an entry whose name does not end in an extension Pillow opens (.jpg, .png, .webp, .bmp, .tif, .gif,
  ...; Flickr8k's `2258277193_586949ec62.jpg.1` does not) is skipped and logged; the file itself is then
  decoded by its content, whatever its extension says; a name that tries to leave the image folder is an error.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from captioning.data.images import IMAGE_EXTENSIONS
from captioning.data.table import SPLITS, check_image_name
from captioning.errors import CaptioningError
from captioning.text.tokenizer import tokenize

log = logging.getLogger(__name__)
SEARCH_DEPTH = 3  # annotation files and image folders are looked for this many folders below data.root


@dataclass
class RawImage:
    image: str
    captions: list[str] = field(default_factory=list)
    tokens: list[list[str]] | None = None
    split: str | None = None


class Captions:
    """The captions of one annotation file, by image, in the order the file lists them."""

    def __init__(self, source: Path):
        self.source = source
        self.images: dict[str, RawImage] = {}
        self.not_images: list[str] = []
        self.empty = 0
        self.wordless: list[str] = []

    def add_image(self, name: str, where: str, split: str | None = None) -> RawImage | None:
        """The image's record (created with no captions yet), or None for a name that is not an image file."""
        name = check_image_name(name, where)
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            if name not in self.not_images:
                self.not_images.append(name)
            return None
        if split is not None and split not in SPLITS:
            raise CaptioningError(f"{where}: split {split!r} of {name} is not one of {', '.join(SPLITS)}")
        record = self.images.setdefault(name, RawImage(name))
        if split is not None:
            if record.split not in (None, split):
                raise CaptioningError(
                    f"{where}: {name} is listed again, in the {split} split; it is already in the {record.split} split"
                )
            record.split = split
        return record

    def add(
        self, name: str, caption: str, where: str, tokens: list[str] | None = None, split: str | None = None
    ) -> None:
        record = self.add_image(name, where, split)
        if record is None:
            return
        text = " ".join(caption.split())
        if not text:
            self.empty += 1
            return
        if not tokenize(text) or (tokens is not None and not tokens):
            self.wordless.append(text)
            return
        record.captions.append(text)
        if tokens is not None:
            record.tokens = (record.tokens or []) + [list(tokens)]

    def report(self) -> None:
        """Log what was skipped, once per file."""
        if self.not_images:
            log.warning(
                "%s: skipped %d entries whose name is not an image file (e.g. %s)",
                self.source,
                len(self.not_images),
                self.not_images[0],
            )
        if self.empty:
            log.warning("%s: skipped %d empty captions", self.source, self.empty)
        if self.wordless:
            log.warning(
                "%s: skipped %d captions without any word (only punctuation, symbols or invisible characters, e.g. %r)",
                self.source,
                len(self.wordless),
                self.wordless[0],
            )
        for record in self.images.values():
            if record.tokens is not None and len(record.tokens) != len(record.captions):
                record.tokens = None  # some sentences without tokens: our tokenizer for all of them
        without = [name for name, record in self.images.items() if not record.captions]
        for name in without:
            del self.images[name]
        if without:
            log.warning("%s: dropped %d images without any caption (e.g. %s)", self.source, len(without), without[0])
        if not self.images:
            raise CaptioningError(f"{self.source}: no captioned images found")


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line with its newline) of a UTF-8 text file; a byte-order mark is tolerated.

    Lines are decoded one by one, so a non-UTF-8 byte is reported on its own line.
    """
    try:
        with open(path, "rb") as file:
            for number, raw in enumerate(file, start=1):
                try:
                    yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as error:
                    raise CaptioningError(
                        f"{path}: line {number}: not UTF-8 text (byte {error.start + 1}: {error.reason}); "
                        "save it as UTF-8"
                    ) from None
    except OSError as error:
        raise CaptioningError(f"{path}: cannot read ({error.strerror})") from None


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of a UTF-8 text file (a byte-order mark is tolerated)."""
    for number, line in _decoded_lines(path):
        yield number, line.rstrip("\r\n")


def csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a real CSV file (quoted fields may hold commas) with the `required` columns.

    A row with more or fewer fields than the header is an error naming its line (an unquoted comma
    would otherwise cut a caption short without a word).
    """
    line = 1
    try:
        reader = csv.DictReader(text for _, text in _decoded_lines(path))
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in required if name not in columns]
        if missing:
            raise CaptioningError(
                f"{path}: line 1: missing column(s) {', '.join(missing)} (expected {','.join(required)})"
            )
        reader.fieldnames = columns
        for row in reader:
            line = reader.line_num
            fields = len(columns) + len(row.get(None, ())) - sum(value is None for value in row.values())
            if fields != len(columns):
                raise CaptioningError(
                    f"{path}: line {line}: expected {len(columns)} fields ({','.join(columns)}), got {fields}; "
                    "quote fields that hold commas"
                )
            yield line, {key: value for key, value in row.items() if key is not None}
    except csv.Error as error:
        raise CaptioningError(f"{path}: near line {line + 1}: not valid CSV ({error})") from None


def folders(root: Path, depth: int = SEARCH_DEPTH) -> list[Path]:
    """`root` and the folders below it, breadth first, sorted by name, hidden ones left out."""
    found, level = [root], [root]
    for _ in range(depth):
        next_level = []
        for folder in level:
            try:
                with os.scandir(folder) as entries:
                    subfolders = sorted(
                        Path(e.path) for e in entries if e.is_dir() and not e.name.startswith((".", "__MACOSX"))
                    )
            except OSError:
                continue
            next_level.extend(subfolders)
        found.extend(next_level)
        level = next_level
    return found


def find_file(root: Path, names: tuple[str, ...], search: list[Path] | None = None) -> Path | None:
    """The first of `names` found in `root` or a folder below it (shallowest first), else None."""
    for folder in search if search is not None else folders(root):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def find_image_root(root: Path, names: list[str], search: list[Path] | None = None) -> Path:
    """The folder under `root` that holds the listed images (scored on a sample of them)."""
    step = max(1, len(names) // 20)
    sample = names[::step][:20]
    best, best_hits = None, 0
    for folder in search if search is not None else folders(root):
        hits = sum((folder / name).is_file() for name in sample)
        if hits > best_hits:
            best, best_hits = folder, hits
    if best is None:
        raise CaptioningError(
            f"data.root={root}: no folder below it holds the images named in the captions (e.g. {names[0]}); "
            "extract the image archive there"
        )
    missing = [name for name in names if not (best / name).is_file()]
    if missing:
        log.warning(
            "%s: %d of %d images named in the captions are missing (e.g. %s); data.on_bad_image decides what "
            "the features stage does with them",
            best,
            len(missing),
            len(names),
            missing[0],
        )
    return best
