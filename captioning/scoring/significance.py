"""How far a test score can be trusted: bootstrap intervals over images, and paired tests between two systems.

The unit resampled is the test image with all its references and its one caption. Each resample is a
row of weights (how often each image is drawn), so one matrix product with the per-image statistics of
captioning.scoring.statistics scores a block of resamples at once; corpus formulas (BLEU's brevity penalty,
METEOR's fragmentation) are recomputed per resample from the sums. Resamples are drawn BLOCK rows at a
time, so memory does not grow with their number.

- `bootstrap_intervals`: the 95% percentile bootstrap interval of each metric (Efron and Tibshirani 1993).
- `paired_comparison`: B minus A with a 95% paired-bootstrap interval (both systems scored on the same
  resampled images, Koehn 2004) and a p-value from approximate randomisation (Riezler and Maxwell 2005):
  each image's two captions are swapped with probability 1/2, and p is the share of shuffles whose
  difference is at least as large as the observed one, (c + 1) / (R + 1); Holm's step-down adjustment
  (Holm 1979) over the metrics compared.
- Several runs per side (training seeds): the statistic is the mean over the runs and the bootstrap draws the
  runs and then the images. Two p-values: over the images (each shuffle swaps image i in every pair, A's k-th
  run with B's k-th, and also exchanges whole pairs), and over the runs (`seed_level_p`: every relabelling of
  the runs, or every sign flip of the pairs' differences where the runs are paired). The claim needs both, so
  p is the larger (an intersection-union test, Berger 1982).
- Interval endpoints are rounded to their Monte Carlo error (batch means over MC_BATCHES blocks of the
  resamples): the digits another seed would change are not reported.
Every draw comes from a seeded generator, so the same inputs give the same numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from captioning.scoring.statistics import ImageStatistics, scores_from_sums

RESAMPLES = 10_000
LEVEL = 0.95
# Resamples drawn at a time: 1,000 x 5,000 images of int64 weights is 40 MB; all 10,000 at once would be 400 MB.
BLOCK = 1000
# The Monte Carlo error of an endpoint: its spread over this many equal batches of the resamples, / sqrt(batches).
MC_BATCHES = 10
MAX_DECIMALS = 6  # where the Monte Carlo error is zero or cannot be estimated (fewer resamples than batches)
# The seed-level test enumerates every assignment of the runs up to this many (6 + 6 runs: 924), else draws them.
EXACT_ASSIGNMENTS = 200_000
# Differences this small are ties: scores recomputed from sums in another order differ by rounding only.
_TIE = 1e-12


def resample_weights(images: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """resamples x images: how many times each image is drawn when `images` are drawn with replacement."""
    draws = rng.integers(0, images, size=(resamples, images))
    offsets = np.arange(resamples)[:, None] * images
    return np.bincount((draws + offsets).ravel(), minlength=resamples * images).reshape(resamples, images)


def blocks(resamples: int) -> list[int]:
    """The sizes of the blocks `resamples` are drawn in: BLOCK each, the last one what is left."""
    return [min(BLOCK, resamples - start) for start in range(0, resamples, BLOCK)]


def mc_decimals(mc_error: float | None) -> int:
    """The decimal of the Monte Carlo error's first significant digit (0.00034 -> 4): the last one worth reporting."""
    if mc_error is None or not mc_error > 0:
        return MAX_DECIMALS
    return min(MAX_DECIMALS, max(0, -math.floor(math.log10(mc_error))))


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> dict[str, float | None]:
    """{"low", "high", "mc_error"}: the percentile interval of `values` (one per resample), rounded to its Monte
    Carlo error, the larger of the two endpoints' (to one significant digit; None below MC_BATCHES resamples)."""
    tails = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    low, high = np.percentile(values, tails)
    mc_error = None
    if len(values) >= MC_BATCHES:
        batches = np.array([np.percentile(batch, tails) for batch in np.array_split(values, MC_BATCHES)])
        mc_error = float(f"{batches.std(axis=0, ddof=1).max() / math.sqrt(MC_BATCHES):.1g}")
    decimals = mc_decimals(mc_error)
    return {"low": round(float(low), decimals), "high": round(float(high), decimals), "mc_error": mc_error}


