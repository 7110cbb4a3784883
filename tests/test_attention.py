"""captioning/model/attention.py: soft attention is a distribution over regions; the baseline one vector."""

from __future__ import annotations

import pytest
import torch

from captioning.model.attention import CONTEXT_MODULES, GlobalContext, SoftAttention

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def make_module(module_class, batch=3, regions=49, feature_dim=8, hidden_dim=16, attention_dim=16, seed=0):
    torch.manual_seed(seed)
    module = module_class(feature_dim, hidden_dim, attention_dim)
    return module, torch.randn(batch, regions, feature_dim), torch.randn(batch, hidden_dim)


def test_soft_attention_weights_are_a_distribution_over_49_regions():
    attention, features, hidden = make_module(SoftAttention)
    keys, values = attention.prepare(features)
    assert keys.shape == (3, 49, 16)
    assert values is features and attention.context_dim == 8 and attention.attends
    weights = attention(keys, hidden)
    assert weights.shape == (3, 49)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))


def test_soft_attention_is_bahdanau_scoring():
    attention, features, hidden = make_module(SoftAttention, regions=5)
    keys, _ = attention.prepare(features)
    w_f, w_h, v = attention.feature_projection, attention.hidden_projection, attention.score
    scores = torch.stack(
        [
            torch.stack(
                [(v.weight @ torch.tanh(w_f(features[b, i]) + w_h(hidden[b])) + v.bias).squeeze() for i in range(5)]
            )
            for b in range(3)
        ]
    )
    torch.testing.assert_close(attention(keys, hidden), torch.softmax(scores, dim=1))


def test_soft_attention_depends_on_the_hidden_state_and_the_regions():
    attention, features, hidden = make_module(SoftAttention, regions=5)
    keys, _ = attention.prepare(features)
    weights = attention(keys, hidden)
    assert not torch.allclose(weights, attention(keys, hidden * 3))
    assert not torch.allclose(weights[0], weights[1])


def test_a_dominant_region_gets_almost_all_the_weight():
    attention = SoftAttention(feature_dim=2, hidden_dim=2, attention_dim=1)
    with torch.no_grad():
        attention.feature_projection.weight.copy_(torch.tensor([[1.0, 0.0]]))
        attention.feature_projection.bias.zero_()
        attention.hidden_projection.weight.zero_()
        attention.hidden_projection.bias.zero_()
        attention.score.weight.fill_(20.0)
        attention.score.bias.zero_()
    features = torch.tensor([[[0.0, 1.0], [3.0, 0.0], [0.0, 0.0]]])  # region 1 has the largest first channel
    weights = attention(attention.prepare(features)[0], torch.zeros(1, 2))
    assert weights.argmax().item() == 1 and weights[0, 1] > 0.99


def test_global_context_gives_one_weight_of_one_on_the_projected_mean():
    context, features, hidden = make_module(GlobalContext)
    keys, values = context.prepare(features)
    assert keys.shape == values.shape == (3, 1, 16)
    torch.testing.assert_close(values, context.projection(features.mean(dim=1, keepdim=True)))
    weights = context(keys, hidden)
    assert weights.shape == (3, 1)
    assert torch.equal(weights, torch.ones(3, 1))
    assert context.context_dim == 16 and not context.attends


def test_gradients_reach_every_attention_parameter():
    attention, features, hidden = make_module(SoftAttention, regions=5)
    keys, _ = attention.prepare(features)
    weights = attention(keys, hidden)
    (weights * torch.arange(5.0)).sum().backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for n, p in attention.named_parameters() if n != "score.bias"
    )


def test_context_modules_by_params_name():
    assert CONTEXT_MODULES == {"soft": SoftAttention, "none": GlobalContext}
