"""Turning a trained decoder into captions: batched greedy decoding and batched beam search.

Both use only the decoder's one-step interface (encode, initial_state, step), so they work for any
context module, and both decode many images at once as one tensor program.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from captioning.model import CaptionDecoder


@dataclass
class Decoded:
    tokens: list[list[int]]  # word ids per image, without <start> and <end>
    weights: list[np.ndarray]  # attention weights per image: (len(tokens), regions)


class BeamStep(NamedTuple):
    """What beam search keeps of one step to follow the chosen beams back at the end."""

    words: torch.Tensor  # (rows,) the word each beam row took
    source: torch.Tensor  # (rows,) the row of the previous step it continues
    weights: torch.Tensor  # (rows, regions) its attention at this step
    kept: torch.Tensor | None  # rows kept when settled images left the batch after this step, else None


def _trim(history: torch.Tensor, weight_history: torch.Tensor, end: int) -> Decoded:
    tokens, weights = [], []
    for row, attention in zip(history.tolist(), weight_history.float().cpu().numpy()):
        length = row.index(end) if end in row else len(row)
        tokens.append(row[:length])
        weights.append(attention[:length])
    return Decoded(tokens, weights)


@torch.inference_mode()
def greedy_decode(decoder: CaptionDecoder, features: torch.Tensor, start: int, end: int, max_len: int) -> Decoded:
    """The most probable word at every step, for a batch of images (B, R, F)."""
    return _trim(*_greedy_steps(decoder, features, start, end, max_len, stop_early=True), end)


@torch.inference_mode()
def greedy_tokens(
    decoder: CaptionDecoder, features: torch.Tensor, start: int, end: int, max_len: int, stop_early: bool | None = None
) -> torch.Tensor:
    """greedy_decode's words as a (B, T) tensor on the features' device: each caption's <end>, <end> after it.

    stop_early (by default everywhere but on CUDA) stops once every caption has ended, which reads a flag
    from the device at every step; without it all max_len steps run and nothing is read (T = max_len):
    the same captions, for more arithmetic and no wait.
    """
    stop_early = features.device.type != "cuda" if stop_early is None else stop_early
    return _greedy_steps(decoder, features, start, end, max_len, stop_early)[0]


def _greedy_steps(decoder, features, start: int, end: int, max_len: int, stop_early: bool):
    """The words (B, T) and attention weights (B, T, R) of greedy decoding."""
    encoded = decoder.encode(features)
    state = decoder.initial_state(encoded)
    words = torch.full((features.shape[0],), start, dtype=torch.long, device=features.device)
    finished = torch.zeros_like(words, dtype=torch.bool)
    history, weight_history = [], []
    for _ in range(max_len):
        logits, state, weights = decoder.step(words, state, encoded)
        words = torch.where(finished, torch.full_like(words, end), logits.argmax(dim=1))
        history.append(words)
        weight_history.append(weights)
        finished |= words == end
        if stop_early and bool(finished.all()):
            break
    return torch.stack(history, 1), torch.stack(weight_history, 1)


@torch.inference_mode()
def beam_search(
    decoder: CaptionDecoder,
    features: torch.Tensor,
    start: int,
    end: int,
    beam_size: int,
    max_len: int,
    length_penalty: float = 1.0,
) -> Decoded:
    """Beam search over a batch of images at once: rows b*K .. b*K+K-1 are image b's K beams.

    A beam that emits <end> keeps its score and stays in the beam (it continues with <end> at no
    cost). The search stops when every beam has ended, or after max_len steps; the best beam of each
    image is the one with the highest score / length ** length_penalty, ended or not.

    Speed without changing the result: the K beams of an image share its encoded tensors (one row
    per image, see captioning/model/__init__.py) instead of K copies; an image whose beams have all ended is
    settled at once (what further steps would do to it cannot change its result), and once a quarter
    of the images in the batch are settled their rows leave it (each removal copies the per-image
    tensors of the rest, so removing one image at a time would cost more than it saves).
    """
    if max_len < 1:
        raise ValueError(f"beam search needs max_len >= 1, got {max_len}")
    batch, k, device = features.shape[0], beam_size, features.device
    encoded = decoder.encode(features)  # one row per image, shared by its K beams
    state = decoder.initial_state(encoded)  # one row per image until the first step has run
    images = torch.arange(batch, device=device)  # which image each remaining row of `encoded` is
    settled = torch.zeros(batch, dtype=torch.bool, device=device)  # per remaining image
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    words = torch.full((batch,), start, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    trail: list[BeamStep] = []
    settled_step = torch.full((batch,), -1, dtype=torch.long, device=device)
    settled_row = torch.zeros(batch, dtype=torch.long, device=device)  # the chosen beam's row at that step
    for step in range(max_len):
        logits, state, weights = decoder.step(words, state, encoded)
        if step == 0:
            logits, state, weights = copy_first_step(logits, state, weights, k)
        scores, source, words, lengths, finished = extend_beams(logits, scores, finished, lengths, end)
        state = (state[0][source], state[1][source])
        trail.append(BeamStep(words, source, weights, None))
        done = finished.view(-1, k).all(dim=1) if step < max_len - 1 else torch.ones_like(settled)
        newly = done & ~settled
        if not bool(newly.any()):
            continue
        normalised = scores / lengths.view(-1, k).clamp(min=1).pow(length_penalty)
        chosen = torch.arange(0, len(normalised) * k, k, device=device) + normalised.argmax(dim=1)  # (B,) rows
        settled_step[images[newly]] = step
        settled_row[images[newly]] = chosen[newly]
        settled |= newly
        if bool(settled.all()):
            break
        if 4 * int(settled.sum()) < len(settled):
            continue
        remaining = (~settled).nonzero().squeeze(1)
        rows = (remaining.unsqueeze(1) * k + torch.arange(k, device=device)).view(-1)
        trail[-1] = trail[-1]._replace(kept=rows)
        images, encoded, scores, settled = (
            images[remaining],
            encoded.select(remaining),
            scores[remaining],
            settled[remaining],
        )
        words, finished, lengths = words[rows], finished[rows], lengths[rows]
        state = (state[0][rows], state[1][rows])
    return _trim(*_backtrack(trail, settled_step, settled_row), end)


class BeamExtension(NamedTuple):
    scores: torch.Tensor  # (B, K) each image's K best beams' summed log-probabilities, best first
    source: torch.Tensor  # (B*K,) the row of the previous step each new beam continues
    words: torch.Tensor  # (B*K,) the word it took
    lengths: torch.Tensor  # (B*K,) its words up to and including <end>
    finished: torch.Tensor  # (B*K,) whether it has emitted <end>


def copy_first_step(logits: torch.Tensor, state: tuple, weights: torch.Tensor, k: int) -> tuple:
    """The K beams of an image are one until the first word: computed once per image, then copied K times."""
    hidden, cell = state
    copies = [t.repeat_interleave(k, dim=0) for t in (logits, hidden, cell, weights)]
    return copies[0], (copies[1], copies[2]), copies[3]


def extend_beams(
    logits: torch.Tensor, scores: torch.Tensor, finished: torch.Tensor, lengths: torch.Tensor, end: int
) -> BeamExtension:
    """One step of beam search for B images of K beams (rows b*K .. b*K+K-1): the K best one-word extensions.

    A finished beam continues with <end> at no cost and nothing else, so it keeps its score.
    """
    k = scores.shape[1]
    log_probs = torch.log_softmax(logits.float(), dim=1)  # (B*K, V)
    vocab = log_probs.shape[1]
    ended = torch.full((vocab,), float("-inf"), device=logits.device)
    ended[end] = 0.0
    log_probs = torch.where(finished.unsqueeze(1), ended, log_probs)
    candidates = (scores.view(-1, 1) + log_probs).view(-1, k * vocab)
    scores, best = candidates.topk(k, dim=1)  # (B, K)
    offsets = torch.arange(0, best.shape[0] * k, k, device=logits.device).unsqueeze(1)  # (B, 1)
    source = (offsets + torch.div(best, vocab, rounding_mode="floor")).view(-1)
    words = (best % vocab).view(-1)
    lengths = lengths[source] + (~finished[source]).float()
    finished = finished[source] | (words == end)
    return BeamExtension(scores, source, words, lengths, finished)


def _backtrack(
    trail: list[BeamStep], settled_step: torch.Tensor, settled_row: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's chosen beam, followed back from the step it was settled at: tokens (B, T), weights (B, T, N)."""
    batch, steps = settled_step.shape[0], len(trail)
    regions = trail[0].weights.shape[1]
    tokens = torch.zeros(batch, steps, dtype=torch.long, device=settled_step.device)
    weights = torch.zeros(batch, steps, regions, device=settled_step.device)
    following = torch.zeros(batch, dtype=torch.bool, device=settled_step.device)
    rows = settled_row.clone()
    for step in range(steps - 1, -1, -1):
        step_words, source, step_weights, kept = trail[step]
        if kept is not None:  # rows after this step's compaction -> rows of this step
            rows[following] = kept[rows[following]]
        joining = settled_step == step
        rows[joining] = settled_row[joining]
        following |= joining
        images = following.nonzero().squeeze(1)
        tokens[images, step] = step_words[rows[images]]
        rows[images] = source[rows[images]]
        weights[images, step] = step_weights[rows[images]].float()
    return tokens, weights


