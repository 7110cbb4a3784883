"""Karpathy's split files: dataset_flickr30k.json, dataset_flickr8k.json, dataset_coco.json.

Each image has `filename`, `split` (train | val | test, and restval in COCO, which joins train) and
`sentences` with `raw` text and `tokens`; the tokens are kept so the vocabulary uses them. COCO's
`filepath` (train2014 / val2014) becomes part of the image name: `train2014/COCO_train2014_....jpg`.
Every sentence is kept, so COCO images with 6 or 7 captions keep them all.
"""

from __future__ import annotations

from pathlib import Path

from captioning.data.readers.common import Captions
from captioning.errors import CaptioningError
from captioning.io import read_json

SPLIT_NAMES = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def _images(path: Path, dataset: str) -> list:
    document = read_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise CaptioningError(f"{path}: expected a Karpathy split file, an object with an 'images' list")
    named = document.get("dataset")
    if named not in (None, dataset):
        raise CaptioningError(f"{path}: is the Karpathy file of {named}, not of data.dataset={dataset}")
    return document["images"]


def _name_and_split(path: Path, row: int, image: object) -> tuple[str, str]:
    where = f"{path}: images[{row}]"
    if not isinstance(image, dict) or not isinstance(image.get("filename"), str):
        raise CaptioningError(f"{where}: expected an object with a 'filename'")
    split = SPLIT_NAMES.get(image.get("split"))
    if split is None:
        raise CaptioningError(f"{where} ({image['filename']}): unknown split {image.get('split')!r}")
    folder = image.get("filepath")
    return (f"{folder}/{image['filename']}" if folder else image["filename"]), split


def read_karpathy(path: Path, dataset: str) -> Captions:
    """Captions, tokens and splits of a Karpathy split file."""
    captions = Captions(path)
    for row, image in enumerate(_images(path, dataset)):
        name, split = _name_and_split(path, row, image)
        where = f"{path}: images[{row}]"
        sentences = image.get("sentences")
        if not isinstance(sentences, list):
            raise CaptioningError(f"{where} ({name}): expected a 'sentences' list")
        captions.add_image(name, where, split)  # an empty list still counts the image as dropped
        for number, sentence in enumerate(sentences):
            if not isinstance(sentence, dict) or not isinstance(sentence.get("raw"), str):
                raise CaptioningError(f"{where}.sentences[{number}] ({name}): expected an object with a 'raw' text")
            tokens = sentence.get("tokens")
            if tokens is not None and not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
                raise CaptioningError(f"{where}.sentences[{number}] ({name}): 'tokens' must be a list of strings")
            captions.add(name, sentence["raw"], where, tokens=tokens, split=split)
    return captions


def karpathy_split(path: Path, dataset: str) -> dict[str, str]:
    """{image name: split} from a Karpathy split file, for captions read from another file."""
    splits: dict[str, str] = {}
    for row, image in enumerate(_images(path, dataset)):
        name, split = _name_and_split(path, row, image)
        if splits.setdefault(name, split) != split:
            raise CaptioningError(
                f"{path}: images[{row}]: {name} is listed again, in the {split} split; it is already in the "
                f"{splits[name]} split"
            )
    return splits
