"""Training (Show, Attend and Tell, section 4): cross-entropy with teacher forcing plus the doubly
stochastic attention penalty, Adam, StepLR per epoch, gradient clipping, and model selection by a
free-running (greedy) validation score computed with the same scorer as the test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from captioning import distributed
from captioning.batching import CaptionSet, WaitClock, iterate_batches
from captioning.decoding import greedy_decode
from captioning.device import autocast
from captioning.errors import CaptioningError
from captioning.evaluation import EvaluationImages, decode_captions
from captioning.features.store import FeatureStore
from captioning.hard_training import HardAttentionTraining
from captioning.metrics import CaptionScorer
from captioning.model import CaptionDecoder, paper
from captioning.params import TrainParams
from captioning.resume import ResumableRun
from captioning.text.vocabulary import Vocabulary

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

    With `global_counts` (target tokens, captions of the global batch, when this is one rank's share of
    it) the sums are divided by those instead: the ranks' losses then add up to the global batch's loss.
    `decoder` may be wrapped in DistributedDataParallel. With `hard` (model.attention: hard) and the
    decoder in training mode, the context is sampled and Eq. 11-12's terms are added.
    """
    draws = hard.draw(lengths) if hard is not None and decoder.training else None
    forced = decoder(features, captions, lengths, draws)
    tokens, count = global_counts or (len(forced.targets), len(lengths))
    penalty = alpha_c if distributed.unwrap(decoder).context.attends else 0.0  # no attention, nothing to penalise
    loss = paper.caption_loss(forced.scores, forced.targets, forced.weight_sums, penalty, tokens, count)
    return loss if draws is None else loss + hard.loss_terms(forced, lengths, draws, tokens)


def feature_statistics(store: FeatureStore, rows: np.ndarray, sample: int = 512, seed: int = 0):
    """Per-channel mean and standard deviation of the region features over a sample of training images."""
    chosen = np.random.default_rng(seed).choice(rows, size=min(sample, len(rows)), replace=False)
    values = torch.from_numpy(store.rows(np.sort(chosen))).float().flatten(0, 1)  # (n * R, F)
    return values.mean(dim=0), values.std(dim=0)


def validate(decoder, store, images, vocabulary, device, scorer: CaptionScorer, max_len: int) -> dict[str, float]:
    decoder.eval()
    captions, _ = decode_captions(
        decoder,
        store,
        images,
        vocabulary,
        device,
        lambda d, f: greedy_decode(d, f, vocabulary.start, vocabulary.end, max_len),
    )
    return scorer.score(captions, dict(zip(images.names, images.references)))


def train_epoch(
    decoder: CaptionDecoder,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    params: TrainParams,
    device: torch.device,
    precision: str,
    progress: tqdm,
    hard: HardAttentionTraining | None = None,
) -> dict[str, float]:
    """One pass over the batches; returns the mean loss and the share of time spent waiting for data
    (and with hard attention its baseline and the variance of the REINFORCE term)."""
    decoder.train()
    trainable = [p for p in decoder.parameters() if p.requires_grad]
    total, count, start = 0.0, 0, time.perf_counter()
    clock = WaitClock(batches)
    for features, captions, lengths in clock:
        shared = distributed.global_counts(lengths)  # DDP: counts of the whole global batch (None alone)
        with autocast(device, precision):
            loss = caption_loss(decoder, features, captions, lengths, params.alpha_c, shared, hard)
        optimizer.zero_grad(set_to_none=True)
        (loss * distributed.world_size()).backward()  # DDP averages the ranks' gradients: make that their sum
        nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        optimizer.step()
        batch_captions = shared[1] if shared else len(lengths)
        total += loss.item() * batch_captions
        count += batch_captions
        progress.update(batch_captions)
        progress.set_postfix(loss=f"{total / count:.3f}", refresh=False)  # shown at tqdm's next (rate-limited) refresh
    total = distributed.sum_over_ranks(total, device)  # DDP: each rank's losses were its share of the batches'
    seconds = time.perf_counter() - start
    values = {"train_loss": total / count, "epoch_seconds": seconds, "data_wait_share": clock.waiting / seconds}
    return values if hard is None else {**values, **hard.epoch_values(device)}


