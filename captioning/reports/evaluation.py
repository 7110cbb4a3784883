"""The test evaluation: every test image captioned once (beam search), scored against all its references by
the literature's metrics, and on the generated scenes also by what the captions say about the objects and
where attention goes while naming them (captioning.scoring.grounding). Only the evaluate stage runs this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from captioning.data.table import CaptionTable
from captioning.features.store import FeatureStore
from captioning.model import CaptionDecoder
from captioning.model.decoding import Decoded
from captioning.scoring.grounding import grounding_scores, object_accuracy
from captioning.scoring.metrics import CaptionScorer
from captioning.scoring.split import EvaluationImages, decode_captions
from captioning.scoring.statistics import ImageStatistics
from captioning.text.vocabulary import Vocabulary


@dataclass
class ScoredSplit:
    """A split captioned once and scored: its captions, their attention weights, the metrics and the
    per-image statistics the metrics are computed from (for the bootstrap intervals)."""

    images: EvaluationImages
    captions: dict[str, str]
    weights: list[np.ndarray]
    metrics: dict[str, float]
    statistics: ImageStatistics


def caption_and_score(
    decoder: CaptionDecoder,
    table: CaptionTable,
    store: FeatureStore,
    split: str,
    vocabulary: Vocabulary,
    device: torch.device,
    decode: Callable[[CaptionDecoder, torch.Tensor], Decoded],
    batch_size: int = 100,
) -> ScoredSplit:
    """Caption every image of `split` that has features, score the captions against all their references
    (pycocoevalcap's metrics, then the scene metrics where the dataset knows its objects)."""
    images = EvaluationImages.from_split(table, store, split)
    captions, weights = decode_captions(decoder, store, images, vocabulary, device, decode, batch_size)
    with CaptionScorer() as scorer:
        statistics = scorer.statistics(captions, dict(zip(images.names, images.references)))
    metrics = {**statistics.reported, **scene_metrics(table, images.names, captions, weights)}
    return ScoredSplit(images, captions, weights, metrics, statistics)


def scene_metrics(table: CaptionTable, names: list[str], captions: dict[str, str], weights: list[np.ndarray]) -> dict:
    """Object accuracy and attention grounding, for datasets that know their objects (generated scenes)."""
    records = {r.image: r for r in table.images}
    if not names or any(records[name].objects is None for name in names):
        return {}
    with Image.open(table.image_path(records[names[0]])) as image:
        image_size = image.size[0]
    words = [captions[name].split() for name in names]
    objects = [records[name].objects for name in names]
    return {**object_accuracy(words, objects), **grounding_scores(words, weights, objects, image_size)}
