"""The CNN-RNN baseline (model.attention: none) against soft attention: same code but the context module."""

from __future__ import annotations

import pytest
import torch

from captioning.model.decoding import beam_search, greedy_decode
from captioning.model.paper import GlobalContext, SoftAttention
from captioning.train.cross_entropy import caption_loss

pytestmark = pytest.mark.usefixtures("torch_single_thread")
START, END = 1, 2


@pytest.mark.parametrize("deep_output", [False, True])
def test_the_two_models_differ_only_in_their_context_module(make_decoder, deep_output):
    soft, baseline = make_decoder("soft", deep_output=deep_output), make_decoder("none", deep_output=deep_output)
    assert isinstance(soft.context, SoftAttention) and isinstance(baseline.context, GlobalContext)
    assert type(soft) is type(baseline)
    outside = {k: v.shape for k, v in soft.state_dict().items() if not k.startswith("context.")}
    outside_baseline = {k: v.shape for k, v in baseline.state_dict().items() if not k.startswith("context.")}
    assert outside.keys() == outside_baseline.keys()
    differing = {k for k in outside if outside[k] != outside_baseline[k]}
    # only the input widths that read the context (the LSTM's, the deep output's) may follow the context size
    assert differing == ({"lstm.weight_ih", "output_context.weight"} if deep_output else {"lstm.weight_ih"})


@pytest.mark.parametrize("implementation", ["paper", "fast"])
def test_the_baseline_context_is_the_same_at_every_step(make_decoder, features, implementation):
    decoder = make_decoder("none", implementation=implementation)
    encoded = decoder.encode(features(3))
    state = decoder.initial_state(encoded)
    words = torch.full((3,), START)
    for _ in range(3):
        _, state, weights = decoder.step(words, state, encoded)
        assert weights.shape == (3, 1) and torch.all(weights == 1)
    values = encoded.values if implementation == "paper" else encoded.projected_values
    assert values.shape[1] == 1, "one global vector per image"


@pytest.mark.parametrize("attention", ["soft", "none"])
def test_both_models_learn_a_tiny_task_and_decode_greedy_and_beam(make_decoder, features, attention):
    torch.manual_seed(0)
    decoder = make_decoder(attention).train()
    images = features(4, seed=3)
    captions = torch.tensor([[START, 3 + i, 4 + i, END] for i in range(4)])  # image i says "w(3+i) w(4+i)"
    lengths = torch.full((4,), 4)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        loss = caption_loss(decoder, images, captions, lengths, alpha_c=1.0)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first
    decoder.eval()
    expected = [[3 + i, 4 + i] for i in range(4)]
    assert greedy_decode(decoder, images, START, END, max_len=6).tokens == expected
    decoded = beam_search(decoder, images, START, END, beam_size=3, max_len=6)
    assert decoded.tokens == expected
    assert [w.shape for w in decoded.weights] == [(2, 5 if attention == "soft" else 1)] * 4
