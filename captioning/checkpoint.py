"""Model files: state dicts and plain values only, loaded with weights_only=True (nothing unpickled).

A model file records what it needs to be used safely later: the decoder configuration, the
vocabulary it was trained with, and the recipe of the features it was trained on (encoder weights,
image size, precision), so captioning a new image uses exactly the same encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from captioning.errors import CaptioningError
from captioning.io import atomic_path
from captioning.model import CaptionDecoder, DecoderConfig, build_decoder


def save_model(path: str | Path, decoder: CaptionDecoder, words: list[str], feature_recipe: dict, **extra) -> None:
    payload = {
        "format": "captioning-model/1",
        "config": decoder.config.to_dict(),
        "state_dict": decoder.state_dict(),
        "words": list(words),
        "feature_recipe": {k: (v.item() if hasattr(v, "item") else v) for k, v in feature_recipe.items()},
        **extra,
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", implementation: str = "auto"
) -> tuple[CaptionDecoder, dict]:
    """The decoder (in eval mode, as `implementation`: auto, paper or fast) and the whole payload (words, ...)."""
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: model file not found (run the train stage)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CaptioningError(f"{path}: not a loadable model file ({error})") from None
    if not isinstance(payload, dict) or payload.get("format") != "captioning-model/1":
        raise CaptioningError(f"{path}: not a model file written by this project")
    try:
        decoder = build_decoder(DecoderConfig(**payload["config"]), implementation)
        decoder.load_state_dict(payload["state_dict"])
    except (TypeError, RuntimeError) as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise CaptioningError(
            f"{path}: its weights do not match its recorded configuration {payload['config']} ({first}); "
            "the file was written by another version of the model: retrain (dvc repro train)"
        ) from None
    decoder.eval()
    return decoder, payload


def check_vocabulary(model_path: str | Path, model_words: list[str], vocab_path: str | Path, words: list[str]) -> None:
    if list(model_words) != list(words):
        raise CaptioningError(
            f"{model_path} was trained with a {len(model_words)}-word vocabulary but {vocab_path} has "
            f"{len(words)} words: retrain (dvc repro train)"
        )
