"""captioning/train/cross_entropy.py: the loop learns, StepLR halves the rate on schedule, the best epoch is kept."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FEATURE_DIM, REGIONS
from repo_params import repo_params
from torch import nn
from tqdm import tqdm

from captioning.errors import CaptioningError
from captioning.features.store import FeatureStore
from captioning.scoring.metrics import METRIC_KEYS
from captioning.scoring.split import EvaluationImages
from captioning.text.vocabulary import SPECIALS, Vocabulary, encode_captions
from captioning.train.batching import CaptionSet, iterate_batches
from captioning.train.cross_entropy import caption_loss, feature_statistics, fit, train_epoch, training_step
from captioning.train.validation import Validation

pytestmark = pytest.mark.usefixtures("torch_single_thread")

COLORS, SHAPES = ["red", "blue", "green", "pink"], ["circle", "square", "star", "ring"]
VOCABULARY = Vocabulary(list(SPECIALS) + COLORS + SHAPES)  # 12 words
NAMES = [f"img_{i}.png" for i in range(8)]


def words_of(image: int) -> list[list[str]]:
    """Two captions per image, fully determined by it: '<colour> <shape>' and '<colour> <shape> <shape>'."""
    color, shape = COLORS[image % 4], SHAPES[image // 2]
    return [[color, shape], [color, shape, shape]]


class FakeScorer:
    """Returns the next of `values` for `key` (and fixed values for the other metrics); records its inputs."""

    def __init__(self, key: str = "bleu_4", values: list[float] | None = None):
        self.key, self.values, self.calls = key, list(values or []), []

    def score(self, predictions: dict, references: dict) -> dict:
        self.calls.append((predictions, references))
        scores = {k: 0.5 for k in METRIC_KEYS}
        scores[self.key] = self.values[len(self.calls) - 1] if self.values else 0.0
        return scores


@pytest.fixture
def tiny_task(feature_file):
    """8 images with distinct region features, 16 training captions, 2 validation images."""
    values = np.random.default_rng(0).normal(size=(len(NAMES), REGIONS, FEATURE_DIM)).astype(np.float32)
    store = FeatureStore(feature_file(NAMES, values))
    tokenized = [caption for image in range(len(NAMES)) for caption in words_of(image)]
    image_index = [image for image in range(len(NAMES)) for _ in range(2)]
    encoded = encode_captions(VOCABULARY, tokenized, image_index, max_len=5)
    train = CaptionSet(encoded["captions"], encoded["lengths"], encoded["image_index"].astype(np.int64))
    references = [[" ".join(c) for c in words_of(image)] for image in (0, 5)]
    val = EvaluationImages(["img_0.png", "img_5.png"], store.rows_for(["img_0.png", "img_5.png"]), references)
    return train, val, store


def run_fit(make_decoder, tiny_task, scorer, **overrides):
    train, val, store = tiny_task
    options = dict(lr=0.01, epochs=5, batch_size=4, step_size=2, gamma=0.5, seed=0, precision="fp32", val_max_len=5)
    # the rest from params.yaml, except alpha_c: these runs keep the attention penalty on, as they always did
    params = repo_params("train", **{**options, "alpha_c": 1.0, **overrides})
    decoder = make_decoder()
    decoder.set_feature_statistics(*feature_statistics(store, np.arange(len(NAMES))))
    epochs = []
    validation = Validation(val, store, VOCABULARY, scorer, params.val_max_len, torch.device("cpu"))
    best = fit(
        decoder,
        train,
        store,
        validation,
        params,
        on_epoch_end=lambda epoch, values, is_best: epochs.append((epoch, values, is_best)),
    )
    return best, epochs


def test_step_lr_multiplies_the_rate_by_gamma_every_step_size_epochs(make_decoder, tiny_task):
    _, epochs = run_fit(make_decoder, tiny_task, FakeScorer(), lr=0.01, epochs=5, step_size=2, gamma=0.5)
    assert [epoch for epoch, _, _ in epochs] == [0, 1, 2, 3, 4]
    assert [values["lr"] for _, values, _ in epochs] == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])
    _, epochs = run_fit(make_decoder, tiny_task, FakeScorer(), lr=0.02, epochs=4, step_size=1, gamma=0.1)
    assert [values["lr"] for _, values, _ in epochs] == pytest.approx([0.02, 0.002, 0.0002, 0.00002])


def test_the_loss_decreases_on_a_learnable_task(make_decoder, tiny_task):
    _, epochs = run_fit(make_decoder, tiny_task, FakeScorer(), lr=0.02, epochs=8, step_size=100, alpha_c=0.0)
    losses = [values["train_loss"] for _, values, _ in epochs]
    assert losses[0] > np.log(len(VOCABULARY)) * 0.8  # starts near chance
    assert losses[-1] < 0.5 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 6, losses


def test_is_best_tracks_the_select_by_metric(make_decoder, tiny_task):
    scorer = FakeScorer("bleu_4", [0.1, 0.3, 0.2, 0.3, 0.5])
    best, epochs = run_fit(make_decoder, tiny_task, scorer, epochs=5)
    assert [is_best for _, _, is_best in epochs] == [True, True, False, False, True]
    assert best["epoch"] == 5 and best["bleu_4"] == 0.5
    assert [values["val_bleu_4"] for _, values, _ in epochs] == [0.1, 0.3, 0.2, 0.3, 0.5]

    scorer = FakeScorer("cider", [2.0, 1.0, 3.0])  # bleu_4 stays 0.5: only select_by decides
    best, epochs = run_fit(make_decoder, tiny_task, scorer, epochs=3, select_by="cider")
    assert [is_best for _, _, is_best in epochs] == [True, False, True]
    assert best["epoch"] == 3 and best["cider"] == 3.0


def test_each_epoch_reports_training_values_and_validation_on_every_image(make_decoder, tiny_task):
    scorer = FakeScorer()
    _, epochs = run_fit(make_decoder, tiny_task, scorer, epochs=1)
    _, values, _ = epochs[0]
    assert {"train_loss", "lr", "epoch_seconds", "data_wait_share"} <= set(values)
    assert {f"val_{k}" for k in METRIC_KEYS} <= set(values)
    assert values["train_loss"] > 0 and values["epoch_seconds"] > 0 and 0 <= values["data_wait_share"] <= 1
    predictions, references = scorer.calls[0]
    assert set(predictions) == {"img_0.png", "img_5.png"}
    assert references == {
        "img_0.png": ["red circle", "red circle circle"],
        "img_5.png": ["blue star", "blue star star"],
    }
    assert all(len(caption.split()) <= 5 for caption in predictions.values())


@pytest.mark.parametrize("attention", ["soft", "none"])
def test_caption_loss_is_cross_entropy_plus_the_attention_penalty(make_decoder, features, attention):
    decoder = make_decoder(attention)
    region_features, lengths = features(3), torch.tensor([5, 4, 3])
    captions = torch.tensor([[1, 4, 8, 8, 2], [1, 5, 9, 2, 0], [1, 6, 2, 0, 0]])
    logits, targets, weight_sums = decoder(region_features, captions, lengths)[:3]
    cross_entropy = nn.functional.cross_entropy(logits, targets)
    penalty = ((1.0 - weight_sums) ** 2).mean() if attention == "soft" else 0.0
    loss = caption_loss(decoder, region_features, captions, lengths, alpha_c=2.0)
    torch.testing.assert_close(loss, cross_entropy + 2.0 * penalty)
    torch.testing.assert_close(caption_loss(decoder, region_features, captions, lengths, alpha_c=0.0), cross_entropy)


def test_feature_statistics_are_per_channel_over_the_sampled_rows(tiny_task):
    _, _, store = tiny_task
    mean, std = feature_statistics(store, np.array([6, 1, 3]))
    values = store.rows(np.array([1, 3, 6])).astype(np.float32).reshape(-1, FEATURE_DIM)
    np.testing.assert_allclose(mean.numpy(), values.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), values.std(axis=0, ddof=1), rtol=1e-5, atol=1e-6)
    sampled, _ = feature_statistics(store, np.arange(8), sample=2, seed=0)
    assert sampled.shape == (FEATURE_DIM,) and not torch.allclose(sampled, feature_statistics(store, np.arange(8))[0])


class ScorerWithoutJava(FakeScorer):
    """What CaptionScorer returns without Java: every metric but `meteor`."""

    def score(self, predictions: dict, references: dict) -> dict:
        return {k: v for k, v in super().score(predictions, references).items() if k != "meteor"}


def test_selecting_by_a_metric_the_scorer_cannot_give_is_a_one_line_error(make_decoder, tiny_task):

    with pytest.raises(CaptioningError, match="train.select_by"):
        run_fit(make_decoder, tiny_task, ScorerWithoutJava(), epochs=1, select_by="meteor")


def test_the_progress_bar_is_redrawn_at_tqdms_pace_not_on_every_batch(make_decoder, tiny_task):
    """A log file got one line per batch when the loss shown beside the bar forced a redraw each time."""
    train, _, store = tiny_task
    decoder = make_decoder().train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.01)
    batches = iterate_batches(train, store, 2, np.random.default_rng(0), torch.device("cpu"))
    log = io.StringIO()
    with tqdm(total=len(train.lengths), file=log, mininterval=1e9) as progress:  # no redraw is ever due
        values = train_epoch(decoder, optimizer, batches, repo_params("train"), torch.device("cpu"), "fp32", progress)
        assert progress.n == len(train.lengths) == 16  # 8 batches went by
        assert log.getvalue().count("\r") == 1  # the first draw only
    last = log.getvalue().split("\r")[-1]  # closing draws the bar once more, with the epoch's mean loss
    assert log.getvalue().count("\r") == 2 and f"loss={values['train_loss']:.3f}" in last


@pytest.mark.parametrize("deep_output", [False, True])
def test_a_training_step_of_the_fast_module_reads_nothing_back_from_the_device(make_decoder, tiny_task, deep_output):
    """On a GPU every read (loss.item(), int(steps.max()), .tolist()) makes the host wait for the queued kernels.

    Counted as benchmarks/profile_step.py counts them: the lengths come on the host, as iterate_batches gives them.
    """
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from profile_step import SyncCounter

    train, _, store = tiny_task
    decoder = make_decoder(deep_output=deep_output).train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.01, fused=True)
    trainable = list(decoder.parameters())
    params = repo_params("train", alpha_c=1.0)
    for batch in iterate_batches(train, store, 4, np.random.default_rng(0), torch.device("cpu")):
        with SyncCounter([batch[2]]) as counter:
            training_step(decoder, optimizer, trainable, batch, params, torch.device("cpu"), "fp32")
        assert counter.reads == {}
