"""captioning/model/fast.py: its contract is the literal module's results, for every output and gradient,
with soft, hard and no attention."""

from __future__ import annotations

import pytest
import torch
from conftest import FEATURE_DIM, HIDDEN, REGIONS, VOCAB
from test_paper import LENGTHS, random_captions

from captioning.model import CaptionDecoder, FastCaptionDecoder, build_decoder, resolve_implementation
from captioning.model import fast as fast_module
from captioning.model.decoding import beam_search, greedy_decode
from captioning.model.fast import TABLE_STEPS
from captioning.model.hard import LocationDraws
from captioning.train.cross_entropy import caption_loss
from captioning.train.hard_attention import HardAttentionTraining

pytestmark = pytest.mark.usefixtures("torch_single_thread")
START, END = 1, 2
TIGHT = {"rtol": 1e-5, "atol": 1e-6}


def pair(make_decoder, **options) -> tuple[CaptionDecoder, FastCaptionDecoder]:
    """The literal and the fast decoder with the same parameters."""
    paper = make_decoder(implementation="paper", **options)
    fast = make_decoder(implementation="fast", **options)
    fast.load_state_dict(paper.state_dict())
    return paper, fast


def assert_same_loss_and_gradients(paper: CaptionDecoder, fast: FastCaptionDecoder, losses: list) -> None:
    """The fast module's loss and every parameter's (non-zero) gradient equal the literal module's."""
    torch.testing.assert_close(losses[1], losses[0], **TIGHT)
    fast_parameters = dict(fast.named_parameters())
    for name, parameter in paper.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        torch.testing.assert_close(fast_parameters[name].grad, parameter.grad, **TIGHT, msg=name)


def kernel_on_the_cpu(input_gates: torch.Tensor, hidden_gates: torch.Tensor, cell: torch.Tensor):
    """What CUDA's fused cell (aten::_thnn_fused_lstm_cell) computes and returns, as CPU operators: gates = input +
    hidden in the order i f g o; (h', c', a workspace)."""
    in_gate, forget_gate, candidate, out_gate = (input_gates + hidden_gates).chunk(4, dim=1)
    new_cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(in_gate) * torch.tanh(candidate)
    return torch.sigmoid(out_gate) * torch.tanh(new_cell), new_cell, torch.empty(0)


@pytest.fixture(params=["written out", "fused"])
def cell(request, monkeypatch):
    """The fast module's LSTM cell as the CPU runs it, or through the branch CUDA takes (its kernel as CPU maths)."""
    if request.param == "fused":
        monkeypatch.setattr(fast_module, "FUSED_CELL_DEVICES", ("cpu",))
        monkeypatch.setattr(fast_module, "_fused_lstm_cell", kernel_on_the_cpu)
    return request.param


def test_the_fused_cell_takes_the_arguments_and_gives_the_outputs_the_branch_expects():
    """The real operator on the meta device (shapes and dtypes, no values; torch has no CPU kernel for it): two gate
    terms and the cell in, (h', c', workspace) out, and a backward to all three. The meta kernel requires the
    optional biases (CUDA's does not), so they are given here as zeros."""
    rows, size = 3, 5
    gates = [torch.empty(rows, 4 * size, device="meta", requires_grad=True) for _ in range(2)]
    cell = torch.empty(rows, size, device="meta", requires_grad=True)
    biases = [torch.zeros(4 * size, device="meta") for _ in range(2)]
    hidden, new_cell, _ = torch.ops.aten._thnn_fused_lstm_cell(*gates, cell, *biases)
    assert hidden.shape == new_cell.shape == (rows, size) and hidden.dtype == new_cell.dtype == torch.float32
    (hidden.sum() + new_cell.sum()).backward()
    assert [t.grad.shape for t in (*gates, cell)] == [(rows, 4 * size), (rows, 4 * size), (rows, size)]
    assert fast_module.FUSED_CELL_DEVICES == ("cuda",)


def test_auto_is_fast_and_both_load_the_same_state_dict(make_decoder):
    paper, fast = make_decoder(implementation="paper"), make_decoder(implementation="auto")
    assert type(paper) is CaptionDecoder and type(fast) is FastCaptionDecoder
    assert resolve_implementation("auto") == "fast"
    assert paper.state_dict().keys() == fast.state_dict().keys()
    build_decoder(paper.config, "fast").load_state_dict(paper.state_dict(), strict=True)


