"""A tiny model file over a seeded random ResNet50: what the caption command and the demo load in tests."""

from __future__ import annotations

from pathlib import Path

import torch
from repo_params import repo_params

from captioning.checkpoint import save_model
from captioning.features.encoder import build_encoder
from captioning.features.extract import encoder_fingerprint
from captioning.model import CaptionDecoder, DecoderConfig
from captioning.text.vocabulary import SPECIALS


def write_tiny_model(
    path: Path, words: list[str], image_size: int, fingerprint: str | None = None, recipe: dict | None = None, **extra
) -> Path:
    """A soft-attention decoder (16-d) over `words`; `recipe` overrides feature-recipe fields, `extra` goes
    into the file (epoch, validation)."""
    torch.manual_seed(0)
    model = repo_params("model", decoder_dim=16, attention_dim=16, dropout=0.0, attention="soft", deep_output=False)
    decoder = CaptionDecoder(DecoderConfig.from_params(model, vocab_size=len(words), embed_dim=8, feature_dim=2048))
    with torch.no_grad():  # never <pad>, <start>, <unk> or <end>: every caption is as long as max_len allows
        decoder.output.bias[: len(SPECIALS)] = -1e4
    feature_recipe = {
        "encoder": "resnet50",
        "weights": "none",
        "imagenet_variant": "IMAGENET1K_V2",
        "seed": 0,
        "image_size": image_size,
        "precision": "fp32",
        "encoder_fingerprint": fingerprint or encoder_fingerprint(build_encoder("none", 0)),
        **(recipe or {}),
    }
    save_model(path, decoder, words, feature_recipe, **extra)
    return path
