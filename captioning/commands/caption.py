"""`python -m captioning caption IMAGE [IMAGE ...]`: caption new images with a trained model.

The model file records the recipe of the features it was trained on; the same frozen ResNet is
rebuilt from it and checked against the recorded fingerprint, and images are opened and resized
exactly as the features stage does (EXIF orientation, RGB, image_size x image_size), so a new image
reaches the decoder as the training images did. Prints `IMAGE<TAB>caption` per image; an image that
cannot be read, or whose attention figure cannot be written, is reported on stderr in one line and the
others are still captioned (exit status 1 at the end).

--attention OUT.png draws the Show, Attend and Tell figure: to OUT.png for one image, and to
OUT_1.png, OUT_2.png, ... (numbered by the image's position on the command line) for several.
--attention DIR, an existing folder, puts one figure per image in it, named after the image: DIR/photo.png
for photo.jpg (DIR/photo_3.png, by position, where two images on the command line share a name).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from captioning.checkpoint import load_model
from captioning.data.images import BadImageError, check_local, load_rgb, resize_to_array
from captioning.device import autocast, resolve_precision, select_device
from captioning.errors import CaptioningError
from captioning.features.encoder import FEATURE_DIM, FrozenEncoder, build_encoder
from captioning.features.extract import encoder_fingerprint
from captioning.features.recipe import FeatureRecipe
from captioning.model import CaptionDecoder
from captioning.model.decoding import beam_search
from captioning.text.vocabulary import Vocabulary

log = logging.getLogger(__name__)

BATCH_SIZE = 16
PROGRESS_FROM = 10  # show a progress bar from this many images on


@dataclass
class Caption:
    words: list[str]  # the caption, as printed
    tokens: list[str]  # every generated token, aligned with the weights (specials included)
    weights: np.ndarray  # (len(tokens), R)


class Captioner:
    """A trained decoder with the encoder and image policy of the features it was trained on."""

    def __init__(
        self,
        decoder: CaptionDecoder,
        vocabulary: Vocabulary,
        encoder: FrozenEncoder,
        recipe: FeatureRecipe,
        device: torch.device,
    ):
        self.decoder, self.vocabulary, self.recipe, self.device = decoder.to(device), vocabulary, recipe, device
        self.encoder = encoder.to(device).to(memory_format=torch.channels_last)
        self.image_size = recipe.image_size
        self.precision = resolve_precision(recipe.precision, device)  # recorded resolved; "auto" tolerated

    @classmethod
    def load(cls, model_path: str | Path, device: torch.device | None = None) -> Captioner:
        device = device or select_device()
        decoder, payload = load_model(model_path, "cpu")
        recorded = payload.get("feature_recipe") or {}
        missing = FeatureRecipe.missing_fields(recorded)
        if missing:
            raise CaptioningError(
                f"{model_path}: the model does not record the features it was trained on (missing "
                f"{', '.join(missing)}): retrain it (dvc repro train)"
            )
        recipe = FeatureRecipe.from_dict(recorded)
        if decoder.config.feature_dim != FEATURE_DIM:
            raise CaptioningError(
                f"{model_path}: the decoder expects {decoder.config.feature_dim}-dimensional features, "
                f"the ResNet encoder gives {FEATURE_DIM}"
            )
        try:
            encoder = build_encoder(recipe.weights, recipe.seed, recipe.imagenet_variant, recipe.encoder)
        except CaptioningError as error:
            raise CaptioningError(f"{model_path}: cannot rebuild the encoder its features came from: {error}") from None
        fingerprint = encoder_fingerprint(encoder)  # on the CPU, like the features stage
        if fingerprint != recipe.encoder_fingerprint:
            raise CaptioningError(
                f"{model_path}: the encoder rebuilt from features.weights={recipe.weights!r} "
                f"(seed {recipe.seed}) has fingerprint {fingerprint}, but the model was trained on features "
                f"with fingerprint {recipe.encoder_fingerprint}: use the same weights file, or rerun the "
                "features and train stages with the new one"
            )
        return cls(decoder, Vocabulary(payload["words"]), encoder, recipe, device)

    def prepare(self, image: Image.Image) -> np.ndarray:
        """(3, image_size, image_size) uint8, the features stage's resize."""
        return resize_to_array(image, self.image_size)

    @torch.inference_mode()
    def features(self, arrays: list[np.ndarray]) -> torch.Tensor:
        """Region features (B, R, 2048) of prepared images, as the features stage stores them (float16)."""
        images = torch.from_numpy(np.stack(arrays)).to(self.device)  # (B, 3, S, S) uint8
        with autocast(self.device, self.precision):
            features = self.encoder(images)  # (B, R, 2048)
        return features.to(torch.float16)

    def caption(
        self, arrays: list[np.ndarray], beam_size: int = 5, max_len: int = 30, length_penalty: float = 1.0
    ) -> list[Caption]:
        """Caption a batch of prepared images (see prepare)."""
        vocabulary = self.vocabulary
        decoded = beam_search(
            self.decoder, self.features(arrays), vocabulary.start, vocabulary.end, beam_size, max_len, length_penalty
        )
        return [
            Caption(vocabulary.decode(tokens), [vocabulary.words[t] for t in tokens], weights)
            for tokens, weights in zip(decoded.tokens, decoded.weights)
        ]


