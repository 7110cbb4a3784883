"""captioning/significance.py: bootstrap intervals and paired tests over images, from per-image statistics."""

from __future__ import annotations

import numpy as np
import pytest

from captioning.metric_statistics import ImageStatistics
from captioning.significance import bootstrap_intervals, paired_comparison, resample_weights


def system(images: int, quality: float, seed: int) -> ImageStatistics:
    """Captions of 5-12 words whose n-grams match a reference with probability quality ** n."""
    rng = np.random.default_rng(seed)
    testlen = rng.integers(5, 13, images)
    reflen = np.clip(testlen + rng.integers(-2, 3, images), 1, None)
    guess = np.stack([np.maximum(testlen - n + 1, 0) for n in range(1, 5)], axis=1)
    correct = rng.binomial(guess, quality ** np.arange(1, 5))
    bleu = np.column_stack([testlen, reflen, guess, correct]).astype(np.float64)
    rouge = rng.beta(8 * quality + 1, 8 * (1 - quality) + 1, (images, 1))
    cider = rng.gamma(4.0, quality, (images, 1))
    columns = {"bleu": bleu, "rouge_l": rouge, "cider": cider}
    names = [f"img{i:05d}.png" for i in range(images)]
    statistics = ImageStatistics(names, columns, {})
    statistics.reported = {key: float(value[0]) for key, value in statistics.weighted(np.ones(images)).items()}
    return statistics


def test_a_resample_draws_as_many_images_as_there_are():
    weights = resample_weights(50, 200, np.random.default_rng(0))
    assert weights.shape == (200, 50)
    assert (weights.sum(axis=1) == 50).all()
    assert 0.3 < (weights == 0).mean() < 0.43  # about 1/e of the images are left out of each resample


def test_intervals_hold_the_point_estimate_and_shrink_as_images_are_added():
    few, many = system(100, 0.6, seed=1), system(1600, 0.6, seed=1)
    narrow, wide = bootstrap_intervals(many, 1000, seed=0), bootstrap_intervals(few, 1000, seed=0)
    assert set(narrow) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"}
    for key, interval in narrow.items():
        assert interval["low"] < many.reported[key] < interval["high"], key
        # 16 times the images: about a quarter of the width
        width, width_few = interval["high"] - interval["low"], wide[key]["high"] - wide[key]["low"]
        assert 0.15 < width / width_few < 0.4, key


def test_intervals_are_deterministic_for_a_seed():
    statistics = system(200, 0.5, seed=2)
    assert bootstrap_intervals(statistics, 1000, seed=7) == bootstrap_intervals(statistics, 1000, seed=7)
    assert bootstrap_intervals(statistics, 1000, seed=7) != bootstrap_intervals(statistics, 1000, seed=8)


def test_identical_systems_differ_by_zero_with_p_one():
    statistics = system(200, 0.5, seed=3)
    for key, difference in paired_comparison(statistics, statistics, 1000, seed=0).items():
        assert (difference.delta, difference.low, difference.high, difference.p) == (0.0, 0.0, 0.0, 1.0), key


def test_a_clearly_better_system_is_significant_and_its_interval_excludes_zero():
    worse, better = system(200, 0.5, seed=4), system(200, 0.7, seed=5)
    for key, difference in paired_comparison(worse, better, 1000, seed=0).items():
        assert difference.delta == better.reported[key] - worse.reported[key] > 0, key
        assert 0 < difference.low < difference.delta < difference.high, key
        assert difference.p < 0.01, key
    # the other way round: the same p, the difference and its interval mirrored
    backwards = paired_comparison(better, worse, 1000, seed=0)["bleu_4"]
    assert backwards.delta < 0 and backwards.high < 0 and backwards.p < 0.01


def test_a_small_difference_on_few_images_is_not_significant():
    """One image's caption improved among 200: the randomisation test cannot tell it from noise."""
    a = system(200, 0.5, seed=6)
    columns = {key: values.copy() for key, values in a.columns.items()}
    columns["bleu"][0, 6:10] = columns["bleu"][0, 2:6]  # every n-gram of image 0 now matches
    columns["cider"][0] += 1.0
    b = ImageStatistics(a.names, columns, {})
    b.reported = {key: float(value[0]) for key, value in b.weighted(np.ones(len(a.names))).items()}
    difference = paired_comparison(a, b, 1000, seed=0)
    assert difference["bleu_4"].delta > 0 and difference["bleu_4"].p > 0.3
    assert difference["rouge_l"].delta == 0.0 and difference["rouge_l"].p == 1.0


def test_systems_over_different_images_are_refused():
    a, b = system(10, 0.5, seed=0), system(10, 0.5, seed=1)
    b.names = [name.replace("img", "other") for name in b.names]
    with pytest.raises(ValueError, match="same images"):
        paired_comparison(a, b, 100)
