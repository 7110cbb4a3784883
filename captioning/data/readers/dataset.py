"""A real dataset (Flickr30k, Flickr8k, COCO, or your own photos) from its files into the caption table.

`read_dataset(dataset, root, format, seed)` finds the annotation file under `root` (in it or up to
three folders below), reads it, gives every image a split and finds the image folder.

Auto-detection (`format="auto"`) tries the dataset's formats in this order and takes the first whose
file is found: karpathy (`dataset_<dataset>.json`), then for Flickr30k hf_csv
(`flickr_annotations_30k.csv`), kaggle_csv (`results.csv`), token (`results_20130124.token`); for
Flickr8k flickr8k_token (`Flickr8k.token.txt`), flickr8k_csv (`captions.txt`); for your own photos
(`folder`) csv (`captions.csv`) or jsonl (`captions.jsonl`), and both in one folder is an error.

Splits: the file's own split (karpathy, hf_csv); else the Karpathy split from `dataset_<dataset>.json`
or, for Flickr8k, the `Flickr_8k.*Images.txt` files when found under `root` (images they leave out are
dropped); else a seeded split with the Karpathy proportions and a logged warning (see split.py).

Images: the folder under `root` that holds the listed images; for `folder`, the folder of the captions
file, where every listed image must be (folder.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

from captioning.data.readers.common import SEARCH_DEPTH, Captions, find_file, find_image_root, folders
from captioning.data.readers.flickr8k import SPLIT_FILES, read_captions_csv, read_split_files
from captioning.data.readers.flickr30k import read_hf_csv, read_results_csv, read_token_file
from captioning.data.readers.folder import FOLDER_FILES, read_folder_csv, read_folder_jsonl
from captioning.data.readers.karpathy import karpathy_split, read_karpathy
from captioning.data.readers.split import apply_split
from captioning.data.table import CaptionTable, ImageRecord, changed_contents, image_contents, read_table
from captioning.errors import CaptioningError
from captioning.io import atomic_path
from captioning.params import DATASET_FORMATS

log = logging.getLogger(__name__)
FORMAT_FILES = {
    "hf_csv": ("flickr_annotations_30k.csv",),
    "kaggle_csv": ("results.csv",),
    "token": ("results_20130124.token",),
    "flickr8k_token": ("Flickr8k.token.txt",),
    "flickr8k_csv": ("captions.txt",),
    **FOLDER_FILES,
}
READERS = {
    "hf_csv": read_hf_csv,
    "kaggle_csv": read_results_csv,
    "token": read_token_file,
    "flickr8k_token": read_token_file,
    "flickr8k_csv": read_captions_csv,
    "csv": read_folder_csv,
    "jsonl": read_folder_jsonl,
}


def annotation_files(dataset: str, format: str) -> tuple[str, ...]:
    """The file name(s) a format is read from."""
    return (f"dataset_{dataset}.json",) if format == "karpathy" else FORMAT_FILES[format]


def _how_to_get(dataset: str, root: Path) -> str:
    if dataset == "folder":
        return "see docs/real_data.md, Your own photos"
    return f"python -m captioning download {dataset} {root}"


def detect_format(dataset: str, root: Path, search: list[Path] | None = None) -> tuple[str, Path]:
    """(format, annotation file) of the first of the dataset's formats whose file is under `root`."""
    search = folders(root) if search is None else search
    for format in DATASET_FORMATS[dataset]:
        path = find_file(root, annotation_files(dataset, format), search)
        if path is not None:
            if dataset == "folder":
                _one_captions_file(path.parent)
            return format, path
    expected = ", ".join(name for format in DATASET_FORMATS[dataset] for name in annotation_files(dataset, format))
    raise CaptioningError(
        f"data.root={root}: no {dataset} captions found; expected one of {expected} in it or up to "
        f"{SEARCH_DEPTH} folders below ({_how_to_get(dataset, root)})"
    )


def _one_captions_file(folder: Path) -> None:
    """Your own photos have one captions file: two side by side would leave the other one's captions unread."""
    found = [name for names in FOLDER_FILES.values() for name in names if (folder / name).is_file()]
    if len(found) > 1:
        raise CaptioningError(
            f"{folder}: both {' and '.join(found)}; keep one, or name it with data.format (csv or jsonl)"
        )


def _known_split(dataset: str, root: Path, search: list[Path]) -> tuple[dict[str, str] | None, str]:
    """A Karpathy split file under `root` for captions that come without a split, if there is one."""
    path = find_file(root, annotation_files(dataset, "karpathy"), search)
    if path is not None:
        return karpathy_split(path, dataset), str(path)
    if dataset == "flickr8k":
        path = find_file(root, (SPLIT_FILES["train"],), search)
        if path is not None:
            return read_split_files(path.parent), f"{path.parent}/Flickr_8k.*Images.txt"
    return None, "a seeded split"


