"""Captioning a split and scoring it: each image decoded once, against all of its references.

Captions are scored by the literature's metrics (captioning.metrics); on the generated scenes also by
what they say about the objects and where attention goes while naming them (captioning.grounding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from captioning.data.table import CaptionTable
from captioning.decoding import Decoded, greedy_decode
from captioning.features.store import FeatureStore
from captioning.grounding import grounding_scores, object_accuracy
from captioning.metric_statistics import ImageStatistics
from captioning.metrics import CaptionScorer
from captioning.model import CaptionDecoder
from captioning.text.vocabulary import Vocabulary


@dataclass
class EvaluationImages:
    """Images to decode and score: their feature rows and all their reference captions."""

    names: list[str]
    feature_rows: np.ndarray
    references: list[list[str]]

    @classmethod
    def from_split(cls, table: CaptionTable, store: FeatureStore, split: str) -> EvaluationImages:
        """The split's images that have features (images skipped by the features stage are left out)."""
        records = [r for r in table.split(split) if r.image not in store.skipped]
        names = [r.image for r in records]
        return cls(names, store.rows_for(names), [r.captions for r in records])


def decode_captions(
    decoder: CaptionDecoder,
    store: FeatureStore,
    images: EvaluationImages,
    vocabulary: Vocabulary,
    device: torch.device,
    decode: Callable[[CaptionDecoder, torch.Tensor], Decoded],
    batch_size: int = 100,
) -> tuple[dict[str, str], list[np.ndarray]]:
    """Caption each image once with `decode(decoder, features)`; returns {name: caption} and weights."""
    captions, weights = {}, []
    for i in range(0, len(images.names), batch_size):
        features = torch.from_numpy(store.rows(images.feature_rows[i : i + batch_size])).to(device)
        decoded = decode(decoder, features)
        for name, tokens, attention in zip(images.names[i : i + batch_size], decoded.tokens, decoded.weights):
            shown = [k for k, token in enumerate(tokens) if token not in (vocabulary.pad, vocabulary.start)]
            captions[name] = " ".join(vocabulary.words[tokens[k]] for k in shown)
            weights.append(attention[shown])  # one row per word of the caption
    return captions, weights


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


@dataclass
class Validation:
    """What picks the kept epoch: greedy captions of the validation images, scored against their references.

    `scorer` is None on the ranks other than 0 of a distributed run (they do not validate).
    """

    images: EvaluationImages
    store: FeatureStore
    vocabulary: Vocabulary
    scorer: CaptionScorer | None
    max_len: int
    device: torch.device


class ValidationRun:
    """The decoder's validation for the epoch loop (captioning/epochs.py: Validator): greedy captions of the
    validation images on the device, in eval mode; their scores on the host, from the captions alone."""

    def __init__(self, decoder: CaptionDecoder, validation: Validation):
        self.decoder, self.validation = decoder, validation

    def captions(self) -> dict[str, str]:
        decoder, validation = self.decoder, self.validation
        decoder.eval()
        vocabulary = validation.vocabulary
        captions, _ = decode_captions(
            decoder,
            validation.store,
            validation.images,
            vocabulary,
            validation.device,
            lambda d, f: greedy_decode(d, f, vocabulary.start, vocabulary.end, validation.max_len),
        )
        return captions

    def scores(self, captions: dict[str, str]) -> dict[str, float]:
        images = self.validation.images
        return self.validation.scorer.score(captions, dict(zip(images.names, images.references)))


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
