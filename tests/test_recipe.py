"""captioning/features/recipe.py: the features' recipe survives the HDF5 attributes and the model file."""

from __future__ import annotations

import numpy as np
import pytest
from repo_params import repo_params

from captioning.checkpoint import load_model, save_model
from captioning.commands.caption import Captioner
from captioning.errors import CaptioningError
from captioning.features.recipe import FeatureRecipe
from captioning.features.store import FeatureStore, FeatureWriter

RECIPE = FeatureRecipe(
    encoder="resnet101",
    weights="none",
    imagenet_variant="IMAGENET1K_V2",
    seed=3,
    image_size=64,
    precision="bf16",
    encoder_fingerprint="1.234567e+05",
)


def test_of_takes_the_params_and_the_resolved_precision():
    params = repo_params("features", weights="imagenet", seed=7, image_size=96, precision="auto")
    recipe = FeatureRecipe.of(params, "fp32", "9.9e+01")
    assert recipe.to_dict() == {
        "encoder": "resnet50",
        "weights": "imagenet",
        "imagenet_variant": "IMAGENET1K_V2",
        "seed": 7,
        "image_size": 96,
        "precision": "fp32",
        "encoder_fingerprint": "9.9e+01",
    }


def test_hdf5_attributes_round_trip(tmp_path):
    path = tmp_path / "features.h5"
    writer = FeatureWriter(path, 1, 4, 8, attrs=RECIPE.to_dict())
    writer.append(["a.png"], np.zeros((1, 4, 8), dtype=np.float16))
    writer.close()
    attrs = FeatureStore(path).attrs
    assert set(attrs) == set(RECIPE.to_dict())  # the file holds exactly the recipe, as before the dataclass
    restored = FeatureRecipe.from_dict(attrs, str(path))
    assert restored == RECIPE
    assert type(restored.seed) is int and type(restored.image_size) is int  # not numpy scalars


def test_model_file_round_trip(tmp_path, make_decoder):
    path = tmp_path / "model.pt"
    save_model(path, make_decoder(), [f"w{i}" for i in range(12)], RECIPE.to_dict(), epoch=1)
    _, payload = load_model(path)
    assert FeatureRecipe.from_dict(payload["feature_recipe"]) == RECIPE


def test_missing_fields_are_named():
    recorded = {key: value for key, value in RECIPE.to_dict().items() if key not in ("seed", "precision")}
    assert FeatureRecipe.missing_fields(recorded) == ["seed", "precision"]
    assert FeatureRecipe.missing_fields({**RECIPE.to_dict(), "other": 1}) == []
    with pytest.raises(CaptioningError) as error:
        FeatureRecipe.from_dict(recorded, "data/features.h5", "rerun the features stage")
    assert str(error.value) == (
        "data/features.h5: does not record the recipe of its features (missing seed, precision): "
        "rerun the features stage"
    )


def test_caption_refuses_a_model_without_the_whole_recipe(tmp_path, make_decoder):
    path = tmp_path / "model.pt"
    recorded = {key: value for key, value in RECIPE.to_dict().items() if key != "encoder_fingerprint"}
    save_model(path, make_decoder(), [f"w{i}" for i in range(12)], recorded, epoch=1)
    with pytest.raises(CaptioningError) as error:
        Captioner.load(path)
    assert str(error.value) == (
        f"{path}: the model does not record the features it was trained on (missing encoder_fingerprint): "
        "retrain it (dvc repro train)"
    )
