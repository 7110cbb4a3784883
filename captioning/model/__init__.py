"""The captioning model: a context module (soft attention, or a global vector) feeding an LSTM decoder."""

from captioning.model.decoder import CaptionDecoder, DecoderConfig

__all__ = ["CaptionDecoder", "DecoderConfig"]
