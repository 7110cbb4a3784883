"""captioning/scoring/significance.py: bootstrap intervals and paired tests over images, from per-image statistics."""

from __future__ import annotations

import numpy as np
import pytest

import captioning.scoring.significance as significance
from captioning.scoring.significance import (
    _Shuffle,
    blocks,
    bootstrap_intervals,
    holm,
    mc_decimals,
    paired_comparison,
    percentile_interval,
    resample_weights,
    seed_level_p,
)
from captioning.scoring.statistics import ImageStatistics


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


def means(values: np.ndarray) -> ImageStatistics:
    """A metric that is the mean of image scores (as ROUGE-L and CIDEr are): a population mean is known."""
    names = [f"img{i:05d}.png" for i in range(len(values))]
    return ImageStatistics(names, {"rouge_l": values[:, None]}, {"rouge_l": float(values.mean())})


def test_a_resample_draws_as_many_images_as_there_are():
    weights = resample_weights(50, 200, np.random.default_rng(0))
    assert weights.shape == (200, 50)
    assert (weights.sum(axis=1) == 50).all()
    assert 0.3 < (weights == 0).mean() < 0.43  # about 1/e of the images are left out of each resample


def test_resamples_are_drawn_in_blocks_so_memory_does_not_grow_with_them(monkeypatch):
    assert blocks(2500) == [1000, 1000, 500] and blocks(1000) == [1000] and blocks(7) == [7]
    rows = []
    draw = significance.resample_weights
    monkeypatch.setattr(significance, "resample_weights", lambda *args: rows.append(args[1]) or draw(*args))
    a, b = system(30, 0.5, seed=0), system(30, 0.6, seed=1)
    bootstrap_intervals(a, 2500)
    paired_comparison(a, b, 2500)
    assert max(rows) == significance.BLOCK and sum(rows) == 2 * 2500


def test_interval_endpoints_are_rounded_to_their_monte_carlo_error():
    """A normal sample's 2.5th percentile from R draws has a standard error of sqrt(0.025 * 0.975 / R) / phi(1.96)
    standard deviations: 0.0267 at R = 10,000. Batch means estimate it; the endpoint keeps its first digit."""
    values = np.random.default_rng(0).normal(0.0, 1.0, 10_000)
    interval = percentile_interval(values)
    assert 0.0267 / 2 < interval["mc_error"] < 0.0267 * 2
    assert interval["mc_error"] == float(f"{interval['mc_error']:.1g}")  # one significant digit
    low, high = np.percentile(values, [2.5, 97.5])
    assert (interval["low"], interval["high"]) == (round(low, 2), round(high, 2))
    assert [mc_decimals(e) for e in (0.00034, 0.001, 0.0099, 0.3, 0.0, None)] == [4, 3, 3, 1, 6, 6]
    # too few resamples for ten batches: no estimate, 6 decimals
    assert percentile_interval(values[:5])["mc_error"] is None


def test_holm_multiplies_the_ith_smallest_of_m_p_values_by_m_minus_i_plus_1_and_keeps_them_monotone():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": 0.5})
    expected = {"d": 0.025, "a": 0.04, "c": 0.09, "b": 0.09, "e": 0.5}  # b: 2 x 0.04 < c's 0.09, raised to it
    assert adjusted == pytest.approx(expected, rel=1e-12)
    assert holm({"a": 0.4, "b": 0.6}) == {"a": 0.8, "b": 0.8}
    assert holm({"a": 0.7, "b": 0.9}) == {"a": 1.0, "b": 1.0}  # capped at 1


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
        assert difference.p < 0.01 and difference.p_holm < 0.05, key
        assert (difference.resamples, difference.seed, difference.images) == (1000, 0, 200)
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


def test_a_hugely_better_system_gets_the_floor_one_over_r_plus_one_exactly():
    """No shuffle is as extreme: p = 1 / (R + 1), never 0 (which c / R would give) and never rounded; Holm's
    multiplies it by the 6 metrics compared."""
    worse, better = system(200, 0.2, seed=7), system(200, 0.9, seed=8)
    for key, difference in paired_comparison(worse, better, 500, seed=0).items():
        assert difference.p == 1 / 501 == difference.p_floor, key
        assert difference.p_holm == pytest.approx(6 / 501, rel=1e-12), key


