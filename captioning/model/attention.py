"""Where the decoder looks: context modules that weigh a set of vectors given the LSTM state.

Both modules share one interface, so the decoder never knows which one it has:
    keys, values = module.prepare(features)   # once per image, before the time loop
    weights = module(keys, hidden)            # every step: (B, N) weights over the N values
The context is then sum_i weights_i * values_i, which the decoder computes (see decoder.py).
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
        # W_f f does not depend on the step: computed once per image, (B, R, F) -> (B, R, A).
        return self.feature_projection(features), features

    def forward(self, projected_features: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(projected_features + self.hidden_projection(hidden).unsqueeze(1)))  # (B, R, 1)
        return torch.softmax(scores.squeeze(2), dim=1)  # (B, R)


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
        return global_vector.new_ones(global_vector.shape[0], 1)  # all weight on the one vector


CONTEXT_MODULES = {"soft": SoftAttention, "none": GlobalContext}