def _copy_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def fit(
    decoder: CaptionDecoder,
    train: CaptionSet,
    val: EvaluationImages,
    *,
    store: FeatureStore,
    vocabulary: Vocabulary,
    params: TrainParams,
    device: torch.device,
    precision: str,
    scorer: CaptionScorer,
    on_epoch_end: Callable[[int, dict, bool], None],
    resume_path: Path | None = None,
    run_key: str = "",
) -> dict:
    """Train for params.epochs, calling on_epoch_end(epoch, logged values, is_best) after each epoch.

    Returns the best validation scores (with "epoch"); the decoder ends holding the best epoch's weights.
    With `resume_path`, the state after every epoch (model, optimizer, scheduler, RNGs, history) is
    saved there, and a later call with the same `run_key` continues after the last completed epoch:
    the epochs already done are replayed to on_epoch_end, and the result equals an uninterrupted run.
    Under torchrun (see captioning/distributed.py) every rank calls fit; rank 0 alone validates, scores
    with `scorer` (None elsewhere) and saves the state; every rank gets the same values and result.
    """
    torch.manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    trainable = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=params.lr, fused=True)  # one kernel for all parameters
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=params.step_size, gamma=params.gamma)
    history: list[tuple[dict, bool]] = []
    best, best_state = {params.select_by: float("-inf")}, _copy_state(decoder)
    hard = HardAttentionTraining.from_params(params) if decoder.config.attention == "hard" else None
    resumable = ResumableRun(resume_path, run_key, decoder, optimizer, scheduler, rng)
    saved = resumable.load() if distributed.is_main() else None
    saved = distributed.broadcast(saved)  # DDP: every rank resumes from rank 0's state
    if saved is not None:
        history, best, best_state = resumable.restore(saved)
        torch.set_rng_state(saved["torch_rng"])
        if hard is not None:
            hard.baseline.load_state_dict(saved["hard_baseline"])
        log.info("resuming after epoch %d of %d (state in %s)", len(history), params.epochs, resume_path)
    for epoch, (values, is_best) in enumerate(history):
        on_epoch_end(epoch, values, is_best)

    model = distributed.wrap(decoder, device)  # DDP: gradients shared among the ranks (the decoder when alone)
    rank, world_size, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    for epoch in range(len(history), params.epochs):
        learning_rate = optimizer.param_groups[0]["lr"]
        batches = iterate_batches(train, store, params.batch_size, rng, device, rank, world_size)
        description = f"epoch {epoch + 1}/{params.epochs}"
        with tqdm(total=len(train.lengths), unit="cap", desc=description, disable=not main) as progress:
            values = {
                "lr": learning_rate,
                **train_epoch(model, optimizer, batches, params, device, precision, progress, hard),
            }
        scheduler.step()
        scores = validate(decoder, store, val, vocabulary, device, scorer, params.val_max_len) if main else None
        scores = distributed.broadcast(scores)  # DDP: rank 0 validates, the others take its scores
        values.update({f"val_{k}": v for k, v in scores.items()})
        if params.select_by not in scores:
            raise CaptioningError(
                f"params.yaml: train.select_by={params.select_by} is not available here (the scorer gave "
                f"{', '.join(sorted(scores))}; METEOR needs Java): choose one of those"
            )
        is_best = scores[params.select_by] > best[params.select_by]
        if is_best:
            best, best_state = {**scores, "epoch": epoch + 1}, _copy_state(decoder)
        log.info(
            "epoch %d: loss %.4f, val %s %.4f%s",
            epoch + 1,
            values["train_loss"],
            params.select_by,
            scores[params.select_by],
            " (best)" if is_best else "",
        )
        history.append((values, is_best))
        on_epoch_end(epoch, values, is_best)
        if main:
            resumable.save(
                history,
                best,
                best_state,
                torch_rng=torch.get_rng_state(),
                hard_baseline=None if hard is None else hard.baseline.state_dict(),  # captioning/hard_training.py
            )
    decoder.load_state_dict(best_state)
    return best
