"""The Show, Attend and Tell figure: the image, then one panel per generated word with its attention.

Each word's weights over the g x g regions (g = sqrt(R), 7 for 224-pixel features) are upsampled
smoothly to the image and drawn over it as a veil: clear where the model looked, dark elsewhere
(scaled per word, so the most-attended spot of each panel is fully clear). A model without spatial
attention (weights (T, 1)) gets the image with its caption only.

Drawn with matplotlib's object API on the Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from captioning.data.images import BadImageError, load_rgb
from captioning.io import atomic_path

log = logging.getLogger(__name__)

PANEL_INCHES = 2.0  # each panel is PANEL_INCHES square (plus room for its title)
TITLE_INCHES = 0.3
DPI = 100
MAX_COLUMNS = 5
SHADE = 0.85  # opacity of the black veil over the regions with the least attention
DISPLAY_PIXELS = 448  # images are shrunk to at most this many pixels a side before drawing


def attention_grid(weights: np.ndarray) -> int | None:
    """g when the weights (T, R) cover a g x g grid of regions (g >= 2), else None."""
    if weights.ndim != 2:
        return None
    side = math.isqrt(weights.shape[1])
    return side if side >= 2 and side * side == weights.shape[1] else None


def panel_grid(panels: int) -> tuple[int, int]:
    """(rows, columns) of the figure's panels."""
    columns = min(panels, MAX_COLUMNS)
    return math.ceil(panels / columns), columns


def figure_pixels(panels: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that attention_figure writes for this many panels."""
    rows, columns = panel_grid(panels)
    return round(columns * PANEL_INCHES * DPI), round(rows * (PANEL_INCHES + TITLE_INCHES) * DPI)


def inches(pixels: int) -> float:
    """pixels / DPI, raised by its last bit where the division rounds down (2.3 in x 100 dpi = 229.99999999999997):
    matplotlib 3.10 truncates the product to 229 pixels, later releases round it to 230."""
    size = pixels / DPI
    return size if size * DPI >= pixels else math.nextafter(size, math.inf)


def upsample(weights: np.ndarray, side: int, size: tuple[int, int]) -> np.ndarray:
    """One word's weights (R,) as a smooth (height, width) map: the g x g grid resized bicubically."""
    grid = np.asarray(weights, dtype=np.float32).reshape(side, side)  # (g, g), row-major like the feature map
    smooth = np.asarray(Image.fromarray(grid, mode="F").resize(size, Image.BICUBIC))
    return np.clip(smooth, 0.0, None)  # bicubic overshoots a little below zero


def build_attention_figure(image: Image.Image, words: list[str], weights: np.ndarray) -> Figure:
    """The figure itself (for tests and notebooks); attention_figure writes it to a file."""
    display = image.convert("RGB")
    display.thumbnail((DISPLAY_PIXELS, DISPLAY_PIXELS))
    pixels = np.asarray(display)
    weights = np.asarray(weights, dtype=np.float32)
    side = attention_grid(weights) if words else None
    if side is not None and weights.shape[0] != len(words):
        log.warning("%d words but %d attention maps: drawing the caption only", len(words), weights.shape[0])
        side = None
    panels = 1 + (len(words) if side is not None else 0)
    rows, columns = panel_grid(panels)
    width, height = figure_pixels(panels)
    figure = Figure(figsize=(inches(width), inches(height)), dpi=DPI)
    figure.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=0.01,
        top=1 - TITLE_INCHES / (height / DPI),
        wspace=0.04,
        hspace=TITLE_INCHES / PANEL_INCHES,
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    caption = " ".join(words) if words else "(empty caption)"
    axes[0].imshow(pixels)
    axes[0].set_title(caption if side is None else "image", fontsize=9, wrap=True)
    if side is None:
        return figure
    for ax, word, word_weights in zip(axes[1:], words, weights):
        attention = upsample(word_weights, side, display.size)
        shade = np.zeros((*attention.shape, 4), dtype=np.float32)  # black, opaque where the model did not look
        shade[..., 3] = SHADE * (1.0 - attention / max(float(attention.max()), 1e-8))
        ax.imshow(pixels)
        ax.imshow(shade)
        ax.set_title(word, fontsize=11)
    return figure


def attention_figure(image: Image.Image, words: list[str], weights: np.ndarray, path: str | Path) -> None:
    """Write the image and one attention panel per word (weights (len(words), R)) to a PNG, atomically."""
    figure = build_attention_figure(image, words, weights)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=DPI)


def figure_name(image_name: str) -> str:
    """The PNG name of an image's attention figure: folders flattened, e.g. 'val/x.jpg' -> 'val__x.png'."""
    return str(Path(image_name).with_suffix(".png")).replace("\\", "/").replace("/", "__")


def write_attention_figures(
    folder: str | Path, names: list[str], paths: list[Path], captions: list[str], weights: list[np.ndarray]
) -> dict[str, str]:
    """Replace `folder` with one figure per image; returns {image name: its figure's path}.

    An image that cannot be read any more is left out with a warning.
    """
    written = {}
    with atomic_path(folder) as temporary:
        temporary.mkdir()
        for name, path, caption, image_weights in zip(names, paths, captions, weights):
            try:
                image = load_rgb(path)
            except BadImageError as error:
                log.warning("attention figure left out: %s", error)
                continue
            attention_figure(image, caption.split(), image_weights, temporary / figure_name(name))
            written[name] = Path(folder) / figure_name(name)
    return written
