"""Self-critical training's speed: sampled captions per second, and what the reward costs per batch.

One batch of scst.batch_size training images, scst.samples captions each (params.yaml), is timed as
  - captioning.decoding.sample_captions with the gradient graph kept (as training runs it), the fast decoder
    (and with --paper the literal one, whose graph keeps K copies of each image's regions per step: ~2.4 GB
    for 50 images x 5 samples x 24 steps);
  - the reward: CIDEr-D (captioning.finetune.cider) of the batch's sampled captions against their references;
  - the greedy baseline: greedy decoding of the batch plus the CIDEr-D of those captions;
  - one whole SCST step (sample, reward, baseline, backward, Adam), fast decoder.
The model is models/cross_entropy.pt (or --model); the images are the first training images of
data/features.h5. The pipeline's files are only read; the model's weights are not changed on disk.

    python benchmarks/scst.py [--batches 4] [--repeats 3] [--model models/cross_entropy.pt]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from _timing import interleaved, machine_header, median, table

from captioning.checkpoint import load_model
from captioning.data.table import read_table
from captioning.features.store import FeatureStore
from captioning.finetune.cider import CiderD
from captioning.finetune.scst import RewardImages, caption_words, greedy_rewards, scst_batch
from captioning.model import build_decoder
from captioning.model.decoding import sample_captions
from captioning.params import load_params
from captioning.text.vocabulary import Vocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/cross_entropy.pt"))
    parser.add_argument("--batches", type=int, default=4, help="batches timed per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paper", action="store_true", help="also time the literal decoder (memory-hungry)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs = [args.model, Path("data/features.h5"), Path("data/dataset.json"), Path("data/vocab.json")]
    missing = [str(p) for p in inputs if not p.is_file()]
    if missing:
        raise SystemExit(
            f"error: {', '.join(missing)} not found: this benchmark reads the pipeline's outputs (dvc repro)"
        )
    params = load_params("scst")
    vocabulary = Vocabulary.load("data/vocab.json")
    store = FeatureStore("data/features.h5")
    images = RewardImages.from_split(read_table("data/dataset.json"), store)
    started = time.perf_counter()
    cider = CiderD(images.references)
    corpus_seconds = time.perf_counter() - started
    fast, _ = load_model(args.model)
    paper = build_decoder(fast.config, "paper").eval()
    paper.load_state_dict(fast.state_dict())
    size, k = params.batch_size, params.samples
    batches = [np.arange(i * size, (i + 1) * size) % len(images.names) for i in range(args.batches)]
    features = [torch.from_numpy(store.rows(images.feature_rows[b])) for b in batches]
    generator = torch.Generator().manual_seed(0)
    sampled = {}

    def sampling(decoder, name):
        def run() -> None:
            sampled[name] = []
            for f in features:  # the graph is built as in training, then freed: only the captions are kept
                sample = sample_captions(decoder, f, vocabulary.start, vocabulary.end, k, params.max_len, generator)
                sampled[name].append(sample._replace(log_probs=sample.log_probs.detach()))

        return run

    def reward() -> float:
        seconds = 0.0
        for batch, sample in zip(batches, sampled["fast"]):
            words = caption_words(sample.tokens, sample.lengths, vocabulary)
            start = time.perf_counter()
            cider.scores(words, np.repeat(batch, k))
            seconds += time.perf_counter() - start
        return seconds

    def greedy() -> None:
        for batch, f in zip(batches, features):
            greedy_rewards(fast, f, batch, cider, vocabulary, params.max_len)

    trained = copy.deepcopy(fast)
    optimizer = torch.optim.Adam(trained.parameters(), lr=params.lr)

    def step() -> None:
        for batch, f in zip(batches, features):
            loss, _ = scst_batch(trained, f, batch, cider, vocabulary, params, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    sampling(fast, "fast")()  # warm-up, and samples for the first reward timing
    candidates = {
        "sample fast": sampling(fast, "fast"),
        **({"sample paper": sampling(paper, "paper")} if args.paper else {}),
        "reward": reward,
        "greedy": greedy,
        "step": step,
    }
    seconds = {name: median(values) / args.batches for name, values in interleaved(candidates, args.repeats).items()}
    captions = size * k
    lengths = torch.cat([s.lengths for s in sampled["fast"]]).float()
    rate = {name: captions / seconds[name] for name in ("sample fast", "sample paper", "step") if name in seconds}
    print(machine_header("Self-critical training: sampling and reward"))
    print(
        f"model: {args.model} {fast.config.to_dict()}; batches of {size} training images x {k} samples = {captions} "
        f"captions, max_len {params.max_len}, fp32; {args.batches} batches x {args.repeats} interleaved repeats; "
        f"mean sampled length {lengths.mean():.1f} tokens (<end> included); CIDEr-D corpus of {len(images.names)} "
        f"training images built once in {corpus_seconds:.2f} s\n"
    )
    paper_rows = (
        [
            (
                "sample_captions, paper decoder (graph kept)",
                "captions/s",
                rate["sample paper"],
                rate["sample paper"] / rate["sample fast"],
            )
        ]
        if args.paper
        else []
    )
    print(
        table(
            paper_rows
            + [
                ("sample_captions, fast decoder (graph kept)", "captions/s", rate["sample fast"], 1.0),
                (
                    "one SCST step: sample + reward + baseline + backward + Adam",
                    "captions/s",
                    rate["step"],
                    rate["step"] / rate["sample fast"],
                ),
                (
                    f"reward: CIDEr-D of {captions} sampled captions",
                    "s/batch",
                    seconds["reward"],
                    seconds["reward"] / seconds["sample fast"],
                ),
                (
                    f"greedy baseline: decode {size} images + their CIDEr-D",
                    "s/batch",
                    seconds["greedy"],
                    seconds["greedy"] / seconds["sample fast"],
                ),
            ]
        )
    )
    print("\nratio: captions/s relative to the fast sampler; s/batch relative to the fast sampler's seconds per batch")


if __name__ == "__main__":
    main()
