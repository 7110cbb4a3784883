"""Where the decoder looks: context modules that weigh a set of vectors given the LSTM state.

Both modules share one interface, so the decoder never knows which one it has:
    keys, values = module.prepare(features)   # once per image, before the time loop
    weights = module(keys, hidden)            # every step: (B, N) weights over the N values
The context is then sum_i weights_i * values_i, which the decoder computes (see decoder.py).
Several rows of `hidden` may share one image: with keys for B images and K * B hidden rows, rows
b*K .. b*K+K-1 all look at image b (beam search's K beams), without copying the keys K times.
"""

from __future__ import annotations

import torch
from torch import nn


class SoftAttention(nn.Module):
    """Bahdanau (additive) attention over the regions: score_i = v^T tanh(W_f f_i + W_h h)."""

    attends = True

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.feature_projection = nn.Linear(feature_dim, attention_dim)  # W_f
        self.hidden_projection = nn.Linear(hidden_dim, attention_dim)  # W_h
        self.score = nn.Linear(attention_dim, 1)  # v
        self.context_dim = feature_dim

    def prepare(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # W_f f does not depend on the step: computed once per image, (B, R, F) -> (B, R, A), and
        # doubled for `forward` (doubling the weights doubles every product and sum exactly).
        projection = self.feature_projection
        return nn.functional.linear(features, 2 * projection.weight, 2 * projection.bias), features

    def forward(self, doubled_keys: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        images, regions, attention_dim = doubled_keys.shape
        projected_hidden = self.hidden_projection(hidden).view(images, -1, 1, attention_dim)  # (B, K, 1, A)
        # v^T tanh(u) + b computed as 2 v^T sigmoid(2u) + (b - sum v), the same function: PyTorch's CPU
        # tanh is ~7x slower than its sigmoid, and this is the largest elementwise work of a step
        # (doubling the two terms before they are broadcast saves a pass over the (B, K, R, A) sum).
        doubled_sum = torch.add(doubled_keys.unsqueeze(1), projected_hidden, alpha=2)  # 2u: (B, K, R, A)
        squashed = torch.sigmoid_(doubled_sum)
        score_weight = 2 * self.score.weight  # (1, A)
        scores = nn.functional.linear(squashed, score_weight, self.score.bias - self.score.weight.sum(dim=1))
        return torch.softmax(scores.view(hidden.shape[0], regions), dim=1)  # (B * K, R)


class GlobalContext(nn.Module):
    """The CNN-RNN baseline: one projected mean of the regions, the same at every step."""

    attends = False

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.projection = nn.Linear(feature_dim, attention_dim)
        self.context_dim = attention_dim

    def prepare(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        global_vector = self.projection(features.mean(dim=1, keepdim=True))  # (B, 1, A)
        return global_vector, global_vector

    def forward(self, global_vector: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return global_vector.new_ones(hidden.shape[0], 1)  # all weight on the one vector


CONTEXT_MODULES = {"soft": SoftAttention, "none": GlobalContext}