def attention_path(template: Path, position: int, count: int) -> Path:
    """OUT.png for a single image; OUT_1.png, OUT_2.png, ... (1-based command-line position) for several."""
    if count == 1:
        return template
    suffix = template.suffix or ".png"
    return template.with_name(f"{template.stem}_{position}{suffix}")


def attention_paths(out: Path, images: list[str]) -> list[Path]:
    """Where each image's figure goes, in command-line order: in the folder `out` when it exists (named after
    the image, numbered by position where two images share a name), else by attention_path."""
    if not out.is_dir():
        return [attention_path(out, position, len(images)) for position in range(1, len(images) + 1)]
    stems = [Path(image).stem for image in images]
    return [
        out / (f"{stem}.png" if stems.count(stem) == 1 else f"{stem}_{position}.png")
        for position, stem in enumerate(stems, start=1)
    ]


def _batches(paths: list[str], size: int):
    for start in range(0, len(paths), size):
        yield list(enumerate(paths[start : start + size], start=start + 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning caption", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG, PNG, WebP, ... file of any size")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--beam", type=int, default=5, help="beam size (1 = greedy)")
    parser.add_argument("--max-len", type=int, default=30, help="at most this many words")
    parser.add_argument(
        "--attention",
        type=Path,
        metavar="OUT.png|DIR",
        help="write the attention figure here (OUT_1.png, OUT_2.png, ... for several images); "
        "an existing folder DIR gets one figure per image, DIR/<image name>.png",
    )
    args = parser.parse_args(argv)
    if args.beam < 1 or args.max_len < 1:
        parser.error("--beam and --max-len must be >= 1")
    from captioning.cli import setup_logging

    setup_logging()
    try:
        captioner = Captioner.load(args.model)
    except CaptioningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    figures = attention_paths(args.attention, args.images) if args.attention else []
    failures = 0
    with tqdm(total=len(args.images), unit="img", desc="caption", disable=len(args.images) < PROGRESS_FROM) as bar:
        for batch in _batches(args.images, BATCH_SIZE):
            ready = []  # (position, path, prepared array, display image or None)
            for position, path in batch:
                try:
                    image = load_rgb(check_local(path))
                except BadImageError as error:
                    bar.write(f"error: {error}", file=sys.stderr)
                    failures += 1
                    continue
                display = None
                if args.attention:  # keep a small copy for the figure, not the full-size image
                    from captioning.reports.figures import DISPLAY_PIXELS  # matplotlib only when a figure is asked for

                    display = image.copy()
                    display.thumbnail((DISPLAY_PIXELS, DISPLAY_PIXELS))
                ready.append((position, path, captioner.prepare(image), display))
            captions = captioner.caption([r[2] for r in ready], args.beam, args.max_len) if ready else []
            for (position, path, _, display), caption in zip(ready, captions):
                bar.write(f"{path}\t{' '.join(caption.words)}", file=sys.stdout)
                if display is not None:
                    from captioning.reports.figures import attention_figure

                    out = figures[position - 1]
                    try:
                        attention_figure(display, caption.tokens, caption.weights, out)
                    except CaptioningError as error:  # e.g. a read-only folder, a folder named OUT.png
                        bar.write(f"error: {error}", file=sys.stderr)
                        failures += 1
                        continue
                    except OSError as error:
                        bar.write(f"error: {out}: cannot write the attention figure ({error})", file=sys.stderr)
                        failures += 1
                        continue
                    log.info("attention figure: %s", out)
            bar.update(len(batch))
    return 1 if failures else 0
