"""captioning/checkpoint.py: a saved model loads back identical, and a wrong file is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from captioning.checkpoint import check_vocabulary, load_model, save_model
from captioning.errors import CaptioningError
from captioning.model.decoding import greedy_decode

pytestmark = pytest.mark.usefixtures("torch_single_thread")

WORDS = ["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(8)]
RECIPE = {"weights": "none", "image_size": np.int64(224), "seed": 0, "fingerprint": "1.23e+07"}


@pytest.mark.parametrize("attention", ["soft", "none"])
def test_round_trip_gives_identical_outputs_and_the_recorded_values(tmp_path, make_decoder, features, attention):
    decoder = make_decoder(attention, seed=4, dropout=0.5).train()  # saved mid-training
    path = tmp_path / "models" / "model.pt"
    save_model(path, decoder, WORDS, RECIPE, epoch=3, validation={"val_bleu_4": 0.25})
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary left behind

    loaded, payload = load_model(path)
    assert not loaded.training  # loaded in eval mode
    assert loaded.config == decoder.config
    assert payload["words"] == WORDS and payload["epoch"] == 3 and payload["validation"] == {"val_bleu_4": 0.25}
    assert payload["feature_recipe"] == {"weights": "none", "image_size": 224, "seed": 0, "fingerprint": "1.23e+07"}
    assert type(payload["feature_recipe"]["image_size"]) is int  # numpy scalars stored as plain values
    for name, tensor in decoder.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    decoder.eval()
    region_features, lengths = features(3), torch.tensor([4, 3, 2])
    captions = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0], [1, 2, 0, 0]])
    for original, restored in zip(
        decoder(region_features, captions, lengths), loaded(region_features, captions, lengths)
    ):
        assert torch.equal(original, restored)
    assert (
        greedy_decode(decoder, region_features, 1, 2, 6).tokens
        == greedy_decode(loaded, region_features, 1, 2, 6).tokens
    )


def test_a_missing_or_foreign_file_is_refused(tmp_path):
    with pytest.raises(CaptioningError, match=r"model\.pt: model file not found \(run the train stage\)"):
        load_model(tmp_path / "model.pt")
    (tmp_path / "notes.pt").write_text("not a model")
    with pytest.raises(CaptioningError, match=r"notes\.pt: not a loadable model file"):
        load_model(tmp_path / "notes.pt")
    torch.save({"state_dict": {}, "words": WORDS}, tmp_path / "other.pt")
    with pytest.raises(CaptioningError, match=r"other\.pt: not a model file written by this project"):
        load_model(tmp_path / "other.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CaptioningError, match=r"list\.pt: not a model file written by this project"):
        load_model(tmp_path / "list.pt")


def test_a_pickled_object_is_not_unpickled(tmp_path, make_decoder):
    torch.save(make_decoder(), tmp_path / "pickled.pt")  # a whole module: needs unpickling of code
    with pytest.raises(CaptioningError) as caught:
        load_model(tmp_path / "pickled.pt")
    assert str(caught.value) == (
        f"{tmp_path / 'pickled.pt'}: not a plain state dict (it holds pickled Python objects, which can run code): "
        "not loaded, for safety"
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda payload: payload["config"].update(decoder_dim=32),
        lambda payload: payload["config"].update(attention="none"),
        lambda payload: payload["config"].update(layers=2),
        lambda payload: payload["state_dict"].pop("output.bias"),
    ],
    ids=["decoder_dim", "attention", "unknown-key", "missing-weight"],
)
def test_a_config_that_does_not_match_the_weights_is_refused(tmp_path, make_decoder, edit):
    path = tmp_path / "model.pt"
    save_model(path, make_decoder(), WORDS, RECIPE)
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    with pytest.raises(CaptioningError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: its weights do not match its recorded configuration")
    assert "retrain" in message and "\n" not in message


def test_check_vocabulary_names_both_files():
    check_vocabulary("models/model.pt", WORDS, "data/vocab.json", list(WORDS))
    with pytest.raises(CaptioningError) as caught:
        check_vocabulary("models/model.pt", WORDS, "data/vocab.json", WORDS + ["extra"])
    message = str(caught.value)
    assert "models/model.pt" in message and "data/vocab.json" in message
    assert "12-word" in message and "13 words" in message
    with pytest.raises(CaptioningError, match="models/model.pt .* data/vocab.json"):
        check_vocabulary("models/model.pt", WORDS, "data/vocab.json", list(reversed(WORDS)))
