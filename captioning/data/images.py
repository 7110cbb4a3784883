"""Opening images the same way everywhere (features stage and the caption command).

Policy: EXIF orientation is applied (the photo as people see it); grayscale, CMYK, palette and
16-bit images become 8-bit RGB; transparent pixels are composited on white; an animated image
gives its first frame. Images larger than MAX_PIXELS are refused before decoding.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from captioning.errors import CaptioningError

MAX_PIXELS = 50_000_000
_STUBS = {"BUFR", "GRIB", "HDF5", "WMF", "MPEG"}  # formats Pillow only identifies, never decodes
# Names the dataset readers take for images: every extension of a format Pillow decodes (.jpg, .png,
# .webp, .bmp, .tif, .gif, ...). The file is decoded by its content whatever its name says, here and
# in the caption command.
IMAGE_EXTENSIONS = tuple(
    sorted(ext for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN and kind not in _STUBS)
)


class BadImageError(CaptioningError):
    """An image file that cannot be used: missing, truncated, not an image, or too large."""


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (or 32-bit integer) grayscale: scale to 8 bits instead of clipping at 255.
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_local(argument: str) -> Path:
    """A command-line image argument as a path; a URL is refused by name (Path would mangle `//`)."""
    if _URL.match(argument):
        raise BadImageError(f"{argument}: URLs are not supported; download the image and give its file")
    return Path(argument)


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image file to an 8-bit RGB PIL image, or raise BadImageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: image file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own bomb warning; we apply our own limit below
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise BadImageError(f"{path}: {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit")
                image.seek(0)
                image.load()
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except BadImageError:
        raise
    except Image.DecompressionBombError as error:  # PIL's own hard limit, hit in Image.open
        raise BadImageError(f"{path}: over the {MAX_PIXELS:,}-pixel limit ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(f"{path}: cannot decode image ({error})") from None


def resize_to_array(image: Image.Image, size: int) -> np.ndarray:
    """Resize to size x size (bilinear, antialiased) and return (3, size, size) uint8."""
    resized = image.resize((size, size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))
