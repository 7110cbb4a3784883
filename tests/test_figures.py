"""The attention figure: layout, orientation of the maps, the no-attention baseline, atomic writing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from captioning.reports.figures import (
    attention_figure,
    attention_grid,
    build_attention_figure,
    figure_name,
    figure_pixels,
    panel_grid,
    upsample,
    write_attention_figures,
)


@pytest.fixture
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))


def softmax_rows(rows: int, regions: int, seed: int = 0) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(rows, regions))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def drawn_panels(figure) -> int:
    return sum(1 for ax in figure.axes if ax.images)


def test_one_panel_per_word_plus_the_image(image):
    figure = build_attention_figure(image, ["a", "red", "circle"], softmax_rows(3, 49))
    assert drawn_panels(figure) == 4
    assert [ax.get_title() for ax in figure.axes if ax.images] == ["image", "a", "red", "circle"]
    assert all(len(ax.images) == 2 for ax in figure.axes[1:4])  # the image and its attention veil


def test_long_captions_wrap_into_rows():
    assert panel_grid(1) == (1, 1) and panel_grid(4) == (1, 4) and panel_grid(12) == (3, 5)
    assert figure_pixels(12)[0] == figure_pixels(5)[0] and figure_pixels(12)[1] == 3 * figure_pixels(5)[1]


def test_no_spatial_attention_draws_the_image_with_its_caption(image):
    figure = build_attention_figure(image, ["a", "red", "circle"], np.ones((3, 1)))
    assert drawn_panels(figure) == 1 and figure.axes[0].get_title() == "a red circle"
    assert attention_grid(np.ones((3, 1))) is None and attention_grid(np.ones((3, 49))) == 7
    assert attention_grid(np.ones((3, 48))) is None


def test_words_and_weights_that_disagree_give_the_caption_only(image, caplog):
    figure = build_attention_figure(image, ["a", "red"], softmax_rows(3, 4))
    assert drawn_panels(figure) == 1 and "2 words but 3 attention maps" in caplog.text


def test_empty_caption(image):
    figure = build_attention_figure(image, [], np.zeros((0, 49)))
    assert drawn_panels(figure) == 1 and figure.axes[0].get_title() == "(empty caption)"


def test_maps_are_row_major_like_the_feature_map():
    weights = np.zeros(9)
    weights[2] = 1.0  # row 0, column 2: the top right region of a 3 x 3 grid
    attention = upsample(weights, 3, (90, 60))  # PIL size (width, height)
    assert attention.shape == (60, 90) and attention.min() >= 0
    row, column = np.unravel_index(attention.argmax(), attention.shape)
    assert row < 20 and column > 60
    assert attention[50, 10] < 0.05  # smooth, and near zero far away


def test_writes_a_png_of_the_expected_size_atomically(image, tmp_path):
    path = tmp_path / "figure.png"
    attention_figure(image, ["a", "red", "circle", "at", "the", "top"], softmax_rows(6, 4), path)
    with Image.open(path) as written:
        assert written.format == "PNG" and written.size == figure_pixels(7)
        pixels = np.asarray(written.convert("L"))
    assert pixels.std() > 10  # not blank
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]


def test_write_attention_figures_replaces_the_folder_and_skips_unreadable_images(image, tmp_path):
    image.save(tmp_path / "scene.png")
    folder = tmp_path / "attention"
    folder.mkdir()
    (folder / "stale.png").write_bytes(b"old")
    written = write_attention_figures(
        folder,
        ["sub/scene.png", "gone.jpg"],
        [tmp_path / "scene.png", tmp_path / "gone.jpg"],
        ["a red circle", "a square"],
        [softmax_rows(3, 49), softmax_rows(2, 49)],
    )
    assert written == {"sub/scene.png": folder / "sub__scene.png"}
    assert sorted(p.name for p in folder.iterdir()) == ["sub__scene.png"]


def test_figure_names():
    assert figure_name("scene_000001.png") == "scene_000001.png"
    assert figure_name("val2014/COCO_val2014_42.jpg") == "val2014__COCO_val2014_42.png"
