"""What confidence intervals and paired tests cost: per-image statistics against re-running the scorer.

Generated captions for --images test images (5,000 by default, the size of COCO's Karpathy test split), five
references each, are timed as
  - plain pycocoevalcap scoring (PTB tokenizer, BLEU, METEOR, ROUGE-L, CIDEr), as a corpus score is computed;
  - the same with per-image statistics kept (captioning.metrics.CaptionScorer.statistics), what evaluate runs;
  - the 95% bootstrap intervals from those statistics (captioning.scoring.significance, --resamples resamples);
  - a paired comparison of two systems (bootstrap interval and approximate randomisation), and a seed-level
    one of three pairs of runs (the two systems again, in turn), with the peak memory each allocates;
  - the naive alternative, the same estimator by re-scoring every resample with pycocoevalcap: BLEU, METEOR
    (one METEOR process, started and loaded before the clock), ROUGE-L and CIDEr with the test set's document
    frequencies; --naive resamples are timed, checked equal to the fast path's, and the cost of --resamples
    of them extrapolated.
Needs Java (the PTB tokenizer and METEOR 1.5).

    python benchmarks/intervals.py [--images 5000] [--resamples 10000] [--naive 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys
import time
import tracemalloc

import numpy as np
from _timing import machine_header

from captioning.scoring.metrics import CaptionScorer, java_available
from captioning.scoring.significance import RESAMPLES, bootstrap_intervals, paired_comparison

WORDS = (
    "a the red blue green yellow small large circle square triangle star at on near top left right bottom middle "
    "of in corner edge with and two one"
).split()


def captions(images: int, seed: int) -> tuple[dict[str, str], dict[str, list[str]]]:
    rng = random.Random(seed)
    sentence = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14)))  # noqa: E731
    references = {f"{i:06d}.jpg": [sentence() for _ in range(5)] for i in range(images)}
    predictions = {name: refs[0] if rng.random() < 0.3 else sentence() for name, refs in references.items()}
    return predictions, references


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def plain_scores(predictions: dict, references: dict) -> dict:
    """pycocoevalcap as coco-caption's evaluation script calls it."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in predictions.items()})
    meteor = Meteor()
    with contextlib.redirect_stdout(io.StringIO()):
        scores = {"bleu": Bleu(4).compute_score(gts, res)[0], "meteor": meteor.compute_score(gts, res)[0]}
        scores.update(rouge_l=Rouge().compute_score(gts, res)[0], cider=Cider().compute_score(gts, res)[0])
    meteor.__del__()
    return scores, gts, res


def peak_megabytes(function) -> float:
    """The most memory `function` holds at once (numpy's arrays included), in MB."""
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


