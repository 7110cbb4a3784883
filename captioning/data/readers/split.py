"""Train/val/test splits: the dataset's Karpathy split when one is available, else a seeded one.

The seeded split keeps the Karpathy proportions. With N images and Karpathy sizes (train, val, test)
totalling T: val = min(val, round(N * val / T)) and test likewise, each at least 1; train gets every
other image. So the full Flickr30k (31,783 images) gets 1,014 val and 1,000 test and 29,769 train,
and a 310-image sample 10 val, 10 test and 290 train. The images are sorted by name before a
`random.Random(seed)` shuffle, so the split depends only on the names and the seed. Your own photos
(data.dataset: folder) get Flickr8k's proportions: 3/4 train, 1/8 val, 1/8 test (at most 1,000 each),
so 12 images are 8 / 2 / 2 and 100 images 76 / 12 / 12.
"""

from __future__ import annotations

import logging
import random

from captioning.data.readers.common import Captions
from captioning.errors import CaptioningError

log = logging.getLogger(__name__)
KARPATHY_SIZES = {
    "flickr30k": (29_000, 1_014, 1_000),
    "flickr8k": (6_000, 1_000, 1_000),
    "coco": (113_287, 5_000, 5_000),
}
OWN_SIZES = KARPATHY_SIZES["flickr8k"]  # data.dataset: folder: 3/4 train, 1/8 val, 1/8 test, at most 1,000 each


def split_sizes(count: int, sizes: tuple[int, int, int]) -> tuple[int, int, int]:
    """(train, val, test) for `count` images, in the proportions of `sizes` (see the module doc)."""
    if count < 3:
        raise CaptioningError(f"a train/val/test split needs at least 3 images, got {count}")
    total = sum(sizes)
    val = max(1, min(sizes[1], round(count * sizes[1] / total)))
    test = max(1, min(sizes[2], round(count * sizes[2] / total)))
    return count - val - test, val, test


def seeded_split(names: list[str], sizes: tuple[int, int, int], seed: int) -> dict[str, str]:
    """{name: split} for a random split of `names` with split_sizes(len(names), sizes)."""
    _, val, test = split_sizes(len(names), sizes)
    order = sorted(names)
    random.Random(seed).shuffle(order)
    splits = dict.fromkeys(order[val + test :], "train")
    splits.update(dict.fromkeys(order[:val], "val"))
    splits.update(dict.fromkeys(order[val : val + test], "test"))
    return splits


def apply_split(captions: Captions, dataset: str, known: dict[str, str] | None, source: str, seed: int) -> None:
    """Give every image a split: its own, else from `known` (a Karpathy split file), else a seeded one.

    Images that a split file leaves out are dropped, as in the published benchmarks.
    """
    unsplit = [name for name, record in captions.images.items() if record.split is None]
    if not unsplit:
        return
    if known is None:
        if len(unsplit) < 3:
            raise CaptioningError(
                f"{captions.source}: a seeded train/val/test split needs at least 3 images, got {len(unsplit)}"
            )
        known = seeded_split(unsplit, KARPATHY_SIZES.get(dataset, OWN_SIZES), seed)
        counts = [sum(split == s for split in known.values()) for s in ("train", "val", "test")]
        if dataset in KARPATHY_SIZES:
            missing, advice = "file", f"Put dataset_{dataset}.json under data.root for the Karpathy split"
        else:
            missing, advice = "column", "Add a split column (train, val or test) to choose it"
        log.warning(
            "%s: no split %s found; using a seeded random split (data.seed=%d): %d train, %d val, %d test. %s",
            captions.source,
            missing,
            seed,
            *counts,
            advice,
        )
    dropped = [name for name in unsplit if name not in known]
    for name in unsplit:
        if name in known:
            captions.images[name].split = known[name]
        else:
            del captions.images[name]
    if dropped:
        log.warning(
            "%s: dropped %d images that %s does not list (e.g. %s)", captions.source, len(dropped), source, dropped[0]
        )
    if not captions.images:
        raise CaptioningError(f"{captions.source}: none of its images is listed in {source}")
