"""Miniature copies of the real dataset downloads, in their exact file formats, with real JPEG files.

Each `make_*` function writes a dataset under `root` laid out as the download is, and returns a
MiniDataset with what a reader should give back (captions after whitespace normalisation, and the
split the files carry). The captions include the quirks of the real data: non-ASCII text, a 2-word
and an 80-word caption, a duplicated caption, commas and quotes; Kaggle's results.csv has its
malformed row and Flickr8k.token.txt its bogus `2258277193_586949ec62.jpg.1` entry.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

COLORS = ("black", "brown", "white", "red", "yellow", "spotted")
ANIMALS = ("dog", "cat", "horse", "child", "man", "woman")
ACTIONS = ("runs", "jumps", "sits", "plays", "sleeps")
PLACES = ("grass", "snow", "park", "street", "water", "yard")
LONG_CAPTION = " ".join(["A man in a blue shirt and a red hat walks along the old stone wall"] * 5) + " ."
assert len(LONG_CAPTION.split()) == 81  # 80 words and the final period
THOUSAND_WORDS = " ".join(f"word{i % 50}" for i in range(1000))


@dataclass
class MiniDataset:
    root: Path
    image_dir: Path
    annotation: Path
    captions: dict[str, list[str]]  # image name (relative to image_dir) -> captions, as read back
    splits: dict[str, str] = field(default_factory=dict)  # image name -> Karpathy split in the files
    tokens: dict[str, list[list[str]]] = field(default_factory=dict)  # Karpathy tokens, when written


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (80, 60), mode: str = "RGB") -> Path:
    """A small real JPEG: a colour gradient that differs with `seed`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    red, green, blue = (seed * 53) % 256, (seed * 97) % 256, (seed * 151) % 256
    image = Image.new("RGB", size)
    image.putdata([((red + x * 3) % 256, (green + y * 3) % 256, blue) for y in range(height) for x in range(width)])
    image.convert(mode).save(path, "JPEG", quality=85)
    return path


def image_bytes(format: str, color=(200, 30, 30), size: tuple[int, int] = (12, 10)) -> bytes:
    """A plain one-colour image encoded as `format` (PNG, WEBP, BMP, TIFF, ...)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format)
    return buffer.getvalue()


def flickr30k_files(annotation: str, content: str | bytes, images=("a.jpg", "b.jpg", "c.jpg")):
    """A flickr30k download under `f30k/`: one annotation file and tiny JPEGs in f30k/flickr30k-images."""

    def write(folder: Path) -> None:
        root = folder / "f30k"
        root.mkdir()
        data = content.encode("utf-8") if isinstance(content, str) else content
        (root / annotation).write_bytes(data)
        for seed, name in enumerate(images):
            write_jpeg(root / "flickr30k-images" / name, seed, (16, 12))

    return write


def karpathy(images: list[tuple[str, str]]) -> str:
    """A Karpathy split file of (filename, split) pairs, one sentence each."""
    return json.dumps(
        {
            "dataset": "flickr30k",
            "images": [
                {"filename": name, "split": split, "sentences": [{"raw": f"A {name} .", "tokens": ["a", name]}]}
                for name, split in images
            ],
        }
    )


def karpathy_tokens(caption: str) -> list[str]:
    """Lowercased words without punctuation, like the `tokens` of Karpathy's split files."""
    return re.findall(r"[^\W_]+", caption.lower())


def split_of(index: int) -> str:
    """Every sixth image goes to val and the next to test: 8/2/2 for 12 images."""
    return {4: "val", 5: "test"}.get(index % 6, "train")


