"""The outputs of a test run: the scores with their intervals, the environment that produced them, every
caption beside its references, attention figures, a gallery."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from captioning.data.table import CaptionTable
from captioning.environment import describe_environment
from captioning.io import write_json
from captioning.params import EvaluateParams
from captioning.reports.evaluation import ScoredSplit
from captioning.reports.figures import write_attention_figures
from captioning.reports.gallery import GalleryEntry, write_gallery
from captioning.scoring.significance import bootstrap_intervals
from captioning.scoring.split import EvaluationImages

log = logging.getLogger(__name__)
NOT_RECORDED = "not recorded (a model file from before environments were recorded)"


def write_scores(metrics_path: Path, intervals_path: Path, scored: ScoredSplit, resamples: int, seed: int) -> None:
    """The metrics, rounded to 6 decimals, and their 95% bootstrap intervals over the images (`resamples` seeded
    draws), {"low", "high", "mc_error"} rounded to their Monte Carlo error: the files `dvc metrics show` lists."""
    intervals = bootstrap_intervals(scored.statistics, resamples, seed)
    write_json(metrics_path, {key: round(value, 6) for key, value in scored.metrics.items()})
    write_json(intervals_path, intervals)
    scores = {key: round(value, 4) for key, value in scored.metrics.items()}
    log.info("%d images scored: %s", len(scored.images.names), scores)


def write_environment(path: Path, trained: dict | None, device: torch.device) -> None:
    """What trained the model (recorded in its file; None for a file from before that) and what decoded and
    scored it here (fp32)."""
    recorded = NOT_RECORDED if trained is None else trained
    write_json(path, {"train": recorded, "evaluate": describe_environment(device, "fp32")})


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
