"""Caption metrics the way the literature scores them: pycocoevalcap (coco-caption).

PTB tokenizer, BLEU-1..4 (corpus level, closest reference length), METEOR 1.5, ROUGE-L and CIDEr,
each prediction against all references of its image. The tokenizer and METEOR need Java; without it
the project's tokenizer stands in (with a warning) and METEOR is replaced by NLTK's, under the
different key `meteor_nltk` and only when the WordNet corpus is installed — never silently as `meteor`.
CAPTIONING_METEOR=off in the environment leaves METEOR out of every scorer not asked for it by name (the
test suite's stage runs, where starting its 1.2 GB Java process costs seconds and scores nothing it checks).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil

import numpy as np
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from captioning.scoring.statistics import ImageStatistics, meteor_columns
from captioning.text.tokenizer import tokenize

log = logging.getLogger(__name__)
METRIC_KEYS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")
METEOR_SWITCH = "CAPTIONING_METEOR"  # "off": no METEOR unless CaptionScorer(meteor=True)


def _column(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, 1)


def _bleu(references: dict, predictions: dict, keys: list[str]) -> tuple[list[float], np.ndarray]:
    """pycocoevalcap's Bleu(4).compute_score, keeping each image's lengths and clipped n-gram counts."""
    scorer = BleuScorer(n=4)
    for k in keys:
        scorer += (predictions[k][0], references[k])
    scores, _ = scorer.compute_score(option="closest", verbose=0)
    counts = [
        [c["testlen"], scorer._single_reflen(c["reflen"], "closest", c["testlen"]), *c["guess"], *c["correct"]]
        for c in scorer.ctest
    ]
    return scores, np.array(counts, dtype=np.float64)


def _meteor(meteor, references: dict, predictions: dict, keys: list[str]) -> tuple[float, np.ndarray]:
    """pycocoevalcap's Meteor.compute_score, keeping each image's statistics line (METEOR's own sums)."""
    with meteor.lock:
        lines = [meteor._stat(predictions[k][0], references[k]) for k in keys]
        meteor.meteor_p.stdin.write(("EVAL ||| " + " ||| ".join(lines) + "\n").encode())
        meteor.meteor_p.stdin.flush()
        for _ in keys:  # the per-image scores, not needed: the statistics give them
            meteor.meteor_p.stdout.readline()
        corpus = float(meteor.meteor_p.stdout.readline().strip())
    return corpus, meteor_columns(lines)


def java_available() -> bool:
    return shutil.which("java") is not None


def _nltk_wordnet_available() -> bool:
    try:
        import nltk

        nltk.data.find("corpora/wordnet")
        return True
    except LookupError:
        return False


class CaptionScorer:
    """Scores {image: caption} against {image: [references]}; keeps one METEOR process for many calls.

    With `keep_meteor=False` METEOR's Java process (about 1.2 GB once its paraphrase tables are loaded)
    lives only while a score() call needs it: for a caller that scores once per long epoch, as a training
    run on Flickr30k or COCO does, and would otherwise hold that memory idle for the whole epoch.
    """

    def __init__(self, meteor: bool | None = None, keep_meteor: bool = True):
        if meteor is None:  # the default: on, unless the environment switches it off
            meteor = os.environ.get(METEOR_SWITCH, "on") != "off"
        self.java = java_available()
        self._meteor = None
        self._meteor_wanted = meteor and self.java
        self._keep_meteor = keep_meteor
        if self._meteor_wanted and keep_meteor:
            self._start_meteor()
        elif meteor and not self.java:
            log.warning("Java not found: METEOR 1.5 and the PTB tokenizer are unavailable (install a JRE)")
        self.nltk_meteor = meteor and not self.java and _nltk_wordnet_available()

    def _start_meteor(self) -> None:
        from pycocoevalcap.meteor.meteor import Meteor

        self._meteor = Meteor()

    def _tokenize(self, captions: dict) -> dict:
        if self.java:
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

            return PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in captions.items()})
        return {k: [" ".join(tokenize(c)) for c in v] for k, v in captions.items()}

    def score(self, predictions: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
        """Corpus scores, as pycocoevalcap reports them."""
        return self.statistics(predictions, references).reported

    def statistics(self, predictions: dict[str, str], references: dict[str, list[str]]) -> ImageStatistics:
        """The corpus scores and, per image, the statistics they are computed from (in image-name order)."""
        if set(predictions) != set(references) or not predictions:
            raise ValueError("predictions and references must cover the same, non-empty set of images")
        keys = sorted(predictions)
        both = {("ref", k): references[k] for k in keys} | {("hyp", k): [predictions[k]] for k in keys}
        tokenized = self._tokenize(both)  # one tokenizer run for references and predictions
        references = {k: tokenized[("ref", k)] for k in keys}
        # An empty hypothesis breaks METEOR's line protocol; a lone placeholder scores zero as it should.
        predictions = {k: [tokenized[("hyp", k)][0] or "<empty>"] for k in keys}
        with contextlib.redirect_stdout(io.StringIO()):  # the BLEU scorer prints its internals
            bleu, bleu_counts = _bleu(references, predictions, keys)
            rouge, rouge_per_image = Rouge().compute_score(references, predictions)
            cider, cider_per_image = Cider().compute_score(references, predictions)
        reported = {f"bleu_{n + 1}": float(bleu[n]) for n in range(4)}
        reported.update(rouge_l=float(rouge), cider=float(cider))
        columns = {"bleu": bleu_counts, "rouge_l": _column(rouge_per_image), "cider": _column(cider_per_image)}
        if self._meteor_wanted:
            if self._meteor is None:
                self._start_meteor()
            reported["meteor"], columns["meteor"] = _meteor(self._meteor, references, predictions, keys)
            if not self._keep_meteor:
                self.close()
        elif self.nltk_meteor:
            from nltk.translate.meteor_score import meteor_score

            values = [meteor_score([r.split() for r in references[k]], predictions[k][0].split()) for k in keys]
            reported["meteor_nltk"] = sum(values) / len(values)
            columns["meteor_nltk"] = _column(values)
        return ImageStatistics(keys, columns, reported)

    def close(self) -> None:
        """Stop the METEOR process now (pycocoevalcap's own __del__ does the same, harmlessly, later).

        Also after Ctrl-C, which a terminal sends to METEOR's Java process too: a call interrupted mid-way
        keeps the METEOR lock (__del__ would wait for it forever), and the pipe to the dead process is broken
        (__del__ would raise while holding the lock). The stage then ends with its one line, not a hang.
        """
        meteor, self._meteor = self._meteor, None
        if meteor is None:
            return
        if meteor.lock.locked():  # an interrupted call never released it; nothing else runs METEOR now
            meteor.lock.release()
        try:
            meteor.__del__()
        except OSError:  # the process is gone already: a broken pipe while closing its input
            meteor.meteor_p.kill()
            meteor.meteor_p.wait()
            meteor.lock.release()  # __del__ stopped holding it, and the garbage collector will call it again

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
