"""Each test metric as a function of per-image statistics summed over the images.

A corpus score is not the mean of image scores. BLEU clips each image's n-gram matches against its own
references but takes the brevity penalty from the lengths summed over the corpus; METEOR 1.5 sums its
match counts, chunks and lengths before it computes precision, recall and fragmentation. Keeping, for each
image, the numbers the corpus score sums lets any reweighting of the images (a bootstrap resample, a
randomised swap of two systems' outputs; captioning.scoring.significance) be scored by one matrix product instead
of running the scorer again. ROUGE-L and CIDEr are means of image scores; CIDEr's document frequencies
stay those of the whole test set.

The formulas below are pycocoevalcap's (bleu_scorer.py) and METEOR 1.5's (English, its default task),
vectorised over resamples; tests hold them equal to the scorers on the full set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLEU_ORDERS = 4
# Per image: candidate length, closest reference length, n-gram guesses and clipped matches per order.
BLEU_COLUMNS = ("testlen", "reflen", *(f"guess_{n}" for n in range(1, 5)), *(f"correct_{n}" for n in range(1, 5)))

# METEOR 1.5's statistics line: lengths and function words of test and reference, four numbers per matcher
# stage (exact, stem, synonym, paraphrase: content and function-word matches of test and reference), then
# chunks and matched words of test and reference. The weights are the English defaults of `-l en`.
METEOR_COLUMNS = 23
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA, METEOR_DELTA = 0.85, 0.2, 0.6, 0.75
METEOR_STAGE_WEIGHTS = np.array([1.0, 0.6, 0.8, 0.6])

_TINY, _SMALL = 1e-15, 1e-9  # pycocoevalcap's guards: a zero count gives a score of zero, never a division by zero


def bleu_from_sums(sums: np.ndarray) -> np.ndarray:
    """BLEU-1..4 (columns) from summed BLEU_COLUMNS (rows: one per resample)."""
    sums = np.atleast_2d(sums)
    testlen, reflen = sums[:, 0], sums[:, 1]
    guess, correct = sums[:, 2:6], sums[:, 6:10]
    precisions = np.cumprod((correct + _TINY) / (guess + _SMALL), axis=1)
    scores = precisions ** (1.0 / np.arange(1, BLEU_ORDERS + 1))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        brevity = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return scores * brevity[:, None]


def meteor_from_sums(sums: np.ndarray) -> np.ndarray:
    """METEOR 1.5 from summed statistics lines (rows: one per resample)."""
    sums = np.atleast_2d(sums)
    test_len, ref_len, test_function, ref_function = sums[:, 0], sums[:, 1], sums[:, 2], sums[:, 3]
    stages = sums[:, 4:20].reshape(-1, 4, 4)  # stage x (test content, ref content, test function, ref function)
    chunks, test_matched, ref_matched = sums[:, 20], sums[:, 21], sums[:, 22]
    delta = METEOR_DELTA
    test_weighted_len = delta * (test_len - test_function) + (1 - delta) * test_function
    ref_weighted_len = delta * (ref_len - ref_function) + (1 - delta) * ref_function
    test_weighted = (METEOR_STAGE_WEIGHTS * (delta * stages[:, :, 0] + (1 - delta) * stages[:, :, 2])).sum(axis=1)
    ref_weighted = (METEOR_STAGE_WEIGHTS * (delta * stages[:, :, 1] + (1 - delta) * stages[:, :, 3])).sum(axis=1)
    # Java's double arithmetic: 0/0 is NaN and x/0 infinite; a caption without matches scores 0.
    with np.errstate(all="ignore"):
        precision, recall = test_weighted / test_weighted_len, ref_weighted / ref_weighted_len
        f_mean = 1 / ((1 - METEOR_ALPHA) / precision + METEOR_ALPHA / recall)
        fragmentation = np.where(_perfect_match(sums), 0.0, chunks / ((test_matched + ref_matched) / 2))
        score = f_mean * (1 - METEOR_GAMMA * fragmentation**METEOR_BETA)
    return np.nan_to_num(score, nan=0.0)


def meteor_columns(lines: list[str]) -> np.ndarray:
    """METEOR statistics lines as the rows its corpus score sums.

    METEOR adds a segment's chunks to the corpus only when the segment is not a perfect match (one chunk
    covering every word of both sides), whose fragmentation is zero on its own; its row keeps 0 chunks.
    """
    rows = np.array([[float(x) for x in line.split()] for line in lines], dtype=np.float64).reshape(-1, METEOR_COLUMNS)
    rows[_perfect_match(rows), 20] = 0.0
    return rows


def _perfect_match(rows: np.ndarray) -> np.ndarray:
    """One chunk, and every word of test and reference matched: fragmentation zero."""
    stages = rows[:, 4:20].reshape(-1, 4, 4)
    test_total = stages[:, :, 0].sum(axis=1) + stages[:, :, 2].sum(axis=1)
    ref_total = stages[:, :, 1].sum(axis=1) + stages[:, :, 3].sum(axis=1)
    return (test_total == rows[:, 0]) & (ref_total == rows[:, 1]) & (rows[:, 20] == 1)


def _mean_from_sums(sums: np.ndarray, images: np.ndarray) -> np.ndarray:
    return np.atleast_2d(sums)[:, 0] / images


@dataclass
class ImageStatistics:
    """One system's test captions, as numbers: per-image statistics of each metric and the reported scores.

    `columns` maps a statistic to an (images x k) array: "bleu" (BLEU_COLUMNS), "meteor" (METEOR 1.5's line)
    and one column of image scores for "rouge_l", "cider" (and "meteor_nltk" where Java is missing).
    `reported` holds the scorer's own corpus numbers, which the statistics reproduce.
    """

    names: list[str]
    columns: dict[str, np.ndarray]
    reported: dict[str, float]

    def __post_init__(self) -> None:
        for key, values in self.columns.items():
            if values.shape[0] != len(self.names):
                raise ValueError(f"{key}: {values.shape[0]} rows for {len(self.names)} images")

    @property
    def metrics(self) -> list[str]:
        return [key for key in self.reported if key in _metric_sources(self.columns)]

    def weighted(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric under each row of `weights` (resamples x images: how often each image counts)."""
        weights = np.atleast_2d(weights).astype(np.float64)
        sums = {key: weights @ values for key, values in self.columns.items()}
        return scores_from_sums(sums, weights.sum(axis=1))


def scores_from_sums(sums: dict[str, np.ndarray], images: np.ndarray) -> dict[str, np.ndarray]:
    """Metric -> one score per row, from summed statistics and the number of images in each row."""
    scores = {}
    if "bleu" in sums:
        bleu = bleu_from_sums(sums["bleu"])
        scores.update({f"bleu_{n + 1}": bleu[:, n] for n in range(BLEU_ORDERS)})
    if "meteor" in sums:
        scores["meteor"] = meteor_from_sums(sums["meteor"])
    for key in ("meteor_nltk", "rouge_l", "cider"):
        if key in sums:
            scores[key] = _mean_from_sums(sums[key], images)
    return scores


def _metric_sources(columns: dict[str, np.ndarray]) -> set[str]:
    metrics = {key for key in columns if key != "bleu"}
    if "bleu" in columns:
        metrics |= {f"bleu_{n + 1}" for n in range(BLEU_ORDERS)}
    return metrics
