"""captioning/device.py resolve_precision, and the loss scaling fp16 needs: what a CPU can check of the CUDA paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FEATURE_DIM, REGIONS
from repo_params import repo_params
from torch import nn
from tqdm import tqdm

from captioning.device import autocast, resolve_precision
from captioning.features.store import FeatureStore
from captioning.train.batching import CaptionSet, iterate_batches
from captioning.train.cross_entropy import caption_loss, train_epoch
from captioning.train.epochs import apply_gradients, loss_scaler

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu_is_bf16_only_where_it_is_native(monkeypatch, native: bool, expected: str):
    """T4 and V100 have no bf16 units: torch emulates it there (is_bf16_supported() says True), slower than fp16."""
    asked = []

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert resolve_precision("auto", CUDA) == expected
    assert asked == [False]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_chosen_precision_is_kept(precision: str):
    assert resolve_precision(precision, CUDA) == precision
    assert resolve_precision(precision, torch.device("cpu")) == precision


def test_loss_scaling_is_on_for_fp16_on_a_gpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # else GradScaler("cuda") turns itself off
    assert loss_scaler(CUDA, "fp16").is_enabled()
    for device, precision in [(CUDA, "bf16"), (CUDA, "fp32"), (CPU, "fp16"), (CPU, "bf16"), (CPU, "fp32")]:
        assert not loss_scaler(device, precision).is_enabled()


def reference_epoch(decoder, optimizer, batches, params, precision: str) -> None:
    """train_epoch's step as it was before loss scaling: backward, clip, step."""
    decoder.train()
    trainable = [p for p in decoder.parameters() if p.requires_grad]
    for features, captions, lengths, _ in batches:
        with autocast(CPU, precision):
            loss = caption_loss(decoder, features, captions, lengths, params.alpha_c, None, None)
        optimizer.zero_grad(set_to_none=True)
        (loss * 1).backward()
        nn.utils.clip_grad_norm_(trainable, params.grad_clip)
        optimizer.step()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_a_cpu_gives_the_same_weights_bit_for_bit_as_before_loss_scaling(
    make_decoder, feature_file, torch_single_thread, precision: str
):
    names = [f"img_{i}.png" for i in range(6)]
    values = np.random.default_rng(0).normal(size=(len(names), REGIONS, FEATURE_DIM)).astype(np.float32)
    store = FeatureStore(feature_file(names, values))
    captions = torch.randint(4, 10, (12, 6), generator=torch.Generator().manual_seed(0)).numpy()
    train = CaptionSet(captions, np.full(12, 6), np.repeat(np.arange(6), 2))
    params = repo_params("train", grad_clip=0.05, alpha_c=1.0)  # a small clip: the gradients are clipped
    weights = []
    for epoch in (train_epoch, reference_epoch):
        decoder = make_decoder(dropout=0.5)
        optimizer = torch.optim.Adam(decoder.parameters(), lr=0.01)
        torch.manual_seed(1)  # the same dropout masks
        for _ in range(2):
            batches = iterate_batches(train, store, 4, np.random.default_rng(0), CPU)
            if epoch is train_epoch:
                train_epoch(decoder, optimizer, batches, params, CPU, precision, tqdm(disable=True))
            else:
                reference_epoch(decoder, optimizer, batches, params, precision)
        weights.append(decoder.state_dict())
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[1])
    assert not torch.equal(weights[0]["embedding.weight"], make_decoder(dropout=0.5).state_dict()["embedding.weight"])


def test_a_step_whose_scaled_gradients_overflow_is_skipped_and_clipping_sees_unscaled_gradients():
    """The fp16 path on a CPU scaler, which works as CUDA's does: a step with inf gradients leaves the weights, and
    the clip applies to the true gradient, not the scaled one."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    layer = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    before = layer.weight.detach().clone()
    apply_gradients(layer(torch.tensor([[float("inf"), 1.0]])).sum(), optimizer, list(layer.parameters()), 1.0, scaler)
    assert torch.equal(layer.weight, before) and scaler.get_scale() == 2.0**9  # skipped, the scale halved

    optimizer.zero_grad()
    apply_gradients(layer(torch.tensor([[3.0, 4.0]])).sum(), optimizer, list(layer.parameters()), 1.0, scaler)
    # the true gradient (3, 4) has norm 5: clipped to norm 1, (0.6, 0.8), and SGD with rate 1 steps by it
    assert torch.allclose(layer.weight, torch.tensor([[0.4, 0.2]]))
