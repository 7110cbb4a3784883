"""Model files: state dicts and plain values only, loaded with weights_only=True (nothing unpickled).

A model file records what it needs to be used safely later: the decoder configuration, the
vocabulary it was trained with, and the recipe of the features it was trained on (encoder weights,
image size, precision), so captioning a new image uses exactly the same encoder.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from captioning.errors import CaptioningError
from captioning.io import UnloadableFile, atomic_path, load_plain, write_bytes
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
    save_torch(path, payload)


def save_torch(path: str | Path, value: object) -> None:
    """torch.save through atomic_path, serialised in memory first.

    torch's own file writer reports a full disk as `unexpected pos` without the cause or the file; a
    plain write gives OSError(ENOSPC), which atomic_path turns into one line naming `path`.
    """
    buffer = io.BytesIO()
    torch.save(value, buffer)
    # The view is released even when the write fails: an exported view left in the failure's traceback cycle
    # crashes the garbage collector of CPython 3.12.0 and 3.12.1 (gh-111049; docs/reproducibility.md).
    with atomic_path(path) as temporary, buffer.getbuffer() as view:
        write_bytes(temporary, view)


# The fields load_model and its callers read, and what each holds (for the error naming a missing one).
FIELDS = {
    "config": (dict, "the decoder configuration"),
    "state_dict": (dict, "the weights"),
    "words": (list, "the vocabulary it was trained with"),
    "feature_recipe": (dict, "the recipe of the features it was trained on"),
}


def _check_fields(path: Path, payload: dict) -> None:
    for field, (kind, meaning) in FIELDS.items():
        if field not in payload:
            problem = "has no"
        elif not isinstance(payload[field], kind):
            problem = f"has a {type(payload[field]).__name__} instead of a {kind.__name__} as its"
        else:
            continue
        raise CaptioningError(
            f"{path}: the model file {problem} '{field}' ({meaning}): it is damaged or was not written by the "
            "train stage; retrain (dvc repro train)"
        )
    words = payload["words"]
    if not all(isinstance(word, str) for word in words):
        raise CaptioningError(f"{path}: the model file's 'words' must all be strings; retrain (dvc repro train)")


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", implementation: str = "auto"
) -> tuple[CaptionDecoder, dict]:
    """The decoder (in eval mode, as `implementation`: auto, paper or fast) and the whole payload (words, ...)."""
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: model file not found (run the train stage)")
    if path.stat().st_size == 0:
        raise CaptioningError(
            f"{path}: the model file is empty (0 bytes; an interrupted copy?): retrain or copy it again"
        )
    try:
        payload = load_plain(path, map_location)
    except UnloadableFile as refused:
        message = refused.reason if refused.pickled else f"not a loadable model file ({refused.reason})"
        raise CaptioningError(f"{path}: {message}") from None
    if not isinstance(payload, dict) or payload.get("format") != "captioning-model/1":
        raise CaptioningError(f"{path}: not a model file written by this project")
    _check_fields(path, payload)
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
