"""captioning/model/decoder.py: the fast step is the paper's LSTM step, and forward() skips only padding."""

from __future__ import annotations

import pytest
import torch
from conftest import EMBED, FEATURE_DIM, HIDDEN, REGIONS, VOCAB
from torch import nn

pytestmark = pytest.mark.usefixtures("torch_single_thread")
LENGTHS = [6, 4, 4, 2]  # sorted by decreasing length, <start> and <end> included


def random_captions(lengths: list[int], seed: int, padding: int | None = None) -> torch.Tensor:
    """(B, max(lengths)) ids >= 1; positions past each length are `padding`, or random when None."""
    generator = torch.Generator().manual_seed(seed)
    captions = torch.randint(1, VOCAB, (len(lengths), max(lengths)), generator=generator)
    filler = torch.randint(1, VOCAB, captions.shape, generator=torch.Generator().manual_seed(seed + 100))
    for row, length in enumerate(lengths):
        captions[row, length:] = filler[row, length:] if padding is None else padding
    return captions


@pytest.mark.parametrize(("attention", "regions"), [("soft", REGIONS), ("none", 1)])
def test_one_step_has_the_documented_shapes(make_decoder, features, attention, regions):
    decoder = make_decoder(attention)
    encoded = decoder.encode(features(3))
    state = decoder.initial_state(encoded)
    assert state[0].shape == state[1].shape == (3, HIDDEN)
    logits, (hidden, cell), weights = decoder.step(torch.tensor([1, 4, 5]), state, encoded)
    assert logits.shape == (3, VOCAB)
    assert hidden.shape == cell.shape == (3, HIDDEN)
    assert weights.shape == (3, regions)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))


