import numpy as np
import pytest

from captioning.data.scenes import generate_scenes
from captioning.scoring.grounding import cells_touching_boxes, grounding_scores, object_accuracy
from captioning.text.tokenizer import tokenize

REGIONS = 49  # 7 x 7 cells of 32 pixels over 224 x 224

# A red circle over cells (1, 1), (1, 2), (2, 1), (2, 2) = regions 8, 9, 15, 16;
# a blue square in the bottom right, over cells (5, 5), (5, 6), (6, 5), (6, 6) = regions 40, 41, 47, 48.
RED_CIRCLE = {"color": "red", "shape": "circle", "position": "top left", "box": [40, 40, 90, 90]}
BLUE_SQUARE = {"color": "blue", "shape": "square", "position": "bottom right", "box": [170, 170, 220, 220]}


def one_hot(*regions: int) -> np.ndarray:
    rows = np.zeros((len(regions), REGIONS))
    rows[np.arange(len(regions)), regions] = 1.0
    return rows


def test_cells_touching_a_box():
    assert np.flatnonzero(cells_touching_boxes([RED_CIRCLE["box"]], 7, 224)).tolist() == [8, 9, 15, 16]


def test_cells_that_only_share_an_edge_touch():
    # [64, 64, 96, 96] is exactly cell (2, 2); the 8 cells around it share an edge or a corner with it.
    touching = np.flatnonzero(cells_touching_boxes([[64, 64, 96, 96]], 7, 224)).tolist()
    assert touching == [8, 9, 10, 15, 16, 17, 22, 23, 24]


def test_hits_and_misses():
    tokens = ["a", "red", "circle", "and", "a", "blue", "square"]
    # red -> on the circle (hit), circle -> on the square (miss), blue -> on the square (hit), square -> corner (miss)
    weights = one_hot(0, 8, 40, 0, 0, 41, 0)
    scores = grounding_scores([tokens], [weights], [[RED_CIRCLE, BLUE_SQUARE]])
    assert scores["grounding_words"] == 4
    assert scores["grounding_hit"] == pytest.approx(0.5)
    assert scores["grounding_mass"] == pytest.approx(0.5)
    assert scores["grounding_hit_chance"] == pytest.approx(4 / 49)
    assert scores["grounding_mass_chance"] == pytest.approx(4 / 49)


def test_touching_cell_is_a_hit():
    box = {"color": "green", "shape": "triangle", "position": "top left", "box": [64, 64, 96, 96]}
    scores = grounding_scores([["green"]], [one_hot(8)], [[box]])  # cell (1, 1) meets the box at its corner
    assert scores["grounding_hit"] == 1.0
    assert scores["grounding_hit_chance"] == pytest.approx(9 / 49)


def test_mass_is_exact_and_hit_uses_the_most_attended_cell():
    row = np.zeros(REGIONS)
    row[[8, 9]] = [0.3, 0.2]  # 0.5 on the circle
    row[0] = 0.4  # the most attended cell is off the circle
    row[48] = 0.1
    scores = grounding_scores([["circle"]], [row[None, :]], [[RED_CIRCLE, BLUE_SQUARE]])
    assert scores["grounding_hit"] == 0.0
    assert scores["grounding_mass"] == pytest.approx(0.5)


def test_uniform_attention_scores_the_chance_level():
    scores = grounding_scores([["red", "square"]], [np.full((2, REGIONS), 1 / REGIONS)], [[RED_CIRCLE, BLUE_SQUARE]])
    assert scores["grounding_mass"] == pytest.approx(scores["grounding_mass_chance"])
    assert scores["grounding_mass_chance"] == pytest.approx(4 / 49)


def test_two_objects_with_the_named_colour_are_both_right():
    red_square = dict(BLUE_SQUARE, color="red")
    scores = grounding_scores([["red"]], [one_hot(48)], [[RED_CIRCLE, red_square]])
    assert scores["grounding_hit"] == 1.0
    assert scores["grounding_hit_chance"] == pytest.approx(8 / 49)


def test_a_word_naming_an_absent_attribute_is_a_miss():
    scores = grounding_scores([["yellow", "triangle"]], [np.full((2, REGIONS), 1 / REGIONS)], [[RED_CIRCLE]])
    assert scores == {
        "grounding_hit": 0.0,
        "grounding_mass": 0.0,
        "grounding_hit_chance": 0.0,
        "grounding_mass_chance": 0.0,
        "grounding_words": 2,
        "grounding_words_present": 0,
    }


def test_the_present_hit_rate_counts_only_words_the_image_bears_out():
    # yellow: no yellow object (a miss either way); red: on the circle; circle: on the square (a miss)
    scores = grounding_scores([["yellow", "red", "circle"]], [one_hot(8, 8, 40)], [[RED_CIRCLE, BLUE_SQUARE]])
    assert scores["grounding_hit"] == pytest.approx(1 / 3)
    assert scores["grounding_words_present"] == 2
    assert scores["grounding_hit_present"] == pytest.approx(1 / 2)