@pytest.mark.parametrize("alpha_c", [0.0, 1.0])
@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("attention", ["soft", "none"])
def test_loss_and_every_gradient_equal_the_literal_modules(
    make_decoder, features, attention, deep_output, alpha_c, cell
):
    paper, fast = pair(make_decoder, attention=attention, deep_output=deep_output)
    region_features, captions, lengths = features(4) * 3, random_captions(LENGTHS, seed=2), torch.tensor(LENGTHS)
    losses = []
    for decoder in (paper.train(), fast.train()):  # dropout 0: train mode is deterministic
        loss = caption_loss(decoder, region_features, captions, lengths, alpha_c)
        loss.backward()
        losses.append(loss)
    assert_same_loss_and_gradients(paper, fast, losses)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it there)")
@pytest.mark.parametrize("deep_output", [True, False])
def test_on_cuda_the_fused_cell_gives_the_literal_loss_and_gradients(make_decoder, features, deep_output):
    """The branch the CPU cannot run, with the real kernel: the loss and every gradient of the literal module (whose
    nn.LSTMCell runs the same kernel on CUDA) in fp32."""
    paper, fast = (decoder.cuda().train() for decoder in pair(make_decoder, deep_output=deep_output))
    region_features, captions = features(4).cuda() * 3, random_captions(LENGTHS, seed=2).cuda()
    losses = []
    for decoder in (paper, fast):
        loss = caption_loss(decoder, region_features, captions, torch.tensor(LENGTHS), alpha_c=1.0)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    fast_parameters = dict(fast.named_parameters())
    for name, parameter in paper.named_parameters():
        torch.testing.assert_close(fast_parameters[name].grad, parameter.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("attention", ["soft", "none"])
def test_forward_gives_the_literal_scores_targets_and_attention_sums(
    make_decoder, features, attention, deep_output, cell
):
    paper, fast = pair(make_decoder, attention=attention, deep_output=deep_output)
    region_features, captions, lengths = features(4), random_captions(LENGTHS, seed=0), torch.tensor(LENGTHS)
    for expected, got in zip(paper(region_features, captions, lengths), fast(region_features, captions, lengths)):
        torch.testing.assert_close(got, expected, **TIGHT)


@pytest.mark.parametrize("deep_output", [True, False])
def test_hard_attention_gives_the_literal_outputs_loss_and_gradients_given_the_same_draws(
    make_decoder, features, deep_output, cell
):
    """Teacher forcing with sampled locations (some captions read the expected context), then the loss with the
    REINFORCE and entropy terms: the same draws make the same choices although fast drops the ended captions' rows."""
    paper, fast = pair(make_decoder, attention="hard", deep_output=deep_output)
    region_features, captions, lengths = features(4) * 3, random_captions(LENGTHS, seed=2), torch.tensor(LENGTHS)
    torch.manual_seed(5)
    draws = LocationDraws.draw(lengths, expected_prob=0.5)
    assert draws.expected.any() and not draws.expected.all()
    paper_forced = paper.train()(region_features, captions, lengths, draws)
    for expected, got in zip(paper_forced, fast.train()(region_features, captions, lengths, draws)):
        torch.testing.assert_close(got, expected, **TIGHT)
    losses = []
    for decoder in (paper, fast):
        estimator = HardAttentionTraining(expected_prob=0.5, baseline_decay=0.9, lambda_r=1.0, lambda_e=0.5)
        estimator.baseline.value = -5.0
        estimator.draw = lambda lengths: draws
        loss = caption_loss(decoder, region_features, captions, lengths, alpha_c=1.0, hard=estimator)
        loss.backward()
        losses.append(loss)
    assert_same_loss_and_gradients(paper, fast, losses)


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("attention", ["soft", "none"])
def test_each_step_gives_the_literal_outputs(make_decoder, features, attention, deep_output, beams, cell):
    paper, fast = pair(make_decoder, attention=attention, deep_output=deep_output, dropout=0.5)  # eval: no dropout
    region_features = features(4) * 3
    paper_encoded, fast_encoded = paper.encode(region_features), fast.encode(region_features)
    paper_state, fast_state = paper.initial_state(paper_encoded), fast.initial_state(fast_encoded)
    for one, other in zip(paper_state, fast_state):
        torch.testing.assert_close(other, one, **TIGHT)
    paper_state = tuple(s.repeat_interleave(beams, dim=0) for s in paper_state)  # K state rows share an image
    fast_state = tuple(s.repeat_interleave(beams, dim=0) for s in fast_state)
    generator = torch.Generator().manual_seed(beams)
    for _ in range(4):
        words = torch.randint(0, VOCAB, (4 * beams,), generator=generator)
        paper_scores, paper_state, paper_weights = paper.step(words, paper_state, paper_encoded)
        fast_scores, fast_state, fast_weights = fast.step(words, fast_state, fast_encoded)
        for one, other in zip([paper_scores, *paper_state, paper_weights], [fast_scores, *fast_state, fast_weights]):
            torch.testing.assert_close(other, one, rtol=1e-5, atol=1e-5)


def trained_pair(make_decoder, features, attention: str) -> tuple[CaptionDecoder, FastCaptionDecoder, torch.Tensor]:
    """A tiny model trained until it captions 6 images apart (with the fast module), and its literal twin."""
    torch.manual_seed(0)
    fast = make_decoder(attention, implementation="fast").train()
    images = features(6, seed=3)
    captions = torch.tensor([[START, 3 + i, 4 + i % 3, 5 + i, END] for i in range(6)])
    optimizer = torch.optim.Adam(fast.parameters(), lr=0.03)
    for _ in range(80):
        loss = caption_loss(fast, images, captions, torch.full((6,), 5), alpha_c=0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    paper = make_decoder(attention, implementation="paper")
    paper.load_state_dict(fast.state_dict())
    return paper.eval(), fast.eval(), images


@pytest.mark.parametrize("attention", ["soft", "none"])
def test_greedy_and_beam_captions_are_identical_on_a_trained_model(make_decoder, features, attention):
    paper, fast, images = trained_pair(make_decoder, features, attention)
    images = torch.cat([images, features(10, seed=9)])  # the 6 learnt images and 10 unseen ones
    for decode in (
        lambda decoder: greedy_decode(decoder, images, START, END, max_len=8),
        lambda decoder: beam_search(decoder, images, START, END, beam_size=3, max_len=8),
    ):
        expected, got = decode(paper), decode(fast)
        assert got.tokens == expected.tokens
        assert [t for t in got.tokens[:6]] == [[3 + i, 4 + i % 3, 5 + i] for i in range(6)]
        for one, other in zip(expected.weights, got.weights):
            torch.testing.assert_close(torch.from_numpy(other), torch.from_numpy(one), rtol=1e-5, atol=1e-5)


def test_encoded_images_hold_only_what_a_step_reads(make_decoder, features):
    decoder = make_decoder(deep_output=True)
    encoded = decoder.encode(features(3))
    assert encoded._fields == ("mean_regions", "keys", "projected_values", "word_gates")
    assert encoded.mean_regions.shape == (3, FEATURE_DIM)
    assert encoded.keys.shape == (3, REGIONS, HIDDEN)
    assert encoded.projected_values.shape == (3, REGIONS, 4 * HIDDEN + decoder.config.embed_dim)
    # the keys are 2 W_f a: tanh is computed through sigmoid (see fast.py, trick 1)
    regions = decoder.standardise(features(3))
    torch.testing.assert_close(encoded.keys, 2 * decoder.context.feature_projection(regions), **TIGHT)
    selected = encoded.select(torch.tensor([2, 0]))
    assert torch.equal(selected.keys[1], encoded.keys[0]) and selected.word_gates is encoded.word_gates


@pytest.mark.parametrize(("vocab_size", "table_expected"), [(VOCAB, True), (4 * TABLE_STEPS + 1, False)])
def test_decoding_takes_word_gates_from_a_table_when_the_vocabulary_is_small(
    make_decoder, features, vocab_size, table_expected
):
    decoder = make_decoder(vocab_size=vocab_size)
    words = torch.tensor([0, 3, 3, vocab_size - 1])
    encoded = decoder.encode(features(4))
    state = decoder.initial_state(encoded)
    with torch.inference_mode():
        with_table = decoder.step(words, state, encoded)
    assert ("table" in encoded.word_gates) is table_expected
    if table_expected:
        assert encoded.word_gates["table"].shape == (vocab_size, 4 * HIDDEN)
    fresh = decoder.encode(features(4))
    without = decoder.step(words, state, fresh)  # gradients enabled: the gates are computed, never tabled
    assert "table" not in fresh.word_gates
    for one, other in zip(with_table, without):
        torch.testing.assert_close(one, other)


def test_under_bf16_autocast_the_loss_stays_close_to_fp32(make_decoder, features):
    paper, fast = pair(make_decoder)
    region_features, captions, lengths = features(4), random_captions(LENGTHS, seed=3), torch.tensor(LENGTHS)
    exact = caption_loss(paper, region_features, captions, lengths, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = caption_loss(fast, region_features, captions, lengths, 1.0)
    assert abs(mixed.item() - exact.item()) < 0.02 * exact.item()