class NaiveResampler:
    """The bootstrap the slow way: draw the images, rename the repeats, score the drawn list with pycocoevalcap.
    The same estimator as the fast path: CIDEr keeps the whole test set's document frequencies."""

    def __init__(self, gts: dict, res: dict):
        from pycocoevalcap.cider.cider_scorer import CiderScorer
        from pycocoevalcap.meteor.meteor import Meteor

        self.gts, self.res, self.names = gts, res, sorted(gts)
        self.meteor = Meteor()
        first = self.names[0]
        self.meteor.compute_score({first: gts[first]}, {first: res[first]})  # waits for its tables: not timed
        test_set = CiderScorer(n=4, sigma=6.0)
        for references in gts.values():
            test_set += (None, references)
        test_set.compute_doc_freq()
        self.document_frequency = test_set.document_frequency

    def score(self, drawn: np.ndarray) -> dict[str, float]:
        """The metrics of the images drawn (indices into the sorted names, repeats included)."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider_scorer import CiderScorer
        from pycocoevalcap.rouge.rouge import Rouge

        names = [self.names[i] for i in drawn]
        gts = {f"{name}#{n}": self.gts[name] for n, name in enumerate(names)}
        res = {f"{name}#{n}": self.res[name] for n, name in enumerate(names)}
        with contextlib.redirect_stdout(io.StringIO()):
            bleu = Bleu(4).compute_score(gts, res)[0]
            scores = {f"bleu_{n + 1}": bleu[n] for n in range(4)}
            scores["meteor"] = self.meteor.compute_score(gts, res)[0]
            scores["rouge_l"] = Rouge().compute_score(gts, res)[0]
        cider = CiderScorer(n=4, sigma=6.0)
        for key in gts:
            cider += (res[key][0], gts[key])
        cider.document_frequency = self.document_frequency
        scores["cider"] = float(np.mean(cider.compute_cider()))
        return scores

    def close(self) -> None:
        self.meteor.__del__()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--naive", type=int, default=3, help="naive re-scored resamples timed (then extrapolated)")
    args = parser.parse_args()
    if not java_available():
        sys.exit("error: Java not found: the PTB tokenizer and METEOR 1.5 need a JRE")
    predictions, references = captions(args.images, seed=0)
    other, _ = captions(args.images, seed=1)
    other = {name: other[name] for name in predictions}

    (plain, gts, res), plain_seconds = timed(lambda: plain_scores(predictions, references))

    def start_and_score():  # METEOR's start (loading its paraphrase tables) counted, as in plain scoring
        scorer = CaptionScorer(meteor=True)  # with METEOR whatever CAPTIONING_METEOR says: it is measured
        return scorer, scorer.statistics(predictions, references)

    (scorer, statistics), statistics_seconds = timed(start_and_score)
    with scorer:  # the same METEOR process scores the other side of the paired comparison
        other_statistics = scorer.statistics(other, references)
    intervals, interval_seconds = timed(lambda: bootstrap_intervals(statistics, args.resamples, seed=0))
    paired = lambda: paired_comparison(statistics, other_statistics, args.resamples, seed=0)  # noqa: E731
    _, paired_seconds = timed(paired)
    runs_a, runs_b = [statistics, other_statistics, statistics], [other_statistics, statistics, other_statistics]
    seeds = lambda: paired_comparison(runs_a, runs_b, args.resamples, seed=0)  # noqa: E731
    _, seeds_seconds = timed(seeds)
    paired_mb, seeds_mb = peak_megabytes(paired), peak_megabytes(seeds)

    naive = NaiveResampler(gts, res)
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, args.images, args.images) for _ in range(args.naive)]
    naive_scores, naive_seconds = timed(lambda: [naive.score(drawn) for drawn in draws])
    naive.close()
    naive_total = naive_seconds / args.naive * args.resamples
    for drawn, scores in zip(draws, naive_scores):  # the same estimator, resample for resample
        fast = statistics.weighted(np.bincount(drawn, minlength=args.images))
        for key, value in scores.items():
            assert abs(fast[key][0] - value) <= 1e-9 * abs(value) + 1e-12, (key, fast[key][0], value)

    assert statistics.reported["bleu_4"] == plain["bleu"][3] and statistics.reported["cider"] == plain["cider"]
    print(machine_header(f"Intervals and paired tests, {args.images} test images, {args.resamples} resamples"))
    rows = [
        ("plain pycocoevalcap scoring (tokenizer, BLEU, METEOR, ROUGE-L, CIDEr)", plain_seconds, ""),
        ("scoring with per-image statistics kept (evaluate)", statistics_seconds, ""),
        (f"bootstrap intervals, {args.resamples} resamples, every metric", interval_seconds, ""),
        (f"paired comparison: bootstrap + randomisation, {args.resamples} each", paired_seconds, f"{paired_mb:.3g}"),
        (f"seed-level comparison, 3 pairs of runs, {args.resamples} each", seeds_seconds, f"{seeds_mb:.3g}"),
        (f"naive: re-score {args.resamples} resamples, every metric (extrapolated)", naive_total, ""),
    ]
    print("| step | seconds | vs plain scoring | peak MB |\n|---|---|---|---|")
    for name, seconds, megabytes in rows:
        print(f"| {name} | {seconds:.3g} | {seconds / plain_seconds:.3g}x | {megabytes} |")
    print(
        f"\nnaive re-scoring / bootstrap from statistics: {naive_total / interval_seconds:.0f}x "
        f"(the same numbers: {args.naive} resample(s) checked); "
        f"bleu_4 {statistics.reported['bleu_4']:.4f} "
        f"[{intervals['bleu_4']['low']}, {intervals['bleu_4']['high']}] (Monte Carlo error "
        f"{intervals['bleu_4']['mc_error']}), meteor {statistics.reported['meteor']:.4f} "
        f"[{intervals['meteor']['low']}, {intervals['meteor']['high']}], "
        f"cider {statistics.reported['cider']:.4f} [{intervals['cider']['low']}, {intervals['cider']['high']}]"
    )


if __name__ == "__main__":
    main()
