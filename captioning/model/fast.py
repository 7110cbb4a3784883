"""The decoder of captioning/model/paper.py, computed faster: same parameters, same maths, other arithmetic.

Everything that makes training and decoding fast lives here, and the tests hold this module equal to
the literal one (loss and every gradient, each step, greedy and beam-search captions). Each trick is
an exact rewriting; only float rounding differs.

1. Attention keys once per image, doubled. W_f a_i does not depend on t (the literal module does this
   too). PyTorch's CPU tanh is ~7x slower than its sigmoid, and the attention's tanh over (B, L, A) is
   the largest elementwise work of a step, so v^T tanh(u) + b is computed as 2 v^T sigmoid(2u) +
   (b - sum v), the same function; the keys are stored as 2 W_f a (doubling weights doubles every
   product exactly), and 2 W_h h is added with one fused add.
2. The LSTM's context weights applied to the regions, not to the context. W_z (beta sum_i alpha_i a_i)
   = beta sum_i alpha_i (W_z a_i): W_z a_i (and the deep output's L_z a_i) are computed once per
   image in `encode`, which turns the largest product of every decoding step into a (B, L) x (L, 4H)
   mix. This pays when an image's rows serve many steps: beam search's K beams share one image's rows
   (K x T mixes against L precomputed rows). Teacher forcing runs one row per caption for only T (< L)
   steps, so `forward` applies W_z after mixing instead, together with W_hh in one product per step.
3. The word's share of the gates, E y W_e + b, for all steps of a caption in one product (`forward`),
   or, when decoding with a small vocabulary, as rows of a (V, 4H) table of every word's gates built
   once per batch (one product instead of one per step).
4. Teacher forcing on length-bucketed batches sorted longest first: the active rows shrink as captions
   end, so no arithmetic is spent on padding; slicing happens only when a caption has ended.
5. `_RecurrentProduct`: the gradient of the recurrent weights over all steps as one product, instead of
   a thin product added into a (C + H, 4H) sum at every step.
6. Under autocast the LSTM weights are cast once per batch, not at every step, and the per-image mix
   stays in fp32 (memory-bound; bf16 would only add casts).
7. No slicing or padding of a step's tensors while every caption is still running: a slice of all the rows
   costs a zero-filled buffer and a copy in backward, padding by nothing a fill and a copy in forward, and
   each is a kernel launch per word step on a GPU. Same values, same gradients, bit for bit.
8. On CUDA the LSTM cell is the fused kernel nn.LSTMCell itself runs there (one launch forward, one
   backward, the gates' sum included, instead of ~23 operators a word step); on the CPU, which has no such
   kernel, the same maths operator by operator (`_lstm_cell`).

Hard attention samples from the same LocationDraws as the literal module, one uniform per caption
and step, so the two make the same choices although this one drops the rows of ended captions.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from captioning.model.hard import LocationDraws, attended_weights, location_terms
from captioning.model.paper import CaptionDecoder, TeacherForcing

TABLE_STEPS = 16  # a caption's usual length: the word-gate table pays when V <= rows x this
FUSED_CELL_DEVICES = ("cuda",)  # where torch has the fused LSTM cell kernel (trick 8)


class FastEncodedImages(NamedTuple):
    """Only what `step` reads, per image; rows are sliced together (`select`)."""

    mean_regions: torch.Tensor  # mean standardised region: (B, D), for the initial state
    keys: torch.Tensor  # 2 W_f a for soft attention, the global vector without: (B, L, A)
    projected_values: torch.Tensor  # [W_z a; L_z a] of each value: (B, L, 4H + E), (B, L, 4H) without deep output
    word_gates: dict  # the (V, 4H) word-gate table once a decoding loop has built it (trick 3)

    def select(self, rows: torch.Tensor | slice) -> FastEncodedImages:
        return FastEncodedImages(self.mean_regions[rows], self.keys[rows], self.projected_values[rows], self.word_gates)


class FastCaptionDecoder(CaptionDecoder):
    """CaptionDecoder with the same parameters and interface (encode, initial_state, step, forward)."""

    reads_lengths_on_host = True  # forward takes the lengths on the host too (train/cross_entropy.py's caption_loss)

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        # (f.float() - mean) / std on one new (B, L, D) buffer, in place, rather than three.
        dtype = torch.promote_types(torch.float32, self.feature_mean.dtype)
        return features.to(dtype, copy=True).sub_(self.feature_mean).div_(self.feature_std)

    def _keys_and_values(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.context.attends:
            return self.context.prepare(regions)
        projection = self.context.feature_projection
        return nn.functional.linear(regions, 2 * projection.weight, 2 * projection.bias), regions  # trick 1

    def _input_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The LSTM's input weights split into the columns that see the word (W_e) and the context (W_z).

        One split rather than two slices: its backward writes both gradients into one new tensor.
        """
        return self.lstm.weight_ih.split([self.config.embed_dim, self.context.context_dim], dim=1)

    def encode(self, features: torch.Tensor) -> FastEncodedImages:
        regions = self.standardise(features)
        keys, values = self._keys_and_values(regions)
        projection = self._input_weights()[1]  # W_z: (4H, C)
        if self.config.deep_output:
            projection = torch.cat([projection, self.output_context.weight])  # [W_z; L_z]: (4H + E, C)
        return FastEncodedImages(regions.mean(dim=1), keys, values @ projection.t(), {})  # trick 2

    def initial_state(self, encoded: FastEncodedImages) -> tuple[torch.Tensor, torch.Tensor]:
        return self.initial_state_from_mean(encoded.mean_regions)

    def _attention(self, doubled_keys: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """alpha_t (B * K, L) from 2 W_f a (B, L, A) and h (B * K, H); K rows of hidden may share an image."""
        if not self.context.attends:
            return self.context(doubled_keys, hidden)
        attention = self.context
        images, regions, attention_dim = doubled_keys.shape
        projected_hidden = attention.hidden_projection(hidden).view(images, -1, 1, attention_dim)  # (B, K, 1, A)
        # Doubling the two terms before they are broadcast saves a pass over the (B, K, L, A) sum.
        squashed = torch.sigmoid_(torch.add(doubled_keys.unsqueeze(1), projected_hidden, alpha=2))  # trick 1
        score_weight = 2 * attention.score.weight  # (1, A)
        scores = nn.functional.linear(squashed, score_weight, attention.score.bias - attention.score.weight.sum(dim=1))
        return torch.softmax(scores.view(hidden.shape[0], regions), dim=1)

    def _word_gates(self, words: torch.Tensor, word_weights: torch.Tensor) -> torch.Tensor:
        """E y W_e^T plus both LSTM biases: (...,) ids -> (..., 4H)."""
        return nn.functional.linear(self.embedding(words), word_weights, self.lstm.bias_ih + self.lstm.bias_hh)

    def _step_word_gates(self, words: torch.Tensor, encoded: FastEncodedImages) -> torch.Tensor:
        table = encoded.word_gates.get("table")
        if table is None and not torch.is_grad_enabled() and self.config.vocab_size <= len(words) * TABLE_STEPS:
            vocabulary = torch.arange(self.config.vocab_size, device=words.device)
            table = encoded.word_gates["table"] = self._word_gates(vocabulary, self._input_weights()[0])  # trick 3
        return self._word_gates(words, self._input_weights()[0]) if table is None else table[words]

    def step(
        self, words: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], encoded: FastEncodedImages
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        hidden, cell = state
        word_gates = self._step_word_gates(words, encoded)  # (B, 4H)
        weights = self._attention(encoded.keys, hidden)  # (B, L)
        beta = torch.sigmoid(self.gate(hidden))  # (B, 1)
        projected_context = _mix(beta * weights, encoded.projected_values)  # beta [W_z; L_z] z: (B, 4H + E)
        deep_width = self.config.embed_dim if self.config.deep_output else 0
        context_gates, context_output = projected_context.split([word_gates.shape[1], deep_width], dim=1)
        state = _lstm_update(torch.addmm(word_gates, hidden, self.lstm.weight_hh.t()), context_gates, cell)
        embedded = self.embedding(words) if self.config.deep_output else None  # E y_{t-1}: (B, E)
        return self.word_scores(embedded, state[0], None, context_output), state, weights

    def forward(
        self, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor, draws: LocationDraws | None = None
    ) -> TeacherForcing:
        regions = self.standardise(features)
        keys, values = self._keys_and_values(regions)
        hidden, cell = self.initial_state_from_mean(regions.mean(dim=1))
        # The active rows of each step from the lengths on the host (captioning/train/batching.py keeps them there):
        # reading them from a GPU would make the host wait for the kernels queued so far, twice a batch.
        steps = lengths.cpu() - 1  # predict words 1..L-1 from words 0..L-2
        batch_sizes = (steps.unsqueeze(0) > torch.arange(int(steps.max())).unsqueeze(1)).sum(1)  # (T,) on the host
        word_weights, context_weights = _for_matmul(self.lstm.weight_ih).split(  # trick 6: W_ih cast whole, once
            [self.config.embed_dim, self.context.context_dim], dim=1
        )
        # Time-major, so that each step takes a whole (B, 4H) tensor: its backward is one stack (trick 3).
        word_gates = self._word_gates(captions[:, : len(batch_sizes)].t(), word_weights).unbind(0)  # T x (B, 4H)
        recurrent_weights = torch.cat([context_weights, _for_matmul(self.lstm.weight_hh)], dim=1).t()  # (C + H, 4H)
        tape = _RecurrentProduct.Tape()
        hiddens, gated_contexts, targets, weight_sums = [], [], [], 0.0
        location_totals = (torch.zeros(len(lengths), device=features.device),) * 2  # log p(s|a), H per caption
        for t, active in enumerate(batch_sizes.tolist()):  # trick 4: the active rows shrink as captions end
            if active < hidden.shape[0]:  # each slice costs a full-size gradient buffer in backward
                hidden, cell, keys, values = hidden[:active], cell[:active], keys[:active], values[:active]
            weights = self._attention(keys, hidden)  # (b, L)
            attended = weights
            if draws is not None:  # hard attention in training
                attended, location_totals = _hard_step(weights, draws, t, location_totals)
            beta = torch.sigmoid(self.gate(hidden))  # (b, 1)
            gated_context = _mix(beta * attended, values)  # beta z: (b, C)
            recurrent_input = torch.cat([gated_context, hidden], dim=1).to(recurrent_weights.dtype)  # (b, C + H)
            recurrent = _RecurrentProduct.apply(recurrent_input, recurrent_weights, tape)  # (b, 4H), trick 5
            step_word_gates = word_gates[t] if active == len(lengths) else word_gates[t][:active]  # trick 7
            hidden, cell = _lstm_update(step_word_gates, recurrent, cell)
            hiddens.append(hidden)
            if self.config.deep_output:
                gated_contexts.append(gated_context)
            targets.append(captions[:active, t + 1])
            ended = len(lengths) - active  # trick 7: no padding while no caption has ended
            step_sums = nn.functional.pad(weights.float(), (0, 0, 0, ended)) if ended else weights.float()
            weight_sums = weight_sums + step_sums  # (B, L)
        previous_words = context_output = None
        if self.config.deep_output:  # the previous word of target t + 1 is word t
            previous_words = torch.cat([captions[: len(step_targets), t] for t, step_targets in enumerate(targets)])
            context_output = self.output_context(torch.cat(gated_contexts))
        every_hidden = torch.cat(hiddens)  # h_t of all steps: (N, H)
        embedded = None if previous_words is None else self.embedding(previous_words)  # E y_{t-1}: (N, E)
        scores = self.word_scores(embedded, every_hidden, None, context_output)  # all steps at once: (N, V)
        return TeacherForcing(scores, torch.cat(targets), weight_sums, *location_totals)


def _hard_step(weights: torch.Tensor, draws: LocationDraws, step: int, totals: tuple[torch.Tensor, torch.Tensor]):
    """The weights the context mixes at `step` (one-hot s_t where a caption samples) for the first b captions
    (weights: (b, L)), and the per-caption totals of log p(s_t | a) and H[alpha_t] (B,) with this step added."""
    sample = draws.at(step, len(weights))
    padding = (0, len(totals[0]) - len(weights))
    terms = location_terms(weights, *sample)  # (b,) each
    totals = tuple(total + nn.functional.pad(term, padding) for total, term in zip(totals, terms))
    return attended_weights(weights, *sample), totals


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

    In per_image's dtype even under autocast (trick 6): a one-row product per image is memory-bound.
    """
    images, regions, _ = per_image.shape
    grouped = weights.reshape(images, -1, regions).to(per_image.dtype)  # (B, K, N)
    if not torch.is_autocast_enabled(per_image.device.type):
        return torch.bmm(grouped, per_image).view(weights.shape[0], -1)
    with torch.autocast(per_image.device.type, enabled=False):
        return torch.bmm(grouped, per_image).view(weights.shape[0], -1)


def _lstm_update(
    input_gates: torch.Tensor, hidden_gates: torch.Tensor, cell: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.LSTMCell's update from its pre-activations given as two terms (B, 4H), gates in PyTorch's order i f g o:
    fused on CUDA (trick 8), written out elsewhere."""
    if input_gates.device.type not in FUSED_CELL_DEVICES:
        return _lstm_cell(input_gates + hidden_gates, cell)
    dtype = torch.promote_types(torch.promote_types(input_gates.dtype, hidden_gates.dtype), cell.dtype)
    hidden, cell, _workspace = _fused_lstm_cell(input_gates.to(dtype), hidden_gates.to(dtype), cell.to(dtype))
    return hidden, cell


def _fused_lstm_cell(input_gates: torch.Tensor, hidden_gates: torch.Tensor, cell: torch.Tensor):
    """(h', c', workspace): the kernel behind nn.LSTMCell on CUDA, with its own backward kernel."""
    return torch.ops.aten._thnn_fused_lstm_cell(input_gates, hidden_gates, cell)


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
