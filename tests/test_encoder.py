"""captioning/features/encoder.py: features.encoder picks ResNet50, -101 or -152; the recipe rebuilds the same one."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from repo_params import repo_params
from tiny_model import write_tiny_model

from captioning.commands.caption import Captioner
from captioning.errors import CaptioningError
from captioning.features.encoder import RANDOM_WEIGHTS_SCALE, FrozenEncoder, build_encoder, build_resnet
from captioning.features.extract import encoder_fingerprint
from captioning.features.recipe import FeatureRecipe
from captioning.text.vocabulary import SPECIALS

BLOCKS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3], "resnet152": [3, 8, 36, 3]}  # He et al., Table 1


@pytest.mark.parametrize("name", BLOCKS)
def test_each_encoder_is_torchvisions_architecture_with_the_same_output(name):
    encoder = build_encoder("none", seed=0, encoder=name)
    layers = list(encoder.body.children())[4:8]  # layer1 .. layer4
    assert [len(layer) for layer in layers] == BLOCKS[name]
    assert not any(p.requires_grad for p in encoder.parameters())
    with torch.no_grad():
        assert encoder(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 4, 2048)
        assert encoder(torch.zeros(1, 3, 128, 128, dtype=torch.uint8)).shape == (1, 16, 2048)  # image_size / 32


def test_the_random_encoder_is_seeded_per_architecture():
    fingerprints = {name: encoder_fingerprint(build_encoder("none", 0, encoder=name)) for name in BLOCKS}
    assert len(set(fingerprints.values())) == 3
    assert encoder_fingerprint(build_encoder("none", 0, encoder="resnet101")) == fingerprints["resnet101"]
    assert encoder_fingerprint(build_encoder("none", 1, encoder="resnet101")) != fingerprints["resnet101"]


def test_a_state_dict_of_another_depth_is_one_line_naming_the_encoder(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(CaptioningError) as error:
        build_encoder(str(path), encoder="resnet101")
    message = str(error.value)
    assert message.startswith(f"features.weights: {path} is not a torchvision ResNet101 state dict: ")
    assert "missing keys (e.g. layer3.10." in message and "\n" not in message
    with pytest.raises(CaptioningError, match=r"not found \(expected a ResNet152 state dict .pth\)"):
        build_encoder(str(tmp_path / "missing.pth"), encoder="resnet152")


def test_offline_imagenet_names_the_checkpoint_of_the_chosen_encoder(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(
        CaptioningError, match=f"copy resnet101-cd907fc2.pth to {checkpoints / 'resnet101-cd907fc2.pth'}"
    ):
        build_encoder("imagenet", imagenet_variant="IMAGENET1K_V2", encoder="resnet101")
    with pytest.raises(CaptioningError, match=r"ImageNet ResNet152 weights .* resnet152-394f9c45.pth"):
        build_encoder("imagenet", imagenet_variant="IMAGENET1K_V1", encoder="resnet152")


def test_another_encoder_name_in_a_model_files_recipe_is_one_line():  # params.yaml's: tests/test_params.py
    with pytest.raises(
        CaptioningError, match=r"^features.encoder must be one of resnet50, resnet101, resnet152, got 'vgg16'$"
    ):
        build_encoder("none", encoder="vgg16")


def test_the_recipe_records_the_encoder_and_files_from_before_it_read_as_resnet50():
    params = repo_params("features", encoder="resnet101")
    recipe = FeatureRecipe.of(params, "fp32", "1.0e+00")
    assert recipe.encoder == "resnet101" and recipe.to_dict()["encoder"] == "resnet101"
    older = {key: value for key, value in recipe.to_dict().items() if key != "encoder"}
    assert FeatureRecipe.missing_fields(older) == []
    assert FeatureRecipe.from_dict(older).encoder == "resnet50"


def test_caption_rebuilds_the_encoder_the_model_was_trained_on(tmp_path):
    """A model recorded with ResNet101 features gets ResNet101 features of a new image, not ResNet50's."""
    fingerprint = encoder_fingerprint(build_encoder("none", 0, encoder="resnet101"))
    words = [*SPECIALS, "a", "red", "square"]
    path = write_tiny_model(tmp_path / "model.pt", words, 64, fingerprint, {"encoder": "resnet101"}, epoch=1)
    captioner = Captioner.load(path, torch.device("cpu"))
    assert len(list(captioner.encoder.body.children())[6]) == 23
    image = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    with torch.no_grad():
        expected = build_encoder("none", 0, encoder="resnet101")(torch.from_numpy(image)[None]).to(torch.float16)
    torch.testing.assert_close(captioner.features([image]), expected, rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_random_encoder_stays_in_float16s_range_near_resnet50s_scale(seed):
    """Unscaled, a random ResNet101's map passes float16's 65,504 and a ResNet152's by far (RANDOM_WEIGHTS_SCALE)."""
    image = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (2, 3, 96, 96), dtype=np.uint8))
    largest = {}
    with torch.no_grad():
        for name in BLOCKS:
            features = build_encoder("none", seed, encoder=name)(image)
            assert torch.isfinite(features.to(torch.float16)).all()
            largest[name] = features.abs().max().item()
    assert all(2**4 < value < 2**11 for value in largest.values()), largest  # ResNet50's: about 2^7


def test_the_scale_is_an_exact_power_of_two_and_only_for_random_weights(tmp_path):
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, 64, 64), dtype=np.uint8))
    scaled = build_encoder("none", 0, encoder="resnet101")
    assert scaled.output_scale == RANDOM_WEIGHTS_SCALE["resnet101"] == 2.0**-10
    unscaled = FrozenEncoder(build_resnet("none", 0, encoder="resnet101"))
    with torch.no_grad():
        assert torch.equal(scaled(image), unscaled(image) * 2.0**-10)
    path = tmp_path / "resnet101.pth"
    torch.save(torchvision.models.resnet101(weights=None).state_dict(), path)
    assert build_encoder(str(path), encoder="resnet101").output_scale == 1.0  # trained weights: their own scale
    assert build_encoder("none", 0).output_scale == 1.0  # the default's features are as they always were
