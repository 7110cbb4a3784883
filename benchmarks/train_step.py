"""One training step (forward + backward + clip + Adam) of our decoder against the usual tutorial design.

Both see the same captions (random words, 8-17 tokens with <start> and <end>) and the same 49 x 2048
region features, at embedding/attention/decoder 512/512/512, vocabulary 10,000, batch 32.
  ours:      captioning.training.caption_loss on length-bucketed batches (length_bucketed_batches),
             bf16 autocast where the CPU supports it (train.precision: auto), features as float16 rows,
             with the fast decoder (captioning/model/fast.py, model.implementation: auto) and, in the
             same conditions, with the literal one (captioning/model/paper.py, model.implementation: paper).
  reference: written below in the style of the widely copied tutorial: the encoder-side attention
             projection Linear(2048->512) applied to all 49 regions at every step, a vector gate
             sigmoid(f_beta(h)) of size 2048, nn.LSTMCell on [embedding; gated context], each batch sorted
             by length with a shrinking active batch, fp32, cross-entropy on packed targets plus the doubly
             stochastic penalty; batches drawn at random (not length-bucketed).
Also measures the share of the step time spent waiting for data when batches come from an HDF5 feature
store through captioning.batching.iterate_batches (what fit() logs as train.data_wait_share).

    python benchmarks/train_step.py [--captions 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _timing import interleaved, machine_header, median, table, verdict
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from captioning.device import autocast, resolve_precision
from captioning.features.store import FeatureStore, FeatureWriter
from captioning.model import DecoderConfig, build_decoder
from captioning.params import load_params
from captioning.train.batching import CaptionSet, WaitClock, iterate_batches, length_bucketed_batches
from captioning.train.cross_entropy import caption_loss

GOAL = 5.0
PAD, START, END = 0, 1, 2
REGIONS, FEATURE_DIM = 49, 2048


# ----------------------------------------------------------------------------------------------------
# The reference: the tutorial's design, written from its description.
class TutorialAttention(nn.Module):
    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)

    def forward(self, encoder_out: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        projected = self.encoder_att(encoder_out)  # (b, 49, A), recomputed at every step
        scores = self.full_att(torch.relu(projected + self.decoder_att(hidden).unsqueeze(1))).squeeze(2)  # (b, 49)
        alpha = torch.softmax(scores, dim=1)
        return (encoder_out * alpha.unsqueeze(2)).sum(dim=1), alpha  # (b, 2048), (b, 49)


class TutorialDecoder(nn.Module):
    def __init__(self, vocab_size: int, embed_dim=512, decoder_dim=512, attention_dim=512, encoder_dim=FEATURE_DIM):
        super().__init__()
        self.vocab_size = vocab_size
        self.attention = TutorialAttention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(0.5)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.fc = nn.Linear(decoder_dim, vocab_size)

    def forward(self, encoder_out: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor):
        lengths, order = lengths.sort(descending=True)
        encoder_out, captions = encoder_out[order], captions[order]
        embeddings = self.embedding(captions)  # (B, T, E)
        mean = encoder_out.mean(dim=1)
        h, c = self.init_h(mean), self.init_c(mean)
        decode_lengths = (lengths - 1).tolist()
        batch, steps = encoder_out.shape[0], max(decode_lengths)
        predictions = torch.zeros(batch, steps, self.vocab_size)
        alphas = torch.zeros(batch, steps, encoder_out.shape[1])
        for t in range(steps):
            active = sum(length > t for length in decode_lengths)
            context, alpha = self.attention(encoder_out[:active], h[:active])
            gate = torch.sigmoid(self.f_beta(h[:active]))  # (b, 2048)
            h, c = self.decode_step(
                torch.cat([embeddings[:active, t], gate * context], dim=1), (h[:active], c[:active])
            )
            predictions[:active, t] = self.fc(self.dropout(h))
            alphas[:active, t] = alpha
        return predictions, captions[:, 1:], decode_lengths, alphas


def tutorial_loss(model: TutorialDecoder, features, captions, lengths, alpha_c: float = 1.0) -> torch.Tensor:
    predictions, targets, decode_lengths, alphas = model(features, captions, lengths)
    scores = pack_padded_sequence(predictions, decode_lengths, batch_first=True).data
    targets = pack_padded_sequence(targets, decode_lengths, batch_first=True).data
    return nn.functional.cross_entropy(scores, targets) + alpha_c * ((1.0 - alphas.sum(dim=1)) ** 2).mean()


# ----------------------------------------------------------------------------------------------------
def make_captions(count: int, vocab: int, images: int, rng: np.random.Generator) -> CaptionSet:
    lengths = rng.integers(8, 18, size=count)  # tokens including <start> and <end>
    captions = np.full((count, 17), PAD, dtype=np.int32)
    for row, length in enumerate(lengths):
        captions[row, 0] = START
        captions[row, 1 : length - 1] = rng.integers(4, vocab, size=length - 2)
        captions[row, length - 1] = END
    return CaptionSet(captions, lengths, rng.integers(0, images, size=count))


def tensors(data: CaptionSet, rows: np.ndarray, features: np.ndarray):
    longest = int(data.lengths[rows].max())
    return (
        torch.from_numpy(features[data.feature_rows[rows]]),
        torch.from_numpy(data.captions[rows, :longest].astype(np.int64)),
        torch.from_numpy(data.lengths[rows].astype(np.int64)),
    )


def train_step(model, optimizer, loss_fn, batch, precision: str) -> float:
    with autocast(torch.device("cpu"), precision):
        loss = loss_fn(model, *batch[:3])  # iterate_batches adds DDP's global counts
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return loss.item()


def data_wait_share(decoder, optimizer, data, store, batch_size, precision) -> float:
    """fit()'s measure: time blocked in next(batches) over the time of the whole pass."""
    clock = WaitClock(iterate_batches(data, store, batch_size, np.random.default_rng(1), torch.device("cpu")))
    start = time.perf_counter()
    for batch in clock:
        train_step(decoder, optimizer, ours_loss, batch, precision)
    return clock.waiting / (time.perf_counter() - start)


