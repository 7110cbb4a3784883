"""Validation during training: greedy captions of the validation images, scored by the literature's metrics
(captioning.scoring.metrics); the epoch loop keeps the epoch that scores best."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from captioning.features.store import FeatureStore
from captioning.model import CaptionDecoder
from captioning.model.decoding import greedy_decode
from captioning.scoring.metrics import CaptionScorer
from captioning.scoring.split import EvaluationImages, decode_captions
from captioning.text.vocabulary import Vocabulary


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
    """The decoder's validation for the epoch loop (captioning/train/epochs.py: Validator): greedy captions of the
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
