"""Training (Show, Attend and Tell, section 4): cross-entropy with teacher forcing plus the doubly
stochastic attention penalty, Adam, StepLR per epoch, gradient clipping, and model selection by a
free-running (greedy) validation score computed with the same scorer as the test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import torch
from tqdm import tqdm

from captioning.device import autocast
from captioning.features.store import FeatureStore
from captioning.model import CaptionDecoder, paper
from captioning.params import TrainParams
from captioning.train import distributed
from captioning.train.batching import Batch, CaptionSet, WaitClock, iterate_batches
from captioning.train.epochs import EpochEnd, EpochPlan, apply_gradients, loss_scaler, run_epochs
from captioning.train.hard_attention import HardAttentionTraining
from captioning.train.resume import ResumeFile
from captioning.train.validation import Validation, ValidationRun

log = logging.getLogger(__name__)


def caption_loss(
    decoder: CaptionDecoder,
    features: torch.Tensor,
    captions: torch.Tensor,
    lengths: torch.Tensor,
    alpha_c: float,
    global_counts: tuple[int, int] | None = None,
    hard: HardAttentionTraining | None = None,
) -> torch.Tensor:
    """Cross-entropy per target token plus alpha_c times the attention penalty per caption.

    `lengths` may be on the host or the device: the fast module reads them where they are (on the host, without
    waiting for the device), the literal module and hard attention get them on the features' device.
    With `global_counts` (target tokens, captions of the global batch, when this is one rank's share of
    it) the sums are divided by those instead: the ranks' losses then add up to the global batch's loss.
    `decoder` may be wrapped in DistributedDataParallel. With `hard` (model.attention: hard) and the
    decoder in training mode, the context is sampled and Eq. 11-12's terms are added.
    """
    on_host = getattr(distributed.unwrap(decoder), "reads_lengths_on_host", False)  # the fast module: no wait
    device_lengths = lengths if on_host and hard is None else lengths.to(features.device, non_blocking=True)
    draws = hard.draw(device_lengths) if hard is not None and decoder.training else None
    forced = decoder(features, captions, lengths if on_host else device_lengths, draws)
    tokens, count = global_counts or (len(forced.targets), len(lengths))
    penalty = alpha_c if distributed.unwrap(decoder).context.attends else 0.0  # no attention, nothing to penalise
    loss = paper.caption_loss(forced.scores, forced.targets, forced.weight_sums, penalty, tokens, count)
    return loss if draws is None else loss + hard.loss_terms(forced, device_lengths, draws, tokens)


def feature_statistics(store: FeatureStore, rows: np.ndarray, sample: int = 512, seed: int = 0):
    """Per-channel mean and standard deviation of the region features over a sample of training images."""
    chosen = np.random.default_rng(seed).choice(rows, size=min(sample, len(rows)), replace=False)
    values = torch.from_numpy(store.rows(np.sort(chosen))).float().flatten(0, 1)  # (n * R, F)
    return values.mean(dim=0), values.std(dim=0)


def training_step(
    model: CaptionDecoder,
    optimizer: torch.optim.Optimizer,
    trainable: list[torch.nn.Parameter],
    batch: Batch,
    params: TrainParams,
    device: torch.device,
    precision: str,
    hard: HardAttentionTraining | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[torch.Tensor, int]:
    """Forward, backward, clip and Adam on one batch (features and captions on `device`, lengths on the host,
    as iterate_batches gives them). Returns the batch's loss, still on the device (reading it would make the
    host wait for the step's kernels), and its number of captions (the global batch's under DDP). `scaler`:
    the epoch's loss_scaler (fp16 on a GPU; a fresh one, a no-op elsewhere, when left out)."""
    features, captions, lengths, shared = batch  # shared: DDP's counts of the whole global batch, from the host
    with autocast(device, precision):
        loss = caption_loss(model, features, captions, lengths, params.alpha_c, shared, hard)
    optimizer.zero_grad(set_to_none=True)
    # DDP averages the ranks' gradients: make that their sum
    scaler = loss_scaler(device, precision) if scaler is None else scaler
    apply_gradients(loss * distributed.world_size(), optimizer, trainable, params.grad_clip, scaler)
    return loss.detach(), shared[1] if shared else len(lengths)


