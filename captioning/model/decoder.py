"""The LSTM decoder of Show, Attend and Tell (Xu et al. 2015, section 3.1.2).

At step t an nn.LSTMCell reads [E y_{t-1}; beta_t z_t], where z_t = sum_i alpha_ti v_i is the context
from the context module (soft attention over the regions by default) and beta_t = sigmoid(W_g h_{t-1})
is the paper's gating scalar. Initial h and c come from the mean region feature; dropout precedes the
output layer.

Speed without changing the maths: the LSTM input weights W_z that multiply the context are linear,
so W_z (beta sum_i alpha_i v_i) = beta sum_i alpha_i (W_z v_i). W_z v_i is computed once per image
(like W_f f_i in the attention), which turns the largest matmul of every step into a (B, 49) x
(49, 4H) mix. Likewise the embedding half of the input weights runs once over the whole caption.
`reference_step` computes the same step the direct way; the tests check both agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from captioning.model.attention import CONTEXT_MODULES


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int
    embed_dim: int
    feature_dim: int = 2048
    decoder_dim: int = 512
    attention_dim: int = 512
    dropout: float = 0.5
    attention: str = "soft"

    def to_dict(self) -> dict:
        return asdict(self)


class EncodedImages(NamedTuple):
    """Per-image tensors computed once before the time loop; rows are sliced or repeated together."""

    features: torch.Tensor  # (B, R, F) standardised region features
    keys: torch.Tensor  # what the context module scores, e.g. W_f f: (B, R, A)
    values: torch.Tensor  # the vectors the context mixes: (B, N, C)
    value_gates: torch.Tensor  # W_z v for each value: (B, N, 4H)

    def select(self, rows: torch.Tensor | slice) -> EncodedImages:
        return EncodedImages(*(tensor[rows] for tensor in self))


class CaptionDecoder(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        self.context = CONTEXT_MODULES[config.attention](config.feature_dim, config.decoder_dim, config.attention_dim)
        self.init_h = nn.Linear(config.feature_dim, config.decoder_dim)
        self.init_c = nn.Linear(config.feature_dim, config.decoder_dim)
        self.gate = nn.Linear(config.decoder_dim, 1)  # beta = sigmoid(W_g h)
        self.lstm = nn.LSTMCell(config.embed_dim + self.context.context_dim, config.decoder_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.decoder_dim, config.vocab_size)
        # Region features arrive in whatever scale and offset the encoder gives (a random ResNet50's
        # maps are ~30x ImageNet's and mostly a constant); standardising each channel with training-set
        # statistics makes the differences between regions and images what the decoder sees.
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))

    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-3))

    def load_embeddings(self, matrix: torch.Tensor, finetune: bool) -> None:
        self.embedding.weight.data.copy_(matrix)
        self.embedding.weight.requires_grad_(finetune)

    # The LSTM's input weights, split into the columns that see the word and those that see the context.
    def _word_weights(self) -> torch.Tensor:
        return self.lstm.weight_ih[:, : self.config.embed_dim]

    def _context_weights(self) -> torch.Tensor:
        return self.lstm.weight_ih[:, self.config.embed_dim :]

    def encode(self, features: torch.Tensor) -> EncodedImages:
        features = (features.float() - self.feature_mean) / self.feature_std  # (B, R, F)
        keys, values = self.context.prepare(features)
        value_gates = values @ self._context_weights().t()  # (B, N, 4H)
        return EncodedImages(features, keys, values, value_gates)

    def initial_state(self, encoded: EncodedImages) -> tuple[torch.Tensor, torch.Tensor]:
        mean = encoded.features.mean(dim=1)  # (B, F)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    def word_gates(self, words: torch.Tensor) -> torch.Tensor:
        """The word's share of the LSTM gates, with both biases: (...,) ids -> (..., 4H)."""
        return self.embedding(words) @ self._word_weights().t() + self.lstm.bias_ih + self.lstm.bias_hh

    def _advance(
        self, word_gates: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], encoded: EncodedImages
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        hidden, cell = state
        weights = self.context(encoded.keys, hidden)  # (B, N)
        beta = torch.sigmoid(self.gate(hidden))  # (B, 1)
        context_gates = torch.bmm(weights.unsqueeze(1).to(encoded.value_gates.dtype), encoded.value_gates).squeeze(1)
        gates = word_gates + beta * context_gates + hidden @ self.lstm.weight_hh.t()  # (B, 4H), order i f g o
        in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)
        cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(in_gate) * torch.tanh(candidate)
        hidden = torch.sigmoid(out_gate) * torch.tanh(cell)
        return (hidden, cell), weights

    def step(
        self, words: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], encoded: EncodedImages
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """One decoding step: previous words (B,) -> logits (B, V), new state, context weights (B, N)."""
        state, weights = self._advance(self.word_gates(words), state, encoded)
        return self.output(self.dropout(state[0])), state, weights

    def reference_step(
        self, words: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], encoded: EncodedImages
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`step` computed literally: nn.LSTMCell on [embedding; beta * context]. For tests and benchmarks."""
        hidden, _ = state
        weights = self.context(encoded.keys, hidden)
        context = torch.bmm(weights.unsqueeze(1), encoded.values).squeeze(1)  # (B, C)
        beta = torch.sigmoid(self.gate(hidden))
        state = self.lstm(torch.cat([self.embedding(words), beta * context], dim=1), state)
        return self.output(self.dropout(state[0])), state, weights

    def forward(
        self, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing on a batch sorted by decreasing length; no arithmetic is spent on padding.

        Returns the logits of every real target token (N, V), those targets (N,), and the context
        weights summed over each caption's steps (B, N) for the doubly stochastic regulariser.
        """
        encoded = self.encode(features)
        state = self.initial_state(encoded)
        word_gates = self.word_gates(captions)  # (B, T, 4H), all steps at once
        steps = lengths - 1  # predict words 1..L-1 from words 0..L-2
        batch_sizes = (steps.unsqueeze(0) > torch.arange(int(steps.max()), device=steps.device).unsqueeze(1)).sum(1)
        hiddens, targets, weight_sums = [], [], 0.0
        for t, active in enumerate(batch_sizes.tolist()):  # the active rows shrink as captions end
            if active < state[0].shape[0]:
                # Only when some caption has ended: every slice of the per-image tensors costs a
                # full-size gradient buffer in backward (length-bucketed batches rarely need one).
                state = (state[0][:active], state[1][:active])
                encoded = encoded.select(slice(0, active))
            state, weights = self._advance(word_gates[:active, t], state, encoded)
            hiddens.append(state[0])
            targets.append(captions[:active, t + 1])
            weight_sums = weight_sums + nn.functional.pad(weights.float(), (0, 0, 0, features.shape[0] - active))
        logits = self.output(self.dropout(torch.cat(hiddens)))  # one matmul for all steps: (N, V)
        return logits, torch.cat(targets), weight_sums
