"""Scene-specific metrics: does the model look at what it names, and does it name what is there?

Only the generated scenes have them, since only there is every object's box and words known.

`grounding_scores`: for each generated colour or shape word, is the most-attended cell on an object
with that attribute, and how much attention falls on such objects (against the chance levels).
`object_accuracy`: the objects a caption names, matched against the objects in the image.

A metric whose denominator is zero (no attribute word, no generated object, ...) is left out of the
returned dict rather than set to None, so the dict can be written as metrics as it is.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from captioning.data.scenes import COLORS, SHAPES, parse_caption


def cells_touching_boxes(boxes: list[list[float]], grid: int, image_size: int) -> np.ndarray:
    """Which of the grid x grid cells (row-major) intersect at least one box [x0, y0, x1, y1]: (grid*grid,) bool.

    Cells and boxes are closed rectangles: cell (row, col) is [col*s, (col+1)*s] x [row*s, (row+1)*s]
    with s = image_size / grid, so a cell that only shares an edge with a box counts as touching it.
    """
    edges = np.arange(grid) * (image_size / grid)  # (grid,) left/top edge of each column/row
    mask = np.zeros((grid, grid), dtype=bool)  # (rows, cols)
    cell = image_size / grid
    for x0, y0, x1, y1 in boxes:
        columns = (edges <= x1) & (edges + cell >= x0)  # (grid,)
        rows = (edges <= y1) & (edges + cell >= y0)  # (grid,)
        mask |= rows[:, None] & columns[None, :]
    return mask.reshape(-1)


def _attribute_boxes(word: str, objects: list[dict]) -> list[list[float]]:
    key = "color" if word in COLORS else "shape"
    return [obj["box"] for obj in objects if obj[key] == word]


def grounding_scores(
    captions_tokens: list[list[str]],
    weights: list[np.ndarray],
    objects: list[list[dict]],
    image_size: int = 224,
) -> dict:
    """Attention grounding of colour and shape words, micro-averaged over all such words of all images.

    `captions_tokens[i]` are image i's generated words, one per row of `weights[i]` (len(tokens), R),
    R = grid * grid regions in row-major order over the image_size x image_size image; `objects[i]`
    are its scene objects (dicts with 'color', 'shape', 'box').

    A counted word is any token in scenes.COLORS or scenes.SHAPES; its "right boxes" are the boxes of the
    image's objects with that colour (or shape), and its right cells those touching a right box (see
    `cells_touching_boxes`). A word naming an attribute no object of the image has scores a miss, mass 0.

    Returns
      grounding_hit: fraction of counted words whose most-attended cell (first on ties) is a right cell;
      grounding_mass: mean attention weight summed over the right cells;
      grounding_hit_chance: the same for a uniformly random most-attended cell = mean fraction of right cells;
      grounding_mass_chance: the same for uniform attention (equal to grounding_hit_chance by construction);
      grounding_words: the number of counted words;
      grounding_hit_present, grounding_words_present: the hit rate and the count of the counted words whose
        attribute some object of the image has, i.e. where the caption is right, whether attention is (this
        separates looking at the wrong place from naming the wrong thing).
    Without spatial attention (R == 1, the CNN-RNN baseline) there is nothing to ground: returns {}.
    With no counted word, returns only {"grounding_words": 0}.
    Raises ValueError when the lists differ in length, a caption and its weights differ in length, or R
    is not a square number.
    """
    if not (len(captions_tokens) == len(weights) == len(objects)):
        raise ValueError(
            f"grounding_scores: {len(captions_tokens)} captions, {len(weights)} weight arrays and "
            f"{len(objects)} object lists; pass one of each per image"
        )
    hits, masses, chances, present = [], [], [], []
    for index, (tokens, attention, scene) in enumerate(zip(captions_tokens, weights, objects)):
        attention = np.asarray(attention, dtype=np.float64)
        if attention.ndim != 2 or attention.shape[0] != len(tokens):
            raise ValueError(
                f"grounding_scores: image {index} has {len(tokens)} words but attention of shape "
                f"{attention.shape}; expected ({len(tokens)}, regions), one row per generated word"
            )
        regions = attention.shape[1]
        if regions == 1:
            return {}
        grid = math.isqrt(regions)
        if grid * grid != regions:
            raise ValueError(f"grounding_scores: image {index} has {regions} attention regions, not a square grid")
        for word, row in zip(tokens, attention):
            if word not in COLORS and word not in SHAPES:
                continue
            right = cells_touching_boxes(_attribute_boxes(word, scene), grid, image_size)  # (R,) bool
            hits.append(bool(right[int(np.argmax(row))]))
            masses.append(float(row[right].sum()))
            chances.append(float(right.mean()))
            present.append(bool(right.any()))
    if not hits:
        return {"grounding_words": 0}
    chance = float(np.mean(chances))
    scores = {
        "grounding_hit": float(np.mean(hits)),
        "grounding_mass": float(np.mean(masses)),
        "grounding_hit_chance": chance,
        "grounding_mass_chance": chance,
        "grounding_words": len(hits),
        "grounding_words_present": sum(present),
    }
    if any(present):
        scores["grounding_hit_present"] = float(np.mean([hit for hit, named in zip(hits, present) if named]))
    return scores


def _matched(generated: list[tuple], true: list[tuple]) -> int:
    """How many generated keys find a true key, each true key used at most once."""
    return sum((Counter(generated) & Counter(true)).values())


def object_accuracy(captions_tokens: list[list[str]], objects: list[list[dict]]) -> dict:
    """The objects each generated caption names (scenes.parse_caption) against the image's objects.

    Matching is one-to-one per image: an object of the image is matched by at most one generated object,
    so naming it twice counts the second as wrong. Sizes are ignored; a generated object without a
    position (caption cut off) never matches on position.

    Returns, over all images
      position_accuracy: fraction of generated objects whose colour, shape and position match an object;
      attribute_accuracy: fraction of generated objects whose colour and shape match an object;
      objects_named_ratio: generated objects / true objects (< 1: objects missed, > 1: hallucinated);
      generated_objects, true_objects: the two counts.
    A ratio whose denominator is zero is left out.
    """
    if len(captions_tokens) != len(objects):
        raise ValueError(
            f"object_accuracy: {len(captions_tokens)} captions but {len(objects)} object lists; pass one per image"
        )
    generated_count = true_count = position_matches = attribute_matches = 0
    for tokens, scene in zip(captions_tokens, objects):
        named = parse_caption(tokens)
        generated_count += len(named)
        true_count += len(scene)
        position_matches += _matched(
            [(o["color"], o["shape"], o["position"]) for o in named],
            [(o["color"], o["shape"], o["position"]) for o in scene],
        )
        attribute_matches += _matched(
            [(o["color"], o["shape"]) for o in named], [(o["color"], o["shape"]) for o in scene]
        )
    metrics = {"generated_objects": generated_count, "true_objects": true_count}
    if generated_count:
        metrics["position_accuracy"] = position_matches / generated_count
        metrics["attribute_accuracy"] = attribute_matches / generated_count
    if true_count:
        metrics["objects_named_ratio"] = generated_count / true_count
    return metrics
