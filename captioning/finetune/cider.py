"""CIDEr-D (Vedantam et al. 2015), the reward of self-critical training, computed as pycocoevalcap does.

For a candidate c and the references s_1..s_m of its image, per n-gram order n = 1..4:
    g(x)    = tf(x) * (log N - log max(1, df))  per n-gram of x      (tf-idf vector; N images in the corpus)
    sim_n   = sum over the candidate's n-grams of min(g_c, g_s) * g_s / (|g_c| |g_s|) * exp(-(l_c - l_s)^2 / 2 sigma^2)
    CIDEr-D = 10 * mean_n mean_j sim_n(c, s_j)                         (sigma 6; min() is CIDEr-D's clipping)
l counts a caption's bigrams, as pycocoevalcap does. The document frequencies df (images whose references
contain the n-gram) and N come once from a fixed corpus, the training references, not from the captions
being scored: a batch's own statistics would change every caption's reward with the rest of the batch.
The reference vectors are built once; scoring a caption then costs one pass over its own n-grams.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

ORDERS = 4
SIGMA = 6.0

Caption = Sequence[str]


def ngram_counts(words: Caption) -> Counter:
    """Every n-gram of orders 1..4 with its count."""
    return Counter(tuple(words[i : i + n]) for n in range(1, ORDERS + 1) for i in range(len(words) - n + 1))


class _Vector:
    """A caption's tf-idf weights per n-gram, norms per order and length (its number of bigrams)."""

    __slots__ = ("weights", "norms", "length")

    def __init__(self, counts: Counter, idf: dict, default_idf: float):
        self.weights = {ngram: count * idf.get(ngram, default_idf) for ngram, count in counts.items()}
        norms = [0.0] * ORDERS
        for ngram, weight in self.weights.items():
            norms[len(ngram) - 1] += weight * weight
        self.norms = [math.sqrt(value) for value in norms]
        self.length = sum(count for ngram, count in counts.items() if len(ngram) == 2)


class CiderD:
    """CIDEr-D of candidates against the references of images 0..N-1 of a fixed corpus.

    `references[i]` are image i's reference captions as word lists (for self-critical training:
    ending in "<end>", as the sampled captions do, so that stopping is rewarded where the references stop).
    """

    def __init__(self, references: Sequence[Sequence[Caption]]):
        counted = [[ngram_counts(reference) for reference in image] for image in references]
        document_frequency = Counter(ngram for image in counted for ngram in set().union(*image))
        log_images = math.log(float(len(references)))
        self.idf = {ngram: log_images - math.log(max(1.0, df)) for ngram, df in document_frequency.items()}
        self.default_idf = log_images  # an n-gram no reference has: df 0, counted as max(1, 0) = 1
        self.references = [[_Vector(counts, self.idf, self.default_idf) for counts in image] for image in counted]

    def score(self, candidate: Caption, image: int) -> float:
        vector = _Vector(ngram_counts(candidate), self.idf, self.default_idf)
        total = 0.0
        for reference in self.references[image]:
            similarity = [0.0] * ORDERS
            for ngram, weight in vector.weights.items():
                reference_weight = reference.weights.get(ngram)
                if reference_weight is not None:
                    similarity[len(ngram) - 1] += min(weight, reference_weight) * reference_weight
            penalty = math.exp(-((vector.length - reference.length) ** 2) / (2 * SIGMA**2))
            for n in range(ORDERS):
                if vector.norms[n] != 0 and reference.norms[n] != 0:
                    similarity[n] /= vector.norms[n] * reference.norms[n]
                total += similarity[n] * penalty
        return 10.0 * total / ORDERS / len(self.references[image])

    def scores(self, candidates: Sequence[Caption], images: Sequence[int]) -> np.ndarray:
        """CIDEr-D of each candidate against the references of its image: (len(candidates),)."""
        return np.array([self.score(candidate, image) for candidate, image in zip(candidates, images)])
