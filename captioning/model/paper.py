"""Show, Attend and Tell (Xu et al. 2015), section 3.1.2, written as the paper writes it.

Hold this file beside the paper. Notation (ours in brackets):
    a_i      region i of the image: L regions of D features (here 49 of 2048)  [regions: (B, L, D)]
    y_{t-1}  the previous word, E y_{t-1} its embedding                       [words: (B,), (B, E)]
    h_t, c_t the LSTM's hidden state and memory                               [(B, H)]
    alpha_t  where the model looks at step t (Eq. 4-5)                        [weights: (B, L)]
    z_t      the context vector, sum_i alpha_ti a_i (Eq. 6, soft attention)   [context: (B, D)]
    beta_t   the gating scalar sigmoid(f_beta(h_{t-1})) (section 4.2.1)       [(B, 1)]

Eq. 4    e_ti    = f_att(a_i, h_{t-1}) = v^T tanh(W_f a_i + W_h h_{t-1})       (Bahdanau)
Eq. 5    alpha_t = softmax(e_t)
Eq. 6    z_t     = beta_t sum_i alpha_ti a_i
Eq. 1-3  h_t, c_t = LSTM([E y_{t-1}; z_t], h_{t-1}, c_{t-1})                  (nn.LSTMCell)
Eq. 7    p(y_t)  = softmax(L_o (E y_{t-1} + L_h h_t + L_z z_t))
init     h_0, c_0 = f_init,h(mean_i a_i), f_init,c(mean_i a_i)               (two MLPs)
Eq. 14   loss    = -sum_t log p(y_t) + lambda sum_i (1 - sum_t alpha_ti)^2    (per caption)

Hard attention (section 4.1, `model.attention: hard`) is in captioning/model/hard.py; here it is only
`step`'s `sample` and `forward`'s `draws`, None for soft attention and whenever a model decodes.
`model.attention: none` swaps the attention for one global vector (the CNN-RNN baseline, not in the
paper) and changes nothing else.

Where the code departs from the lines above, and why where known (arctic-captions: the paper's released code):
- a_i is a ResNet50's last map (7 x 7 x 2048 at 224 pixels), not VGG's 14 x 14 x 512 (L = 196).
- a_i is standardised per channel with training-set statistics first, so that the differences between regions
  are what the decoder sees (a random ResNet50's maps are mostly a constant offset).
- init: f_init,h and f_init,c are one linear layer each, followed by tanh, as in arctic-captions.
- Eq. 7 is optional (`model.deep_output`, off by default: it did worse here); without it the scores are L_o h_t.
- Eq. 7 with the deep output: L_o tanh(E y_{t-1} + L_h h_t + L_z z_t), with biases in L_h and L_o, as in
  arctic-captions.
- Dropout (the paper does not say where) only on what L_o reads.
- E starts from Word2Vec vectors (`load_embeddings`; trained further unless embeddings.finetune is false);
  arctic-captions starts it at random.
- y_0 is a <start> token with its own embedding (arctic-captions feeds a zero vector).
- beta_t gates every context: hard attention's sampled a_{s_t} too (as arctic-captions; section 4.1 reads
  z_t = a_{s_t}), and the global vector of `model.attention: none`.
- Eq. 14's cross-entropy (`caption_loss`) is averaged over the batch's target words, not summed per caption.
- Eq. 14's penalty is averaged over the L regions, not summed (as arctic-captions), so that alpha_c means the
  same for any grid, and averaged over the batch's captions. With the per-word cross-entropy, `train.alpha_c`
  weighs it as the paper's lambda = alpha_c x (target words per caption) / L. Training applies it to hard
  attention too (as arctic-captions; the paper states it for soft attention, section 4.2.1).

This module has no performance tricks; captioning/model/fast.py computes exactly the same with them, and the
tests hold the two equal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
from torch import nn

from captioning.model.hard import LocationDraws, attended_weights, location_terms


@dataclass(frozen=True)
class DecoderConfig:
    """The model's shape; params.yaml's model section gives the values (train builds it from there)."""

    vocab_size: int
    embed_dim: int
    feature_dim: int
    decoder_dim: int
    attention_dim: int
    dropout: float
    attention: str  # soft | hard | none (params.py's ATTENTION_KINDS)
    deep_output: bool

    @classmethod
    def from_params(cls, model_params: object, vocab_size: int, embed_dim: int, feature_dim: int) -> DecoderConfig:
        """params.yaml's model section (a ModelParams) with the sizes of the vocabulary, words and regions."""
        sizes = {"vocab_size": vocab_size, "embed_dim": embed_dim, "feature_dim": feature_dim}
        return cls(**sizes, **{f.name: getattr(model_params, f.name) for f in fields(cls) if f.name not in sizes})

    def to_dict(self) -> dict:
        return asdict(self)