def test_other_words_are_ignored():
    tokens = ["a", "large", "red", "at", "the", "top", "left"]
    scores = grounding_scores([tokens], [one_hot(0, 0, 8, 0, 0, 0, 0)], [[RED_CIRCLE]])
    assert scores["grounding_words"] == 1
    assert scores["grounding_hit"] == 1.0


def test_words_are_counted_over_all_images():
    scores = grounding_scores(
        [["red"], ["blue", "square"]], [one_hot(8), one_hot(0, 41)], [[RED_CIRCLE], [BLUE_SQUARE]]
    )
    assert scores["grounding_words"] == 3
    assert scores["grounding_hit"] == pytest.approx(2 / 3)


def test_baseline_without_spatial_attention_has_no_grounding():
    assert grounding_scores([["a", "red", "circle"]], [np.ones((3, 1))], [[RED_CIRCLE]]) == {}


def test_empty_captions_count_no_words():
    assert grounding_scores([[], []], [np.zeros((0, REGIONS))] * 2, [[RED_CIRCLE], []]) == {"grounding_words": 0}
    assert grounding_scores([], [], []) == {"grounding_words": 0}


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="2 words"):
        grounding_scores([["red", "circle"]], [one_hot(8)], [[RED_CIRCLE]])
    with pytest.raises(ValueError, match="not a square grid"):
        grounding_scores([["red"]], [np.ones((1, 50))], [[RED_CIRCLE]])
    with pytest.raises(ValueError, match="one of each"):
        grounding_scores([["red"]], [], [[RED_CIRCLE]])


def test_object_accuracy_all_correct():
    tokens = tokenize("a large red circle at the top left and a small blue square in the bottom right corner")
    assert object_accuracy([tokens], [[RED_CIRCLE, BLUE_SQUARE]]) == {
        "generated_objects": 2,
        "true_objects": 2,
        "position_accuracy": 1.0,
        "attribute_accuracy": 1.0,
        "objects_named_ratio": 1.0,
    }


def test_object_accuracy_wrong_position():
    tokens = tokenize("a red circle on the right and a blue square at the bottom right")
    scores = object_accuracy([tokens], [[RED_CIRCLE, BLUE_SQUARE]])
    assert scores["position_accuracy"] == 0.5
    assert scores["attribute_accuracy"] == 1.0


def test_object_accuracy_duplicate_matches_once():
    tokens = tokenize("a red circle at the top left and a red circle at the top left")
    scores = object_accuracy([tokens], [[RED_CIRCLE]])
    assert scores["position_accuracy"] == 0.5
    assert scores["attribute_accuracy"] == 0.5
    assert scores["objects_named_ratio"] == 2.0


def test_object_accuracy_hallucinated_and_missed_objects():
    hallucinated = tokenize("a red circle at the top left and a green triangle in the center")
    missed = tokenize("a blue square at the bottom right")
    scores = object_accuracy([hallucinated, missed], [[RED_CIRCLE], [RED_CIRCLE, BLUE_SQUARE]])
    assert scores["generated_objects"] == 3
    assert scores["true_objects"] == 3
    assert scores["position_accuracy"] == pytest.approx(2 / 3)
    assert scores["objects_named_ratio"] == 1.0


def test_object_accuracy_without_generated_objects():
    assert object_accuracy([["a"], []], [[RED_CIRCLE], []]) == {
        "generated_objects": 0,
        "true_objects": 1,
        "objects_named_ratio": 0.0,
    }


def test_real_scenes_score_perfectly_on_their_own_references(tmp_path):
    table = generate_scenes(tmp_path, seed=3, num_train=3, num_val=0, num_test=0, max_objects=3)
    captions = [tokenize(record.captions[0]) for record in table.images]
    objects = [record.objects for record in table.images]

    scores = object_accuracy(captions, objects)
    assert scores["position_accuracy"] == 1.0
    assert scores["attribute_accuracy"] == 1.0
    assert scores["objects_named_ratio"] == 1.0

    weights = []
    for tokens, scene in zip(captions, objects):
        rows = np.full((len(tokens), REGIONS), 1 / REGIONS)
        for t, word in enumerate(tokens):
            named = [o for o in scene if word in (o["color"], o["shape"])]
            if named:  # all attention on the cell holding the named object's centre
                x0, y0, x1, y1 = named[0]["box"]
                rows[t] = one_hot(int((y0 + y1) / 2 // 32) * 7 + int((x0 + x1) / 2 // 32))[0]
        weights.append(rows)
    scores = grounding_scores(captions, weights, objects)
    assert scores["grounding_words"] == 2 * sum(len(scene) for scene in objects)
    assert scores["grounding_hit"] == 1.0
    assert scores["grounding_mass"] == pytest.approx(1.0)
    assert scores["grounding_hit_chance"] < 1.0
