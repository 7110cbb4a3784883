"""A split's images captioned once: their feature rows and references, and one caption (with its attention
weights) per image from any decoding function. What validation and the test evaluation share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from captioning.data.table import CaptionTable
from captioning.features.store import FeatureStore
from captioning.model import CaptionDecoder
from captioning.model.decoding import Decoded
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
