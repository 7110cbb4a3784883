"""Hard attention (Xu et al. 2015, section 4.1), the model's side: where the caption looks is sampled.

Hard attention has soft attention's parameters and alpha_t (captioning/model/paper.py). In training each
caption either samples one region per step, s_t ~ Multinoulli(alpha_t), and reads z_t = beta_t a_{s_t}, or
(with probability train.hard_expected_prob) reads the expected context, Eq. 6; decoding always reads the
expected context. The decoders take a batch's LocationDraws (`forward(..., draws)`, `step(..., sample)`)
and use `attended_weights` and `location_terms` below; Eq. 11-12's terms are `hard_attention_loss`.
The REINFORCE baseline and the per-batch bookkeeping are training's: captioning/train/hard_attention.py.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class LocationDraws(NamedTuple):
    """The randomness of hard attention for one batch, drawn before the time loop (section 4.1).

    Drawn per caption and step rather than per computed row, so that an implementation that drops the
    rows of ended captions makes the same choices as one that carries them.
    """

    uniforms: torch.Tensor  # (T, B) one U(0, 1) per step and caption, turned into s_t by `sample_locations`
    expected: torch.Tensor  # (B,) bool: captions that read the expected context instead of a sample

    @classmethod
    def draw(cls, lengths: torch.Tensor, expected_prob: float) -> LocationDraws:
        """Drawn with the CPU generator (torch.manual_seed; saved with the training state), then moved."""
        steps, captions = int(lengths.max()) - 1, len(lengths)
        uniforms, expected = torch.rand(steps, captions), torch.rand(captions) < expected_prob
        return cls(uniforms.to(lengths.device), expected.to(lengths.device))

    def at(self, step: int, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The uniforms and expected flags of step `step` for the first `rows` captions."""
        return self.uniforms[step, :rows], self.expected[:rows]


def sample_locations(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """s_t ~ Multinoulli(alpha_t) by inversion: the first region whose cumulative weight passes u: (B,)."""
    below = weights.detach().cumsum(dim=1) < uniforms.unsqueeze(1)  # (B, L)
    return below.sum(dim=1).clamp(max=weights.shape[1] - 1)


def attended_weights(weights: torch.Tensor, uniforms: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """What the context mixes: one-hot s_t where a caption samples (z_t = a_{s_t}), alpha_t where not: (B, L)."""
    one_hot = nn.functional.one_hot(sample_locations(weights, uniforms), weights.shape[1]).to(weights.dtype)
    return torch.where(expected.unsqueeze(1), weights, one_hot)


def location_terms(
    weights: torch.Tensor, uniforms: torch.Tensor, expected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(s_t | a) = log alpha_{t, s_t} and the entropy H[alpha_t] per row, 0 where not sampled: (B,), (B,)."""
    log_weights = weights.float().clamp(min=torch.finfo(torch.float32).tiny).log()  # (B, L)
    log_prob = log_weights.gather(1, sample_locations(weights, uniforms).unsqueeze(1)).squeeze(1)
    entropy = -(weights.float() * log_weights).sum(dim=1)
    sampled = ~expected
    return log_prob * sampled, entropy * sampled


def hard_attention_loss(
    log_likelihoods: torch.Tensor,
    location_log_probs: torch.Tensor,
    location_entropies: torch.Tensor,
    baseline: float,
    lambda_r: float,
    lambda_e: float,
    tokens: int,
) -> torch.Tensor:
    """Eq. 11-12, the terms that hard attention adds to Eq. 14's loss (whose cross-entropy is the first term).

    Minimising it ascends the bound: lambda_r (log p(y|s,a) - b) d log p(s|a) + lambda_e dH[s], per caption
    (B,), with the reward held constant. Divided by `tokens` like the cross-entropy, so that the three
    terms keep the paper's proportions.
    """
    advantages = (log_likelihoods - baseline).detach()
    return -(lambda_r * advantages * location_log_probs + lambda_e * location_entropies).sum() / tokens
