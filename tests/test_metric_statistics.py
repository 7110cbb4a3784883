"""captioning/metric_statistics.py: per-image statistics reproduce pycocoevalcap's corpus and image scores."""

from __future__ import annotations

import contextlib
import io
import random

import numpy as np
import pytest

from captioning.metric_statistics import BLEU_COLUMNS, METEOR_COLUMNS, ImageStatistics, bleu_from_sums

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
def scored(scorer):
    """The example scored by the project and by pycocoevalcap called directly, on the same tokenized text."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    predictions, references = example(60)
    statistics = scorer.statistics(predictions, references)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in predictions.items()})
    res = {k: [v[0] or "<empty>"] for k, v in sorted(res.items())}
    gts = {k: gts[k] for k in res}
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, bleu_images = Bleu(4).compute_score(gts, res, verbose=0)
    direct = {f"bleu_{n + 1}": (bleu[n], bleu_images[n]) for n in range(4)}
    direct["rouge_l"] = Rouge().compute_score(gts, res)
    direct["cider"] = Cider().compute_score(gts, res)
    direct["meteor"] = scorer._meteor.compute_score(gts, res)
    return statistics, direct


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