def ours_loss(decoder, features, captions, lengths):
    return caption_loss(decoder, features, captions, lengths, alpha_c=1.0)


def three_decoders(vocab: int, embed_dim: int, dim: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The fast and the literal module (the same weights) and the tutorial's decoder, in training mode: params.yaml's
    model at the tutorial's sizes, reading words off h alone as the tutorial's does (without the deep output)."""
    shape = {"decoder_dim": dim, "attention_dim": dim, "dropout": 0.5, "attention": "soft"}
    model = dataclasses.replace(load_params("model"), **shape, deep_output=False)
    config = DecoderConfig.from_params(model, vocab_size=vocab, embed_dim=embed_dim, feature_dim=FEATURE_DIM)
    fast = build_decoder(config, "fast").train()
    paper = build_decoder(config, "paper").train()
    paper.load_state_dict(fast.state_dict())
    return fast, paper, TutorialDecoder(vocab, embed_dim, dim, dim).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=256, help="captions per timed pass (a multiple of batch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512, help="embedding, attention and decoder size")
    parser.add_argument("--precision", default="auto", help="ours: auto | bf16 | fp32 (the reference is fp32)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = 256
    features = rng.standard_normal((images, REGIONS, FEATURE_DIM), dtype=np.float32).astype(np.float16)
    data = make_captions(args.captions, args.vocab, images, rng)

    torch.manual_seed(0)
    ours, paper, reference = three_decoders(args.vocab, args.dim, args.dim)
    ours_optimizer = torch.optim.Adam(ours.parameters(), lr=4e-4, fused=True)  # as fit() makes it
    paper_optimizer = torch.optim.Adam(paper.parameters(), lr=4e-4, fused=True)
    reference_optimizer = torch.optim.Adam(reference.parameters(), lr=4e-4)

    # The same captions: length-bucketed for ours, random batches (sorted inside) for the reference.
    bucketed = [
        tensors(data, rows, features)
        for rows in length_bucketed_batches(data.lengths, args.batch_size, np.random.default_rng(1))
    ]
    shuffled = rng.permutation(len(data.lengths))
    random_batches = [
        tensors(data, shuffled[i : i + args.batch_size], features) for i in range(0, len(shuffled), args.batch_size)
    ]
    random_batches = [(f.float(), c, n) for f, c, n in random_batches]  # the tutorial's encoder gives fp32

    def run_ours():
        for batch in bucketed:
            train_step(ours, ours_optimizer, ours_loss, batch, precision)

    def run_reference():
        for batch in random_batches:
            train_step(reference, reference_optimizer, tutorial_loss, batch, "fp32")

    def run_paper():
        for batch in bucketed:
            train_step(paper, paper_optimizer, ours_loss, batch, precision)

    def run_ours_fp32():
        for batch in bucketed:
            train_step(ours, ours_optimizer, ours_loss, batch, "fp32")

    train_step(ours, ours_optimizer, ours_loss, bucketed[0], precision)  # warm-up
    train_step(ours, ours_optimizer, ours_loss, bucketed[0], "fp32")
    train_step(reference, reference_optimizer, tutorial_loss, random_batches[0], "fp32")
    train_step(paper, paper_optimizer, ours_loss, bucketed[0], precision)
    candidates = {
        f"ours, fast ({precision}, length-bucketed)": run_ours,
        "reference (tutorial design, fp32)": run_reference,
        f"ours, paper module ({precision}, length-bucketed)": run_paper,
    }
    if precision != "fp32":
        candidates["ours, fast (fp32, length-bucketed)"] = run_ours_fp32
    seconds = interleaved(candidates, args.repeats)

    with tempfile.TemporaryDirectory(prefix="train-bench-") as temporary:
        path = Path(temporary) / "features.h5"
        writer = FeatureWriter(path, images, REGIONS, FEATURE_DIM)
        writer.append([f"image_{i}" for i in range(images)], features)
        writer.close()
        stores = [FeatureStore(path), FeatureStore(path, memory_budget_bytes=0)]
        wait_memory, wait_streamed = (
            data_wait_share(ours, ours_optimizer, data, store, args.batch_size, precision) for store in stores
        )
        for store in stores:
            store.close()

    rates = {name: len(data.lengths) / median(values) for name, values in seconds.items()}
    reference_rate = rates["reference (tutorial design, fp32)"]
    print(machine_header("Training step: ours vs the tutorial design"))
    print(
        f"vocabulary {args.vocab}, embed/attention/decoder {args.dim}/{args.dim}/{args.dim}, batch "
        f"{args.batch_size}, {REGIONS} x {FEATURE_DIM} features, captions of 8-17 tokens; "
        f"{len(data.lengths)} captions per pass, {args.repeats} interleaved repeats\n"
    )
    print(table([(name, "captions/s", rate, rate / reference_rate) for name, rate in rates.items()]))
    print(
        f"\ndata wait share of ours through iterate_batches (HDF5 FeatureStore, as fit() logs it): "
        f"{wait_memory:.1%} with the features in memory (within train.feature_memory_gb), {wait_streamed:.1%} "
        f"streamed from the file (memory budget 0)"
    )
    print(verdict(next(iter(rates.values())) / reference_rate, GOAL))


if __name__ == "__main__":
    main()
