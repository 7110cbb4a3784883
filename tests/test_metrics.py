"""captioning/scoring/metrics.py: the same numbers as pycocoevalcap, and no METEOR under a false name without Java."""

from __future__ import annotations

import contextlib
import gc
import io
import logging

import pytest

import captioning.scoring.metrics as metrics
from captioning.scoring.metrics import METRIC_KEYS, CaptionScorer

PREDICTIONS = {
    "img1.png": "A large red circle at the top left.",
    "img2.png": "a small blue square on the right",
    "img3.png": "a dog, running in the park",
}
REFERENCES = {
    "img1.png": ["a large red circle at the top left", "a big red circle in the top left corner", "a red circle"],
    "img2.png": ["a small blue square on the right", "there is a little blue square at the right"],
    "img3.png": ["a brown dog runs through the grass", "the dog is running in a park", "a dog plays outside"],
}


def coco_caption_scores(predictions: dict, references: dict, meteor=None) -> dict:
    """pycocoevalcap called directly, as coco-caption's evaluation script does (METEOR with `meteor`)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in predictions.items()})
    with contextlib.redirect_stdout(io.StringIO()):
        bleu, _ = Bleu(4).compute_score(gts, res)
    scores = {f"bleu_{n + 1}": bleu[n] for n in range(4)}
    scores["rouge_l"] = Rouge().compute_score(gts, res)[0]
    scores["cider"] = Cider().compute_score(gts, res)[0]
    if meteor is not None:
        scores["meteor"] = meteor.compute_score(gts, res)[0]
    return scores


@pytest.fixture(scope="module")
def java_scorer():
    """The PTB tokenizer (Java) without METEOR, whose paraphrase tables take 5-20 s to load."""
    if not metrics.java_available():
        pytest.skip("Java is not installed")
    return CaptionScorer(meteor=False)


def test_scores_equal_pycocoevalcap_called_directly(java_scorer):
    scores = java_scorer.score(PREDICTIONS, REFERENCES)
    assert set(scores) == set(METRIC_KEYS) - {"meteor"}
    expected = coco_caption_scores(PREDICTIONS, REFERENCES)
    for key in scores:
        assert scores[key] == pytest.approx(expected[key], abs=1e-9), key
    assert 0 < scores["bleu_4"] < scores["bleu_1"] < 1 and scores["cider"] > 0


def test_a_perfect_prediction_scores_one_and_an_empty_one_zero(java_scorer):
    references = {"a": ["a red circle on the left"], "b": ["a small blue square at the bottom"]}
    perfect = java_scorer.score({"a": "a red circle on the left", "b": "a small blue square at the bottom"}, references)
    assert perfect["bleu_4"] == pytest.approx(1.0) and perfect["rouge_l"] == pytest.approx(1.0)
    empty = java_scorer.score({"a": "", "b": "..."}, references)  # both tokenize to nothing
    assert empty["bleu_1"] == pytest.approx(0.0, abs=1e-6)
    assert empty["rouge_l"] == 0.0 and empty["cider"] == 0.0


@pytest.mark.slow
def test_meteor_equals_pycocoevalcap_and_survives_empty_predictions(meteor_scorer):
    """METEOR 1.5 itself (the session's Java process, conftest.py: seconds to load, hence `slow`)."""
    scorer = meteor_scorer
    scores = scorer.score(PREDICTIONS, REFERENCES)
    assert set(scores) == set(METRIC_KEYS)
    expected = coco_caption_scores(PREDICTIONS, REFERENCES, meteor=scorer._meteor)  # pycocoevalcap's Meteor
    for key in METRIC_KEYS:
        assert scores[key] == pytest.approx(expected[key], abs=1e-9), key
    assert 0 < scores["meteor"] < 1
    references = {"a": ["a red circle on the left"], "b": ["a small blue square"]}
    assert scorer.score({"a": "a red circle on the left", "b": "a small blue square"}, references)["meteor"] > 0.9
    assert scorer.score({"a": "", "b": "..."}, references)["meteor"] == 0.0


@pytest.mark.parametrize(
    "predictions", [{}, {"img1.png": "x"}, {**PREDICTIONS, "other.png": "x"}], ids=["empty", "missing", "extra"]
)
def test_predictions_and_references_must_cover_the_same_images(predictions):
    scorer = CaptionScorer(meteor=False)
    references = {} if not predictions else REFERENCES
    with pytest.raises(ValueError, match="same, non-empty set of images"):
        scorer.score(predictions, references)


def test_the_environment_switch_leaves_meteor_out_unless_a_scorer_asks_for_it(monkeypatch):
    """CAPTIONING_METEOR=off (as the test suite sets it): no METEOR by default; meteor=True still has it."""
    monkeypatch.setattr(metrics, "_nltk_wordnet_available", lambda: True)  # not even NLTK's stands in
    monkeypatch.setenv(metrics.METEOR_SWITCH, "off")
    switched_off = CaptionScorer(meteor=None, keep_meteor=False)
    assert not switched_off._meteor_wanted and not switched_off.nltk_meteor
    assert set(switched_off.score(PREDICTIONS, REFERENCES)) == set(METRIC_KEYS) - {"meteor"}
    assert CaptionScorer(meteor=True, keep_meteor=False)._meteor_wanted == metrics.java_available()
    monkeypatch.setenv(metrics.METEOR_SWITCH, "on")
    assert CaptionScorer(keep_meteor=False)._meteor_wanted == metrics.java_available()
    monkeypatch.delenv(metrics.METEOR_SWITCH)
    assert CaptionScorer(keep_meteor=False)._meteor_wanted == metrics.java_available()


def test_without_java_nor_wordnet_there_is_no_meteor_key_and_a_warning(monkeypatch, caplog):
    real_which = metrics.shutil.which
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None if name == "java" else real_which(name))
    monkeypatch.setattr(metrics, "_nltk_wordnet_available", lambda: False)  # as installed here
    assert not metrics.java_available()
    with caplog.at_level(logging.WARNING, logger="captioning.scoring.metrics"):
        scorer = CaptionScorer(meteor=True)
    assert "Java not found" in caplog.text
    assert scorer._meteor is None
    scores = scorer.score(PREDICTIONS, REFERENCES)
    assert set(scores) == set(METRIC_KEYS) - {"meteor"}
    assert "meteor_nltk" not in scores