def test_two_systems_from_one_distribution_are_rejected_at_005_about_5_percent_of_the_time():
    """The randomisation test's size: 400 seeded comparisons of systems drawn alike, 100 shuffles each.
    (c + 1) / (R + 1) <= 0.05 holds with probability 5/101 under the null; 400 trials have a binomial standard
    error of 1.1 points, so the band 2.5-8% is 2.3 standard errors below and 2.8 above. Shuffles that swap
    with a probability other than 1/2 shift and narrow the null distribution: the rate falls near 0."""
    rejected = {"bleu_4": 0, "cider": 0}
    trials = 400
    for trial in range(trials):
        a, b = system(40, 0.5, seed=2 * trial), system(40, 0.5, seed=2 * trial + 1)
        differences = paired_comparison(a, b, 100, seed=trial)
        for key in rejected:
            rejected[key] += differences[key].p <= 0.05
    for key, count in rejected.items():
        assert 0.025 <= count / trials <= 0.08, (key, count)


def covered(intervals: list[tuple[float, float]], value: float) -> float:
    return float(np.mean([low <= value <= high for low, high in intervals]))


def test_the_bootstrap_interval_covers_a_known_mean_95_percent_of_the_time():
    """2,000 test sets of 100 image scores from Beta(2, 2) (mean 0.5), 200 resamples each. The 95% percentile
    interval covers about 94% at 100 images (a little short: the bootstrap's variance is (n - 1)/n of the
    truth, and 200 resamples place the percentiles with some noise); 2,000 trials have a binomial standard
    error of 0.5 points, so the band 92.5-96.5% is about 3 standard errors below and 5 above. A 90% interval
    covers about 89% (7 standard errors below the band), an 80% one about 79%."""
    rng = np.random.default_rng(0)
    intervals = []
    for trial in range(2000):
        interval = bootstrap_intervals(means(rng.beta(2, 2, 100)), 200, seed=trial)["rouge_l"]
        intervals.append((interval["low"], interval["high"]))
    assert 0.925 <= covered(intervals, 0.5) <= 0.965


def test_the_paired_interval_covers_a_known_mean_difference_95_percent_of_the_time():
    """As above for B - A, with the same band: B's image scores are A's plus 0.05 plus noise (sd 0.1), so the
    mean difference is 0.05 while either system's scores vary far more: only a paired interval is this narrow
    and this right."""
    rng = np.random.default_rng(1)
    intervals = []
    for trial in range(2000):
        scores = rng.beta(2, 2, 100)
        a, b = means(scores), means(scores + 0.05 + rng.normal(0, 0.1, 100))
        difference = paired_comparison(a, b, 200, seed=trial)["rouge_l"]
        intervals.append((difference.low, difference.high))
    assert 0.925 <= covered(intervals, 0.05) <= 0.965
    assert np.mean([high - low for low, high in intervals]) < 0.05  # unpaired: about 0.13


def runs(quality: float, seeds: range, images: int = 100) -> list[ImageStatistics]:
    return [system(images, quality, seed=seed) for seed in seeds]


def test_one_run_a_side_given_as_lists_is_the_paired_comparison():
    a, b = system(100, 0.5, seed=9), system(100, 0.55, seed=10)
    assert paired_comparison([a], [b], 300, seed=3) == paired_comparison(a, b, 300, seed=3)


def test_seed_level_identical_sides_differ_by_zero_with_p_one():
    sides = runs(0.5, range(6))
    for key, difference in paired_comparison(sides, sides, 500, paired_runs=True).items():
        values = (difference.delta, difference.low, difference.high, difference.p, difference.p_holm)
        assert values == (0.0, 0.0, 0.0, 1.0, 1.0), key
    # Unpaired, each side's runs are drawn on their own: the interval is the seeds' spread around 0.
    for key, difference in paired_comparison(sides, sides, 500).items():
        assert (difference.delta, difference.p_seeds, difference.p, difference.p_holm) == (0.0, 1.0, 1.0, 1.0), key
        assert difference.low < 0 < difference.high, key


def test_seed_level_p_is_exact_over_every_relabelling_or_sign_flip():
    a, b = [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]
    # Unpaired: 20 ways to choose B's 3 of 6 runs; only the observed split and its mirror are as extreme.
    assert seed_level_p(a, b, paired=False) == 2 / 20
    # Paired: 8 sign patterns of the differences 1, 2, 3; all + and all - are as extreme.
    assert seed_level_p(a, b, paired=True) == 2 / 8
    # A gain that changes sign: differences +3, +3, -2 have mean 4/3; patterns with |mean| >= 4/3: +++/---
    # (8/3), ++-/--+ (4/3), and +-+/-+- and -++/+-- (|3 - 3 + 2|/3 = 2/3: not): 4 of 8.
    assert seed_level_p([0.0] * 3, [3.0, 3.0, -2.0], paired=True) == 4 / 8
    assert seed_level_p(b, b, paired=False) == 1.0
    with pytest.raises(ValueError, match="paired runs come in pairs: 3 on side A, 2 on side B"):
        seed_level_p(a, b[:2], paired=True)


