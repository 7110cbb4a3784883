"""captioning/checkpoint.py: a saved model loads back identical; a wrong or damaged file is refused, and a full disk
reported, in one line naming the file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_repo import NO_SPACE, leftovers

from captioning.__main__ import main
from captioning.checkpoint import check_vocabulary, load_model, save_model
from captioning.errors import CaptioningError
from captioning.model import CaptionDecoder, DecoderConfig
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


# ---------------------------------------------------------------------------------------------------------------------
# Model files: every field load_model and its callers read is checked; one line names the file and the field.

MODEL_WORDS = ["<pad>", "<start>", "<end>", "<unk>", "a", "dog"]


def six_word_decoder() -> CaptionDecoder:
    """A decoder for MODEL_WORDS: 4-wide layers over 8-dim region features."""
    config = DecoderConfig(
        vocab_size=6,
        embed_dim=4,
        feature_dim=8,
        decoder_dim=4,
        attention_dim=4,
        dropout=0.0,
        attention="soft",
        deep_output=False,
    )
    return CaptionDecoder(config)


def drop(field: str) -> Callable[[dict], object]:
    return lambda payload: {k: v for k, v in payload.items() if k != field}


def replace(field: str, value: object) -> Callable[[dict], object]:
    return lambda payload: {**payload, field: value}


def retrain(problem: str, field: str, meaning: str) -> str:
    return (
        f"{{path}}: the model file {problem} '{field}' ({meaning}): it is damaged or was not written by the train "
        "stage; retrain (dvc repro train)"
    )


MODEL_FILE_CASES = [
    pytest.param(drop("words"), retrain("has no", "words", "the vocabulary it was trained with"), id="no-words"),
    pytest.param(drop("config"), retrain("has no", "config", "the decoder configuration"), id="no-config"),
    pytest.param(drop("state_dict"), retrain("has no", "state_dict", "the weights"), id="no-state-dict"),
    pytest.param(
        drop("feature_recipe"),
        retrain("has no", "feature_recipe", "the recipe of the features it was trained on"),
        id="no-feature-recipe",
    ),
    pytest.param(
        replace("words", "a dog"),
        retrain("has a str instead of a list as its", "words", "the vocabulary it was trained with"),
        id="words-not-a-list",
    ),
    pytest.param(
        replace("words", [0, 1, 2]),
        "{path}: the model file's 'words' must all be strings; retrain (dvc repro train)",
        id="words-not-strings",
    ),
    pytest.param(
        "empty",
        "{path}: the model file is empty (0 bytes; an interrupted copy?): retrain or copy it again",
        id="zero-bytes",
    ),
    pytest.param(
        "pickled",
        "{path}: not a plain state dict (it holds pickled Python objects, which can run code): not loaded, for safety",
        id="pickled-object",
    ),
]


class RunsCode:
    """What a malicious model file holds: unpickling it would run a command."""

    def __reduce__(self):
        return (os.system, ("echo unpickled > unpickled.txt",))


@pytest.mark.parametrize(("edit", "message"), MODEL_FILE_CASES)
def test_model_files(tmp_path: Path, monkeypatch, capsys, edit, message: str):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pt"
    save_model(path, six_word_decoder(), MODEL_WORDS, {"weights": "none"})
    if edit == "empty":
        path.write_bytes(b"")
    elif edit == "pickled":
        torch.save({"format": "captioning-model/1", "config": RunsCode()}, path)
    else:
        torch.save(edit(torch.load(path, weights_only=True)), path)
    with pytest.raises(CaptioningError) as caught:
        load_model(path)
    assert str(caught.value) == message.format(path=path)
    # the caption command says the same in one line, exit status 1, no traceback
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    assert main(["caption", str(image), "--model", str(path)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message.format(path=path)}"]
    assert not (tmp_path / "unpickled.txt").exists()


# ---------------------------------------------------------------------------------------------------------------------
# Saving on a full disk: one line naming the file; the previous model is kept and nothing partial is left.


def test_disk_full_while_saving_the_model(tmp_path: Path, full_disk):
    path = tmp_path / "models/model.pt"
    path.parent.mkdir()
    path.write_bytes(b"the previous model")
    with pytest.raises(CaptioningError) as caught:
        save_model(path, six_word_decoder(), MODEL_WORDS, {"weights": "none"})
    assert str(caught.value) == NO_SPACE.format(path=path)
    assert path.read_bytes() == b"the previous model" and leftovers(tmp_path) == []


def test_save_model_on_a_full_disk(small_disk: Path):
    """torch.save's own writer said only `unexpected pos`; saved through memory, the kernel's ENOSPC names the file."""
    path = small_disk / "model.pt"
    config = DecoderConfig(
        vocab_size=500,
        embed_dim=64,
        feature_dim=64,
        decoder_dim=64,
        attention_dim=64,
        dropout=0,
        attention="soft",
        deep_output=False,
    )
    with pytest.raises(CaptioningError) as caught:
        save_model(path, CaptionDecoder(config), MODEL_WORDS, {"weights": "none"})
    assert str(caught.value) == NO_SPACE.format(path=path)
    assert list(small_disk.iterdir()) == []
