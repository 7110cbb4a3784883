"""Flickr30k caption files as people download them (see the guide's datasets.md).

- Kaggle `results.csv`: `image_name| comment_number| comment`, `|`-separated, not quoted. Its one
  malformed row, `2199200615.jpg| 4   A dog runs across the grass .` (second `|` missing), is repaired:
  a number followed by spaces at the start of the second field is the comment number.
- Official `results_20130124.token` (also Flickr8k's `Flickr8k.token.txt`): `NAME.jpg#N<TAB>caption`.
- Hugging Face `flickr_annotations_30k.csv`: a real CSV whose `raw` column is a JSON list of the
  captions and whose `split` column is the Karpathy split.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from captioning.data.readers.common import Captions, csv_rows, numbered_lines
from captioning.errors import CaptioningError

log = logging.getLogger(__name__)
KAGGLE_COLUMNS = ["image_name", "comment_number", "comment"]
_NUMBER_THEN_TEXT = re.compile(r"\s*(\d+)\s+(.*)")


def read_results_csv(path: Path) -> Captions:
    """Kaggle's results.csv, repairing rows whose second `|` is missing."""
    captions = Captions(path)
    for number, line in numbered_lines(path):
        where = f"{path}: line {number}"
        if number == 1:
            if [column.strip() for column in line.split("|")] != KAGGLE_COLUMNS:
                raise CaptioningError(
                    f"{where}: expected the header 'image_name| comment_number| comment', got {line!r}"
                )
            continue
        if not line.strip():
            continue
        fields = line.split("|", 2)
        if len(fields) == 2 and (match := _NUMBER_THEN_TEXT.fullmatch(fields[1])):
            fields = [fields[0], match.group(1), match.group(2)]
            log.warning(
                "%s: repaired a row without its second '|' (%s, comment %s)", where, fields[0].strip(), fields[1]
            )
        if len(fields) != 3:
            raise CaptioningError(f"{where}: expected 'image_name| comment_number| comment', got {line[:80]!r}")
        captions.add(fields[0].strip(), fields[2], where)
    return captions


def read_token_file(path: Path) -> Captions:
    """`NAME.jpg#N<TAB>caption` lines (Flickr30k's results_20130124.token, Flickr8k.token.txt)."""
    captions = Captions(path)
    for number, line in numbered_lines(path):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        key, tab, caption = line.partition("\t")
        name, hash_sign, _ = key.strip().rpartition("#")
        if not tab or not hash_sign:
            raise CaptioningError(f"{where}: expected 'NAME.jpg#N<TAB>caption', got {line[:80]!r}")
        captions.add(name, caption, where)
    return captions


def read_hf_csv(path: Path) -> Captions:
    """Hugging Face nlphuji/flickr30k's flickr_annotations_30k.csv, with its Karpathy split column."""
    captions = Captions(path)
    for number, row in csv_rows(path, ("raw", "split", "filename")):
        where = f"{path}: line {number}"
        try:
            raw = json.loads(row["raw"])
        except json.JSONDecodeError:
            raw = None
        if not isinstance(raw, list) or not all(isinstance(caption, str) for caption in raw):
            raise CaptioningError(f"{where}: column raw must be a JSON list of captions, got {row['raw'][:80]!r}")
        captions.add_image(row["filename"].strip(), where, row["split"].strip())  # `[]` still counts it as dropped
        for caption in raw:
            captions.add(row["filename"].strip(), caption, where, split=row["split"].strip())
    return captions