class Sampled(NamedTuple):
    """K captions per image drawn from the model: rows b*K .. b*K+K-1 are image b's."""

    tokens: torch.Tensor  # (B*K, T) word ids, each caption's <end> included, <end> again after it
    lengths: torch.Tensor  # (B*K,) tokens up to and including <end> (T when a caption never ended)
    log_probs: torch.Tensor  # (B*K,) sum of log p(w_t | w_<t, image) over those tokens, with gradient


def sample_captions(
    decoder: CaptionDecoder,
    features: torch.Tensor,
    start: int,
    end: int,
    samples: int,
    max_len: int,
    generator: torch.Generator | None = None,
    stop_early: bool | None = None,
) -> Sampled:
    """`samples` captions per image (B, R, F), each word drawn from the model's distribution (temperature 1).

    One tensor program over all images and samples, as beam search is: the K samples of an image share
    its encoded tensors. Gradients flow into `log_probs` (REINFORCE needs them); the caller chooses the
    decoder's mode (self-critical training samples in eval mode: no dropout, the policy that is tested).
    stop_early (by default everywhere but on CUDA) stops once every caption has ended, which reads a flag
    from the device at every step; without it all max_len steps run and nothing is read: the same captions,
    lengths and log_probs, `tokens` padded with <end> to max_len, and the generator drawn for every step.
    """
    stop_early = features.device.type != "cuda" if stop_early is None else stop_early
    if max_len < 1:
        raise ValueError(f"sampling needs max_len >= 1, got {max_len}")
    rows, device = features.shape[0] * samples, features.device
    encoded = decoder.encode(features)  # one row per image, shared by its K samples
    hidden, cell = decoder.initial_state(encoded)
    state = (hidden.repeat_interleave(samples, dim=0), cell.repeat_interleave(samples, dim=0))  # (B*K, H)
    words = torch.full((rows,), start, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    log_probs = torch.zeros(rows, device=device)
    history = []
    for _ in range(max_len):
        logits, state, _ = decoder.step(words, state, encoded)
        step_log_probs = torch.log_softmax(logits.float(), dim=1)  # (B*K, V)
        drawn = torch.multinomial(step_log_probs.detach().exp(), 1, generator=generator).squeeze(1)  # (B*K,)
        words = torch.where(finished, torch.full_like(drawn, end), drawn)
        chosen = step_log_probs.gather(1, words.unsqueeze(1)).squeeze(1)
        log_probs = log_probs + torch.where(finished, torch.zeros_like(chosen), chosen)
        lengths = lengths + (~finished).long()
        history.append(words)
        finished = finished | (words == end)
        if stop_early and bool(finished.all()):
            break
    return Sampled(torch.stack(history, 1), lengths, log_probs)
