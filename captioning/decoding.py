"""Turning a trained decoder into captions: batched greedy decoding and batched beam search.

Both use only the decoder's one-step interface (encode, initial_state, step), so they work for any
context module, and both decode many images at once as one tensor program.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from captioning.model.decoder import CaptionDecoder


@dataclass
class Decoded:
    tokens: list[list[int]]  # word ids per image, without <start> and <end>
    weights: list[np.ndarray]  # attention weights per image: (len(tokens), regions)


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
        if bool(finished.all()):
            break
    return _trim(torch.stack(history, 1), torch.stack(weight_history, 1), end)


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
    """
    batch, k = features.shape[0], beam_size
    device = features.device
    encoded = decoder.encode(features)
    hidden, cell = decoder.initial_state(encoded)
    rows = torch.arange(batch, device=device).repeat_interleave(k)
    encoded, state = encoded.select(rows), (hidden[rows], cell[rows])
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    words = torch.full((batch * k,), start, dtype=torch.long, device=device)
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * k, device=device)
    history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
    weight_history = None  # (B*K, t, N): N = what the context module weighs (49 regions, or 1 vector)
    image_offsets = (torch.arange(batch, device=device) * k).unsqueeze(1)  # (B, 1)
    for _ in range(max_len):
        logits, state, weights = decoder.step(words, state, encoded)
        log_probs = torch.log_softmax(logits.float(), dim=1)  # (B*K, V)
        vocab = log_probs.shape[1]
        log_probs[finished] = float("-inf")
        log_probs[finished, end] = 0.0
        candidates = (scores.view(-1, 1) + log_probs).view(batch, k * vocab)
        scores, best = candidates.topk(k, dim=1)  # (B, K)
        source = (image_offsets + torch.div(best, vocab, rounding_mode="floor")).view(-1)  # (B*K,)
        words = (best % vocab).view(-1)
        history = torch.cat([history[source], words.unsqueeze(1)], dim=1)
        step_weights = weights.float()[source].unsqueeze(1)
        weight_history = (
            step_weights if weight_history is None else torch.cat([weight_history[source], step_weights], 1)
        )
        lengths = lengths[source] + (~finished[source]).float()
        finished = finished[source] | (words == end)
        state = (state[0][source], state[1][source])
        if bool(finished.all()):
            break
    normalised = scores.view(-1) / lengths.clamp(min=1).pow(length_penalty)
    chosen = image_offsets.view(-1) + normalised.view(batch, k).argmax(dim=1)
    return _trim(history[chosen], weight_history[chosen], end)