def _concatenated(parts: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = list(parts)
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def bootstrap_intervals(
    statistics: ImageStatistics, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> dict[str, dict[str, float | None]]:
    """{metric: {"low", "high", "mc_error"}}: the percentile interval of each metric over image resamples."""
    rng = np.random.default_rng(seed)
    images = len(statistics.names)
    scores = _concatenated(statistics.weighted(resample_weights(images, size, rng)) for size in blocks(resamples))
    return {key: percentile_interval(scores[key], level) for key in statistics.metrics}


@dataclass(frozen=True)
class Difference:
    """One metric of system B against system A on the same images (with several runs a side: their means)."""

    a: float
    b: float
    delta: float  # b - a
    low: float  # the paired-bootstrap interval of delta, rounded to its Monte Carlo error
    high: float
    mc_error: float | None
    p_images: float  # approximate randomisation over the images, two-sided: (c + 1) / (resamples + 1)
    p_seeds: float | None  # the exact randomisation test over the runs (None: one run a side)
    p: float  # the larger of the two: what a claim about B against A rests on
    p_holm: float  # Holm's step-down adjustment of p over the metrics of this comparison
    resamples: int
    seed: int
    images: int

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    @property
    def p_floor(self) -> float:
        """The smallest p the image shuffles can give: no shuffle as extreme as the observed difference."""
        return 1 / (self.resamples + 1)


def seed_level_p(
    a: Sequence[float], b: Sequence[float], paired: bool, resamples: int = RESAMPLES, seed: int = 0
) -> float:
    """The two-sided randomisation p of mean(b) - mean(a) over runs (one score per run, the test images fixed).

    Unpaired: under the null hypothesis the runs' labels are exchangeable, so every split of the pooled runs
    into sides of len(a) and len(b) is as likely. Paired (b[k] continues a[k], as SCST continues its seed's
    model): each pair's difference keeps its size and its sign is a coin. Exact (p = the share of assignments
    at least as extreme, the observed one among them) when there are at most EXACT_ASSIGNMENTS of them, else
    `resamples` random ones and (c + 1) / (resamples + 1).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if paired and len(a) != len(b):
        raise ValueError(f"paired runs come in pairs: {len(a)} on side A, {len(b)} on side B")
    assignments = 2 ** len(a) if paired else math.comb(len(a) + len(b), len(b))
    exact = assignments <= EXACT_ASSIGNMENTS
    rng = np.random.default_rng(seed)
    if paired:
        if exact:
            signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(a))))
        else:
            signs = np.where(rng.random((resamples, len(a))) < 0.5, -1.0, 1.0)
        statistics = signs @ (b - a) / len(a)
    else:
        pooled = np.concatenate([a, b])
        if exact:
            on_b = np.zeros((assignments, len(pooled)), dtype=bool)
            for row, chosen in enumerate(itertools.combinations(range(len(pooled)), len(b))):
                on_b[row, list(chosen)] = True
        else:
            on_b = np.argsort(rng.random((resamples, len(pooled))), axis=1) < len(b)
        statistics = on_b @ pooled / len(b) - ~on_b @ pooled / len(a)
    at_least = int(np.count_nonzero(np.abs(statistics) >= abs(b.mean() - a.mean()) - _TIE))
    return at_least / assignments if exact else (at_least + 1) / (resamples + 1)


def holm(p: dict[str, float]) -> dict[str, float]:
    """Holm's (1979) step-down adjustment: the i-th smallest of m p-values times (m - i + 1), kept monotone."""
    adjusted, running = {}, 0.0
    for rank, key in enumerate(sorted(p, key=p.__getitem__)):
        running = max(running, min(1.0, (len(p) - rank) * p[key]))
        adjusted[key] = running
    return adjusted


def paired_comparison(
    a: ImageStatistics | Sequence[ImageStatistics],
    b: ImageStatistics | Sequence[ImageStatistics],
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
    paired_runs: bool = False,
) -> dict[str, Difference]:
    """Every metric all runs report: B minus A, its paired-bootstrap interval and randomisation p-values.

    One run a side: the paired bootstrap over images and swaps of each image's two captions. Several: the mean
    over the runs; each resample draws each side's runs with replacement (the pairs, where `paired_runs`: B's
    k-th continues A's k-th) and then the images, one image draw for every run; each image shuffle exchanges
    pair k's runs (flip[r, k]; A's k-th and B's k-th, paired or not) and swaps image i's captions in every pair
    (swap[r, i]), so image i of pair k changes sides iff flip XOR swap. The seed-level p is `seed_level_p`'s.
    """
    runs_a = [a] if isinstance(a, ImageStatistics) else list(a)
    runs_b = [b] if isinstance(b, ImageStatistics) else list(b)
    if len(runs_a) != len(runs_b) or not runs_a:
        raise ValueError(f"runs are paired in order: {len(runs_a)} on side A, {len(runs_b)} on side B")
    everything = runs_a + runs_b
    if any(run.names != runs_a[0].names for run in everything):
        raise ValueError("the two systems must be scored on the same images, in the same order")
    metrics = [key for key in runs_a[0].metrics if all(key in run.metrics for run in everything)]
    keys = set.intersection(*(set(run.columns) for run in everything))
    pairs, images = len(runs_a), len(runs_a[0].names)
    observed = {key: _mean(runs_b, key) - _mean(runs_a, key) for key in metrics}
    # Separate streams, so the bootstrap's draws do not depend on the shuffles' and neither on BLOCK's size.
    boot_rng, shuffle_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    shuffles = [_Shuffle.of(run_a, run_b, keys) for run_a, run_b in zip(runs_a, runs_b)]

    boot, shuffled = [], []
    for size in blocks(resamples):
        weights = resample_weights(images, size, boot_rng)  # one image draw for every pair
        drawn_a = resample_weights(pairs, size, boot_rng) if pairs > 1 else np.ones((size, 1))  # size x runs
        drawn_b = drawn_a if paired_runs or pairs == 1 else resample_weights(pairs, size, boot_rng)
        scores_a = [run.weighted(weights) for run in runs_a]
        scores_b = [run.weighted(weights) for run in runs_b]
        boot.append(
            {  # the drawn runs' means
                key: (drawn_b * np.column_stack([scores[key] for scores in scores_b])).sum(axis=1) / pairs
                - (drawn_a * np.column_stack([scores[key] for scores in scores_a])).sum(axis=1) / pairs
                for key in metrics
            }
        )

        swaps = (shuffle_rng.random((size, images)) < 0.5).astype(np.float64)
        # One pair: exchanging its runs as well would only complement the swaps, which are as likely; none drawn.
        flips = (shuffle_rng.random((size, pairs)) < 0.5).astype(np.float64) if pairs > 1 else np.zeros((size, 1))
        differences = [shuffle.differences(swaps, flips[:, k : k + 1]) for k, shuffle in enumerate(shuffles)]
        shuffled.append({key: sum(difference[key] for difference in differences) / pairs for key in metrics})

    boot, shuffled = _concatenated(boot), _concatenated(shuffled)
    p_images, p_seeds, p = {}, {}, {}
    for key in metrics:
        at_least = int(np.count_nonzero(np.abs(shuffled[key]) >= abs(observed[key]) - _TIE))
        p_images[key] = (at_least + 1) / (resamples + 1)
        p_seeds[key] = None
        if pairs > 1:
            scores = ([run.reported[key] for run in side] for side in (runs_a, runs_b))
            p_seeds[key] = seed_level_p(*scores, paired=paired_runs, resamples=resamples, seed=seed)
        p[key] = max(p_images[key], p_seeds[key] or 0.0)
    adjusted = holm(p)
    result = {}
    for key in metrics:
        interval = percentile_interval(boot[key], level)
        result[key] = Difference(
            a=_mean(runs_a, key),
            b=_mean(runs_b, key),
            delta=observed[key],
            low=interval["low"],
            high=interval["high"],
            mc_error=interval["mc_error"],
            p_images=p_images[key],
            p_seeds=p_seeds[key],
            p=p[key],
            p_holm=adjusted[key],
            resamples=resamples,
            seed=seed,
            images=images,
        )
    return result


@dataclass(frozen=True)
class _Shuffle:
    """One pair of runs, as the shuffles need it: each side's summed statistics and, per image, B's minus A's."""

    sums_a: dict[str, np.ndarray]
    sums_b: dict[str, np.ndarray]
    columns: dict[str, np.ndarray]  # images x k: what image i moves from A to B when it changes sides
    total: dict[str, np.ndarray]  # the same summed over the images: every image changes sides

    @classmethod
    def of(cls, a: ImageStatistics, b: ImageStatistics, keys: set[str]) -> _Shuffle:
        columns = {key: b.columns[key] - a.columns[key] for key in keys}
        return cls(
            {key: a.columns[key].sum(axis=0) for key in keys},
            {key: b.columns[key].sum(axis=0) for key in keys},
            columns,
            {key: values.sum(axis=0) for key, values in columns.items()},
        )

    def differences(self, swaps: np.ndarray, flip: np.ndarray) -> dict[str, np.ndarray]:
        """B minus A of every metric per shuffle; image i changes sides iff swaps[r, i] XOR flip[r]
        (swaps: shuffles x images, flip: shuffles x 1, both 0 or 1)."""
        sums_a, sums_b = {}, {}
        for key, columns in self.columns.items():
            moved = flip * self.total[key] + (1 - 2 * flip) * (swaps @ columns)  # shuffles x k
            sums_a[key], sums_b[key] = self.sums_a[key] + moved, self.sums_b[key] - moved
        counts = np.full(len(swaps), float(swaps.shape[1]))
        random_a, random_b = scores_from_sums(sums_a, counts), scores_from_sums(sums_b, counts)
        return {key: random_b[key] - random_a[key] for key in random_a}


def _mean(runs: list[ImageStatistics], key: str) -> float:
    return sum(run.reported[key] for run in runs) / len(runs)
