"""What the demo page shows for one image, without the web framework (so tests call it directly).

An uploaded file is opened by the features stage's own policy (captioning.data.images.load_rgb:
EXIF orientation applied, CMYK, 16-bit, palette and transparent images made 8-bit RGB, over
MAX_PIXELS refused before decoding) and resized by the Captioner, so the page's caption is the
`caption` command's. A file that cannot be used raises BadImageError with a one-line message that
names the file as the user called it; the page shows that line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from captioning.commands.caption import Captioner
from captioning.data.images import MAX_PIXELS, BadImageError, load_rgb
from captioning.data.table import read_table
from captioning.demo.beams import ranked_beams
from captioning.errors import CaptioningError
from captioning.features.encoder import display_name
from captioning.features.recipe import RECORDED_BEFORE
from captioning.reports.figures import DISPLAY_PIXELS, SHADE, attention_grid, upsample

log = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112
SHOWN_BEAMS = 3


@dataclass
class RankedCaption:
    words: list[str]
    log_probability: float
    score: float  # log_probability / length ** length_penalty, what ranks the beams


@dataclass
class Explanation:
    words: list[str]  # the caption (the best beam)
    tokens: list[str]  # every generated word, each with an attention map (specials kept, e.g. <unk>)
    weights: np.ndarray  # (len(tokens), R) attention over the R regions
    beams: list[RankedCaption]  # the best few beams, best first
    display: Image.Image  # the image as the model saw it (upright RGB), at display size
    notes: list[str]  # what the conversion to 8-bit RGB did, e.g. "CMYK converted to RGB"
    seconds: float  # preprocessing, encoder, beam search


class Explainer:
    """A Captioner with the beam search settings of the page."""

    def __init__(self, captioner: Captioner, beam_size: int = 5, max_len: int = 30, length_penalty: float = 1.0):
        self.captioner, self.beam_size, self.max_len = captioner, beam_size, max_len
        self.length_penalty = length_penalty

    def explain(self, image: Image.Image, notes: list[str] | None = None) -> Explanation:
        """Caption an 8-bit RGB image (as load_rgb gives) and keep what the page draws."""
        started = time.perf_counter()
        captioner, vocabulary = self.captioner, self.captioner.vocabulary
        features = captioner.features([captioner.prepare(image)])
        beams = ranked_beams(
            captioner.decoder,
            features,
            vocabulary.start,
            vocabulary.end,
            self.beam_size,
            self.max_len,
            self.length_penalty,
        )
        seconds = time.perf_counter() - started
        best = beams[0]
        ranked = [
            RankedCaption(vocabulary.decode(beam.tokens), beam.log_probability, beam.score)
            for beam in beams[:SHOWN_BEAMS]
            if np.isfinite(beam.score)  # a tiny vocabulary can leave beams that were never expanded
        ]
        return Explanation(
            words=vocabulary.decode(best.tokens),
            tokens=[vocabulary.words[token] for token in best.tokens],
            weights=best.weights,
            beams=ranked,
            display=display_image(image),
            notes=list(notes or []),
            seconds=seconds,
        )

    def explain_file(self, path: str | Path, name: str | None = None) -> Explanation:
        image, notes = read_image(path, name)
        return self.explain(image, notes)


def display_image(image: Image.Image, side: int = DISPLAY_PIXELS) -> Image.Image:
    """The image scaled to fit side x side (small ones enlarged, so the regions show); a photo in a few ms.

    reducing_gap first shrinks a large photo by a whole factor (box averaging), then resamples: a
    12-megapixel photo takes ~15 ms instead of ~200 ms, with no visible difference at this size.
    """
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BICUBIC, reducing_gap=1.5 if scale < 1 else None)


def read_image(path: str | Path | None, name: str | None = None) -> tuple[Image.Image, list[str]]:
    """The uploaded file as load_rgb opens it, and notes on its conversion; BadImageError names it `name`."""
    if path is None:
        raise BadImageError("no file: drop an image on the page, or pick a test image")
    path = Path(path)
    name = name or path.name
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise BadImageError(f"{path}: the file is empty (0 bytes)")
        image = load_rgb(path)
        return image, conversion_notes(path)
    except BadImageError as error:
        # The upload's temporary path means nothing to the user: name the file as they did.
        raise BadImageError(str(error).replace(str(path), name)) from None


def conversion_notes(path: str | Path) -> list[str]:
    """What load_rgb did to reach upright 8-bit RGB, read from the file's header (no decoding)."""
    with Image.open(path) as image:
        mode, info, frames = image.mode, image.info, getattr(image, "n_frames", 1)
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    notes = []
    if orientation not in (None, 1):
        notes.append(f"turned upright as its EXIF orientation ({orientation}) says")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode.startswith("I"):
        notes.append(f"{'16' if mode.startswith('I;16') else '32'}-bit values scaled to 8 bits")
    elif mode in ("RGBA", "LA", "PA") or "transparency" in info:
        notes.append("transparent pixels put on white")
    elif mode in ("L", "1"):
        notes.append("grayscale repeated in the three colour channels")
    elif mode == "P":
        notes.append("palette colours converted to RGB")
    if frames > 1:
        notes.append(f"first frame of {frames}")
    return notes


