"""What confidence intervals and paired tests cost: per-image statistics against re-running the scorer.

Generated captions for --images test images (5,000 by default, the size of COCO's Karpathy test split), five
references each, are timed as
  - plain pycocoevalcap scoring (PTB tokenizer, BLEU, METEOR, ROUGE-L, CIDEr), as a corpus score is computed;
  - the same with per-image statistics kept (captioning.metrics.CaptionScorer.statistics), what evaluate runs;
  - the 95% bootstrap intervals from those statistics (captioning.significance, --resamples resamples);
  - a paired comparison of two systems (bootstrap interval and approximate randomisation);
  - the naive alternative, re-scoring every resample with BLEU, ROUGE-L and CIDEr (not even METEOR):
    --naive resamples are timed and the cost of --resamples of them extrapolated.
Needs Java (the PTB tokenizer and METEOR 1.5).

    python benchmarks/intervals.py [--images 5000] [--resamples 1000] [--naive 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import sys
import time

import numpy as np
from _timing import machine_header

from captioning.metrics import CaptionScorer, java_available
from captioning.significance import bootstrap_intervals, paired_comparison

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


def rescore_without_meteor(gts: dict, res: dict, rng: np.random.Generator) -> None:
    """One naive bootstrap resample: draw the images, rename duplicates, score again."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    names = list(gts)
    drawn = [names[i] for i in rng.integers(0, len(names), len(names))]
    sample_gts = {f"{name}#{n}": gts[name] for n, name in enumerate(drawn)}
    sample_res = {f"{name}#{n}": res[name] for n, name in enumerate(drawn)}
    with contextlib.redirect_stdout(io.StringIO()):
        Bleu(4).compute_score(sample_gts, sample_res)
        Rouge().compute_score(sample_gts, sample_res)
        Cider().compute_score(sample_gts, sample_res)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--resamples", type=int, default=1000)
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
    _, paired_seconds = timed(lambda: paired_comparison(statistics, other_statistics, args.resamples, seed=0))
    rng = np.random.default_rng(0)
    _, naive_seconds = timed(lambda: [rescore_without_meteor(gts, res, rng) for _ in range(args.naive)])
    naive_total = naive_seconds / args.naive * args.resamples

    assert statistics.reported["bleu_4"] == plain["bleu"][3] and statistics.reported["cider"] == plain["cider"]
    print(machine_header(f"Intervals and paired tests, {args.images} test images, {args.resamples} resamples"))
    rows = [
        ("plain pycocoevalcap scoring (tokenizer, BLEU, METEOR, ROUGE-L, CIDEr)", plain_seconds),
        ("scoring with per-image statistics kept (evaluate)", statistics_seconds),
        (f"bootstrap intervals, {args.resamples} resamples, every metric", interval_seconds),
        (f"paired comparison: bootstrap + randomisation, {args.resamples} each", paired_seconds),
        (f"naive: re-score {args.resamples} resamples, BLEU+ROUGE-L+CIDEr only (extrapolated)", naive_total),
    ]
    print("| step | seconds | vs plain scoring |\n|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3g} | {seconds / plain_seconds:.3g}x |")
    print(
        f"\nnaive re-scoring / bootstrap from statistics: {naive_total / interval_seconds:.0f}x; "
        f"bleu_4 {statistics.reported['bleu_4']:.4f} "
        f"[{intervals['bleu_4']['low']:.4f}, {intervals['bleu_4']['high']:.4f}], "
        f"meteor {statistics.reported['meteor']:.4f} [{intervals['meteor']['low']:.4f}, "
        f"{intervals['meteor']['high']:.4f}]"
    )


if __name__ == "__main__":
    main()
