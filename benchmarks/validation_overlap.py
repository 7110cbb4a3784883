"""Validation's scores computed in line or while the next epoch trains (plan.score_in_background), on this CPU.

On a GPU the host scores an epoch's validation captions (Java's PTB tokenizer, METEOR, CIDEr) while the GPU
trains the next epoch; on a CPU both compete for the same cores, so the CPU keeps scoring in line. This runs
the train stage's training (captioning.training.fit) on the pipeline's own files (run `dvc repro embeddings`
first), both ways, interleaved, and prints the time of each run, their ratio and whether the two runs kept the
same epoch, the same scores and the same weights.

    python benchmarks/validation_overlap.py [--epochs 2] [--repeats 2] [--captions 4000]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
from _timing import machine_header

from captioning.data.table import read_table
from captioning.features.store import FeatureStore
from captioning.params import load_params
from captioning.scoring.metrics import CaptionScorer
from captioning.scoring.split import EvaluationImages
from captioning.text.vocabulary import Vocabulary
from captioning.train.batching import CaptionSet
from captioning.train.cross_entropy import feature_statistics, fit
from captioning.train.run import build_model, load_embeddings
from captioning.train.validation import Validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--captions", type=int, default=4000, help="training captions per epoch (the first ones)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = dataclasses.replace(load_params("train"), epochs=args.epochs, precision="fp32")
    model_params = load_params("model")
    table, vocabulary = read_table("data/dataset.json"), Vocabulary.load("data/vocab.json")
    store = FeatureStore("data/features.h5")
    train = CaptionSet.from_encoded(np.load("data/captions.npz"), table, store)
    train = CaptionSet(*(field[: args.captions] for field in dataclasses.astuple(train)))
    val = EvaluationImages.from_split(table, store, "val")
    embeddings = load_embeddings("data/embeddings.npy", "data/vocab.json", len(vocabulary))
    device = torch.device("cpu")

    def run(background: bool) -> tuple[float, dict, dict]:
        torch.manual_seed(params.seed)
        decoder = build_model(len(vocabulary), embeddings.shape[1], store.shape[2], model_params)
        decoder.load_embeddings(embeddings, False)
        decoder.set_feature_statistics(*feature_statistics(store, np.unique(train.feature_rows), seed=params.seed))
        with CaptionScorer() as scorer:
            validation = Validation(val, store, vocabulary, scorer, params.val_max_len, device)
            started = time.perf_counter()
            best = fit(decoder, train, store, validation, params, score_in_background=background)
            return time.perf_counter() - started, best, decoder.state_dict()

    times: dict[bool, list[float]] = {False: [], True: []}
    results = {}
    for _ in range(args.repeats):
        for background in (False, True):
            seconds, best, weights = run(background)
            times[background].append(seconds)
            results[background] = (best, weights)
    same_best = results[False][0] == results[True][0]
    same_weights = all(torch.equal(a, b) for a, b in zip(results[False][1].values(), results[True][1].values()))
    print(machine_header("Validation scored in line or while the next epoch trains"))
    print(f"{len(train.lengths)} training captions, {len(val.names)} validation images, {args.epochs} epochs, fp32\n")
    print(f"| validation scores | seconds per run (median of {args.repeats}) |")
    print("|---|---|")
    for background, label in ((False, "in line (the CPU's default)"), (True, "in the background (a GPU's default)")):
        print(f"| {label} | {np.median(times[background]):.1f} |")
    ratio = np.median(times[False]) / np.median(times[True])
    print(
        f"\nin line / background: {ratio:.2f}x; the same kept epoch and scores: {same_best}; the same weights: "
        f"{same_weights}"
    )


if __name__ == "__main__":
    main()
