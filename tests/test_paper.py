"""captioning/model/paper.py: the literal model is the paper's equations, written out by hand here."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import EMBED, FEATURE_DIM, HIDDEN, REGIONS, VOCAB
from repo_params import repo_params
from torch import nn

from captioning.model import FastCaptionDecoder, build_decoder
from captioning.model.paper import CaptionDecoder, DecoderConfig, GlobalContext, SoftAttention
from captioning.model.paper import caption_loss as paper_loss
from captioning.params import ATTENTION_KINDS, IMPLEMENTATIONS

pytestmark = pytest.mark.usefixtures("torch_single_thread")
LENGTHS = [6, 4, 4, 2]  # sorted by decreasing length, <start> and <end> included


def make_module(module_class, batch=3, regions=49, feature_dim=8, hidden_dim=16, attention_dim=16, seed=0):
    torch.manual_seed(seed)
    module = module_class(feature_dim, hidden_dim, attention_dim)
    return module, torch.randn(batch, regions, feature_dim), torch.randn(batch, hidden_dim)


def random_captions(lengths: list[int], seed: int, padding: int | None = None) -> torch.Tensor:
    """(B, max(lengths)) ids >= 1; positions past each length are `padding`, or random when None."""
    generator = torch.Generator().manual_seed(seed)
    captions = torch.randint(1, VOCAB, (len(lengths), max(lengths)), generator=generator)
    filler = torch.randint(1, VOCAB, captions.shape, generator=torch.Generator().manual_seed(seed + 100))
    for row, length in enumerate(lengths):
        captions[row, length:] = filler[row, length:] if padding is None else padding
    return captions


# --- Eq. 4-5: soft attention ------------------------------------------------------------------------


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
    torch.testing.assert_close(keys, attention.feature_projection(features))  # W_f a_i, once per image
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


@pytest.mark.parametrize("attention", ATTENTION_KINDS)
def test_each_attention_kind_params_allow_builds_its_context_module(attention):
    model = repo_params("model", attention=attention, decoder_dim=8, attention_dim=8)
    decoder = CaptionDecoder(DecoderConfig.from_params(model, vocab_size=5, embed_dim=4, feature_dim=6))
    expected = {"soft": SoftAttention, "hard": SoftAttention, "none": GlobalContext}[attention]
    assert type(decoder.context) is expected and decoder.config.attention == attention


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_each_implementation_params_allow_builds_its_decoder(implementation):
    model = repo_params("model", decoder_dim=8, attention_dim=8, implementation=implementation)
    decoder = build_decoder(DecoderConfig.from_params(model, vocab_size=5, embed_dim=4, feature_dim=6), implementation)
    assert type(decoder) is (CaptionDecoder if implementation == "paper" else FastCaptionDecoder)


def test_the_config_from_params_takes_the_model_section_and_the_data_sizes():
    model = repo_params("model", decoder_dim=24, attention_dim=12, dropout=0.25, attention="hard", deep_output=True)
    config = DecoderConfig.from_params(model, vocab_size=30, embed_dim=10, feature_dim=2048)
    assert config.to_dict() == {
        "vocab_size": 30, "embed_dim": 10, "feature_dim": 2048, "decoder_dim": 24, "attention_dim": 12,
        "dropout": 0.25, "attention": "hard", "deep_output": True,
    }  # fmt: skip


# --- the decoder: initial state, Eq. 1-3, 6, 7 ------------------------------------------------------


def test_the_config_has_no_defaults_of_its_own():
    assert all(field.default is dataclasses.MISSING for field in dataclasses.fields(DecoderConfig))


@pytest.mark.parametrize(("attention", "regions"), [("soft", REGIONS), ("none", 1)])
def test_one_step_has_the_documented_shapes(make_decoder, features, attention, regions):
    decoder = make_decoder(attention, implementation="paper")
    assert type(decoder) is CaptionDecoder
    encoded = decoder.encode(features(3))
    state = decoder.initial_state(encoded)
    assert state[0].shape == state[1].shape == (3, HIDDEN)
    logits, (hidden, cell), weights = decoder.step(torch.tensor([1, 4, 5]), state, encoded)
    assert logits.shape == (3, VOCAB)
    assert hidden.shape == cell.shape == (3, HIDDEN)
    assert weights.shape == (3, regions)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))


def test_the_initial_state_comes_from_the_mean_region(make_decoder, features):
    decoder = make_decoder(implementation="paper")
    region_features = features(2)
    hidden, cell = decoder.initial_state(decoder.encode(region_features))
    mean = decoder.standardise(region_features).mean(dim=1)
    torch.testing.assert_close(hidden, torch.tanh(decoder.init_h(mean)))
    torch.testing.assert_close(cell, torch.tanh(decoder.init_c(mean)))


@pytest.mark.parametrize("deep_output", [True, False])
def test_a_step_is_an_lstm_cell_on_embedding_and_gated_context(make_decoder, features, deep_output):
    decoder = make_decoder(deep_output=deep_output, implementation="paper")
    region_features = features(2)
    encoded = decoder.encode(region_features)
    state = decoder.initial_state(encoded)
    words = torch.tensor([3, 8])
    regions = decoder.standardise(region_features)
    weights = decoder.context(decoder.context.feature_projection(regions), state[0])
    context = (weights.unsqueeze(2) * regions).sum(dim=1)  # z_t, before the gate
    beta = torch.sigmoid(decoder.gate(state[0]))
    cell = nn.LSTMCell(EMBED + FEATURE_DIM, HIDDEN)
    cell.load_state_dict(decoder.lstm.state_dict())
    hidden, memory = cell(torch.cat([decoder.embedding(words), beta * context], dim=1), state)
    logits, (step_hidden, step_memory), step_weights = decoder.step(words, state, encoded)
    torch.testing.assert_close(step_weights, weights)
    torch.testing.assert_close(step_hidden, hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step_memory, memory, rtol=1e-5, atol=1e-5)
    if deep_output:  # Eq. 7: L_o tanh(E y_{t-1} + L_h h_t + L_z beta z_t)
        deep = decoder.embedding(words) + decoder.output_hidden(hidden) + decoder.output_context(beta * context)
        expected = decoder.output(torch.tanh(deep))
    else:
        expected = decoder.output(hidden)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_k_state_rows_share_their_images_tensors(make_decoder, features):
    decoder = make_decoder(implementation="paper")
    encoded = decoder.encode(features(2))
    hidden, cell = decoder.initial_state(encoded)
    state = (hidden.repeat_interleave(3, dim=0), cell.repeat_interleave(3, dim=0))  # 3 beams per image
    words = torch.tensor([1, 4, 5, 1, 4, 5])
    shared = decoder.step(words, state, encoded)
    copied = decoder.step(words, state, encoded.select(torch.tensor([0, 0, 0, 1, 1, 1])))
    for one, other in zip(shared, copied):
        torch.testing.assert_close(one, other)


@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("attention", ["soft", "none"])
def test_forward_is_one_teacher_forcing_step_per_word(make_decoder, features, attention, deep_output):
    decoder = make_decoder(attention, deep_output=deep_output, implementation="paper")
    region_features, captions = features(4), random_captions(LENGTHS, seed=0)
    logits, targets, weight_sums = decoder(region_features, captions, torch.tensor(LENGTHS))[:3]
    assert logits.shape == (sum(n - 1 for n in LENGTHS), VOCAB) and targets.shape == (12,)
    # time-major: step t holds the rows whose caption is still running
    order = [(row, t) for t in range(max(LENGTHS) - 1) for row, n in enumerate(LENGTHS) if t < n - 1]
    for row, length in enumerate(LENGTHS):
        encoded = decoder.encode(region_features[row : row + 1])
        state, weight_sum = decoder.initial_state(encoded), 0
        for t in range(length - 1):
            step_logits, state, weights = decoder.step(captions[row : row + 1, t], state, encoded)
            index = order.index((row, t))
            torch.testing.assert_close(logits[index], step_logits[0], rtol=1e-5, atol=1e-5)
            assert targets[index] == captions[row, t + 1]
            weight_sum = weight_sum + weights[0]
        torch.testing.assert_close(weight_sums[row], weight_sum, rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_anything(make_decoder, features):
    decoder = make_decoder(implementation="paper")
    region_features = features(4)
    zeros = decoder(region_features, random_captions(LENGTHS, seed=0, padding=0), torch.tensor(LENGTHS))
    junk = decoder(region_features, random_captions(LENGTHS, seed=0), torch.tensor(LENGTHS))
    for with_zeros, with_junk in zip(zeros, junk):
        assert torch.equal(with_zeros, with_junk)


def test_backward_reaches_the_decoder_parameters(make_decoder, features):
    decoder = make_decoder(deep_output=True, implementation="paper").train()
    logits, targets = decoder(features(4), random_captions(LENGTHS, seed=1), torch.tensor(LENGTHS))[:2]
    nn.functional.cross_entropy(logits, targets).backward()
    for name, parameter in decoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_encode_standardises_with_the_feature_statistics(make_decoder, features):
    decoder = make_decoder(implementation="paper")
    mean, std = torch.linspace(-1, 1, FEATURE_DIM), torch.linspace(0, 2, FEATURE_DIM)
    decoder.set_feature_statistics(mean, std)
    assert decoder.feature_std.min() == pytest.approx(1e-3)  # a constant channel is not divided by zero
    region_features = features(2).half()
    encoded = decoder.encode(region_features)
    assert encoded.regions.dtype == torch.float32
    torch.testing.assert_close(encoded.regions, (region_features.float() - mean) / std.clamp(min=1e-3))
    assert encoded.keys.shape == (2, REGIONS, HIDDEN) and encoded.values.shape == (2, REGIONS, FEATURE_DIM)
    selected = encoded.select(torch.tensor([1, 1, 0]))
    assert torch.equal(selected.regions[2], encoded.regions[0]) and torch.equal(selected.keys[0], encoded.keys[1])


@pytest.mark.parametrize("finetune", [True, False])
def test_load_embeddings_copies_the_matrix_and_sets_finetuning(make_decoder, finetune):
    decoder = make_decoder(implementation="paper")
    matrix = torch.randn(VOCAB, EMBED)
    decoder.load_embeddings(matrix, finetune)
    assert torch.equal(decoder.embedding.weight.detach(), matrix)
    assert decoder.embedding.weight.requires_grad is finetune


# --- Eq. 14: the loss -----------------------------------------------------------------------------


def test_the_loss_is_cross_entropy_per_token_plus_the_doubly_stochastic_penalty():
    scores, targets = torch.randn(5, VOCAB), torch.tensor([1, 4, 2, 2, 7])
    weight_sums = torch.tensor([[0.5, 1.5, 1.0], [2.0, 0.0, 1.0]])  # 2 captions, 3 regions
    cross_entropy = nn.functional.cross_entropy(scores, targets)
    torch.testing.assert_close(paper_loss(scores, targets, weight_sums, 0.0, tokens=5, captions=2), cross_entropy)
    penalty = ((0.25 + 0.25 + 0) / 3 + (1 + 1 + 0) / 3) / 2  # mean over regions of (1 - sum_t alpha)^2, per caption
    loss = paper_loss(scores, targets, weight_sums, 0.5, tokens=5, captions=2)
    torch.testing.assert_close(loss, cross_entropy + 0.5 * torch.tensor(penalty))


def test_the_model_folder_imports_neither_params_nor_distributed():
    """captioning/model/ is the network alone: params and torchrun are the stages' and training's business."""
    model_folder = Path(__file__).resolve().parents[1] / "captioning" / "model"
    imported = set()
    for path in model_folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
    assert not imported & {"captioning.params", "captioning.train.distributed"}
