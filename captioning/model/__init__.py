"""The captioning model: a context module (soft attention, or a global vector) feeding an LSTM decoder.

paper.py is the model as the paper writes it; read it first. fast.py computes the same with the same
parameters, faster; hard.py is the paper's stochastic (hard) attention; decoding.py turns a decoder into
captions (greedy, beam search, sampling). Both offer one interface, which decoding and training use and nothing more:

    encoded = decoder.encode(features)             # once per image: (B, L, D) region features in
    state = decoder.initial_state(encoded)         # (h_0, c_0), each (B, H)
    scores, state, weights = decoder.step(words, state, encoded)   # one word: (B,) ids -> (B, V) scores
    encoded = encoded.select(rows)                 # keep some images (beam search drops finished ones)
    # teacher forcing, a TeacherForcing (paper.py): (N, V), (N,), (B, L), then (B,) twice, 0 without hard `draws`
    scores, targets, weight_sums, location_log_probs, location_entropies = decoder(features, captions, lengths)

`step` also takes K state rows per image row (rows b*K .. b*K+K-1 are image b's), so beam search's K
beams share their image's tensors. A model file holds the parameters only, so either implementation
loads any model file.
"""

from __future__ import annotations

from captioning.model.fast import FastCaptionDecoder
from captioning.model.paper import CaptionDecoder, DecoderConfig


def resolve_implementation(implementation: str) -> str:
    """`auto` is `fast`: every trick in fast.py is an exact rewriting that saves work on CPUs and GPUs alike."""
    return "fast" if implementation == "auto" else implementation


def build_decoder(config: DecoderConfig, implementation: str = "auto") -> CaptionDecoder:
    """`paper` (paper.py) or `fast` (fast.py; `auto`): model.implementation, whose values params.py lists."""
    return CaptionDecoder(config) if resolve_implementation(implementation) == "paper" else FastCaptionDecoder(config)


__all__ = ["CaptionDecoder", "DecoderConfig", "FastCaptionDecoder", "build_decoder", "resolve_implementation"]