def captions_for(index: int, count: int = 5) -> list[str]:
    """`count` captions of image `index`, with a quirk for images 0-3 and 6."""
    captions = [
        f"A {COLORS[(index + j) % 6]} {ANIMALS[(index + 2 * j) % 6]} {ACTIONS[(index + j) % 5]} "
        f"in the {PLACES[(index * 5 + j) % 6]} ."
        for j in range(count)
    ]
    if index == 0:
        captions[0] = "Un garçon joue près du café à São Paulo ."  # non-ASCII
    elif index == 1:
        captions[1] = "dogs racing"  # 2 words
    elif index == 2:
        captions[2] = LONG_CAPTION  # 80 words
    elif index == 3:
        captions[1] = captions[0]  # duplicate
    elif index == 6:
        captions[2] = 'A man, a woman and a dog stand by a sign that reads "open" .'  # comma and quotes
    return captions


def flickr30k_names(count: int) -> list[str]:
    names = [f"{1000092795 + 7919 * i}.jpg" for i in range(count)]
    if count > 4:
        names[4] = "2199200615.jpg"  # the image of Kaggle's malformed row
    return names


def flickr8k_names(count: int) -> list[str]:
    return [f"{1000268201 + 7919 * i}_{(0x693B08CB0E + 104729 * i) % 16**10:010x}.jpg" for i in range(count)]


def _write_images(image_dir: Path, names: list[str], image_size: tuple[int, int]) -> None:
    for index, name in enumerate(names):
        write_jpeg(image_dir / name, index, image_size, "L" if index == 7 else "RGB")  # one grayscale JPEG


def _karpathy_document(dataset: str, images: list[tuple[str, str, list[str], str | None]]) -> dict:
    """images: (filename, split, captions, filepath)."""
    entries, sentid = [], 0
    for imgid, (filename, split, captions, filepath) in enumerate(images):
        sentences = []
        for caption in captions:
            sentences.append({"tokens": karpathy_tokens(caption), "raw": caption, "imgid": imgid, "sentid": sentid})
            sentid += 1
        entry = {
            "sentids": [s["sentid"] for s in sentences],
            "imgid": imgid,
            "split": split,
            "filename": filename,
            "sentences": sentences,
        }
        if filepath is not None:
            entry["filepath"] = filepath
            entry["cocoid"] = int(filename.rsplit("_", 1)[1].split(".")[0])
        entries.append(entry)
    return {"images": entries, "dataset": dataset}


def write_karpathy_json(path: Path, dataset: str, captions: dict[str, list[str]], splits: dict[str, str]) -> Path:
    images = [(name, splits[name], caps, None) for name, caps in captions.items() if name in splits]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_karpathy_document(dataset, images)), encoding="utf-8")
    return path


def make_flickr30k(
    root: Path,
    layout: str = "kaggle",
    count: int = 12,
    karpathy_json: bool = False,
    image_size: tuple[int, int] = (80, 60),
) -> MiniDataset:
    """layout: kaggle (flickr30k_images/results.csv), token (results_20130124.token), hf
    (flickr_annotations_30k.csv) or karpathy (dataset_flickr30k.json); karpathy_json adds the split file."""
    names = flickr30k_names(count)
    captions = {name: captions_for(i) for i, name in enumerate(names)}
    splits = {name: split_of(i) for i, name in enumerate(names)}
    if layout == "kaggle":
        image_dir, annotation = (
            root / "flickr30k_images" / "flickr30k_images",
            root / "flickr30k_images" / "results.csv",
        )
        lines = ["image_name| comment_number| comment"]
        for name, caps in captions.items():
            for j, caption in enumerate(caps):
                lines.append(
                    f"{name}| {j}   {caption}" if name == "2199200615.jpg" and j == 4 else f"{name}| {j}| {caption}"
                )
        annotation.parent.mkdir(parents=True, exist_ok=True)
        annotation.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif layout == "token":
        image_dir, annotation = root / "flickr30k-images", root / "results_20130124.token"
        lines = [f"{name}#{j}\t{caption}" for name, caps in captions.items() for j, caption in enumerate(caps)]
        root.mkdir(parents=True, exist_ok=True)
        annotation.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif layout == "hf":
        image_dir, annotation = root / "flickr30k-images", root / "flickr_annotations_30k.csv"
        root.mkdir(parents=True, exist_ok=True)
        with open(annotation, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["raw", "sentids", "split", "filename", "img_id"])
            for i, (name, caps) in enumerate(captions.items()):
                sentids = list(range(5 * i, 5 * i + 5))
                writer.writerow([json.dumps(caps), json.dumps(sentids), splits[name], name, i])
    elif layout == "karpathy":
        image_dir = root / "flickr30k-images"
        annotation = write_karpathy_json(root / "dataset_flickr30k.json", "flickr30k", captions, splits)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    if karpathy_json and layout != "karpathy":
        write_karpathy_json(root / "dataset_flickr30k.json", "flickr30k", captions, splits)
    _write_images(image_dir, names, image_size)
    tokens = {n: [karpathy_tokens(c) for c in caps] for n, caps in captions.items()} if layout == "karpathy" else {}
    return MiniDataset(root, image_dir, annotation, captions, splits, tokens)