@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("attention", ["soft", "none"])
def test_step_equals_the_literal_lstm_cell_step(make_decoder, features, attention, deep_output):
    decoder = make_decoder(attention, dropout=0.5, deep_output=deep_output)  # eval mode: dropout is off
    encoded = decoder.encode(features(4) * 3)
    fast = reference = decoder.initial_state(encoded)
    for words in ([1, 1, 1, 1], [4, 7, 2, 11], [5, 5, 9, 3]):
        words = torch.tensor(words)
        fast_logits, fast, fast_weights = decoder.step(words, fast, encoded)
        reference_logits, reference, reference_weights = decoder.reference_step(words, reference, encoded)
        torch.testing.assert_close(fast_logits, reference_logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast[0], reference[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast[1], reference[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fast_weights, reference_weights, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("deep_output", [True, False])
def test_reference_step_is_an_lstm_cell_on_embedding_and_gated_context(make_decoder, features, deep_output):
    decoder = make_decoder(deep_output=deep_output)
    encoded = decoder.encode(features(2))
    state = decoder.initial_state(encoded)
    words = torch.tensor([3, 8])
    weights = decoder.context(encoded.keys, state[0])
    context = (weights.unsqueeze(2) * encoded.features).sum(dim=1)  # values are the standardised regions
    beta = torch.sigmoid(decoder.gate(state[0]))
    cell = nn.LSTMCell(EMBED + FEATURE_DIM, HIDDEN)
    cell.load_state_dict(decoder.lstm.state_dict())
    hidden, memory = cell(torch.cat([decoder.embedding(words), beta * context], dim=1), state)
    logits, (step_hidden, step_memory), _ = decoder.step(words, state, encoded)
    torch.testing.assert_close(step_hidden, hidden, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step_memory, memory, rtol=1e-5, atol=1e-5)
    if deep_output:  # Eq. 7: L_o tanh(E y_{t-1} + L_h h_t + L_z beta z_t)
        deep = decoder.embedding(words) + decoder.output_hidden(hidden) + decoder.output_context(beta * context)
        expected = decoder.output(torch.tanh(deep))
    else:
        expected = decoder.output(hidden)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def caption_by_caption(decoder, region_features, captions, lengths):
    """Each caption alone, step by step with reference_step: its logits (L-1, V), targets and weight sum."""
    results = []
    for row, length in enumerate(lengths):
        encoded = decoder.encode(region_features[row : row + 1])
        state = decoder.initial_state(encoded)
        logits, weight_sum = [], 0
        for t in range(length - 1):
            step_logits, state, weights = decoder.reference_step(captions[row : row + 1, t], state, encoded)
            logits.append(step_logits[0])
            weight_sum = weight_sum + weights[0]
        results.append((torch.stack(logits), captions[row, 1:length], weight_sum))
    return results


@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("attention", ["soft", "none"])
def test_forward_on_a_sorted_batch_equals_a_loop_over_each_caption(make_decoder, features, attention, deep_output):
    decoder = make_decoder(attention, deep_output=deep_output)
    region_features, captions = features(4), random_captions(LENGTHS, seed=0)
    logits, targets, weight_sums = decoder(region_features, captions, torch.tensor(LENGTHS))
    assert logits.shape == (sum(n - 1 for n in LENGTHS), VOCAB) and targets.shape == (12,)

    alone = caption_by_caption(decoder, region_features, captions, LENGTHS)
    # forward() orders tokens time-major: step t holds the rows whose caption is still running
    order = [(row, t) for t in range(max(LENGTHS) - 1) for row, n in enumerate(LENGTHS) if t < n - 1]
    for index, (row, t) in enumerate(order):
        torch.testing.assert_close(logits[index], alone[row][0][t], rtol=1e-5, atol=1e-5)
        assert targets[index] == alone[row][1][t]
    for row in range(len(LENGTHS)):
        torch.testing.assert_close(weight_sums[row], alone[row][2], rtol=1e-5, atol=1e-5)

    batch_loss = nn.functional.cross_entropy(logits, targets)
    total = sum(nn.functional.cross_entropy(lg, tg, reduction="sum") for lg, tg, _ in alone)
    torch.testing.assert_close(batch_loss, total / sum(n - 1 for n in LENGTHS), rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_anything(make_decoder, features):
    decoder = make_decoder()
    region_features = features(4)
    padded_with_zeros = decoder(region_features, random_captions(LENGTHS, seed=0, padding=0), torch.tensor(LENGTHS))
    padded_with_junk = decoder(region_features, random_captions(LENGTHS, seed=0), torch.tensor(LENGTHS))
    for zeros, junk in zip(padded_with_zeros, padded_with_junk):
        assert torch.equal(zeros, junk)
    with_extra_columns = torch.cat([random_captions(LENGTHS, seed=0), torch.full((4, 3), 7)], dim=1)
    logits, _, _ = decoder(region_features, with_extra_columns, torch.tensor(LENGTHS))
    assert torch.equal(logits, padded_with_zeros[0])


def test_backward_reaches_the_decoder_parameters(make_decoder, features):
    decoder = make_decoder(deep_output=True).train()
    logits, targets, _ = decoder(features(4), random_captions(LENGTHS, seed=1), torch.tensor(LENGTHS))
    nn.functional.cross_entropy(logits, targets).backward()
    for name in (
        "embedding.weight",
        "lstm.weight_ih",
        "lstm.weight_hh",
        "output.weight",
        "init_h.weight",
        "gate.weight",
        "output_hidden.weight",
        "output_context.weight",
    ):
        assert decoder.get_parameter(name).grad.abs().sum() > 0, name
    assert decoder.context.feature_projection.weight.grad.abs().sum() > 0


def test_encode_standardises_with_the_feature_statistics(make_decoder, features):
    decoder = make_decoder()
    mean, std = torch.linspace(-1, 1, FEATURE_DIM), torch.linspace(0, 2, FEATURE_DIM)
    decoder.set_feature_statistics(mean, std)
    assert decoder.feature_std.min() == pytest.approx(1e-3)  # a constant channel is not divided by zero
    region_features = features(2).half()
    encoded = decoder.encode(region_features)
    assert encoded.features.dtype == torch.float32
    torch.testing.assert_close(encoded.features, (region_features.float() - mean) / std.clamp(min=1e-3))
    assert encoded.keys.shape == (2, REGIONS, HIDDEN) and encoded.projected_values.shape == (2, REGIONS, 4 * HIDDEN)
    selected = encoded.select(torch.tensor([1, 1, 0]))
    assert torch.equal(selected.features[2], encoded.features[0]) and torch.equal(selected.keys[0], encoded.keys[1])


def test_decoding_loops_carry_only_what_a_step_reads(make_decoder, features):
    decoder = make_decoder()
    encoded = decoder.encode(features(3))
    state = decoder.initial_state(encoded)
    words = torch.tensor([1, 4, 2])
    for_steps = encoded.for_steps()
    assert for_steps.features is None and for_steps.values is None
    assert for_steps.select(torch.tensor([2, 0])).features is None
    for full, light in zip(decoder.step(words, state, encoded), decoder.step(words, state, for_steps)):
        torch.testing.assert_close(full, light)


def test_word_gate_table_holds_every_words_gates_when_that_is_less_work(make_decoder, features):
    decoder = make_decoder()
    assert decoder.word_gate_table(lookups=VOCAB - 1) is None  # more work than looking the words up one by one
    table = decoder.word_gate_table(lookups=VOCAB)
    words = torch.tensor([0, 3, 3, VOCAB - 1])
    torch.testing.assert_close(table[words], decoder.word_gates(words))
    encoded = decoder.encode(features(4))
    state = decoder.initial_state(encoded)
    for with_table, without in zip(decoder.step(words, state, encoded, table), decoder.step(words, state, encoded)):
        torch.testing.assert_close(with_table, without)


@pytest.mark.parametrize("finetune", [True, False])
def test_load_embeddings_copies_the_matrix_and_sets_finetuning(make_decoder, finetune):
    decoder = make_decoder()
    matrix = torch.randn(VOCAB, EMBED)
    decoder.load_embeddings(matrix, finetune)
    assert torch.equal(decoder.embedding.weight.detach(), matrix)
    assert decoder.embedding.weight.requires_grad is finetune
