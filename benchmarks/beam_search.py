"""Beam search: captioning.decoding.beam_search (batched over images and beams) against a per-image reference.

The reference decodes one image at a time, its K beams as K rows, and computes every step literally
in the tutorial's way: the attention projection W_f f of all regions recomputed at every step for every
beam, the context as the weighted sum of the regions, nn.LSTMCell on [embedding; beta * context]. It
implements the same search: a finished beam keeps its score and continues with <end> at no cost; the
search stops when every beam has ended or after max_len steps; the caption is the beam with the best
score / length ** length_penalty. Both must return the same captions. The batched search runs with
the fast decoder (model.implementation: auto) and, for comparison, with the literal one (paper).

The model is models/model.pt, or, without it, a decoder shaped as params.yaml's model section trained
for a few hundred batches on the pipeline's training captions (cached); the images are the first test
images of data/features.h5. The pipeline's data files are only read.

    python benchmarks/beam_search.py [--images 100] [--beam 5] [--batch-size 50]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import interleaved, machine_header, median, table, verdict

from captioning.model import CaptionDecoder, DecoderConfig, build_decoder
from captioning.model.decoding import beam_search

GOAL = 20.0
START, END = 1, 2
STEPS: list[int] = []  # steps the reference took per image


@torch.inference_mode()
def reference_beam_search(
    decoder: CaptionDecoder, features: torch.Tensor, beam_size: int, max_len: int, length_penalty: float
) -> list[int]:
    """One image (1, R, F): its K beams as K rows, every step computed the direct way."""
    k = beam_size
    regions = ((features.float() - decoder.feature_mean) / decoder.feature_std).expand(k, -1, -1).contiguous()
    mean = regions[:1].mean(dim=1)
    hidden = torch.tanh(decoder.init_h(mean)).expand(k, -1)
    cell = torch.tanh(decoder.init_c(mean)).expand(k, -1)
    attention = decoder.context  # regions: (K, R, F), the image once per beam
    scores = torch.tensor([0.0] + [float("-inf")] * (k - 1))
    words = torch.full((k,), START, dtype=torch.long)
    finished = torch.zeros(k, dtype=torch.bool)
    lengths = torch.zeros(k)
    histories: list[list[int]] = [[] for _ in range(k)]
    for _ in range(max_len):
        keys = attention.feature_projection(regions)  # (K, R, A): recomputed at every step
        scores_per_region = attention.score(torch.tanh(keys + attention.hidden_projection(hidden).unsqueeze(1)))
        weights = torch.softmax(scores_per_region.squeeze(2), dim=1)  # (K, R)
        context = (weights.unsqueeze(2) * regions).sum(dim=1)  # (K, F)
        beta = torch.sigmoid(decoder.gate(hidden))
        embedded = decoder.embedding(words)
        hidden, cell = decoder.lstm(torch.cat([embedded, beta * context], dim=1), (hidden, cell))
        if decoder.config.deep_output:
            output = torch.tanh(embedded + decoder.output_hidden(hidden) + decoder.output_context(beta * context))
        else:
            output = hidden
        log_probs = torch.log_softmax(decoder.output(output), dim=1)  # (K, V)
        vocab = log_probs.shape[1]
        log_probs[finished] = float("-inf")
        log_probs[finished, END] = 0.0
        scores, best = (scores.unsqueeze(1) + log_probs).view(-1).topk(k)
        source, words = best // vocab, best % vocab
        histories = [histories[s] + [w] for s, w in zip(source.tolist(), words.tolist())]
        lengths = lengths[source] + (~finished[source]).float()
        finished = finished[source] | (words == END)
        hidden, cell = hidden[source], cell[source]
        if bool(finished.all()):
            break
    chosen = int((scores / lengths.clamp(min=1).pow(length_penalty)).argmax())
    tokens = histories[chosen]
    STEPS.append(len(tokens))
    return tokens[: tokens.index(END)] if END in tokens else tokens


def test_features(features_path: Path, table_path: Path, images: int) -> torch.Tensor:
    """The first `images` test-split images' features (the file is only read)."""
    from captioning.features.store import FeatureStore

    store = FeatureStore(features_path, memory_budget_bytes=0)  # read only the rows needed
    test = [r["image"] for r in json.loads(table_path.read_text())["images"] if r["split"] == "test"][:images]
    features = torch.from_numpy(store.rows(store.rows_for(test)))
    store.close()
    return features


