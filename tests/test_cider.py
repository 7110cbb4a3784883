"""captioning/finetune/cider.py: CIDEr-D as pycocoevalcap computes it, with document frequencies from a fixed corpus."""

from __future__ import annotations

import pytest
from pycocoevalcap.cider.cider import Cider

from captioning.finetune.cider import CiderD

REFERENCES = {
    "a": ["a red circle on the left", "a big red circle at the left", "there is a red circle"],
    "b": ["a blue square at the top right", "blue square top right", "the square is blue and small"],
    "c": ["a green triangle below a red circle", "a green triangle and a red circle", "two shapes"],
    "d": ["a small purple circle on the left and a blue triangle at the bottom right", "purple circle"],
}
CANDIDATES = {
    "a": "a red circle",  # short: the length penalty
    "b": "blue blue blue square square right",  # repeated words: CIDEr-D's clipping
    "c": "a green triangle and a red circle",  # equal to one reference
    "d": "nothing matches in this",  # no shared n-gram: 0
}


def corpus() -> tuple[list[str], CiderD]:
    names = sorted(REFERENCES)
    return names, CiderD([[r.split() for r in REFERENCES[n]] for n in names])


def test_cider_d_equals_pycocoevalcap_on_a_fixed_example():
    names, cider = corpus()
    _, expected = Cider().compute_score(REFERENCES, {n: [CANDIDATES[n]] for n in names})
    actual = cider.scores([CANDIDATES[n].split() for n in names], range(len(names)))
    assert actual == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert actual[names.index("d")] == 0.0 and actual[names.index("c")] > actual[names.index("a")] > 0


def test_a_captions_reward_does_not_depend_on_the_batch_it_is_scored_in():
    """Document frequencies come from the corpus given once, never from the captions being scored."""
    names, cider = corpus()
    alone = cider.scores([CANDIDATES["a"].split()], [names.index("a")])[0]
    batch = [CANDIDATES["a"].split()] + [CANDIDATES["a"].split()] * 5 + [REFERENCES["b"][0].split()]
    in_batch = cider.scores(batch, [names.index("a")] * 6 + [names.index("b")])
    assert alone > 0 and list(in_batch[:6]) == [alone] * 6


def test_the_end_token_penalises_a_caption_that_stops_mid_phrase():
    """With <end> closing every caption, "a red circle on the" misses the n-grams that end the references."""
    references = [[*"a red circle on the left".split(), "<end>"], [*"a blue square".split(), "<end>"]]
    cider = CiderD([references[:1], references[1:]])
    complete, cut = ["a", "red", "circle", "on", "the", "left", "<end>"], ["a", "red", "circle", "on", "the", "<end>"]
    scores = cider.scores([complete, cut], [0, 0])
    assert scores[0] > scores[1] > 0
    # Without <end> anywhere the cut caption loses only what its missing word brings; with it, more.
    plain = CiderD([[references[0][:-1]], [references[1][:-1]]]).scores([complete[:-1], cut[:-1]], [0, 0])
    assert scores[1] / scores[0] < plain[1] / plain[0]
