"""captioning/features/extract.py: image files -> frozen ResNet50 -> HDF5 rows, in table order."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data.images import BadImageError, load_rgb, resize_to_array
from captioning.errors import CaptioningError
from captioning.features.encoder import FEATURE_DIM, build_encoder
from captioning.features.extract import ExtractionReport, encoder_fingerprint, extract_features
from captioning.features.store import FeatureStore

pytestmark = pytest.mark.usefixtures("torch_single_thread")
IMAGE_SIZE = 64  # 2 x 2 regions


@pytest.fixture(scope="module")
def encoder():
    return build_encoder("none", seed=0)


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for seed, name in enumerate(["c.png", "a.png", "b.png"]):
        rng = np.random.default_rng(seed)
        Image.fromarray(rng.integers(0, 256, size=(30 + seed * 7, 40, 3), dtype=np.uint8)).save(root / name)
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root


def extract(encoder, root, names, output, **options):
    return extract_features(
        encoder, root, names, output, image_size=IMAGE_SIZE, batch_size=2, precision="fp32", num_workers=0, **options
    )


def direct_features(encoder, root, names) -> np.ndarray:
    images = torch.stack([torch.from_numpy(resize_to_array(load_rgb(root / n), IMAGE_SIZE)) for n in names])
    with torch.inference_mode():
        return encoder(images).numpy()


def test_rows_are_written_in_the_given_order_with_the_encoder_features(encoder, image_root, tmp_path):
    names = ["b.png", "c.png", "a.png"]
    report = extract(encoder, image_root, names, tmp_path / "features.h5", attrs={"weights": "none"})
    assert report.written == 3 and report.skipped == []
    store = FeatureStore(tmp_path / "features.h5")
    assert store.names == names
    assert store.shape == (3, (IMAGE_SIZE // 32) ** 2, FEATURE_DIM)
    assert store.attrs == {"weights": "none"} and store.skipped == set()
    stored = store.rows(np.arange(3)).astype(np.float32)
    expected = direct_features(encoder, image_root, names)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(stored, expected, rtol=1e-2, atol=1e-3 * scale)
    assert not np.allclose(stored[0], stored[1])  # different images, different features


def test_a_corrupt_or_missing_image_is_skipped_and_recorded(encoder, image_root, tmp_path, caplog):
    names = ["a.png", "bad.png", "b.png", "gone.png", "c.png"]
    with caplog.at_level(logging.WARNING, logger="captioning.features.extract"):
        report = extract(encoder, image_root, names, tmp_path / "features.h5")
    assert report.written == 3 and report.skipped == ["bad.png", "gone.png"]
    assert isinstance(report, ExtractionReport) and report.images_per_second > 0
    store = FeatureStore(tmp_path / "features.h5")
    assert store.names == ["a.png", "b.png", "c.png"]
    assert store.skipped == {"bad.png", "gone.png"}
    assert "bad.png" in caplog.text and "gone.png" in caplog.text


def test_on_bad_image_error_stops_naming_the_file(encoder, image_root, tmp_path):
    with pytest.raises(BadImageError, match=r"bad\.png: cannot decode image") as caught:
        extract(encoder, image_root, ["a.png", "bad.png"], tmp_path / "features.h5", on_bad_image="error")
    assert "data.on_bad_image: skip" in str(caught.value)


def test_the_encoder_stays_frozen_in_eval_mode(encoder):
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())


def test_encoder_fingerprint_follows_the_weights(encoder):
    assert encoder_fingerprint(encoder) == encoder_fingerprint(build_encoder("none", seed=0))
    assert encoder_fingerprint(encoder) != encoder_fingerprint(build_encoder("none", seed=1))


def test_an_image_size_that_is_not_a_multiple_of_32_is_stored_or_refused(encoder, image_root, tmp_path):
    size = 80
    with torch.inference_mode():
        regions = encoder(torch.zeros(1, 3, size, size, dtype=torch.uint8)).shape[1]
    try:
        extract_features(encoder, image_root, ["a.png"], tmp_path / "features.h5", image_size=size, num_workers=0)
    except CaptioningError as error:  # refusing it, naming the parameter, is fine too
        assert "features.image_size" in str(error)
    else:
        assert FeatureStore(tmp_path / "features.h5").shape == (1, regions, FEATURE_DIM)
