"""captioning/train/batching.py: length-bucketed batches, each caption once, read ahead of the training step."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import FEATURE_DIM, REGIONS
from test_cross_entropy import tiny_task  # noqa: F401 (a fixture)

from captioning.errors import CaptioningError
from captioning.features.store import FeatureStore
from captioning.train.batching import iterate_batches, length_bucketed_batches

CPU = torch.device("cpu")


def test_length_bucketed_batches_cover_every_caption_once_longest_first():
    lengths = np.array([5, 3, 7, 3, 5, 6, 4, 7, 3, 4])
    batches = length_bucketed_batches(lengths, 3, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))
    # consecutive slices of the captions sorted by length: [3 3 3] [4 4 5] [5 6 7] [7], in random order
    assert sorted(sorted(lengths[b].tolist()) for b in batches) == [[3, 3, 3], [4, 4, 5], [5, 6, 7], [7]]
    for batch in batches:
        assert list(lengths[batch]) == sorted(lengths[batch], reverse=True)
    again = length_bucketed_batches(lengths, 3, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))


def test_iterate_batches_gives_the_rows_features_and_trims_padding(tiny_task):  # noqa: F811
    train, _, store = tiny_task
    seen = 0
    for features, captions, lengths, _ in iterate_batches(train, store, 5, np.random.default_rng(1), CPU):
        assert captions.shape == (len(lengths), int(lengths[0])) and captions.dtype == torch.int64
        assert features.shape == (len(lengths), REGIONS, FEATURE_DIM)
        for row in range(len(lengths)):
            match = np.flatnonzero((train.captions[:, : int(lengths[0])] == captions[row].numpy()).all(axis=1))
            index = next(i for i in match if train.lengths[i] == lengths[row])
            assert np.array_equal(features[row].numpy(), store.rows(train.feature_rows[[index]])[0])
        seen += len(lengths)
    assert seen == len(train.lengths)


def test_streamed_features_give_the_same_batches_as_features_in_memory(tiny_task):  # noqa: F811
    train, _, store = tiny_task
    streamed = FeatureStore(store.path, memory_budget_bytes=0)
    assert streamed.in_memory is None and store.in_memory is not None
    cpu = torch.device("cpu")
    pairs = zip(
        iterate_batches(train, store, 3, np.random.default_rng(4), cpu),
        iterate_batches(train, streamed, 3, np.random.default_rng(4), cpu),
        strict=True,
    )
    for in_memory, from_disk in pairs:
        assert all(torch.equal(a, b) for a, b in zip(in_memory[:3], from_disk[:3]))
        assert in_memory.global_counts == from_disk.global_counts


class WatchedStore:
    """A store that says when a batch's rows are read, and can refuse to read."""

    def __init__(self, store: FeatureStore, fail_on_read: int | None = None):
        self.store, self.fail_on_read, self.reads = store, fail_on_read, 0
        self.second_read = threading.Event()

    def rows(self, rows):
        self.reads += 1
        if self.reads == self.fail_on_read:
            raise CaptioningError("data/features.h5: unreadable chunk")
        if self.reads == 2:
            self.second_read.set()
        return self.store.rows(rows)


def test_the_next_batch_is_read_while_the_current_one_trains(tiny_task):  # noqa: F811
    train, _, store = tiny_task
    watched = WatchedStore(store)
    batches = iterate_batches(train, watched, 4, np.random.default_rng(0), torch.device("cpu"))
    next(batches)
    # the consumer has not asked for the second batch: only a background read can have started it
    assert watched.second_read.wait(timeout=30)
    assert sum(len(batch.lengths) for batch in batches) == len(train.lengths) - 4


def test_a_failed_read_reaches_the_training_loop_as_the_stores_error(tiny_task):  # noqa: F811
    train, _, store = tiny_task
    batches = iterate_batches(
        train, WatchedStore(store, fail_on_read=2), 4, np.random.default_rng(0), torch.device("cpu")
    )
    next(batches)
    with pytest.raises(CaptioningError, match="unreadable chunk"):
        next(batches)
