"""What a GPU would wait on and launch: host syncs and operators of one training step and one SCST step.

A GPU runs ahead of the Python that drives it until the host reads a value back (a sync: the host waits
for every queued kernel), and each operator is at least one kernel launch (a few microseconds of host
time each, whatever its size). Both are counted here on the CPU, for the fast module, the literal one
and the widely copied tutorial's design (benchmarks/train_step.py), at the Flickr30k preset's sizes
(presets/flickr30k.sh: embedding 300, attention and decoder 512, batch 64, alpha_c 1.0, captions of up
to 22 tokens; SCST: 50 images x 5 samples of up to 21 tokens; 49 x 2048 region features). The SCST step runs both ways
of decoding: stopping once every caption has ended (the CPU's default: it reads a flag every step) and
all max_len steps (CUDA's default: only the captions are read).

Host syncs are counted under a TorchFunctionMode that follows which tensors live on the host: the
batch's lengths (the data pipeline holds them there), tensors made from numpy or by a factory without
a device, `.cpu()` results, and whatever is computed from host tensors alone. A sync is a read of a
tensor that is not on the host: .item(), .tolist(), .numpy(), bool(), int(), float(), an index, .cpu(),
and the operators whose output size depends on values (nonzero, masked_select, unique, boolean-mask
indexing, repeat_interleave by a tensor). The optimiser's step counters are host tensors by PyTorch's
design (unless fused or capturable). Operators are counted under torch.profiler: the aten operators
that do work (no operator below them does), views and allocations (view, slice, transpose, empty, ...)
left out, forward, backward and optimiser together. "Per word step" is the difference between the
counts of two batches whose captions all have 12 and 22 tokens, divided by the 10 steps between them.

    python benchmarks/profile_step.py [--vocab 10000] [--scst-batch 50] [--no-paper-scst]
"""

from __future__ import annotations

import argparse
import dataclasses
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from _timing import machine_header
from torch import nn
from torch.overrides import TorchFunctionMode
from train_step import FEATURE_DIM, REGIONS, three_decoders, tutorial_loss

from captioning.finetune.cider import CiderD
from captioning.finetune.scst import scst_step
from captioning.params import load_params
from captioning.text.vocabulary import SPECIALS, Vocabulary
from captioning.train.batching import Batch
from captioning.train.cross_entropy import training_step as train_step

PAD, START, END = 0, 1, 2
NO_KERNEL = {  # views, metadata and allocations: no kernel is launched for them
    "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::_reshape_alias", "aten::t", "aten::transpose",
    "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::expand_as", "aten::as_strided",
    "aten::slice", "aten::select", "aten::split", "aten::split_with_sizes", "aten::chunk", "aten::unbind",
    "aten::narrow", "aten::detach", "aten::detach_", "aten::alias", "aten::empty", "aten::empty_like",
    "aten::empty_strided", "aten::resize_", "aten::lift_fresh", "aten::view_as", "aten::flatten",
    "aten::unflatten", "aten::movedim", "aten::resolve_conj", "aten::resolve_neg", "aten::result_type",
    "aten::contiguous", "aten::set_", "aten::_local_scalar_dense", "aten::item", "aten::is_nonzero",
    "aten::numpy_T", "aten::to", "aten::_to_copy", "aten::type_as", "aten::dropout",
}  # fmt: skip
READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__array__", "cpu"}
DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "unique_consecutive", "argwhere", "nonzero_static"}
FACTORIES = {"arange", "zeros", "ones", "full", "empty", "tensor", "as_tensor", "rand", "randn", "randint", "eye"}


