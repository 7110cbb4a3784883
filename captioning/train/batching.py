"""Batches of training captions: length-bucketed, each rank's share under DDP, read ahead of the compute.

Captions of (nearly) equal length go together, so a batch pads little; the batches come in random
order, from the numpy generator the training run saves with its state, so a resumed run draws the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from captioning.data.table import CaptionTable
from captioning.features.store import FeatureStore


@dataclass
class CaptionSet:
    """Encoded training captions and, for each, the feature-file row of its image."""

    captions: np.ndarray  # (M, L) int
    lengths: np.ndarray  # (M,) tokens including <start> and <end>
    feature_rows: np.ndarray  # (M,)

    @classmethod
    def from_encoded(cls, encoded, table: CaptionTable, store: FeatureStore) -> CaptionSet:
        """The vocab stage's encoded captions, minus those of images the features stage skipped."""
        names = [table.images[i].image for i in encoded["image_index"]]
        kept = np.array([name not in store.skipped for name in names], dtype=bool)
        rows = store.rows_for([name for name, keep in zip(names, kept) if keep])
        return cls(encoded["captions"][kept], encoded["lengths"][kept], rows)


def length_bucketed_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of captions of (nearly) equal length, each sorted longest first, in random order."""
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return [batch[np.argsort(-lengths[batch], kind="stable")] for batch in batches]


class Batch(NamedTuple):
    """One batch as the training step takes it: features and captions on the device, lengths on the host."""

    features: torch.Tensor  # (B, R, F)
    captions: torch.Tensor  # (B, L) word ids, longest first
    lengths: torch.Tensor  # (B,) tokens, <start> and <end> included
    # DDP: (target tokens, captions) of the whole global batch this rank has a share of, known on every rank
    # without asking the others (they draw the same batches); None in a one-process run
    global_counts: tuple[int, int] | None = None


def iterate_batches(
    data: CaptionSet,
    store: FeatureStore,
    batch_size: int,
    rng: np.random.Generator,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[Batch]:
    """Length-bucketed batches: features and captions on `device`, lengths on the host (the fast decoder reads
    its batch sizes per step from them without waiting for the device); with several ranks, this rank's share
    of each global batch and the global batch's counts.

    The next batch is read in a background thread while the current one trains: when the features
    stream from disk (train.feature_memory_gb below the file's size), reading overlaps the compute
    instead of adding to it. The batches and their order are the same either way. On CUDA the thread
    also puts the batch in pinned memory and copies it to the GPU on a stream of its own, so that the
    copy overlaps the current step and the host never waits for it; the step's stream waits for the copy.
    """
    batches, counts = [], []
    for batch in length_bucketed_batches(data.lengths, batch_size, rng):
        if world_size > 1:  # DDP: every world_size-th caption (still longest first); the same rng on every rank
            if len(batch) < world_size:
                continue  # the last batch, too small to share: fewer than world_size captions per epoch unseen
            counts.append((int((data.lengths[batch] - 1).sum()), len(batch)))
            batch = batch[rank::world_size]
        batches.append(batch)
    copies = torch.cuda.Stream(device) if device.type == "cuda" else None

    def read(batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.cuda.Event | None]:
        longest = int(data.lengths[batch[0]])
        features = torch.from_numpy(store.rows(data.feature_rows[batch]))
        captions = torch.from_numpy(data.captions[batch, :longest].astype(np.int64))
        lengths = torch.from_numpy(data.lengths[batch].astype(np.int64))
        if copies is None:
            return features.to(device), captions.to(device), lengths, None
        with torch.cuda.stream(copies):
            features = features.pin_memory().to(device, non_blocking=True)
            captions = captions.pin_memory().to(device, non_blocking=True)
            return features, captions, lengths, copies.record_event()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-reader") as reader:
        upcoming = reader.submit(read, batches[0]) if batches else None
        for index in range(len(batches)):
            features, captions, lengths, copied = upcoming.result()
            if index + 1 < len(batches):
                upcoming = reader.submit(read, batches[index + 1])
            if copied is not None:  # CUDA: the step's stream waits for the copy (the host does not)
                stream = torch.cuda.current_stream(device)
                stream.wait_event(copied)
                features.record_stream(stream)  # their memory is not reused before the step is done with them
                captions.record_stream(stream)
            yield Batch(features, captions, lengths, counts[index] if counts else None)


class WaitClock:
    """Iterates over `batches`, adding up the seconds spent blocked waiting for the next one."""

    def __init__(self, batches: Iterator):
        self.batches, self.waiting = batches, 0.0

    def __iter__(self) -> Iterator:
        while True:
            start = time.perf_counter()
            batch = next(self.batches, None)
            self.waiting += time.perf_counter() - start
            if batch is None:
                return
            yield batch
