"""captioning/data/scenes.py: generated scenes are reproducible and their captions say what is drawn."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from captioning.data.scenes import (
    COLORS,
    SceneObject,
    captions_for,
    describe,
    generate_scenes,
    parse_caption,
    position_name,
)
from captioning.text.tokenizer import tokenize

SIZE_OF = {"large": "large", "big": "large", "small": "small", "little": "small"}


def generate(folder, seed=0, **overrides):
    options = dict(seed=seed, num_train=4, num_val=2, num_test=2, image_size=48, captions_per_image=5)
    options.update(overrides)
    return generate_scenes(folder, **options)


def as_json(table):
    return [r.to_json() for r in table.images]


def scene_facts(objects: list[dict]) -> list[tuple]:
    return sorted((o["size"], o["color"], o["shape"], o["position"]) for o in objects)


def test_the_same_seed_gives_the_same_table_and_png_bytes(tmp_path):
    first, second = generate(tmp_path / "a", seed=3), generate(tmp_path / "b", seed=3)
    assert as_json(first) == as_json(second)
    for record in first.images:
        assert (tmp_path / "a" / record.image).read_bytes() == (tmp_path / "b" / record.image).read_bytes()


def test_different_seeds_give_different_scenes(tmp_path):
    first, second = generate(tmp_path / "a", seed=0), generate(tmp_path / "b", seed=1)
    assert as_json(first) != as_json(second)
    differing = [
        r.image
        for r in first.images
        if (tmp_path / "a" / r.image).read_bytes() != (tmp_path / "b" / r.image).read_bytes()
    ]
    assert len(differing) == len(first.images)


def test_split_sizes_and_names_are_as_asked(tmp_path):
    table = generate(tmp_path, num_train=3, num_val=2, num_test=1)
    assert [r.split for r in table.images] == ["train"] * 3 + ["val"] * 2 + ["test"]
    assert [r.image for r in table.images] == [f"scene_{i:06d}.png" for i in range(6)]
    assert table.dataset == "scenes" and table.image_root == tmp_path
    for record in table.images:
        with Image.open(tmp_path / record.image) as image:
            assert image.size == (48, 48) and image.mode == "RGB"


def test_captions_are_distinct_and_parse_back_to_exactly_the_drawn_objects(tmp_path):
    table = generate(tmp_path, num_train=12, min_objects=1, max_objects=3, captions_per_image=5)
    for record in table.images:
        assert 1 <= len(record.objects) <= 3
        assert len(record.captions) == 5 and len(set(record.captions)) == 5
        expected = scene_facts(record.objects)
        for caption in record.captions:
            assert scene_facts(parse_caption(tokenize(caption))) == expected, caption


def test_one_object_scenes_repeat_captions_only_when_wordings_run_out(tmp_path):
    # one object has 5 prefixes x 2 wordings = 10 distinct captions
    table = generate(tmp_path, num_train=3, num_val=1, num_test=1, max_objects=1, captions_per_image=12)
    for record in table.images:
        assert len(record.captions) == 12 and len(set(record.captions)) == 10


def test_objects_sit_in_distinct_cells_and_are_drawn_in_their_colour(tmp_path):
    table = generate(tmp_path, num_train=8, image_size=96, min_objects=2, max_objects=4)
    for record in table.images:
        cells = [(o["row"], o["column"]) for o in record.objects]
        assert len(set(cells)) == len(cells)
        pixels = np.asarray(Image.open(tmp_path / record.image)).astype(int)
        for obj in record.objects:
            x0, y0, x1, y1 = obj["box"]
            assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96
            assert obj["position"] == position_name(obj["row"], obj["column"])
            centre = pixels[(y0 + y1) // 2, (x0 + x1) // 2]
            assert np.abs(centre - np.array(COLORS[obj["color"]])).max() <= 20, (record.image, obj)


def test_describe_gives_the_canonical_wording_without_rng():
    objects = [
        SceneObject("large", "red", "circle", "top", "left", (0, 0, 10, 10)),
        SceneObject("small", "blue", "square", "middle", "center", (20, 20, 25, 25)),
    ]
    assert describe(objects) == "a large red circle at the top left and a small blue square in the center"
    captions = captions_for(objects, 4, random.Random(0))
    assert captions[0] == describe(objects) and len(set(captions)) == 4


@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a little blue square in the top right corner", [("small", "blue", "square", "top right")]),
        ("we see a big green triangle at the bottom", [("large", "green", "triangle", "bottom")]),
        ("a red circle", [(None, "red", "circle", None)]),
        ("a cat on a mat", []),
        (
            "a small white circle on the left and a large purple square in the middle",
            [("small", "white", "circle", "left"), ("large", "purple", "square", "center")],
        ),
    ],
)
def test_parse_caption(caption, expected):
    parsed = [(o["size"], o["color"], o["shape"], o["position"]) for o in parse_caption(tokenize(caption))]
    assert parsed == expected


def test_position_names():
    assert position_name("top", "left") == "top left"
    assert position_name("top", "center") == "top"
    assert position_name("middle", "right") == "right"
    assert position_name("middle", "center") == "center"
