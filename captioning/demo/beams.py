"""The K beams of a beam search over one image, ranked, each with its score and its attention.

captioning.decoding.beam_search returns only the best beam of each image; the demo also shows the
runners-up. This is the same search (the same step, captioning.decoding.extend_beams, and the same
tie-breaking), for a single image, keeping every beam's words and weights as it goes instead of
backtracking one; tests check that its first beam is beam_search's result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from captioning.model import CaptionDecoder
from captioning.model.decoding import copy_first_step, extend_beams


@dataclass
class Beam:
    tokens: list[int]  # word ids, without <start> and <end>
    weights: np.ndarray  # attention weights (len(tokens), regions)
    log_probability: float  # the sum of the words' log-probabilities, <end> included
    score: float  # what ranks the beams: log_probability / length ** length_penalty


@torch.inference_mode()
def ranked_beams(
    decoder: CaptionDecoder,
    features: torch.Tensor,
    start: int,
    end: int,
    beam_size: int,
    max_len: int,
    length_penalty: float = 1.0,
) -> list[Beam]:
    """All beam_size final beams of one image's features (1, R, F), best first."""
    if features.shape[0] != 1:
        raise ValueError(f"ranked_beams decodes one image, got a batch of {features.shape[0]}")
    k, device = beam_size, features.device
    encoded = decoder.encode(features)  # one row, shared by the K beams
    state = decoder.initial_state(encoded)
    scores = torch.zeros(1, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    words = torch.full((1,), start, dtype=torch.long, device=device)
    finished = torch.zeros(k, dtype=torch.bool, device=device)
    lengths = torch.zeros(k, device=device)
    regions = features.shape[1] if decoder.context.attends else 1
    history = torch.zeros(k, 0, dtype=torch.long, device=device)  # (K, t) words so far
    weight_history = torch.zeros(k, 0, regions, device=device)  # (K, t, N)
    for _ in range(max_len):
        logits, state, weights = decoder.step(words, state, encoded)
        if history.shape[1] == 0:
            logits, state, weights = copy_first_step(logits, state, weights, k)
        scores, source, words, lengths, finished = extend_beams(logits, scores, finished, lengths, end)
        state = (state[0][source], state[1][source])
        history = torch.cat([history[source], words.unsqueeze(1)], dim=1)
        weight_history = torch.cat([weight_history[source], weights[source].float().unsqueeze(1)], dim=1)
        if bool(finished.all()):
            break
    scores = scores.view(-1)
    normalised = scores / lengths.clamp(min=1).pow(length_penalty)
    order = torch.sort(normalised, descending=True, stable=True).indices  # ties: the lower beam first, as argmax
    beams = []
    for row in order.tolist():
        tokens = history[row].tolist()
        length = tokens.index(end) if end in tokens else len(tokens)
        beams.append(
            Beam(
                tokens[:length],
                weight_history[row, :length].cpu().numpy(),
                float(scores[row]),
                float(normalised[row]),
            )
        )
    return beams