def make_flickr8k(
    root: Path, layout: str = "token", count: int = 12, image_size: tuple[int, int] = (80, 60)
) -> MiniDataset:
    """layout: token (Flickr8k_text/Flickr8k.token.txt + Flickr_8k.*Images.txt, images in Flicker8k_Dataset/,
    with the bogus entry and one image missing from the split files) or kaggle (captions.txt + Images/)."""
    names = flickr8k_names(count)
    captions = {name: captions_for(i) for i, name in enumerate(names)}
    splits = {name: split_of(i) for i, name in enumerate(names)}
    if layout == "token":
        image_dir, text_dir = root / "Flicker8k_Dataset", root / "Flickr8k_text"
        annotation = text_dir / "Flickr8k.token.txt"
        lines = [f"{name}#{j}\t{caption}" for name, caps in captions.items() for j, caption in enumerate(caps)]
        lines[7:7] = [f"2258277193_586949ec62.jpg.1#{j}\tA bogus entry with no image ." for j in range(5)]
        text_dir.mkdir(parents=True, exist_ok=True)
        annotation.write_text("\n".join(lines) + "\n", encoding="utf-8")
        del splits[names[-1]]  # like the real files, the split lists leave some images out
        for split, filename in (("train", "trainImages"), ("val", "devImages"), ("test", "testImages")):
            listed = [name for name, s in splits.items() if s == split]
            (text_dir / f"Flickr_8k.{filename}.txt").write_text("\n".join(listed) + "\n", encoding="utf-8")
    elif layout == "kaggle":
        image_dir, annotation = root / "Images", root / "captions.txt"
        root.mkdir(parents=True, exist_ok=True)
        with open(annotation, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["image", "caption"])
            writer.writerows([name, caption] for name, caps in captions.items() for caption in caps)
        splits = {}
    else:
        raise ValueError(f"unknown layout {layout!r}")
    _write_images(image_dir, names, image_size)
    return MiniDataset(root, image_dir, annotation, captions, splits)


def make_coco(root: Path, count: int = 12, image_size: tuple[int, int] = (80, 60)) -> MiniDataset:
    """dataset_coco.json with train2014/ and val2014/ image folders, a restval split and 6-7 captions."""
    images, captions, splits = [], {}, {}
    for i in range(count):
        folder = "val2014" if i % 3 == 2 else "train2014"
        split = {"val2014": ("val", "test", "restval")[i // 3 % 3], "train2014": "train"}[folder]
        filename = f"COCO_{folder}_{100 + 37 * i:012d}.jpg"
        caps = captions_for(i, count=7 if i == 0 else 6 if i == 1 else 5)
        images.append((filename, split, caps, folder))
        captions[f"{folder}/{filename}"] = caps
        splits[f"{folder}/{filename}"] = "train" if split == "restval" else split
    annotation = root / "dataset_coco.json"
    root.mkdir(parents=True, exist_ok=True)
    annotation.write_text(json.dumps(_karpathy_document("coco", images)), encoding="utf-8")
    _write_images(root, list(captions), image_size)
    tokens = {n: [karpathy_tokens(c) for c in caps] for n, caps in captions.items()}
    return MiniDataset(root, root, annotation, captions, splits, tokens)