def read_captions(dataset: str, format: str, path: Path) -> Captions:
    return read_karpathy(path, dataset) if format == "karpathy" else READERS[format](path)


def read_dataset(dataset: str, root: str | Path, format: str = "auto", seed: int = 0) -> CaptionTable:
    """The caption table of a downloaded dataset: its image folder under `root` (data.root) and each image's
    content (sha256), so that the written table names no folder of this machine (see table.py)."""
    root = Path(root).expanduser().resolve()
    if dataset not in DATASET_FORMATS:
        raise CaptioningError(
            f"params.yaml: data.dataset={dataset} has no reader (one of {', '.join(DATASET_FORMATS)})"
        )
    if root.is_file():
        raise CaptioningError(
            f"data.root={root} is a file, not a folder: probably the downloaded archive; unpack it and set "
            "data.root to the folder it gives"
        )
    if not root.is_dir():
        raise CaptioningError(
            f"data.root={root}: folder not found; "
            + ("put your images and their captions file there" if dataset == "folder" else f"download {dataset} there")
            + f" ({_how_to_get(dataset, root)})"
        )
    search = folders(root)
    if format == "auto":
        format, path = detect_format(dataset, root, search)
    elif format in DATASET_FORMATS[dataset]:
        path = find_file(root, annotation_files(dataset, format), search)
        if path is None:
            raise CaptioningError(
                f"data.root={root}: data.format={format} needs {' or '.join(annotation_files(dataset, format))} "
                f"in it or up to {SEARCH_DEPTH} folders below"
            )
    else:
        raise CaptioningError(
            f"params.yaml: data.format={format} is not a {dataset} format (auto, {', '.join(DATASET_FORMATS[dataset])})"
        )
    log.info("reading %s captions from %s (format %s)", dataset, path, format)
    captions = read_captions(dataset, format, path)
    captions.report()
    if any(record.split is None for record in captions.images.values()):
        known, source = (None, "a seeded split") if dataset == "folder" else _known_split(dataset, root, search)
        apply_split(captions, dataset, known, source, seed)
    records = list(captions.images.values())
    if dataset == "folder":
        image_root = path.parent  # the reader has checked that every listed image is there
    else:
        image_root = find_image_root(root, [record.image for record in records], search)
    table = CaptionTable(
        dataset, image_root, [ImageRecord(r.image, r.split, r.captions, r.tokens) for r in records], data_root=root
    )
    for record, sha256 in zip(table.images, image_contents(table, table.images)):
        record.sha256 = sha256  # None for the missing images find_image_root has warned of
    log.info(
        "%s: %d images (%d train, %d val, %d test), %d captions, images in %s",
        dataset,
        len(records),
        *(len(table.split(s)) for s in ("train", "val", "test")),
        sum(len(r.captions) for r in records),
        image_root,
    )
    return table


def write_manifest(folder: Path, table: CaptionTable) -> None:
    """A real dataset's images are read in place: `folder`, the data stage's image output, holds only
    MANIFEST.txt, which says how many and from where, in words that are the same on every machine."""
    inside = table.image_root.relative_to(table.data_root).as_posix()
    where = "data.root" if inside == "." else f"{inside}/ under data.root"
    with atomic_path(folder) as temporary:
        temporary.mkdir()
        manifest = f"{table.dataset}: {len(table.images)} images are read in place from {where} (params.yaml)\n"
        (temporary / "MANIFEST.txt").write_text(manifest, encoding="utf-8")


def report_changes(previous: Path, table: CaptionTable) -> None:
    """Name the images whose content differs from the caption table at `previous`, the one this table replaces
    (dvc.yaml keeps it for this: persist). A teammate who pulled a run and points data.root at their own copy
    of the dataset learns which of their files are not the ones the run was made from."""
    try:
        before = read_table(previous) if previous.is_file() else None
    except CaptioningError:
        before = None
    if before is None or before.dataset != table.dataset:
        return
    changed = changed_contents(before, table)
    if changed:
        shown = ", ".join(changed[:10]) + (", ..." if len(changed) > 10 else "")
        log.warning(
            "%d images differ from the previous caption table %s (other content, or missing): %s; the stages "
            "after data run again",
            len(changed),
            previous,
            shown,
        )
    else:
        log.info("every image the previous caption table %s lists has the same content here", previous)
