"""The embedded default dataset: generated scenes of coloured shapes at named positions.

Each image is a plain background with a few shapes, one per cell of a 3 x 3 grid, and several
paraphrased captions that name every shape's size, colour, kind and position, e.g.
"a large red circle at the top left and a small blue square in the center". Everything follows
from the seed, and each object's box and words are kept so attention can be checked against them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from captioning.data.table import CaptionTable, ImageRecord
from captioning.io import atomic_path
from captioning.text.tokenizer import tokenize

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 220, 40),
    "purple": (150, 50, 190),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"large": ("large", "big"), "small": ("small", "little")}
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "center", "right")
# Two ways to say each grid cell; the first is the canonical one.
POSITION_PHRASES = {
    ("top", "left"): ("at the top left", "in the top left corner"),
    ("top", "center"): ("at the top", "at the top center"),
    ("top", "right"): ("at the top right", "in the top right corner"),
    ("middle", "left"): ("on the left", "at the left"),
    ("middle", "center"): ("in the center", "in the middle"),
    ("middle", "right"): ("on the right", "at the right"),
    ("bottom", "left"): ("at the bottom left", "in the bottom left corner"),
    ("bottom", "center"): ("at the bottom", "at the bottom center"),
    ("bottom", "right"): ("at the bottom right", "in the bottom right corner"),
}
PREFIXES = ("", "there is ", "we see ", "the image shows ", "a picture of ")


def position_name(row: str, column: str) -> str:
    """The short name of a grid cell: 'top left', 'top', 'left', 'center', ..."""
    if row == "middle":
        return column
    return row if column == "center" else f"{row} {column}"


@dataclass(frozen=True)
class SceneObject:
    size: str
    color: str
    shape: str
    row: str
    column: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels

    @property
    def position(self) -> str:
        return position_name(self.row, self.column)

    def to_json(self) -> dict:
        return {
            "size": self.size,
            "color": self.color,
            "shape": self.shape,
            "position": self.position,
            "row": self.row,
            "column": self.column,
            "box": list(self.box),
        }


def sample_objects(rng: random.Random, image_size: int, min_objects: int, max_objects: int) -> list[SceneObject]:
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], rng.randint(min_objects, max_objects))
    cell = image_size / 3
    objects = []
    for r, c in sorted(cells):  # reading order: top to bottom, left to right
        size = rng.choice(tuple(SIZES))
        radius = cell * (0.38 if size == "large" else 0.2)
        jitter = cell * 0.5 - radius - 1
        cx = cell * (c + 0.5) + rng.uniform(-jitter, jitter) * 0.5
        cy = cell * (r + 0.5) + rng.uniform(-jitter, jitter) * 0.5
        box = (round(cx - radius), round(cy - radius), round(cx + radius), round(cy + radius))
        objects.append(SceneObject(size, rng.choice(tuple(COLORS)), rng.choice(SHAPES), ROWS[r], COLUMNS[c], box))
    return objects


def draw_scene(objects: list[SceneObject], image_size: int, rng: random.Random) -> Image.Image:
    gray = rng.randint(40, 110)
    image = Image.new("RGB", (image_size, image_size), (gray, gray, gray))
    draw = ImageDraw.Draw(image)
    for obj in objects:
        fill = tuple(max(0, min(255, v + rng.randint(-20, 20))) for v in COLORS[obj.color])
        x0, y0, x1, y1 = obj.box
        if obj.shape == "circle":
            draw.ellipse(obj.box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(obj.box, fill=fill)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x0, y1), (x1, y1)], fill=fill)
    return image


def describe(objects: list[SceneObject], rng: random.Random | None = None) -> str:
    """One caption; without `rng` the canonical wording, with it a random paraphrase."""
    order = list(objects)
    prefix, variant = "", 0
    if rng is not None:
        prefix = rng.choice(PREFIXES)
        variant = rng.randint(0, 1)
        if len(order) > 1 and rng.random() < 0.3:
            order.reverse()
    phrases = [
        f"a {SIZES[o.size][variant]} {o.color} {o.shape} {POSITION_PHRASES[(o.row, o.column)][variant]}" for o in order
    ]
    return prefix + " and ".join(phrases)


def captions_for(objects: list[SceneObject], count: int, rng: random.Random) -> list[str]:
    captions = [describe(objects)]
    for _ in range(50 * count):
        if len(captions) == count:
            break
        caption = describe(objects, rng)
        if caption not in captions:
            captions.append(caption)
    while len(captions) < count:  # a one-object scene has fewer distinct wordings than asked for
        captions.append(describe(objects, rng))
    return captions


def generate_scenes(
    image_dir: Path,
    *,
    seed: int,
    num_train: int,
    num_val: int,
    num_test: int,
    image_size: int = 224,
    min_objects: int = 1,
    max_objects: int = 2,
    captions_per_image: int = 5,
) -> CaptionTable:
    """Draw every scene into `image_dir` as PNG and return the caption table (image_root = image_dir)."""
    image_dir.mkdir(parents=True, exist_ok=True)
    splits = ["train"] * num_train + ["val"] * num_val + ["test"] * num_test
    table = CaptionTable(dataset="scenes", image_root=image_dir)
    for index, split in enumerate(splits):
        rng = random.Random(f"{seed}-{index}")
        objects = sample_objects(rng, image_size, min_objects, max_objects)
        name = f"scene_{index:06d}.png"
        draw_scene(objects, image_size, rng).save(image_dir / name, compress_level=1)
        captions = captions_for(objects, captions_per_image, rng)
        table.images.append(ImageRecord(name, split, captions, objects=[o.to_json() for o in objects]))
    return table


def write_scenes(image_dir: Path, **options) -> CaptionTable:
    """generate_scenes(image_dir, **options) through a temporary folder that replaces `image_dir` once every
    scene is drawn (the data stage's output: a killed run leaves no half-drawn folder)."""
    with atomic_path(image_dir) as temporary:
        table = generate_scenes(temporary, **options)
    table.image_root = image_dir
    return table


# Reading captions back into objects, for the scene-specific metrics.
_SIZE_WORDS = {word: size for size, words in SIZES.items() for word in words}
_POSITION_TOKENS = sorted(
    (
        (tuple(tokenize(phrase)), position_name(*cell))
        for cell, phrases in POSITION_PHRASES.items()
        for phrase in phrases
    ),
    key=lambda item: -len(item[0]),
)


def parse_caption(tokens: list[str]) -> list[dict]:
    """The objects a caption names: [{'size', 'color', 'shape', 'position'}], missing parts as None."""
    objects = []
    i = 0
    while i < len(tokens):
        if tokens[i] in COLORS and i + 1 < len(tokens) and tokens[i + 1] in SHAPES:
            size = _SIZE_WORDS.get(tokens[i - 1]) if i > 0 else None
            position = None
            for phrase, name in _POSITION_TOKENS:
                if tuple(tokens[i + 2 : i + 2 + len(phrase)]) == phrase:
                    position = name
                    break
            objects.append({"size": size, "color": tokens[i], "shape": tokens[i + 1], "position": position})
            i += 2
        else:
            i += 1
    return objects