def train_epoch(
    model: CaptionDecoder,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[Batch],
    params: TrainParams,
    device: torch.device,
    precision: str,
    progress: tqdm,
    hard: HardAttentionTraining | None = None,
) -> dict[str, float]:
    """One pass over the batches; returns the mean loss and the share of time spent waiting for data
    (and with hard attention its baseline and the variance of the REINFORCE term).

    The losses are added up on the device, in float64 as Python would (a float32 loss times the batch's
    captions is exact there), and read once, at the end of the epoch: on a GPU a read inside the loop would
    make the host wait for every step.
    """
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    total, count, start = torch.zeros((), dtype=torch.float64, device=device), 0, time.perf_counter()
    clock = WaitClock(batches)
    scaler = loss_scaler(device, precision)  # fp16 on a GPU; elsewhere a no-op. Fresh each epoch: nothing to resume
    for batch in clock:
        loss, batch_captions = training_step(
            model, optimizer, trainable, batch, params, device, precision, hard, scaler
        )
        total += loss.double() * batch_captions
        count += batch_captions
        progress.update(batch_captions)
    total = distributed.sum_over_ranks(total.item(), device)  # DDP: each rank's losses were its share of the batches'
    progress.set_postfix(loss=f"{total / count:.3f}", refresh=False)  # shown when the bar closes
    seconds = time.perf_counter() - start
    values = {"train_loss": total / count, "epoch_seconds": seconds, "data_wait_share": clock.waiting / seconds}
    return values if hard is None else {**values, **hard.epoch_values(device)}


class CrossEntropyStep:
    """Cross-entropy training's epoch for the epoch loop (captioning/train/epochs.py): length-bucketed batches
    of this rank's share, train_epoch, and with hard attention the REINFORCE baseline carried along."""

    name = "epoch"

    def __init__(
        self,
        decoder: CaptionDecoder,
        train: CaptionSet,
        store: FeatureStore,
        params: TrainParams,
        device: torch.device,
        precision: str = "fp32",
    ):
        self.decoder, self.model = decoder, None  # model: the decoder, in DDP under torchrun (from the first epoch)
        self.train, self.store, self.params, self.device, self.precision = train, store, params, device, precision
        self.hard = HardAttentionTraining.from_params(params) if decoder.config.attention == "hard" else None
        torch.manual_seed(params.seed)
        self.rng = np.random.default_rng(params.seed)

    def train_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> dict[str, float]:
        if self.model is None:  # after a resumed run's state is restored
            self.model = distributed.wrap(self.decoder, self.device)  # DDP: gradients shared among the ranks
        rank, world_size, model, params = distributed.rank(), distributed.world_size(), self.model, self.params
        batches = iterate_batches(self.train, self.store, params.batch_size, self.rng, self.device, rank, world_size)
        description = f"epoch {epoch}/{params.epochs}"
        disable = not distributed.is_main()
        with tqdm(total=len(self.train.lengths), unit="cap", desc=description, disable=disable) as progress:
            return train_epoch(model, optimizer, batches, params, self.device, self.precision, progress, self.hard)

    def describe(self, values: dict[str, float]) -> str:
        return f"loss {values['train_loss']:.4f}"

    def resume_state(self) -> dict:
        baseline = None if self.hard is None else self.hard.baseline.state_dict()  # captioning/train/hard_attention.py
        return {"torch_rng": torch.get_rng_state(), "hard_baseline": baseline}

    def restore(self, saved: dict) -> None:
        torch.set_rng_state(saved["torch_rng"])
        if self.hard is not None:
            self.hard.baseline.load_state_dict(saved["hard_baseline"])


def fit(
    decoder: CaptionDecoder,
    train: CaptionSet,
    store: FeatureStore,
    validation: Validation,
    params: TrainParams,
    *,
    precision: str = "fp32",
    on_epoch_end: EpochEnd | None = None,
    resume: ResumeFile | None = None,
    score_in_background: bool | None = None,
) -> dict:
    """Train for params.epochs in the epoch loop (captioning/train/epochs.py) on the captions of `train`, their
    images' features read from `store`, where the decoder is; on_epoch_end(epoch, values, is_best)
    after each epoch (0, 1, ...). Validation's
    scores are computed while the next epoch trains where `score_in_background` says (None: on a GPU; EpochPlan).

    Returns the best validation scores (with "epoch"); the decoder ends holding the best epoch's weights.
    With `resume`, a run interrupted after some epochs continues from the last one it saved.
    Under torchrun every rank calls fit; rank 0 alone validates (the others' validation.scorer is None).
    """
    device = next(decoder.parameters()).device
    step = CrossEntropyStep(decoder, train, store, params, device, precision)
    plan = EpochPlan(
        epochs=params.epochs,
        lr=params.lr,
        step_size=params.step_size,
        gamma=params.gamma,
        select_by=params.select_by,
        select_by_param="params.yaml: train.select_by",
        fused=True,  # one kernel for all parameters
        score_in_background=score_in_background,
    )
    return run_epochs(decoder, step, ValidationRun(decoder, validation), plan, on_epoch_end, resume)