def train_pipeline_model(features_path: Path, captions_path: Path, vocab_path: Path, steps: int) -> CaptionDecoder:
    """A decoder shaped as params.yaml's model section, trained `steps` batches on the pipeline's training captions.

    Cached in the temporary directory, keyed by the inputs, so that only the first run pays for it.
    """
    from captioning.features.store import FeatureStore
    from captioning.params import load_params
    from captioning.train.batching import length_bucketed_batches
    from captioning.train.cross_entropy import feature_statistics

    model = load_params("model")
    words = json.loads(vocab_path.read_text())["words"]
    key = hashlib.sha256(
        repr(
            (
                model,
                len(words),
                steps,
                [(p.stat().st_size, p.stat().st_mtime_ns) for p in (features_path, captions_path, vocab_path)],
            )
        ).encode()
    ).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"captioning-beam-benchmark-{key}.pt"
    store = FeatureStore(features_path)
    config = DecoderConfig.from_params(model, vocab_size=len(words), embed_dim=128, feature_dim=store.shape[2])
    decoder = build_decoder(config, "fast")
    if cache.is_file():
        store.close()
        decoder.load_state_dict(torch.load(cache, weights_only=True))
        return decoder.eval()
    encoded = np.load(captions_path)
    table = json.loads(Path(features_path.parent / "dataset.json").read_text())["images"]
    rows = store.rows_for([table[i]["image"] for i in encoded["image_index"]])
    decoder.set_feature_statistics(*feature_statistics(store, np.unique(rows)))
    optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    decoder.train()
    done = 0
    while done < steps:
        for batch in length_bucketed_batches(encoded["lengths"], 32, rng)[: steps - done]:
            lengths = torch.from_numpy(encoded["lengths"][batch].astype(np.int64))
            captions = torch.from_numpy(encoded["captions"][batch, : int(lengths[0])].astype(np.int64))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits, targets = decoder(torch.from_numpy(store.rows(rows[batch])), captions, lengths)[:2]
            loss = torch.nn.functional.cross_entropy(logits.float(), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
    store.close()
    torch.save(decoder.state_dict(), cache)
    return decoder.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=50, help="images per batched call (evaluate.batch_size)")
    parser.add_argument("--max-len", type=int, default=30)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--train-steps", type=int, default=300, help="when there is no model file: batches to train")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path("data")
    features_path, table_path = data / "features.h5", data / "dataset.json"
    captions_path, vocab_path = data / "captions.npz", data / "vocab.json"
    missing = [str(p) for p in (features_path, table_path, captions_path, vocab_path) if not p.is_file()]
    if missing:
        raise SystemExit(
            f"error: {', '.join(missing)} not found: this benchmark reads the default pipeline's outputs "
            "(run `dvc repro` first)"
        )
    if args.model.is_file():
        from captioning.checkpoint import load_model

        decoder, payload = load_model(args.model)
        words, source = payload["words"], str(args.model)
    else:
        decoder = train_pipeline_model(features_path, captions_path, vocab_path, args.train_steps)
        words = json.loads(vocab_path.read_text())["words"]
        source = f"no {args.model}: trained {args.train_steps} batches on {captions_path} (cached)"
    assert words[START] == "<start>" and words[END] == "<end>", words[:4]
    features = test_features(features_path, table_path, args.images)
    source += f"; {features.shape[0]} test images of {features_path}"
    count = features.shape[0]
    options = dict(beam_size=args.beam, max_len=args.max_len, length_penalty=args.length_penalty)
    results: dict[str, list[list[int]]] = {}

    def batched() -> None:
        tokens = []
        for i in range(0, count, args.batch_size):
            tokens += beam_search(decoder, features[i : i + args.batch_size], START, END, **options).tokens
        results["batched"] = tokens

    paper = build_decoder(decoder.config, "paper").eval()
    paper.load_state_dict(decoder.state_dict())

    def batched_paper() -> None:
        tokens = []
        for i in range(0, count, args.batch_size):
            tokens += beam_search(paper, features[i : i + args.batch_size], START, END, **options).tokens
        results["batched paper"] = tokens

    def per_image() -> None:
        STEPS.clear()
        results["reference"] = [reference_beam_search(decoder, features[i : i + 1], **options) for i in range(count)]

    beam_search(decoder, features[:2], START, END, **options)  # warm-up
    reference_beam_search(decoder, features[:1], **options)
    start = time.perf_counter()
    beam_search(paper, features[:2], START, END, **options)
    candidates = {"batched": batched, "per-image reference": per_image, "batched paper": batched_paper}
    seconds = interleaved(candidates, args.repeats)
    total = time.perf_counter() - start

    same = sum(a == b == c for a, b, c in zip(results["batched"], results["reference"], results["batched paper"]))
    mean_length = np.mean([len(t) for t in results["batched"]])
    rates = {name: count / median(values) for name, values in seconds.items()}
    ratio = rates["batched"] / rates["per-image reference"]
    print(machine_header("Beam search: batched vs one image at a time"))
    print(
        f"model: {source}; {decoder.config.to_dict()}\nbeam {args.beam}, max_len {args.max_len}, length penalty "
        f"{args.length_penalty}, fp32, batches of {args.batch_size} images; {count} images, {args.repeats} "
        f"interleaved repeats ({total:.0f} s); mean caption length {mean_length:.1f} words\n"
    )
    print(
        table(
            [
                (
                    f"captioning.decoding.beam_search, fast decoder (batches of {args.batch_size})",
                    "images/s",
                    rates["batched"],
                    ratio,
                ),
                (
                    f"captioning.decoding.beam_search, paper decoder (batches of {args.batch_size})",
                    "images/s",
                    rates["batched paper"],
                    rates["batched paper"] / rates["per-image reference"],
                ),
                (
                    "per-image reference (projection recomputed each step)",
                    "images/s",
                    rates["per-image reference"],
                    1.0,
                ),
            ]
        )
    )
    # In exact fp32 arithmetic every image costs us at least its one-off projections W_f f, W_z v and
    # (deep output) L_z v: R x F x (A + 4H + E) multiply-adds; a reference step costs K x R x F x A for
    # the recomputed projection plus K x (E + F + H) x 4H for the LSTM cell and K x (F + H) x E for the
    # deep output: with K = 5 and A = H, about the same.
    config, k = decoder.config, args.beam
    deep = config.embed_dim if config.deep_output else 0
    one_off = 49 * config.feature_dim * (config.attention_dim + 4 * config.decoder_dim + deep)
    reference_step = k * 49 * config.feature_dim * config.attention_dim
    reference_step += k * (config.embed_dim + config.feature_dim + config.decoder_dim) * 4 * config.decoder_dim
    reference_step += k * (config.feature_dim + config.decoder_dim) * deep
    bound = np.mean(STEPS) * reference_step / one_off
    print(
        f"\nthe reference took {np.mean(STEPS):.1f} steps per image; {reference_step / 1e6:.0f} M multiply-adds a "
        f"step against our one-off {one_off / 1e6:.0f} M per image: even with free steps the ratio of arithmetic "
        f"is at most {bound:.1f}x in fp32"
    )
    example = " ".join(words[t] for t in results["batched"][0])
    print(f'\nsame captions: {same}/{count} images{" (OK)" if same == count else " (MISMATCH)"}; e.g. "{example}"')
    print(verdict(ratio, GOAL))


if __name__ == "__main__":
    main()
