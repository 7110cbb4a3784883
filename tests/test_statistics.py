"""captioning/scoring/statistics.py: per-image statistics reproduce pycocoevalcap's corpus and image scores."""

from __future__ import annotations

import contextlib
import io
import random

import numpy as np
import pytest

from captioning.scoring.statistics import BLEU_COLUMNS, METEOR_COLUMNS, ImageStatistics, bleu_from_sums

WORDS = "a the red blue green small large circle square triangle at on top left right bottom of in middle".split()


def example(images: int, seed: int = 0) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Captions of 1-12 words against 1-5 references each: short ones (brevity penalty), empty, exact copies."""
    rng = random.Random(seed)
    sentence = lambda low, high: " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))  # noqa: E731
    references = {f"img{i:03d}.png": [sentence(4, 10) for _ in range(rng.randint(1, 5))] for i in range(images)}
    predictions = {name: sentence(1, 12) for name in references}
    names = sorted(references)
    predictions[names[0]] = ""
    predictions[names[1]] = references[names[1]][0]
    return predictions, references


@pytest.fixture(scope="module")
def scorer(meteor_scorer):
    return meteor_scorer  # the session's (conftest.py)


@pytest.fixture(scope="module")
def tokenized(scorer):
    """The example's references and two systems' captions (the example's and other ones), tokenized as
    pycocoevalcap's evaluation script tokenizes them."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    predictions, references = example(60)
    rng = random.Random(1)
    other = {name: rng.choice([*references[name], " ".join(rng.sample(WORDS, 6))]) for name in sorted(references)}
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    systems = []
    for captions in (predictions, other):
        res = tokenizer.tokenize({k: [{"caption": v}] for k, v in captions.items()})
        systems.append({k: [v[0] or "<empty>"] for k, v in sorted(res.items())})
    return (predictions, other, references), {k: gts[k] for k in systems[0]}, systems


@pytest.fixture(scope="module")
def scored(scorer, tokenized):
    """The example scored by the project and by pycocoevalcap called directly, on the same tokenized text."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    (predictions, _, references), gts, (res, _) = tokenized
    statistics = scorer.statistics(predictions, references)
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, bleu_images = Bleu(4).compute_score(gts, res, verbose=0)
    direct = {f"bleu_{n + 1}": (bleu[n], bleu_images[n]) for n in range(4)}
    direct["rouge_l"] = Rouge().compute_score(gts, res)
    direct["cider"] = Cider().compute_score(gts, res)
    direct["meteor"] = scorer._meteor.compute_score(gts, res)
    return statistics, direct


def rescored(gts: dict, res: dict, images: list[str], scorer) -> dict[str, float]:
    """The naive way: pycocoevalcap run again on the list `images` (repeats renamed, so each one counts).
    CIDEr keeps the whole test set's document frequencies (cider_with_test_set_frequencies)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    sample_gts = {f"{n}:{name}": gts[name] for n, name in enumerate(images)}
    sample_res = {f"{n}:{name}": res[name] for n, name in enumerate(images)}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(sample_gts, sample_res, verbose=0)
    scores = {f"bleu_{n + 1}": bleu[n] for n in range(4)}
    scores["rouge_l"] = Rouge().compute_score(sample_gts, sample_res)[0]
    scores["meteor"] = scorer._meteor.compute_score(sample_gts, sample_res)[0]
    scores["cider"] = cider_with_test_set_frequencies(gts, sample_gts, sample_res)
    return scores


def cider_with_test_set_frequencies(gts: dict, sample_gts: dict, sample_res: dict) -> float:
    """pycocoevalcap's CIDEr of a sample of the test images, its document frequencies counted on the whole test
    set (`gts`), not on the sample: which n-grams are informative does not change with the draw."""
    from pycocoevalcap.cider.cider_scorer import CiderScorer

    test_set = CiderScorer(n=4, sigma=6.0)
    for references in gts.values():
        test_set += (None, references)
    test_set.compute_doc_freq()
    sample = CiderScorer(n=4, sigma=6.0)
    for key, references in sample_gts.items():
        sample += (sample_res[key][0], references)
    sample.document_frequency = test_set.document_frequency
    assert len(sample.crefs) == len(gts)  # the log of the number of documents, in the idf, is the test set's too
    return float(np.mean(sample.compute_cider()))


def resample(names: list[str]) -> list[str]:
    """A bootstrap draw with repeats and images left out: image 0 three times, 1 twice, 2-4 never, the rest once."""
    return [names[0]] * 3 + [names[1]] * 2 + names[5:]


def test_reported_scores_are_exactly_pycocoevalcaps(scored):
    statistics, direct = scored
    assert set(statistics.reported) == set(direct)
    for key, (corpus, _) in direct.items():
        assert statistics.reported[key] == float(corpus), key


def test_the_summed_statistics_give_the_corpus_scores(scored):
    statistics, _ = scored
    everything = statistics.weighted(np.ones(len(statistics.names)))
    for key, value in statistics.reported.items():
        assert everything[key][0] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_one_image_alone_gives_its_own_pycocoevalcap_score(scored):
    """BLEU's per-image scores and METEOR's (from Java) are the statistics of one image on their own."""
    statistics, direct = scored
    alone = statistics.weighted(np.eye(len(statistics.names)))
    for key, (_, per_image) in direct.items():
        expected = np.asarray(per_image, dtype=np.float64)
        np.testing.assert_allclose(alone[key], expected, rtol=1e-12, atol=1e-15, err_msg=key)


def test_the_columns_have_the_documented_shapes(scored):
    statistics, _ = scored
    images = len(statistics.names)
    assert statistics.columns["bleu"].shape == (images, len(BLEU_COLUMNS))
    assert statistics.columns["meteor"].shape == (images, METEOR_COLUMNS)
    assert statistics.names == sorted(statistics.names)
    assert statistics.metrics == list(statistics.reported)


def test_brevity_penalty_and_zero_matches_follow_pycocoevalcap():
    # 5 candidate words against 10 reference words: penalty exp(1 - 10/5); no 4-gram match: BLEU-4 ~ 0.
    sums = np.array([[5, 10, 5, 4, 3, 2, 5, 4, 3, 0]], dtype=np.float64)
    bleu = bleu_from_sums(sums)[0]
    assert bleu[0] == pytest.approx(np.exp(1 - 2), rel=1e-9)
    assert bleu[3] < 1e-3
    longer = bleu_from_sums(np.array([[12, 10, 12, 11, 10, 9, 12, 11, 10, 9]], dtype=np.float64))[0]
    assert longer[0] == pytest.approx(1.0)  # no penalty above the reference length


def test_rows_must_match_the_images():
    with pytest.raises(ValueError, match="rouge_l: 2 rows for 3 images"):
        ImageStatistics(["a", "b", "c"], {"rouge_l": np.zeros((2, 1))}, {"rouge_l": 0.0})


def test_a_resample_with_repeats_and_left_out_images_is_the_rescored_resample(scored, tokenized, scorer):
    """The fast path (weights times per-image statistics) against pycocoevalcap run on the resampled list of
    captions, duplicates included: BLEU-1..4 (brevity penalty from the resample's lengths), ROUGE-L, METEOR 1.5
    (its sums, from Java) and CIDEr with the test set's document frequencies."""
    statistics, _ = scored
    _, gts, (res, _) = tokenized
    drawn = resample(statistics.names)
    weights = np.array([drawn.count(name) for name in statistics.names], dtype=np.float64)
    assert {0, 2, 3} <= set(weights)
    fast = statistics.weighted(weights)
    naive = rescored(gts, res, drawn, scorer)
    assert set(naive) == set(fast)
    for key, value in naive.items():
        assert fast[key][0] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_a_resamples_cider_keeps_the_test_sets_document_frequencies(scored, tokenized):
    """The chosen definition, pinned: pycocoevalcap's Cider() on the resample would count document frequencies
    on the resample, where a repeated image's n-grams look more common; the fast path does not."""
    from pycocoevalcap.cider.cider import Cider

    statistics, _ = scored
    _, gts, (res, _) = tokenized
    drawn = resample(statistics.names)
    sample_gts = {f"{n}:{name}": gts[name] for n, name in enumerate(drawn)}
    sample_res = {f"{n}:{name}": res[name] for n, name in enumerate(drawn)}
    weights = np.array([drawn.count(name) for name in statistics.names], dtype=np.float64)
    fast = statistics.weighted(weights)["cider"][0]
    assert fast == pytest.approx(cider_with_test_set_frequencies(gts, sample_gts, sample_res), rel=1e-12)
    recounted, _ = Cider().compute_score(sample_gts, sample_res)
    assert abs(fast - recounted) > 1e-4  # 5.6e-4 here, where the two definitions agree to 1e-12


def test_captions_swapped_between_two_systems_are_the_rescored_swap(scored, tokenized, scorer):
    """A randomisation shuffle: every third image takes the other system's caption, on both sides. The sums
    with those rows exchanged against pycocoevalcap run on the swapped caption sets."""
    statistics_a, _ = scored
    (_, other, references), gts, (res_a, res_b) = tokenized
    statistics_b = scorer.statistics(other, references)
    names = statistics_a.names
    swapped = np.arange(len(names)) % 3 == 0
    for first, second, res_first, res_second in [
        (statistics_a, statistics_b, res_a, res_b),
        (statistics_b, statistics_a, res_b, res_a),
    ]:
        columns = {
            key: np.where(swapped[:, None], second.columns[key], values) for key, values in first.columns.items()
        }
        fast = ImageStatistics(names, columns, {}).weighted(np.ones(len(names)))
        captions = {name: res_second[name] if swap else res_first[name] for name, swap in zip(names, swapped)}
        naive = rescored(gts, captions, names, scorer)
        for key, value in naive.items():
            assert fast[key][0] == pytest.approx(value, rel=1e-12, abs=1e-15), key