class SyncCounter(TorchFunctionMode):
    """Counts reads of device tensors (see the module docstring); `host` tensors are known to live on the host."""

    def __init__(self, host: list[torch.Tensor]):
        super().__init__()
        self.host: dict[int, weakref.ref] = {}
        self.reads: Counter = Counter()
        for tensor in host:
            self._mark(tensor)

    def _mark(self, tensor: torch.Tensor) -> None:
        self.host[id(tensor)] = weakref.ref(tensor)

    def on_host(self, tensor: torch.Tensor) -> bool:
        ref = self.host.get(id(tensor))
        return ref is not None and ref() is tensor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        tensors = [t for t in _flatten((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_device = [t for t in tensors if not self.on_host(t)]
        if on_device and (name in READS or name in DATA_DEPENDENT):
            self.reads[name] += 1
        elif name == "__getitem__" and any(t.dtype == torch.bool and not self.on_host(t) for t in tensors[1:]):
            self.reads["boolean mask"] += 1
        elif on_device and name == "repeat_interleave" and len(tensors) > 1 and kwargs.get("output_size") is None:
            self.reads["repeat_interleave"] += 1
        result = func(*args, **kwargs)
        moved = name == "to" and any(isinstance(a, torch.device | str) for a in [*args[1:], kwargs.get("device")])
        if moved and not on_device:
            result = result.clone()  # a copy to the device (on the CPU .to returns the host tensor itself)
        host_result = (
            name in {"cpu", "from_numpy", "numpy"}
            or (name in FACTORIES and kwargs.get("device") is None and not on_device)
            or (tensors and not on_device and name not in {"to", "cuda"})
            or (name == "to" and not on_device and not any(isinstance(a, torch.device | str) for a in args[1:]))
        )
        if host_result:
            for tensor in _flatten(result):
                if isinstance(tensor, torch.Tensor):
                    self._mark(tensor)
        return result


def _flatten(value):
    if isinstance(value, list | tuple):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _flatten(item)
    else:
        yield value


def optimizer_host_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Adam's step counters when they live on the host (neither fused nor capturable)."""
    return [s["step"] for s in optimizer.state.values() if "step" in s and s["step"].device.type == "cpu"]


def kernels(profile) -> Counter:
    """The operators that do work: aten operators with no such operator below them, views left out."""
    counted: Counter = Counter()

    def visit(event) -> bool:  # True when this event or one below it launches work
        below = [visit(child) for child in event.cpu_children]
        if any(below):
            return True
        if event.name.startswith("aten::") and event.name not in NO_KERNEL:
            counted[event.name] += 1
            return True
        return False

    for event in profile.events():
        if event.cpu_parent is None:
            visit(event)
    return counted


def profile_operators(step: Callable[[], object]) -> int:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    return sum(kernels(profile).values())


# ----------------------------------------------------------------------------------------------------
# The steps as the library runs them (captioning/train/cross_entropy.py train_epoch,
# captioning/finetune/scst.py ScstStep): the losses stay on the device, read once an epoch.
def training_step(model, optimizer, batch, alpha_c: float, device: torch.device) -> Callable[[], object]:
    trainable = [p for p in model.parameters() if p.requires_grad]
    params = replace(load_params("train"), alpha_c=alpha_c, grad_clip=5.0)
    return lambda: train_step(model, optimizer, trainable, batch, params, device, "fp32")


def tutorial_step(model, optimizer, batch, alpha_c: float, device: torch.device) -> Callable[[], float]:
    """The tutorial's loop reads its loss every step (its AverageMeter takes loss.item())."""

    def run():
        loss = tutorial_loss(model, *batch[:3], alpha_c=alpha_c)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        return loss.item()

    return run


def written_out_cell_operators(rows: int, size: int) -> int:
    """Operators of one word step's LSTM cell as the fast module writes it out for the CPU (the gates' sum, the
    activations and products), forward and backward: on CUDA one fused kernel each way does all of them."""
    from captioning.model.fast import _lstm_cell

    input_gates, hidden_gates = (torch.randn(rows, 4 * size, requires_grad=True) for _ in range(2))
    cell = torch.randn(rows, size, requires_grad=True)
    upstream = (torch.ones(rows, size), torch.ones(rows, size))

    def step():
        outputs = _lstm_cell(input_gates + hidden_gates, cell)
        torch.autograd.grad(outputs, (input_gates, hidden_gates, cell), upstream)

    return profile_operators(step)


# ----------------------------------------------------------------------------------------------------
def batch_of(lengths: np.ndarray, vocab: int, rng: np.random.Generator):
    """Captions of the given token counts (<start> and <end> included), longest first, and random features."""
    lengths = np.sort(lengths)[::-1].copy()
    captions = np.full((len(lengths), int(lengths[0])), PAD, dtype=np.int64)
    for row, length in enumerate(lengths):
        captions[row, 0], captions[row, length - 1] = START, END
        captions[row, 1 : length - 1] = rng.integers(4, vocab, size=length - 2)
    features = rng.standard_normal((len(lengths), REGIONS, FEATURE_DIM), dtype=np.float32)
    return Batch(torch.from_numpy(features), torch.from_numpy(captions), torch.from_numpy(lengths.astype(np.int64)))


def on_device(batch: Batch, device: torch.device, lengths_on_host: bool) -> Batch:
    """The batch as the design's data pipeline gives it: features and captions on the device, lengths on the host
    (captioning.batching.iterate_batches) or on the device (the tutorial)."""
    lengths = batch.lengths if lengths_on_host else batch.lengths.to(device)
    return Batch(batch.features.to(device), batch.captions.to(device), lengths)


def count(make_step, model, optimizer, batch, lengths_on_host: bool) -> tuple[int, int]:
    """(host syncs, operators) of one step on `batch`, after one warm-up step (Adam's state exists then)."""
    make_step(model, optimizer, batch)()
    step = make_step(model, optimizer, batch)
    host = [batch[2]] if lengths_on_host else []
    with SyncCounter([*host, *optimizer_host_tensors(optimizer)]) as counter:
        step()
    return sum(counter.reads.values()), profile_operators(make_step(model, optimizer, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--embed-dim", type=int, default=300)
    parser.add_argument("--dim", type=int, default=512, help="attention and decoder size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--scst-batch", type=int, default=50, help="images per SCST step")
    parser.add_argument("--no-paper-scst", action="store_true", help="skip the literal module's SCST step (~2 GB)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine (benchmarks/gpu_check.sh)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    fast, paper, tutorial = (model.to(device) for model in three_decoders(args.vocab, args.embed_dim, args.dim))
    candidates = {  # name: (model, optimiser as its design makes it, step, lengths on the host)
        # captioning.batching.iterate_batches leaves the lengths on the host; the tutorial moves them to the GPU.
        "fast module": (fast, torch.optim.Adam(fast.parameters(), lr=4e-4, fused=True), training_step, True),
        "literal module": (paper, torch.optim.Adam(paper.parameters(), lr=4e-4, fused=True), training_step, True),
        # The tutorial's Adam(...) takes PyTorch's default, foreach on a GPU: the same here.
        "tutorial design": (
            tutorial,
            torch.optim.Adam(tutorial.parameters(), lr=4e-4, foreach=True),
            tutorial_step,
            False,
        ),
    }
    alpha_c = 1.0
    mixed = batch_of(rng.integers(8, 23, size=args.batch_size), args.vocab, rng)  # a random batch: 8-22 tokens
    short, long = (batch_of(np.full(args.batch_size, n), args.vocab, rng) for n in (12, 22))
    rows = []
    for name, (decoder, optimizer, make, lengths_on_host) in candidates.items():

        def step(m, o, b, make=make):
            return make(m, o, b, alpha_c, device)

        batches = [on_device(batch, device, lengths_on_host) for batch in (mixed, short, long)]
        syncs, operators = count(step, decoder, optimizer, batches[0], lengths_on_host)
        short_ops = profile_operators(step(decoder, optimizer, batches[1]))
        long_ops = profile_operators(step(decoder, optimizer, batches[2]))
        rows.append((f"training step, {name}", syncs, operators, (long_ops - short_ops) / 10))
    # CUDA's fused cell (captioning/model/fast.py, trick 8) cannot run here: its count is the fast module's with the
    # written-out cell's operators of every word step replaced by the fused kernel's two (forward, backward).
    if device.type == "cpu":  # on CUDA the fast module's row above is the fused cell's, profiled
        cell = written_out_cell_operators(args.batch_size, args.dim)
        _, syncs, operators, per_word = rows[0]
        steps = int(mixed[2].max()) - 1
        rows.insert(
            1,
            (
                f"training step, fast module on CUDA (fused cell: {cell} operators a word step become 2)",
                syncs,
                operators - (cell - 2) * steps,
                per_word - cell + 2,
            ),
        )

    params = dataclasses.replace(load_params("scst"), samples=5, max_len=21, batch_size=args.scst_batch)
    words = list(SPECIALS) + [f"w{i}" for i in range(args.vocab - len(SPECIALS))]
    vocabulary = Vocabulary(words)
    references = [
        [[words[i] for i in rng.integers(4, args.vocab, size=rng.integers(8, 16))] + ["<end>"] for _ in range(5)]
        for _ in range(args.scst_batch)
    ]
    cider = CiderD(references)
    images = np.arange(args.scst_batch)
    features = torch.from_numpy(rng.standard_normal((args.scst_batch, REGIONS, FEATURE_DIM), dtype=np.float32))
    features = features.to(device)
    scst_models = {"fast module": fast} if args.no_paper_scst else {"fast module": fast, "literal module": paper}
    # stop_early: the CPU's default (a read per decoding step, to stop when every caption has ended); without
    # it, CUDA's default, all max_len steps run and only the captions are read.
    runs = [("greedy", True), ("greedy", False), ("mean", True), ("mean", False)]
    for name, decoder in scst_models.items():
        for baseline, stop_early in runs if name == "fast module" else runs[:2]:
            decoder.eval()
            optimizer = torch.optim.Adam(decoder.parameters(), lr=5e-5, foreach=True)  # as on a GPU
            generator = torch.Generator(device=device).manual_seed(0)
            step_params = replace(params, baseline=baseline)

            def step(decoder=decoder, optimizer=optimizer, generator=generator, params=step_params, stop=stop_early):
                return scst_step(decoder, optimizer, features, images, cider, vocabulary, params, generator, stop)

            step()  # warm-up: Adam's state exists after it
            with SyncCounter(optimizer_host_tensors(optimizer)) as counter:
                step()
            syncs = sum(counter.reads.values())
            stops = "stopping when all have ended" if stop_early else "all max_len steps"
            rows.append((f"SCST step ({baseline} baseline, {stops}), {name}", syncs, profile_operators(step), None))

    print(machine_header("Host syncs and operators per step (what a GPU would wait on and launch)"))
    print(
        f"on {device}; vocabulary {args.vocab}, embedding {args.embed_dim}, attention/decoder {args.dim}, "
        f"batch {args.batch_size}, "
        f"{REGIONS} x {FEATURE_DIM} features, fp32, dropout 0.5, alpha_c {alpha_c}; training: a random batch of "
        f"8-22 tokens; SCST: {args.scst_batch} images x {params.samples} samples, max_len {params.max_len}\n"
    )
    print("| step | host syncs | operators per step | operators per word step |")
    print("|---|---|---|---|")
    for name, syncs, operators, per_word in rows:
        print(f"| {name} | {syncs} | {operators} | {'—' if per_word is None else f'{per_word:.1f}'} |")


if __name__ == "__main__":
    main()
