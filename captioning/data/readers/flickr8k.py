"""Flickr8k caption and split files.

- Official: `Flickr8k.token.txt` (`NAME.jpg#N<TAB>caption`, read by flickr30k.read_token_file; its bogus
  `2258277193_586949ec62.jpg.1` entry is skipped because the name is not an image file) and the
  Karpathy split in `Flickr_8k.trainImages.txt`, `Flickr_8k.devImages.txt`, `Flickr_8k.testImages.txt`.
- Kaggle: `captions.txt`, a real CSV with header `image,caption` (captions with commas are quoted).
"""

from __future__ import annotations

from pathlib import Path

from captioning.data.readers.common import Captions, csv_rows, numbered_lines
from captioning.errors import CaptioningError

SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}


def read_captions_csv(path: Path) -> Captions:
    """Kaggle's captions.txt."""
    captions = Captions(path)
    for number, row in csv_rows(path, ("image", "caption")):
        captions.add(row["image"].strip(), row["caption"], f"{path}: line {number}")
    return captions


def read_split_files(folder: Path) -> dict[str, str]:
    """{image name: split} from the three Flickr_8k.*Images.txt files in `folder`."""
    missing = [name for name in SPLIT_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise CaptioningError(f"{folder}: {', '.join(missing)} not found beside {SPLIT_FILES['train']}")
    splits: dict[str, str] = {}
    for split, filename in SPLIT_FILES.items():
        path = folder / filename
        for number, line in numbered_lines(path):
            name = line.strip()
            if not name:
                continue
            if splits.get(name, split) != split:
                raise CaptioningError(f"{path}: line {number}: {name} is already in the {splits[name]} split")
            splits[name] = split
    return splits
