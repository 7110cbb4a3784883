"""The readable outputs of a test run: every caption beside its references, attention figures, a gallery."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from captioning.data.table import CaptionTable
from captioning.evaluation import EvaluationImages
from captioning.figures import write_attention_figures
from captioning.gallery import GalleryEntry, write_gallery
from captioning.io import write_json
from captioning.params import EvaluateParams

log = logging.getLogger(__name__)


def write_predictions(path: Path, images: EvaluationImages, captions: dict[str, str]) -> None:
    rows = [
        {"image": name, "caption": captions[name], "references": references}
        for name, references in zip(images.names, images.references)
    ]
    write_json(path, rows)


def write_figures_and_gallery(
    table: CaptionTable,
    images: EvaluationImages,
    captions: dict[str, str],
    weights: list[np.ndarray],
    metrics: dict[str, float],
    attention: Path,
    gallery: Path,
    params: EvaluateParams,
) -> None:
    """Attention figures of the first evaluate.figures images; a gallery of the first evaluate.gallery_images."""
    paths = [table.image_root / name for name in images.names]
    shown = images.names[: params.figures]
    written = write_attention_figures(attention, shown, paths, [captions[n] for n in shown], weights)
    entries = [
        GalleryEntry(name, path, captions[name], references, written.get(name))
        for name, path, references in zip(images.names, paths, images.references)
    ]
    title = f"{table.dataset} test split, beam {params.beam_size}"
    write_gallery(gallery, entries[: params.gallery_images], title, metrics)
    log.info("%d attention figures in %s; gallery %s", len(written), attention, gallery)
