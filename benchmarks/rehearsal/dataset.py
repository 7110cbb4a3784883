"""The rehearsal's dataset: generated scenes written as Flickr30k, in Karpathy's format.

N generated scenes (captioning/data/scenes.py) as JPEG, quality 90, at Flickr30k's usual sizes 500x375 and
375x500, and Karpathy's dataset_flickr30k.json with the 29,000 / 1,014 / 1,000 split scaled to N, five
captions per image with `tokens` and `raw`. Each caption ends with a short tail of words drawn from a Zipf
law over 20,000 made-up words, so that vocab.min_word_freq 5 leaves a vocabulary of Flickr30k's size
(~7,000 words at full size) and the output layer costs what it would.
"""

from __future__ import annotations

import bisect
import json
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.rehearsal.measure import disk_bytes
from captioning.data.scenes import captions_for, draw_scene, sample_objects
from captioning.text.tokenizer import tokenize

FLICKR30K = {"images": 31_014, "train": 29_000, "val": 1_014, "test": 1_000}
SIZES = ((500, 375), (375, 500))  # Flickr30k's usual landscape and portrait sizes
TAIL_WORDS = 20_000  # made-up words of the caption tails, Zipf-distributed
DATASET_MARK = "COMPLETE"


def split_sizes(images: int) -> dict[str, int]:
    """Flickr30k's 29,000 / 1,014 / 1,000 split, scaled to `images` (val and test at least 1 each)."""
    val = max(1, round(images * FLICKR30K["val"] / FLICKR30K["images"]))
    test = max(1, round(images * FLICKR30K["test"] / FLICKR30K["images"]))
    return {"train": images - val - test, "val": val, "test": test}


def tail_word(rank: int) -> str:
    """The made-up word of this Zipf rank: letters only, so every tokenizer keeps it whole."""
    letters = ""
    rank += 26 * 26  # at least three letters: never 'a' or another real word of the scenes
    while rank:
        rank, digit = divmod(rank, 26)
        letters = chr(ord("a") + digit) + letters
    return "z" + letters


def _tail_cumulative() -> list[float]:
    total, cumulative = 0.0, []
    for rank in range(1, TAIL_WORDS + 1):
        total += 1.0 / rank
        cumulative.append(total)
    return [c / total for c in cumulative]


def write_image(task: tuple[int, str, Path, list]) -> dict:
    """One scene as a Flickr30k-sized JPEG and its Karpathy entry (sentences without ids)."""
    index, split, folder, cumulative = task
    rng = random.Random(f"scale-{index}")
    width, height = SIZES[index % 2]
    side = max(width, height)
    objects = sample_objects(rng, side, 1, 1 if rng.random() < 0.6 else 2)  # mean caption ~13 words
    image = draw_scene(objects, side, rng).resize((width, height))
    name = f"{1_000_000_000 + index}.jpg"
    image.save(folder / name, quality=90)
    sentences = []
    for caption in captions_for(objects, 5, rng):
        tail = [tail_word(bisect.bisect_left(cumulative, rng.random())) for _ in range(rng.randint(1, 3))]
        words = caption.split() + tail
        raw = " ".join(words).capitalize() + "."  # Flickr30k's raw: punctuation attached to the last word
        sentences.append({"tokens": tokenize(raw), "raw": raw})
    return {"filename": name, "split": split, "sentences": sentences}


def write_dataset(root: Path, images: int, jobs: int) -> dict:
    """dataset_flickr30k.json and flickr30k-images/ under root; reused when already complete."""
    if (root / DATASET_MARK).is_file():
        return json.loads((root / DATASET_MARK).read_text())
    shutil.rmtree(root, ignore_errors=True)
    folder = root / "flickr30k-images"
    folder.mkdir(parents=True)
    sizes = split_sizes(images)
    splits = ["train"] * sizes["train"] + ["val"] * sizes["val"] + ["test"] * sizes["test"]
    cumulative = _tail_cumulative()
    start = time.perf_counter()
    tasks = [(i, split, folder, cumulative) for i, split in enumerate(splits)]
    with ProcessPoolExecutor(jobs) as pool:
        entries = list(pool.map(write_image, tasks, chunksize=64))
    sentence_id = 0
    for image_id, entry in enumerate(entries):
        entry["imgid"] = image_id
        entry["sentids"] = []
        for sentence in entry["sentences"]:
            sentence.update(imgid=image_id, sentid=sentence_id)
            entry["sentids"].append(sentence_id)
            sentence_id += 1
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    info = {"images": images, "captions": sentence_id, "seconds": time.perf_counter() - start, **sizes}
    info["bytes"] = disk_bytes(root)
    (root / DATASET_MARK).write_text(json.dumps(info))
    return info
