"""captioning/model/decoding.py: greedy and beam search, batched, through the decoder's one-step interface."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import REGIONS

from captioning.model import build_decoder
from captioning.model.decoding import beam_search, greedy_decode
from captioning.model.paper import EncodedImages

pytestmark = pytest.mark.usefixtures("torch_single_thread")
START, END, MAX_LEN = 1, 2, 8


def as_paper(decoder):
    """The literal module with the decoder's parameters."""
    paper = build_decoder(decoder.config, "paper").eval()
    paper.load_state_dict(decoder.state_dict())
    return paper


def greedy_by_hand(decoder, region_features):
    """One image at a time, argmax of decoder.step until <end>."""
    results = []
    for row in range(region_features.shape[0]):
        encoded = decoder.encode(region_features[row : row + 1])
        state = decoder.initial_state(encoded)
        words, tokens = torch.tensor([START]), []
        for _ in range(MAX_LEN):
            logits, state, _ = decoder.step(words, state, encoded)
            words = logits.argmax(dim=1)
            if words.item() == END:
                break
            tokens.append(words.item())
        results.append(tokens)
    return results


@pytest.mark.parametrize("implementation", ["paper", "fast"])
def test_greedy_decode_takes_the_most_probable_word_until_end(make_decoder, features, implementation):
    decoder, region_features = make_decoder(seed=3, implementation=implementation), features(6)
    decoded = greedy_decode(decoder, region_features, START, END, MAX_LEN)
    assert decoded.tokens == greedy_by_hand(decoder, region_features)
    for tokens, weights in zip(decoded.tokens, decoded.weights):
        assert END not in tokens and weights.shape == (len(tokens), REGIONS)


@pytest.mark.parametrize("seed", [0, 1])
def test_beam_size_one_equals_greedy(make_decoder, features, seed):
    decoder, region_features = make_decoder(seed=seed), features(5, seed=seed)
    greedy = greedy_decode(decoder, region_features, START, END, MAX_LEN)
    beam = beam_search(decoder, region_features, START, END, beam_size=1, max_len=MAX_LEN)
    assert beam.tokens == greedy.tokens
    assert {len(t) for t in greedy.tokens} != {MAX_LEN}  # the random model does end some captions
    for greedy_weights, beam_weights in zip(greedy.weights, beam.weights):
        torch.testing.assert_close(torch.from_numpy(beam_weights), torch.from_numpy(greedy_weights))


@pytest.mark.parametrize(
    "attention",
    [
        "soft",
        "none",
    ],
)
def test_batched_beam_search_equals_one_image_at_a_time(make_decoder, features, attention):
    decoder, region_features = make_decoder(attention, seed=0), features(4, seed=0)
    batched = beam_search(decoder, region_features, START, END, beam_size=3, max_len=MAX_LEN)
    for row in range(4):
        alone = beam_search(decoder, region_features[row : row + 1], START, END, beam_size=3, max_len=MAX_LEN)
        assert batched.tokens[row] == alone.tokens[0]
        torch.testing.assert_close(
            torch.from_numpy(batched.weights[row]), torch.from_numpy(alone.weights[0]), rtol=1e-5, atol=1e-6
        )


def beam_search_by_hand(decoder, one_image, beam_size, length_penalty):
    """One image, its K beams as K rows with K copies of its tensors, each step by the literal module."""
    k = beam_size
    decoder = as_paper(decoder)
    encoded = decoder.encode(one_image)
    hidden, cell = decoder.initial_state(encoded)
    state, copies = (hidden.expand(k, -1), cell.expand(k, -1)), encoded.select(torch.zeros(k, dtype=torch.long))
    scores = torch.tensor([0.0] + [float("-inf")] * (k - 1))
    words, finished, lengths = torch.full((k,), START), torch.zeros(k, dtype=torch.bool), torch.zeros(k)
    histories = [[] for _ in range(k)]
    for _ in range(MAX_LEN):
        logits, state, _ = decoder.step(words, state, copies)
        log_probs = torch.log_softmax(logits, dim=1)
        log_probs[finished] = float("-inf")
        log_probs[finished, END] = 0.0  # an ended beam continues with <end> at no cost
        scores, best = (scores.unsqueeze(1) + log_probs).view(-1).topk(k)
        source, words = best // log_probs.shape[1], best % log_probs.shape[1]
        histories = [histories[s] + [w] for s, w in zip(source.tolist(), words.tolist())]
        lengths = lengths[source] + (~finished[source]).float()
        finished = finished[source] | (words == END)
        state = (state[0][source], state[1][source])
        if finished.all():
            break
    best_tokens = histories[int((scores / lengths.clamp(min=1).pow(length_penalty)).argmax())]
    return best_tokens[: best_tokens.index(END)] if END in best_tokens else best_tokens


