"""How far a test score can be trusted: bootstrap intervals over images, and paired tests between two systems.

The unit resampled is the test image with all its references and its one caption. Each resample is a
row of weights (how often each image is drawn), so one matrix product with the per-image statistics of
captioning.metric_statistics scores all resamples at once; corpus formulas (BLEU's brevity penalty,
METEOR's fragmentation) are recomputed per resample from the sums.

- `bootstrap_intervals`: the 95% percentile bootstrap interval of each metric (Efron and Tibshirani 1993).
- `paired_comparison`: B minus A with a 95% paired-bootstrap interval (both systems scored on the same
  resampled images, Koehn 2004) and a p-value from approximate randomisation (Riezler and Maxwell 2005):
  each image's two captions are swapped with probability 1/2, and p is the share of shuffles whose
  difference is at least as large as the observed one, (c + 1) / (R + 1).
Every draw comes from a seeded generator, so the same inputs give the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from captioning.metric_statistics import ImageStatistics, scores_from_sums

RESAMPLES = 1000
LEVEL = 0.95
# Differences this small are ties: scores recomputed from sums in another order differ by rounding only.
_TIE = 1e-12


def resample_weights(images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """resamples x images: how many times each image is drawn when `images` are drawn with replacement."""
    draws = rng.integers(0, images, size=(resamples, images))
    offsets = np.arange(resamples)[:, None] * images
    return np.bincount((draws + offsets).ravel(), minlength=resamples * images).reshape(resamples, images)


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    statistics: ImageStatistics, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> dict[str, dict[str, float]]:
    """{metric: {"low": ..., "high": ...}}: the percentile interval of each metric over image resamples."""
    rng = np.random.default_rng(seed)
    scores = statistics.weighted(resample_weights(len(statistics.names), resamples, rng))
    return {key: dict(zip(("low", "high"), _percentiles(scores[key], level))) for key in statistics.metrics}


@dataclass(frozen=True)
class Difference:
    """One metric of system B against system A on the same images."""

    a: float
    b: float
    delta: float  # b - a
    low: float  # the paired-bootstrap interval of delta
    high: float
    p: float  # approximate randomisation, two-sided

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def paired_comparison(
    a: ImageStatistics, b: ImageStatistics, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> dict[str, Difference]:
    """Every metric both systems report: B minus A, its paired-bootstrap interval and a randomisation p-value."""
    if a.names != b.names:
        raise ValueError("the two systems must be scored on the same images, in the same order")
    metrics = [key for key in a.metrics if key in b.metrics]
    rng = np.random.default_rng(seed)
    images = len(a.names)

    weights = resample_weights(images, resamples, rng)
    boot_a, boot_b = a.weighted(weights), b.weighted(weights)

    # Swapping image i's captions moves its statistics from one system to the other.
    swaps = (rng.random((resamples, images)) < 0.5).astype(np.float64)
    shuffled_a, shuffled_b = {}, {}
    for key in a.columns.keys() & b.columns.keys():
        moved = swaps @ (b.columns[key] - a.columns[key])
        shuffled_a[key] = a.columns[key].sum(axis=0) + moved
        shuffled_b[key] = b.columns[key].sum(axis=0) - moved
    counts = np.full(resamples, float(images))
    random_a, random_b = scores_from_sums(shuffled_a, counts), scores_from_sums(shuffled_b, counts)

    result = {}
    for key in metrics:
        observed = b.reported[key] - a.reported[key]
        shuffled = np.abs(random_b[key] - random_a[key])
        at_least = int(np.count_nonzero(shuffled >= abs(observed) - _TIE))
        low, high = _percentiles(boot_b[key] - boot_a[key], level)
        p = (at_least + 1) / (resamples + 1)
        result[key] = Difference(a.reported[key], b.reported[key], observed, low, high, p)
    return result