def test_without_java_the_project_tokenizer_gives_the_ptb_scores_on_plain_captions(monkeypatch, java_scorer):
    predictions = {k: v.lower().replace(",", "").rstrip(".") for k, v in PREDICTIONS.items()}
    with_java = java_scorer.score(predictions, REFERENCES)
    monkeypatch.setattr(metrics, "java_available", lambda: False)
    without_java = CaptionScorer(meteor=False).score(predictions, REFERENCES)
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider"):
        assert without_java[key] == pytest.approx(with_java[key], abs=1e-9), key


def test_without_java_nltk_meteor_is_reported_under_its_own_key(monkeypatch):
    import nltk.translate.meteor_score

    monkeypatch.setattr(metrics, "java_available", lambda: False)
    monkeypatch.setattr(metrics, "_nltk_wordnet_available", lambda: True)
    calls = []

    def fake_meteor(references, hypothesis):
        calls.append((references, hypothesis))
        return 0.25 * len(calls)

    monkeypatch.setattr(nltk.translate.meteor_score, "meteor_score", fake_meteor)
    scores = CaptionScorer(meteor=True).score(PREDICTIONS, REFERENCES)
    assert "meteor" not in scores and scores["meteor_nltk"] == pytest.approx((0.25 + 0.5 + 0.75) / 3)
    assert calls[0] == ([r.split() for r in REFERENCES["img1.png"]], "a large red circle at the top left".split())


def test_closing_one_scorer_does_not_leak_the_meteor_process_of_another(monkeypatch):
    if not metrics.java_available():
        pytest.skip("Java is not installed")
    from pycocoevalcap.meteor.meteor import Meteor

    monkeypatch.setattr(Meteor, "__del__", Meteor.__del__)  # whatever close() does to the class is undone after
    first, second = CaptionScorer(meteor=True), CaptionScorer(meteor=True)
    process = second._meteor.meteor_p
    try:
        first.close()
        del second
        gc.collect()
        assert process.poll() is not None, "the second scorer's METEOR process is still running"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_a_scorer_that_does_not_keep_meteor_runs_it_only_inside_score_with_the_same_result(meteor_scorer):
    """keep_meteor=False: no idle 1.2 GB Java process between validations (two METEOR loads: `slow`); the
    same scores as the session's kept scorer."""
    passing = CaptionScorer(meteor=True, keep_meteor=False)
    assert passing._meteor is None  # nothing started before the first score
    first = passing.score(PREDICTIONS, REFERENCES)
    assert passing._meteor is None  # and nothing left running after it
    second = passing.score(PREDICTIONS, REFERENCES)
    expected = meteor_scorer.score(PREDICTIONS, REFERENCES)
    assert 0 < first["meteor"] < 1
    assert first == second == expected


def test_closing_after_ctrl_c_neither_hangs_nor_raises():
    """Ctrl-C in a terminal reaches METEOR's Java process too, and may interrupt a call that holds the METEOR lock:
    closing the scorer then must not wait for that lock forever nor raise on the broken pipe."""
    import threading

    if not metrics.java_available():
        pytest.skip("Java is not installed")
    scorer = CaptionScorer(meteor=True)
    scorer.score(PREDICTIONS, REFERENCES)
    meteor = scorer._meteor
    meteor.lock.acquire()  # as a call interrupted mid-way leaves it
    # Ctrl-C ends the Java process; SIGKILL here, since a CI job started in the background ignores SIGINT
    meteor.meteor_p.kill()
    meteor.meteor_p.wait(timeout=60)
    meteor.meteor_p.stdin.write(b"EVAL ||| unsent")  # buffered: closing the pipe to the dead process flushes it
    errors = []

    def close_twice() -> None:  # ours, then pycocoevalcap's own __del__, as the garbage collector calls it
        try:
            scorer.close()
            meteor.__del__()
        except Exception as error:
            errors.append(error)

    closing = threading.Thread(target=close_twice, daemon=True)
    closing.start()
    closing.join(timeout=60)  # a deadlock guard, not a timing: closing takes milliseconds
    assert not closing.is_alive(), "closing the scorer waits for the METEOR lock forever"
    assert errors == [] and scorer._meteor is None and meteor.meteor_p.returncode is not None
