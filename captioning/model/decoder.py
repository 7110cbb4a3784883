"""The LSTM decoder of Show, Attend and Tell (Xu et al. 2015, section 3.1.2).

At step t an nn.LSTMCell reads [E y_{t-1}; beta_t z_t], where z_t = sum_i alpha_ti v_i is the context
from the context module (soft attention over the regions by default) and beta_t = sigmoid(W_g h_{t-1})
is the paper's gating scalar. Initial h and c come from the mean region feature. Word scores are
L_o h_t, dropout before L_o (the usual simplification), or with `deep_output` the paper's Eq. 7,
L_o tanh(E y_{t-1} + L_h h_t + L_z beta_t z_t), where the region attended at step t reaches word t
directly rather than only through the LSTM.

Speed without changing the maths: the LSTM input weights W_z that multiply the context are linear,
so W_z (beta sum_i alpha_i v_i) = beta sum_i alpha_i (W_z v_i). W_z v_i is computed once per image
(like W_f f_i in the attention), which turns the largest matmul of every step into a (B, 49) x
(49, 4H) mix; the deep output's L_z v_i rides along as E more columns of the same mix. Likewise the
embedding half of the input weights runs once over the whole caption.
`reference_step` computes the same step the direct way; the tests check both agree.

Precomputing W_z v_i pays when a row of the per-image tensors serves many steps: beam search's K
beams share one image's rows (see `step`), K x T mixes per image against 49 precomputed rows.
Teacher forcing runs one row per caption for only T (< 49) steps, so `forward` applies W_z after
mixing, to the context, as reference_step does, together with W_hh in one matmul per step.
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
    deep_output: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


class EncodedImages(NamedTuple):
    """Per-image tensors computed once before the time loop; rows are sliced or repeated together.

    `step` also accepts K state rows per image row (rows b*K .. b*K+K-1 belong to image b), so the
    K beams of an image share its tensors instead of K copies of them.
    """

    features: torch.Tensor | None  # (B, R, F) standardised region features
    keys: torch.Tensor  # what the context module scores, e.g. 2 W_f f for soft attention: (B, R, A)
    values: torch.Tensor | None  # the vectors the context mixes: (B, N, C)
    projected_values: torch.Tensor  # [W_z v; L_z v] for each value: (B, N, 4H + E), (B, N, 4H) without deep output

    def select(self, rows: torch.Tensor | slice) -> EncodedImages:
        selected: dict[int, torch.Tensor] = {}  # a tensor in two fields (values may be the features) is copied once
        return EncodedImages(
            *(None if tensor is None else selected.setdefault(id(tensor), tensor[rows]) for tensor in self)
        )

    def for_steps(self) -> EncodedImages:
        """Only what `step` reads: a decoding loop that slices its images carries a fraction of the memory."""
        return EncodedImages(None, self.keys, None, self.projected_values)


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
        if config.deep_output:
            self.output_hidden = nn.Linear(config.decoder_dim, config.embed_dim)  # L_h
            self.output_context = nn.Linear(self.context.context_dim, config.embed_dim, bias=False)  # L_z
        self.output = nn.Linear(config.embed_dim if config.deep_output else config.decoder_dim, config.vocab_size)
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

    def _input_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The LSTM's input weights split into the columns that see the word and those that see the context.

        One split rather than two slices: its backward writes both gradients into one new tensor,
        where each slice's backward would zero-fill a full-size one.
        """
        return self.lstm.weight_ih.split([self.config.embed_dim, self.context.context_dim], dim=1)

    def _standardise(self, features: torch.Tensor) -> torch.Tensor:
        # (f.float() - mean) / std on one new (B, R, F) buffer, in place, rather than three.
        dtype = torch.promote_types(torch.float32, self.feature_mean.dtype)
        return features.to(dtype, copy=True).sub_(self.feature_mean).div_(self.feature_std)

    def encode(self, features: torch.Tensor) -> EncodedImages:
        features = self._standardise(features)
        keys, values = self.context.prepare(features)
        projection = self._input_weights()[1]  # W_z: (4H, C)
        if self.config.deep_output:
            projection = torch.cat([projection, self.output_context.weight])  # [W_z; L_z]: (4H + E, C)
        return EncodedImages(features, keys, values, values @ projection.t())  # (B, N, 4H + E)

    def _logits(
        self, hidden: torch.Tensor, previous_words: torch.Tensor | None, context_output: torch.Tensor | None
    ) -> torch.Tensor:
        """Word scores (N, V) from h_t (N, H); with the deep output also y_{t-1} (N,) and L_z beta_t z_t (N, E)."""
        if not self.config.deep_output:
            return self.output(self.dropout(hidden))
        deep = torch.tanh(self.output_hidden(hidden) + self.embedding(previous_words) + context_output)  # (N, E)
        return self.output(self.dropout(deep))

    def initial_state(self, encoded: EncodedImages) -> tuple[torch.Tensor, torch.Tensor]:
        return self._initial_state(encoded.features)

    def _initial_state(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = features.mean(dim=1)  # (B, F)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    def word_gates(self, words: torch.Tensor) -> torch.Tensor:
        """The word's share of the LSTM gates, with both biases: (...,) ids -> (..., 4H)."""
        return self._word_gates(words, self._input_weights()[0])

    def word_gate_table(self, lookups: int) -> torch.Tensor | None:
        """word_gates of the whole vocabulary (V, 4H), when that is less work than `lookups` words one by one.

        A decoding loop that will look up about `lookups` words (rows x steps) then takes each step's
        gates as rows of the table: with a small vocabulary, one product replaces one at every step.
        """
        if self.config.vocab_size > lookups:
            return None
        return self.word_gates(torch.arange(self.config.vocab_size, device=self.embedding.weight.device))

    def _word_gates(self, words: torch.Tensor, word_weights: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(self.embedding(words), word_weights, self.lstm.bias_ih + self.lstm.bias_hh)

    def _advance(
        self, word_gates: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], encoded: EncodedImages
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
        hidden, cell = state
        weights = self.context(encoded.keys, hidden)  # (B, N)
        beta = torch.sigmoid(self.gate(hidden))  # (B, 1)
        projected_context = _mix(beta * weights, encoded.projected_values)  # beta [W_z; L_z] context: (B, 4H + E)
        context_gates, context_output = projected_context.split([word_gates.shape[1], self._deep_width()], dim=1)
        gates = torch.addmm(word_gates, hidden, self.lstm.weight_hh.t()) + context_gates  # (B, 4H), order i f g o
        return _lstm_cell(gates, cell), weights, context_output

    def _deep_width(self) -> int:
        return self.config.embed_dim if self.config.deep_output else 0

    def step(
        self,
        words: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        encoded: EncodedImages,
        word_gate_table: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """One decoding step: previous words (B,) -> logits (B, V), new state, context weights (B, N).

        `encoded` has one row per state row, or one row per K consecutive state rows (beams of an image).
        `word_gate_table`, from `word_gate_table`, replaces computing the words' gates.
        """
        word_gates = self.word_gates(words) if word_gate_table is None else word_gate_table[words]
        state, weights, context_output = self._advance(word_gates, state, encoded)
        return self._logits(state[0], words, context_output), state, weights

    def reference_step(
        self, words: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], encoded: EncodedImages
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """`step` computed literally: nn.LSTMCell on [embedding; beta * context]. For tests and benchmarks."""
        hidden, _ = state
        weights = self.context(encoded.keys, hidden)
        context = _mix(weights, encoded.values)  # (B, C)
        beta = torch.sigmoid(self.gate(hidden))
        state = self.lstm(torch.cat([self.embedding(words), beta * context], dim=1), state)
        context_output = self.output_context(beta * context) if self.config.deep_output else None
        return self._logits(state[0], words, context_output), state, weights

    def forward(
        self, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing on a batch sorted by decreasing length; no arithmetic is spent on padding.

        Returns the logits of every real target token (N, V), those targets (N,), and the context
        weights summed over each caption's steps (B, N) for the doubly stochastic regulariser.
        """
        features = self._standardise(features)
        keys, values = self.context.prepare(features)
        hidden, cell = self._initial_state(features)
        steps = lengths - 1  # predict words 1..L-1 from words 0..L-2
        batch_sizes = (steps.unsqueeze(0) > torch.arange(int(steps.max()), device=steps.device).unsqueeze(1)).sum(1)
        # The LSTM weights cast once for all steps (autocast would cast these non-leaf views at every
        # step), W_ih whole so that its gradient is cast back in one piece.
        word_weights, context_weights = _for_matmul(self.lstm.weight_ih).split(
            [self.config.embed_dim, self.context.context_dim], dim=1
        )
        # The word's share of the gates for every step at once, time-major so that each step takes a
        # whole (B, 4H) tensor: its backward is one stack, not a full-size zero fill per step.
        word_gates = self._word_gates(captions[:, : len(batch_sizes)].t(), word_weights).unbind(0)  # T x (B, 4H)
        # W_z and W_hh side by side, applied to [beta * context; h] in one product per step.
        recurrent_weights = torch.cat([context_weights, _for_matmul(self.lstm.weight_hh)], dim=1).t()  # (C+H, 4H)
        tape = _RecurrentProduct.Tape()
        hiddens, gated_contexts, targets, weight_sums = [], [], [], 0.0
        for t, active in enumerate(batch_sizes.tolist()):  # the active rows shrink as captions end
            if active < hidden.shape[0]:
                # Only when some caption has ended: every slice of the per-image tensors costs a
                # full-size gradient buffer in backward (length-bucketed batches rarely need one).
                hidden, cell, keys, values = hidden[:active], cell[:active], keys[:active], values[:active]
            weights = self.context(keys, hidden)  # (b, N)
            beta = torch.sigmoid(self.gate(hidden))  # (b, 1)
            gated_context = _mix(beta * weights, values)  # beta * context: (b, C)
            recurrent_input = torch.cat([gated_context, hidden], dim=1).to(recurrent_weights.dtype)  # (b, C+H)
            recurrent = _RecurrentProduct.apply(recurrent_input, recurrent_weights, tape)  # (b, 4H)
            hidden, cell = _lstm_cell(word_gates[t][:active] + recurrent, cell)
            hiddens.append(hidden)
            if self.config.deep_output:
                gated_contexts.append(gated_context)
            targets.append(captions[:active, t + 1])
            weight_sums = weight_sums + nn.functional.pad(weights.float(), (0, 0, 0, features.shape[0] - active))
        previous_words = context_output = None
        if self.config.deep_output:  # the previous word of target t + 1 is word t
            previous_words = torch.cat([captions[: len(step_targets), t] for t, step_targets in enumerate(targets)])
            context_output = self.output_context(torch.cat(gated_contexts))
        logits = self._logits(torch.cat(hiddens), previous_words, context_output)  # all steps at once: (N, V)
        return logits, torch.cat(targets), weight_sums


class _RecurrentProduct(torch.autograd.Function):
    """inputs_t @ weight at step t of the loop, with weight's gradient over all steps in one product.

    Autograd would form inputs_t^T grad_t at every step, a thin (C+H, b) x (b, 4H) product, and add
    it into a (C+H, 4H) sum each time. Here every step's backward records (inputs_t, grad_t) on the
    tape shared by the loop, and the first step's, which runs last (every later step depends on it),
    returns them all as one X^T G.
    """

    class Tape:
        def __init__(self):
            self.steps, self.inputs, self.grads = 0, [], []

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, weight: torch.Tensor, tape: _RecurrentProduct.Tape) -> torch.Tensor:
        ctx.save_for_backward(inputs, weight)
        ctx.tape, ctx.first = tape, tape.steps == 0
        tape.steps += 1
        return inputs @ weight

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        inputs, weight = ctx.saved_tensors
        tape, weight_grad = ctx.tape, None
        if ctx.needs_input_grad[1]:
            tape.inputs.append(inputs)
            tape.grads.append(grad)
            if ctx.first:
                weight_grad = torch.cat(tape.inputs).t() @ torch.cat(tape.grads)
                tape.inputs, tape.grads = [], []
        inputs_grad = grad @ weight.t() if ctx.needs_input_grad[0] else None
        return inputs_grad, weight_grad, None


def _mix(weights: torch.Tensor, per_image: torch.Tensor) -> torch.Tensor:
    """sum_n weights[r, n] * per_image[image of r, n]: (K * B, N) x (B, N, D) -> (K * B, D).

    In per_image's dtype even under autocast: a one-row product per image is memory-bound, and bf16
    would only add a cast of per_image (and is slower on CPU at this shape).
    """
    images, regions, _ = per_image.shape
    grouped = weights.reshape(images, -1, regions).to(per_image.dtype)  # (B, K, N)
    if not torch.is_autocast_enabled(per_image.device.type):
        return torch.bmm(grouped, per_image).view(weights.shape[0], -1)
    with torch.autocast(per_image.device.type, enabled=False):
        return torch.bmm(grouped, per_image).view(weights.shape[0], -1)


def _lstm_cell(gates: torch.Tensor, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTMCell's update from its pre-activations (B, 4H), gates in PyTorch's order i f g o."""
    in_gate, forget_gate, candidate, out_gate = gates.chunk(4, dim=1)
    cell = torch.sigmoid(forget_gate) * cell + torch.sigmoid(in_gate) * torch.tanh(candidate)
    return torch.sigmoid(out_gate) * torch.tanh(cell), cell


def _for_matmul(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor in the dtype autocast would give it for a matmul (unchanged without autocast)."""
    device = tensor.device.type
    if torch.is_autocast_enabled(device):
        return tensor.to(torch.get_autocast_dtype(device))
    return tensor