@pytest.mark.parametrize("implementation", ["paper", "fast"])
@pytest.mark.parametrize(("seed", "length_penalty"), [(0, 1.0), (0, 0.5), (2, 0.0), (2, 1.0)])
def test_beam_search_equals_a_beam_search_written_out_by_hand(
    make_decoder, features, seed, length_penalty, implementation
):
    # 12 images: settled images stay in the batch until a quarter of them have ended, then leave it.
    decoder, region_features = make_decoder(seed=seed, implementation=implementation), features(12, seed=seed)
    decoded = beam_search(
        decoder, region_features, START, END, beam_size=3, max_len=MAX_LEN, length_penalty=length_penalty
    )
    by_hand = [beam_search_by_hand(decoder, region_features[i : i + 1], 3, length_penalty) for i in range(12)]
    assert decoded.tokens == by_hand
    assert len({len(tokens) for tokens in by_hand}) > 1  # the images settle at different steps


@pytest.mark.parametrize("beam_size", [1, 3])
def test_beam_search_without_any_end_returns_max_len_tokens(make_decoder, features, beam_size):
    decoder = make_decoder(seed=1)
    with torch.no_grad():
        decoder.output.bias[END] = -1e4  # <end> is never the best word
    decoded = beam_search(decoder, features(3), START, END, beam_size=beam_size, max_len=MAX_LEN)
    assert [len(t) for t in decoded.tokens] == [MAX_LEN] * 3
    assert all(END not in t for t in decoded.tokens)
    assert all(w.shape == (MAX_LEN, REGIONS) for w in decoded.weights)
    assert [len(t) for t in greedy_decode(decoder, features(3), START, END, MAX_LEN).tokens] == [MAX_LEN] * 3


def test_a_model_that_always_ends_gives_empty_captions(make_decoder, features):
    decoder = make_decoder(seed=1)
    with torch.no_grad():
        decoder.output.bias[END] = 1e4
    for decoded in (
        beam_search(decoder, features(2), START, END, beam_size=4, max_len=MAX_LEN),
        greedy_decode(decoder, features(2), START, END, MAX_LEN),
    ):
        assert decoded.tokens == [[], []]
        assert all(w.shape == (0, REGIONS) for w in decoded.weights)


class TableDecoder:
    """A stand-in decoder whose next-word probabilities depend only on the previous word."""

    def __init__(self, next_word: dict[int, dict[int, float]], vocab_size: int = 5):
        self.log_probs = torch.full((vocab_size, vocab_size), -1e9)
        for previous, choices in next_word.items():
            for word, probability in choices.items():
                self.log_probs[previous, word] = math.log(probability)

    def encode(self, region_features):
        return EncodedImages(region_features, region_features, region_features)

    def initial_state(self, encoded):
        zeros = torch.zeros(encoded.regions.shape[0], 2)
        return zeros, zeros

    def step(self, words, state, encoded):
        weights = torch.full((words.shape[0], encoded.keys.shape[1]), 1.0 / encoded.keys.shape[1])
        return self.log_probs[words], state, weights


A, B = 3, 4
# "<end>" at once: log 0.5 = -0.69 in 1 step; "a <end>": log 0.3 + log 0.9 = -1.31 in 2 steps (-0.65 per step)
SHORT_OR_LONG = {START: {END: 0.5, A: 0.3, B: 0.2}, A: {END: 0.9, A: 0.05, B: 0.05}, B: {END: 0.1, A: 0.9}}


@pytest.mark.parametrize(("length_penalty", "expected"), [(0.0, []), (1.0, [A])])
def test_length_normalisation_changes_the_chosen_caption(length_penalty, expected):
    decoder, region_features = TableDecoder(SHORT_OR_LONG), torch.zeros(2, 3, 4)
    decoded = beam_search(decoder, region_features, START, END, beam_size=2, max_len=5, length_penalty=length_penalty)
    assert decoded.tokens == [expected, expected]
    assert greedy_decode(decoder, region_features, START, END, 5).tokens == [[], []]


def test_beam_search_finds_what_greedy_misses():
    # greedy takes a (0.6) and never ends well after it; "b <end>" (0.4 x 1.0) is the most probable caption
    decoder = TableDecoder({START: {A: 0.6, B: 0.4}, A: {END: 0.2, A: 0.4, B: 0.4}, B: {END: 1.0}})
    region_features = torch.zeros(1, 3, 4)
    assert greedy_decode(decoder, region_features, START, END, 5).tokens == [[A, A, A, A, A]]
    assert beam_search(decoder, region_features, START, END, beam_size=2, max_len=5, length_penalty=0).tokens == [[B]]