class SoftAttention(nn.Module):
    """Eq. 4-5: alpha_t = softmax_i(v^T tanh(W_f a_i + W_h h_{t-1}))."""

    attends = True

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.feature_projection = nn.Linear(feature_dim, attention_dim)  # W_f
        self.hidden_projection = nn.Linear(hidden_dim, attention_dim)  # W_h
        self.score = nn.Linear(attention_dim, 1)  # v
        self.context_dim = feature_dim

    def prepare(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W_f a_i does not change with t, so it is computed once per image: keys (B, L, A), values a (B, L, D)."""
        return self.feature_projection(regions), regions

    def forward(self, keys: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        scores = self.score(torch.tanh(keys + self.hidden_projection(hidden).unsqueeze(1)))  # e_t: (B, L, 1)
        return torch.softmax(scores.squeeze(2), dim=1)  # alpha_t: (B, L)


class GlobalContext(nn.Module):
    """The CNN-RNN baseline (not in the paper): one projected mean of the regions, the same at every step."""

    attends = False

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int):
        super().__init__()
        self.projection = nn.Linear(feature_dim, attention_dim)
        self.context_dim = attention_dim

    def prepare(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        global_vector = self.projection(regions.mean(dim=1, keepdim=True))  # (B, 1, A)
        return global_vector, global_vector

    def forward(self, keys: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return keys.new_ones(hidden.shape[0], 1)  # all weight on the one vector


class TeacherForcing(NamedTuple):
    """What `forward` returns (see CaptionDecoder.forward)."""

    scores: torch.Tensor  # (N, V), time-major
    targets: torch.Tensor  # (N,)
    weight_sums: torch.Tensor  # sum_t alpha_t per caption: (B, L)
    location_log_probs: torch.Tensor  # sum_t log p(s_t | a) per caption, 0 where nothing is sampled: (B,)
    location_entropies: torch.Tensor  # sum_t H[alpha_t] per caption, 0 where nothing is sampled: (B,)


class EncodedImages(NamedTuple):
    """What the decoder computes once per image before the time loop."""

    regions: torch.Tensor  # standardised a: (B, L, D)
    keys: torch.Tensor  # what the context module scores, W_f a for soft attention: (B, L, A)
    values: torch.Tensor  # what the context mixes, a for soft attention: (B, L, D)

    def select(self, rows: torch.Tensor | slice) -> EncodedImages:
        return EncodedImages(*(tensor[rows] for tensor in self))


class CaptionDecoder(nn.Module):
    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)  # E
        context_module = GlobalContext if config.attention == "none" else SoftAttention  # hard: the same alpha_t
        self.context = context_module(config.feature_dim, config.decoder_dim, config.attention_dim)
        self.init_h = nn.Linear(config.feature_dim, config.decoder_dim)  # f_init,h
        self.init_c = nn.Linear(config.feature_dim, config.decoder_dim)  # f_init,c
        self.gate = nn.Linear(config.decoder_dim, 1)  # f_beta
        self.lstm = nn.LSTMCell(config.embed_dim + self.context.context_dim, config.decoder_dim)
        self.dropout = nn.Dropout(config.dropout)
        if config.deep_output:
            self.output_hidden = nn.Linear(config.decoder_dim, config.embed_dim)  # L_h
            self.output_context = nn.Linear(self.context.context_dim, config.embed_dim, bias=False)  # L_z
        output_input = config.embed_dim if config.deep_output else config.decoder_dim
        self.output = nn.Linear(output_input, config.vocab_size)  # L_o
        # A random ResNet50's maps are ~30x ImageNet's and mostly a constant offset: standardising each
        # channel with training-set statistics makes the differences between regions what the decoder sees.
        self.register_buffer("feature_mean", torch.zeros(config.feature_dim))
        self.register_buffer("feature_std", torch.ones(config.feature_dim))

    def set_feature_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-3))

    def load_embeddings(self, matrix: torch.Tensor, finetune: bool) -> None:
        self.embedding.weight.data.copy_(matrix)
        self.embedding.weight.requires_grad_(finetune)

    def standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features.float() - self.feature_mean) / self.feature_std  # (B, L, D)

    def encode(self, features: torch.Tensor) -> EncodedImages:
        regions = self.standardise(features)
        keys, values = self.context.prepare(regions)
        return EncodedImages(regions, keys, values)

    def initial_state(self, encoded: EncodedImages) -> tuple[torch.Tensor, torch.Tensor]:
        return self.initial_state_from_mean(encoded.regions.mean(dim=1))

    def initial_state_from_mean(self, mean_regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h_0, c_0 (B, H) from mean_i a_i (B, D): f_init,h and f_init,c, each a linear layer and a tanh."""
        return torch.tanh(self.init_h(mean_regions)), torch.tanh(self.init_c(mean_regions))

    def step(
        self,
        words: torch.Tensor,
        state: tuple[torch.Tensor, torch.Tensor],
        encoded: EncodedImages,
        sample: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """One word: previous words (B,) -> word scores (B, V), new (h, c), attention weights (B, L).

        `state` may hold K rows per image of `encoded` (beam search's K beams of image b are rows
        b*K .. b*K+K-1): each image's tensors then serve its K rows. `sample` (hard attention in training,
        LocationDraws.at) makes the context a sampled region's; without it, the expected one (Eq. 6).
        """
        hidden, _ = state
        keys, values = _rows_per_state(encoded.keys, hidden), _rows_per_state(encoded.values, hidden)
        weights = self.context(keys, hidden)  # alpha_t: (B, L)
        attended = weights if sample is None else attended_weights(weights, *sample)  # alpha_t or one-hot s_t
        beta = torch.sigmoid(self.gate(hidden))  # beta_t: (B, 1)
        context = beta * (attended.unsqueeze(2) * values).sum(dim=1)  # z_t: (B, D)
        embedded = self.embedding(words)  # E y_{t-1}: (B, E)
        state = self.lstm(torch.cat([embedded, context], dim=1), state)  # h_t, c_t
        return self.word_scores(embedded, state[0], context), state, weights

    def word_scores(
        self,
        embedded: torch.Tensor | None,
        hidden: torch.Tensor,
        context: torch.Tensor | None,
        context_output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Eq. 7 with the deep output and a tanh, L_o tanh(E y_{t-1} + L_h h_t + L_z z_t); otherwise L_o h_t: (B, V).

        `context_output`: L_z z_t already computed (fast.py computes it its own way), instead of `context`.
        """
        if not self.config.deep_output:
            return self.output(self.dropout(hidden))
        word_and_state = embedded + self.output_hidden(hidden)  # E y_{t-1} + L_h h_t: (B, E)
        if context_output is None:
            context_output = self.output_context(context)  # L_z z_t: (B, E)
        deep = torch.tanh(word_and_state + context_output)  # (B, E)
        return self.output(self.dropout(deep))

    def forward(
        self, features: torch.Tensor, captions: torch.Tensor, lengths: torch.Tensor, draws: LocationDraws | None = None
    ) -> TeacherForcing:
        """Teacher forcing: word t + 1 of every caption predicted from its word t, for t = 0 .. L-2.

        captions (B, T) start with <start>; lengths (B,) count <start> and <end>, sorted decreasing.
        Returns TeacherForcing: every real target and its scores, time-major (step 0's captions, then step 1's
        ...), sum_t alpha_t per caption and, with `draws` (hard attention in training), its location terms.
        """
        encoded = self.encode(features)
        state = self.initial_state(encoded)
        steps = lengths - 1  # (B,) words to predict per caption
        scores, targets, weight_sums = [], [], 0.0
        log_probs = entropies = torch.zeros(len(lengths), device=features.device)
        for t in range(int(steps.max())):
            sample = None if draws is None else draws.at(t, len(lengths))
            step_scores, state, weights = self.step(captions[:, t], state, encoded, sample)
            running = steps > t  # (B,) captions that have not ended before word t + 1
            scores.append(step_scores[running])
            targets.append(captions[running, t + 1])
            weight_sums = weight_sums + weights * running.unsqueeze(1)
            if sample is not None:
                log_prob, entropy = location_terms(weights, *sample)
                log_probs, entropies = log_probs + log_prob * running, entropies + entropy * running
        return TeacherForcing(torch.cat(scores), torch.cat(targets), weight_sums, log_probs, entropies)


def caption_loss(
    scores: torch.Tensor, targets: torch.Tensor, weight_sums: torch.Tensor, alpha_c: float, tokens: int, captions: int
) -> torch.Tensor:
    """Eq. 14 rescaled: cross-entropy per target token plus alpha_c times mean_i (1 - sum_t alpha_ti)^2 per caption.

    The penalty asks every region for a unit of attention over the caption; it is averaged over the L
    regions (the paper sums), so that alpha_c means the same for any grid. The cross-entropy summed over the
    target tokens and the penalty summed over the captions are divided by `tokens` and `captions` of the whole
    batch (under DDP larger than this process's share); the paper's loss is per caption.
    """
    loss = nn.functional.cross_entropy(scores.float(), targets, reduction="sum") / tokens
    if alpha_c:
        loss = loss + alpha_c * ((1.0 - weight_sums.float()) ** 2).mean(dim=1).sum() / captions
    return loss


def _rows_per_state(per_image: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """per_image (B, ...) repeated to one row per state row when K state rows share an image (K * B, ...)."""
    beams = hidden.shape[0] // per_image.shape[0]
    return per_image if beams == 1 else per_image.repeat_interleave(beams, dim=0)