def test_seed_level_p_draws_assignments_when_there_are_too_many(monkeypatch):
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 6), rng.normal(0.8, 1, 6)
    exact = {paired: seed_level_p(a, b, paired) for paired in (False, True)}
    monkeypatch.setattr(significance, "EXACT_ASSIGNMENTS", 10)
    for paired, p in exact.items():
        drawn = seed_level_p(a, b, paired, resamples=20_000, seed=1)
        assert drawn == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / 20_000)), paired
        assert (drawn * 20_001) % 1 == pytest.approx(0, abs=1e-6) or (drawn * 20_001) % 1 == pytest.approx(1), paired


def test_seed_level_p_rejects_runs_from_one_distribution_at_most_5_percent_of_the_time():
    rng = np.random.default_rng(0)
    for paired in (False, True):
        rejected = np.mean([seed_level_p(*rng.normal(0, 1, (2, 6)), paired) <= 0.05 for _ in range(1000)])
        # The exact level: 46 of the 924 splits (4.98%) or 2 of the 64 sign patterns (3.1%) are as extreme.
        assert 0.015 <= rejected <= 0.07, (paired, rejected)


def test_seed_level_a_clearly_better_side_over_6_seeds_is_significant_after_holm_unless_paired():
    a, b = runs(0.5, range(6)), runs(0.6, range(10, 16))
    differences = paired_comparison(a, b, 1000)
    for key, difference in differences.items():
        mean_a = np.mean([run.reported[key] for run in a])
        assert difference.a == pytest.approx(mean_a, rel=1e-12), key
        assert difference.delta == pytest.approx(difference.b - difference.a, abs=1e-12), key
        assert 0 < difference.low < difference.delta < difference.high, key
        # Every B run above every A run: 2 of the 924 splits; Holm over the m metrics (6 here), m x 2/924.
        assert difference.p_images < 0.05 and difference.p_seeds == pytest.approx(2 / 924), key
        holm_p = len(differences) * 2 / 924
        assert difference.p == difference.p_seeds and difference.p_holm == pytest.approx(holm_p), key
    # Paired, 6 seeds give 64 sign patterns: 2/64 at best, which Holm over the metrics takes above 0.05.
    for key, difference in paired_comparison(a, b, 1000, paired_runs=True).items():
        assert difference.p_seeds == 2 / 64 and difference.p_holm == pytest.approx(len(differences) * 2 / 64), key


def test_seed_level_a_gain_that_changes_sign_between_seeds_is_not_significant():
    """Three pairs where B is far better, three where it is a little less far worse (so the mean gains). The
    image shuffles swap a random half of each pair's images, which cancels the pair's own difference whether or
    not its runs are exchanged too: their p measures the mean against the images' noise and is tiny. The runs'
    own test sees three gains and three losses; p, the larger of the two, is not small."""
    a = runs(0.5, range(6))
    b = runs(0.8, range(10, 13)) + runs(0.25, range(13, 16))
    for paired_runs in (False, True):
        differences = paired_comparison(a, b, 2000, paired_runs=paired_runs)
        for key, difference in differences.items():
            assert difference.delta > 0 and difference.p_images < 0.05, key
            assert difference.p == difference.p_seeds > 0.2, key
            assert difference.low < 0 < difference.high, key
        assert differences["bleu_4"].p_images < 0.001


def test_seed_level_shuffles_move_image_i_of_pair_k_iff_flip_xor_swap():
    """The vectorised shuffle against the statistics swapped row by row."""
    a, b = system(30, 0.4, seed=11), system(30, 0.7, seed=12)
    rng = np.random.default_rng(0)
    swaps = (rng.random((4, 30)) < 0.5).astype(np.float64)
    flips = np.array([[0.0], [1.0], [0.0], [1.0]])
    vectorised = _Shuffle.of(a, b, set(a.columns)).differences(swaps, flips)
    for row in range(4):
        moved = swaps[row].astype(bool) ^ bool(flips[row, 0])  # image i changes sides
        columns_a = {key: np.where(moved[:, None], b.columns[key], a.columns[key]) for key in a.columns}
        columns_b = {key: np.where(moved[:, None], a.columns[key], b.columns[key]) for key in a.columns}
        ones = np.ones(30)
        shuffled_a = ImageStatistics(a.names, columns_a, {}).weighted(ones)
        shuffled_b = ImageStatistics(a.names, columns_b, {}).weighted(ones)
        for key, values in vectorised.items():
            assert values[row] == pytest.approx(shuffled_b[key][0] - shuffled_a[key][0], abs=1e-12), (key, row)


def test_unequal_numbers_of_runs_are_refused():
    with pytest.raises(ValueError, match="paired in order: 3 on side A, 2 on side B"):
        paired_comparison(runs(0.5, range(3), 10), runs(0.5, range(2), 10), 100)
