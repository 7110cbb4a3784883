"""Training (Show, Attend and Tell, section 4): cross-entropy with teacher forcing plus the doubly
stochastic attention penalty, Adam, StepLR per epoch, gradient clipping, and model selection by a
free-running (greedy) validation score computed with the same scorer as the test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from captioning.decoding import greedy_decode
from captioning.device import autocast
from captioning.features.store import FeatureStore
from captioning.evaluation import EvaluationImages, decode_captions
from captioning.metrics import CaptionScorer
from captioning.model.decoder import CaptionDecoder
from captioning.params import TrainParams
from captioning.text.vocabulary import Vocabulary

log = logging.getLogger(__name__)


@dataclass
class CaptionSet:
    """Encoded training captions and, for each, the feature-file row of its image."""

    captions: np.ndarray  # (M, L) int
    lengths: np.ndarray  # (M,) tokens including <start> and <end>
    feature_rows: np.ndarray  # (M,)


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of captions of (nearly) equal length, each sorted longest first, in random order."""
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return [batch[np.argsort(-lengths[batch], kind="stable")] for batch in batches]


def iterate_batches(
    data: CaptionSet, store: FeatureStore, batch_size: int, rng: np.random.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    for batch in length_bucketed_batches(data.lengths, batch_size, rng):
        longest = int(data.lengths[batch[0]])
        features = torch.from_numpy(store.rows(data.feature_rows[batch]))
        captions = torch.from_numpy(data.captions[batch, :longest].astype(np.int64))
        lengths = torch.from_numpy(data.lengths[batch].astype(np.int64))
        yield features.to(device), captions.to(device), lengths.to(device)


def caption_loss(
    decoder: CaptionDecoder, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor, alpha_c: float
) -> torch.Tensor:
    logits, targets, weight_sums = decoder(features, captions, lengths)
    loss = nn.functional.cross_entropy(logits.float(), targets)
    if alpha_c and decoder.context.attends:
        loss = loss + alpha_c * ((1.0 - weight_sums) ** 2).mean()
    return loss


def feature_statistics(store: FeatureStore, rows: np.ndarray, sample: int = 512, seed: int = 0):
    """Per-channel mean and standard deviation of the region features over a sample of training images."""
    chosen = np.random.default_rng(seed).choice(rows, size=min(sample, len(rows)), replace=False)
    values = torch.from_numpy(store.rows(np.sort(chosen))).float().flatten(0, 1)  # (n * R, F)
    return values.mean(dim=0), values.std(dim=0)


def validate(decoder, store, images, vocabulary, device, scorer: CaptionScorer, max_len: int) -> dict[str, float]:
    decoder.eval()
    captions, _ = decode_captions(
        decoder, store, images, vocabulary, device,
        lambda d, f: greedy_decode(d, f, vocabulary.start, vocabulary.end, max_len),
    )
    return scorer.score(captions, dict(zip(images.names, images.references)))


def fit(
    decoder: CaptionDecoder,
    train: CaptionSet,
    val: EvaluationImages,
    store: FeatureStore,
    vocabulary: Vocabulary,
    params: TrainParams,
    device: torch.device,
    precision: str,
    scorer: CaptionScorer,
    on_epoch_end: Callable[[int, dict, bool], None],
) -> dict:
    """Train for params.epochs; calls on_epoch_end(epoch, logged values, is_best) after each epoch."""
    rng = np.random.default_rng(params.seed)
    trainable = [p for p in decoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=params.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=params.step_size, gamma=params.gamma)
    best = {params.select_by: float("-inf")}
    for epoch in range(params.epochs):
        decoder.train()
        learning_rate = optimizer.param_groups[0]["lr"]
        total, count, waiting, start = 0.0, 0, 0.0, time.perf_counter()
        batches = iterate_batches(train, store, params.batch_size, rng, device)
        progress = tqdm(total=len(train.lengths), unit="cap", desc=f"epoch {epoch + 1}/{params.epochs}")
        while True:
            wait_start = time.perf_counter()
            batch = next(batches, None)
            waiting += time.perf_counter() - wait_start
            if batch is None:
                break
            features, captions, lengths = batch
            with autocast(device, precision):
                loss = caption_loss(decoder, features, captions, lengths, params.alpha_c)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(trainable, params.grad_clip)
            optimizer.step()
            total += loss.item() * len(lengths)
            count += len(lengths)
            progress.update(len(lengths))
            progress.set_postfix(loss=f"{total / count:.3f}")
        progress.close()
        scheduler.step()
        seconds = time.perf_counter() - start
        scores = validate(decoder, store, val, vocabulary, device, scorer, params.val_max_len)
        values = {"train_loss": total / count, "lr": learning_rate, "epoch_seconds": seconds,
                  "data_wait_share": waiting / seconds}
        values.update({f"val_{k}": v for k, v in scores.items()})
        is_best = scores[params.select_by] > best[params.select_by]
        if is_best:
            best = {**scores, "epoch": epoch + 1}
        log.info("epoch %d: loss %.4f, val %s %.4f%s", epoch + 1, values["train_loss"], params.select_by,
                 scores[params.select_by], " (best)" if is_best else "")
        on_epoch_end(epoch, values, is_best)
    return best
