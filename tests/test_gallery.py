"""The HTML gallery: self-contained, escaped, robust to a missing image, and it renders in a real browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioning.reports.gallery import GalleryEntry, gallery_html, thumbnail_data_uri, write_gallery

RED, BLUE = (220, 40, 40), (50, 80, 230)


def scene(path: Path, size: tuple[int, int] = (224, 224)) -> Path:
    """A blue picture with a big red square: colours that a blank or broken page cannot show."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:] = BLUE
    pixels[size[1] // 4 : 3 * size[1] // 4, size[0] // 4 : 3 * size[0] // 4] = RED
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def entries(tmp_path) -> list[GalleryEntry]:
    return [
        GalleryEntry("a.png", scene(tmp_path / "a.png"), "a red square", ["a red square in the center", "red box"],
                     tmp_path / "reports" / "attention" / "a.png"),
        GalleryEntry("b.png", scene(tmp_path / "b.png", (640, 480)), "a <b>bold</b> & odd caption", ["x < y"]),
    ]  # fmt: skip


def test_images_are_embedded_as_small_jpeg_thumbnails(tmp_path):
    uri = thumbnail_data_uri(scene(tmp_path / "big.png", (1200, 900)))
    assert uri.startswith("data:image/jpeg;base64,")
    thumbnail = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert thumbnail.size == (320, 240)


def test_page_has_captions_references_and_relative_links(entries, tmp_path):
    page = gallery_html(entries, "Test <captions>", {"bleu_4": 0.123456}, folder=tmp_path / "reports")
    assert page.count("<figure>") == 2 and page.count("data:image/jpeg;base64,") == 2
    assert "<title>Test &lt;captions&gt;</title>" in page and "0.1235" in page
    assert "a &lt;b&gt;bold&lt;/b&gt; &amp; odd caption" in page and "<li>x &lt; y</li>" in page
    assert 'href="attention/a.png"' in page
    assert not re.search(r'src="(?!data:)', page)  # nothing outside the file is needed to show the images


def test_unreadable_image_gives_a_placeholder(tmp_path):
    page = gallery_html([GalleryEntry("gone.jpg", tmp_path / "gone.jpg", "a cat", ["a cat"])], "t")
    assert 'class="missing"' in page and "image file not found" in page and "a cat" in page


def test_written_atomically(entries, tmp_path):
    path = tmp_path / "reports" / "gallery.html"
    write_gallery(path, entries, "Gallery")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in path.parent.iterdir()] == ["gallery.html"]


def find_chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH (CI: apt-get install -y chromium)")
def test_renders_in_headless_chromium(entries, tmp_path):
    page = tmp_path / "reports" / "gallery.html"
    write_gallery(page, entries, "Gallery")
    screenshot = tmp_path / "screenshot.png"
    command = [
        find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={screenshot}", "--window-size=1200,900",
        page.as_uri(),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert screenshot.is_file(), f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    pixels = np.asarray(Image.open(screenshot).convert("RGB")).reshape(-1, 3).astype(int)
    assert len(np.unique(pixels, axis=0)) > 50  # not blank: text, boxes and pictures
    for colour in (RED, BLUE):  # the embedded pictures are displayed (JPEG: colours within a small tolerance)
        near = np.abs(pixels - colour).max(axis=1) < 30
        assert near.sum() > 5000, f"no picture in {colour} on the rendered page"


def test_counts_are_shown_as_integers_and_scores_to_four_decimals(entries):
    page = gallery_html(entries, "t", {"bleu_4": 0.123456, "generated_objects": 309, "grounding_words": np.int64(12)})
    assert "<th>bleu_4</th><td>0.1235</td>" in page
    assert "<th>generated_objects</th><td>309</td>" in page and "<th>grounding_words</th><td>12</td>" in page
