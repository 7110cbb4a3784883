"""Pretrained resources without the internet: a local ResNet50 state dict, the ImageNet weights offline,
and word2vec files (binary and text) with the lookup order, coverage, `limit` and the dimension check."""

from __future__ import annotations

import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from captioning.errors import CaptioningError
from captioning.features.encoder import build_encoder
from captioning.params import IMAGENET_VARIANTS
from captioning.text.embeddings import embedding_matrix, load_word2vec
from captioning.text.vocabulary import SPECIALS


@pytest.fixture(scope="module")
def resnet_state(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(1)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet50-local.pth"
    torch.save(state, path)
    return path, state


def test_local_state_dict_loads_into_the_encoder(resnet_state):
    path, state = resnet_state
    encoder = build_encoder(str(path))
    assert torch.equal(encoder.body[0].weight, state["conv1.weight"])
    features = encoder(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert features.shape == (1, 4, 2048)  # (B, 64/32 * 64/32, 2048)


def test_wrapped_state_dict_loads(resnet_state, tmp_path):
    path, state = resnet_state
    wrapped = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    assert torch.equal(build_encoder(str(wrapped)).body[0].weight, state["conv1.weight"])


def test_wrong_key_or_shape_is_a_clear_error(resnet_state, tmp_path):
    _, state = resnet_state
    renamed = dict(state)
    renamed["module.conv1.weight"] = renamed.pop("conv1.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(
        CaptioningError,
        match=r"renamed.pth is not a torchvision ResNet50 state dict: 1 missing keys "
        r"\(e.g. conv1.weight\); 1 unexpected keys \(e.g. module.conv1.weight\)",
    ):
        build_encoder(str(tmp_path / "renamed.pth"))
    reshaped = dict(state)
    reshaped["fc.weight"] = torch.zeros(10, 2048)
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(CaptioningError, match=r"fc.weight has shape \(10, 2048\), expected \(1000, 2048\)"):
        build_encoder(str(tmp_path / "reshaped.pth"))
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CaptioningError, match=r"tensor.pth holds a Tensor, not a state dict"):
        build_encoder(str(tmp_path / "tensor.pth"))
    with pytest.raises(CaptioningError, match=r"missing.pth not found"):
        build_encoder(str(tmp_path / "missing.pth"))


class RunsCode:
    """What a malicious weights file holds: unpickling it would run a command."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > unpickled.txt",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2"])
def test_a_weights_file_with_pickled_objects_is_refused_in_one_line(tmp_path, monkeypatch, writer):
    """As the model-file loader says it: no torch advice to load the file with weights_only=False."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "resnet50.pth"
    payload = {"conv1.weight": torch.zeros(1), "evil": RunsCode()}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # newer protocols are refused as not loadable
    with pytest.raises(CaptioningError) as caught:
        build_encoder(str(path))
    assert str(caught.value) == (
        f"features.weights: {path} is not a plain state dict (it holds pickled Python objects, which can run code): "
        "not loaded, for safety"
    )
    assert not (tmp_path / "unpickled.txt").exists()


def test_a_weights_file_torch_cannot_read_is_one_line(tmp_path):
    path = tmp_path / "resnet50.pth"
    for content in (b"these are notes, not weights\n", pickle.dumps({"evil": RunsCode()}, protocol=5)):
        path.write_bytes(content)
        with pytest.raises(CaptioningError) as caught:
            build_encoder(str(path))
        message = str(caught.value)
        assert message.startswith(f"features.weights: {path} is not a loadable state dict (") and "\n" not in message
        assert "weights_only" not in message


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty TORCH_HOME and no network: every download attempt raises URLError."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)
    return tmp_path / "torch"


def test_imagenet_offline_names_the_checkpoint_path(offline, monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    expected = offline / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(CaptioningError) as caught:
        build_encoder("imagenet", imagenet_variant="IMAGENET1K_V2")
    assert f"copy resnet50-11ad3fa6.pth to {expected}" in str(caught.value)
    with pytest.raises(CaptioningError, match=r"resnet50-0676ba61.pth"):
        build_encoder("imagenet", imagenet_variant="IMAGENET1K_V1")


def test_the_offline_hint_follows_xdg_cache_home_without_torch_home(offline, monkeypatch, tmp_path):
    """Where torch.hub looks: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub (not always ~/.cache)."""
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", torch.hub.load_state_dict_from_url)
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "torch" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    with pytest.raises(CaptioningError, match=f"copy resnet50-11ad3fa6.pth to {expected}"):
        build_encoder("imagenet", imagenet_variant="IMAGENET1K_V2")


def test_imagenet_checkpoint_copied_into_torch_home_is_used_offline(offline, resnet_state):
    path, state = resnet_state
    checkpoints = offline / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "resnet50-11ad3fa6.pth").symlink_to(path)
    encoder = build_encoder("imagenet", imagenet_variant="IMAGENET1K_V2")
    assert torch.equal(encoder.body[0].weight, state["conv1.weight"])


# Word2vec --------------------------------------------------------------------------------------------

WORDS = ["the", "The", "Man", "dog", "New_York", "Dog"]  # frequency order, as in GoogleNews


def write_vectors(path: Path, binary: bool):
    from gensim.models import KeyedVectors

    vectors = KeyedVectors(vector_size=4)
    vectors.add_vectors(WORDS, np.arange(len(WORDS) * 4, dtype=np.float32).reshape(len(WORDS), 4) + 1)
    vectors.save_word2vec_format(str(path), binary=binary)
    return vectors


@pytest.mark.parametrize("filename", ["vectors.bin", "vectors.bin.gz", "vectors.txt"])
def test_word2vec_files_load(tmp_path, filename):
    written = write_vectors(tmp_path / filename, binary=".bin" in filename)
    loaded = load_word2vec(str(tmp_path / filename))
    assert list(loaded.key_to_index) == WORDS
    np.testing.assert_allclose(loaded.vectors, written.vectors, rtol=1e-6)


def test_lookup_order_pad_and_coverage(tmp_path):
    write_vectors(tmp_path / "vectors.bin", binary=True)
    vectors = load_word2vec(str(tmp_path / "vectors.bin"), dim=4)
    words = list(SPECIALS) + ["the", "man", "dog", "of", "zebra"]
    matrix, coverage = embedding_matrix(words, vectors, seed=0)
    assert matrix.shape == (9, 4) and matrix.dtype == np.float32
    assert not matrix[0].any()  # <pad>
    np.testing.assert_array_equal(matrix[4], vectors["the"])  # exact match wins over "The"
    np.testing.assert_array_equal(matrix[5], vectors["Man"])  # then Capitalised
    np.testing.assert_array_equal(matrix[6], vectors["dog"])  # exact match wins over "Dog"
    assert coverage == pytest.approx(3 / 5)  # "of" and "zebra" are missing
    again, _ = embedding_matrix(words, vectors, seed=0)
    other, _ = embedding_matrix(words, vectors, seed=1)
    np.testing.assert_array_equal(again, matrix)  # seeded random rows for the missing words and specials
    assert not np.array_equal(other[7], matrix[7]) and matrix[1:4].any()


def test_limit_keeps_the_most_frequent_words(tmp_path):
    write_vectors(tmp_path / "vectors.txt", binary=False)
    vectors = load_word2vec(str(tmp_path / "vectors.txt"), limit=2)
    assert list(vectors.key_to_index) == ["the", "The"]
    _, coverage = embedding_matrix(list(SPECIALS) + ["the", "man"], vectors, seed=0)
    assert coverage == pytest.approx(1 / 2)


def test_dim_must_match_the_file(tmp_path):
    write_vectors(tmp_path / "vectors.bin", binary=True)
    with pytest.raises(
        CaptioningError,
        match=r"embeddings.dim is 300 but .*vectors.bin has 4-dimensional vectors; "
        r"set embeddings.dim=4",
    ):
        load_word2vec(str(tmp_path / "vectors.bin"), dim=300)
    (tmp_path / "glove.txt").write_text("the 0.1 0.2\n", encoding="utf-8")
    with pytest.raises(CaptioningError, match=r"glove.txt is not a text word2vec file"):
        load_word2vec(str(tmp_path / "glove.txt"), dim=2)
    with pytest.raises(CaptioningError, match=r"missing.bin not found"):
        load_word2vec(str(tmp_path / "missing.bin"))


def test_each_imagenet_variant_params_allow_is_torchvisions_and_another_is_one_line(offline):
    for variant in IMAGENET_VARIANTS:  # params.py's list is the only one: the encoder looks the weights up by name
        assert torchvision.models.ResNet50_Weights[variant].url.endswith(".pth")
    with pytest.raises(CaptioningError, match=r"^features.imagenet_variant must be one of IMAGENET1K_V1, "):
        build_encoder("imagenet", imagenet_variant="IMAGENET1K_V9")  # e.g. from an edited model file's recipe