def attention_overlay(display: Image.Image, weights: np.ndarray) -> Image.Image:
    """One word's attention (R,) over the image, in the style of captioning.reports.figures: dark where it did not
    look."""
    side = attention_grid(np.asarray(weights).reshape(1, -1))
    if side is None:  # no spatial attention (e.g. the global-vector baseline): the image alone
        return display
    attention = upsample(weights, side, display.size)  # (H, W)
    veil = SHADE * (1.0 - attention / max(float(attention.max()), 1e-8))  # 0 where it looked most
    pixels = np.asarray(display, dtype=np.float32) * (1.0 - veil[..., None])
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def split_images(
    table_path: str | Path | None, split: str = "test", data_root: str | Path | None = None
) -> dict[str, Path]:
    """The caption table's images of a split, {name: path}; none when there is no table (a model used elsewhere).
    `data_root`: params.yaml's data.root, where a real dataset's images are on this machine."""
    if table_path is None or not Path(table_path).is_file():
        return {}
    try:
        table = read_table(table_path, data_root)
        return {record.image: table.image_path(record) for record in table.split(split)}
    except CaptioningError as error:
        log.warning("no test images to pick from: %s", error)
        return {}


def table_dataset(table_path: str | Path | None) -> str | None:
    if table_path is None or not Path(table_path).is_file():
        return None
    try:
        return read_table(table_path).dataset or None
    except CaptioningError:
        return None


def provenance(model_path: str | Path, payload: dict, table_path: str | Path | None = None) -> list[tuple[str, str]]:
    """(what, value) rows describing where the model comes from, as recorded in its file."""
    recipe = payload.get("feature_recipe") or {}
    config = payload.get("config") or {}
    dataset = payload.get("dataset") or recipe.get("dataset")
    if dataset is None:
        from_table = table_dataset(table_path)
        dataset = "not recorded in the model file" + (f" ({table_path} says {from_table})" if from_table else "")
    validation = payload.get("validation") or {}
    scores = ", ".join(f"{key} {value:.4f}" for key, value in validation.items() if isinstance(value, (int, float)))
    weights = str(recipe.get("weights", "?"))
    network = display_name(str(recipe.get("encoder", RECORDED_BEFORE["encoder"])))
    if weights == "none":
        encoder = f"{network} with seeded random weights (features.weights none, seed {recipe.get('seed', '?')})"
    elif weights == "imagenet":
        encoder = f"{network}, ImageNet weights {recipe.get('imagenet_variant', '?')}"
    else:
        encoder = f"{network}, weights from {weights}"
    size = recipe.get("image_size")
    if size:
        encoder += f"; {size} x {size} pixels, {int(size) // 32} x {int(size) // 32} regions"
    encoder += f"; {recipe.get('precision', '?')}; fingerprint {recipe.get('encoder_fingerprint', '?')}"
    decoder = (
        f"{config.get('attention', '?')} attention, LSTM {config.get('decoder_dim', '?')}, "
        f"attention {config.get('attention_dim', '?')}, embeddings {config.get('embed_dim', '?')}, "
        f"{len(payload.get('words') or [])}-word vocabulary" + (", deep output" if config.get("deep_output") else "")
    )
    return [
        ("model file", str(model_path)),
        ("dataset", str(dataset)),
        ("epoch", str(payload.get("epoch", "not recorded"))),
        ("validation", scores or "not recorded"),
        ("encoder", encoder),
        ("decoder", decoder),
        ("largest image", f"{MAX_PIXELS:,} pixels"),
    ]
