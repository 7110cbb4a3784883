"""An HTML gallery of test images with the generated caption and the references, one self-contained file.

Images are embedded as base64 JPEG thumbnails, so the page displays when opened from the file system,
from DVC's cache or from a CI artifact, wherever its images are. An image's attention figure, when
there is one, is linked relatively (e.g. `attention/scene_002200.png` beside `gallery.html`).
"""

from __future__ import annotations

import base64
import html
import io
import logging
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from captioning.data.images import BadImageError, load_rgb
from captioning.io import atomic_path

log = logging.getLogger(__name__)

THUMBNAIL_PIXELS = 320
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; background: #fafafa; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1em; }
figure { margin: 0; padding: 0.8em; background: #fff; border: 1px solid #ddd; border-radius: 6px; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
.generated { font-weight: 600; margin: 0.6em 0 0.3em; }
ol { margin: 0; padding-left: 1.4em; color: #555; font-size: 0.9em; }
.name { color: #888; font-size: 0.8em; }
.missing { padding: 2em; text-align: center; color: #a00; background: #fee; }
table { border-collapse: collapse; margin-bottom: 1em; }
td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }
"""


@dataclass
class GalleryEntry:
    name: str  # the image's name in the caption table
    path: Path  # where its file is
    caption: str  # the generated caption
    references: list[str]
    attention: Path | None = None  # its attention figure, linked relatively from the gallery


def thumbnail_data_uri(path: Path, pixels: int = THUMBNAIL_PIXELS) -> str:
    """The image as a `data:image/jpeg;base64,...` URI, shrunk to at most `pixels` a side."""
    image = load_rgb(path)
    image.thumbnail((pixels, pixels))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _entry_html(entry: GalleryEntry, folder: Path) -> str:
    link = html.escape(Path(os.path.relpath(entry.attention, folder)).as_posix()) if entry.attention else None
    try:
        picture = f'<img src="{thumbnail_data_uri(entry.path)}" alt="{html.escape(entry.name)}">'
    except BadImageError as error:
        log.warning("gallery: %s", error)
        picture = f'<div class="missing">image not readable: {html.escape(str(error))}</div>'
    if link:
        picture = f'<a href="{link}" title="attention figure">{picture}</a>'
    references = "".join(f"<li>{html.escape(reference)}</li>" for reference in entry.references)
    attention = f' · <a href="{link}">attention</a>' if link else ""
    return (
        f"<figure>{picture}<figcaption>"
        f'<p class="generated">{html.escape(entry.caption) or "<em>(empty caption)</em>"}</p>'
        f"<ol>{references}</ol>"
        f'<p class="name">{html.escape(entry.name)}{attention}</p>'
        "</figcaption></figure>"
    )


def _metric(value: float) -> str:
    """Scores to four decimals; counts (generated_objects, grounding_words, ...) as the integers they are."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    return f"{value:.4f}"


def gallery_html(
    entries: list[GalleryEntry], title: str, metrics: dict[str, float] | None = None, folder: Path = Path(".")
) -> str:
    """The page; attention figures are linked relative to `folder`, where the page will be."""
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_metric(v)}</td></tr>" for k, v in (metrics or {}).items())
    summary = f"<table>{rows}</table>" if rows else ""
    cards = "\n".join(_entry_html(entry, folder) for entry in entries)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>"
        f"<h1>{html.escape(title)}</h1>{summary}"
        "<p>Generated caption in bold, the references below it.</p>"
        f'<div class="grid">\n{cards}\n</div></body></html>\n'
    )


def write_gallery(
    path: str | Path, entries: list[GalleryEntry], title: str = "Captions", metrics: dict[str, float] | None = None
) -> None:
    """Write the gallery of `entries` (in that order) to `path`, atomically."""
    document = gallery_html(entries, title, metrics, Path(path).parent)
    with atomic_path(path) as temporary:
        temporary.write_text(document, encoding="utf-8")
