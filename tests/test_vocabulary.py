"""captioning/text/vocabulary.py: counted on the training captions only, specials first, deterministic."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixtures_real import THOUSAND_WORDS, flickr30k_files
from repo_params import repo_document
from tiny_repo import run_stage_here, table_file

from captioning.data.readers.dataset import read_dataset
from captioning.data.table import CaptionTable, ImageRecord, write_table
from captioning.errors import CaptioningError
from captioning.text.vocabulary import SPECIALS, Vocabulary, encode_captions, unk_rate

TRAIN = [["a", "red", "circle"], ["a", "blue", "square"], ["a", "red", "square"], ["the", "red", "circle"]]


def test_specials_come_first_then_words_by_count_then_alphabetically():
    vocabulary = Vocabulary.build(TRAIN, min_word_freq=1)
    assert vocabulary.words == list(SPECIALS) + ["a", "red", "circle", "square", "blue", "the"]
    assert (vocabulary.pad, vocabulary.start, vocabulary.end, vocabulary.unk) == (0, 1, 2, 3)
    assert len(vocabulary) == 10


def test_the_order_does_not_depend_on_the_order_of_the_captions():
    shuffled = [list(reversed(c)) for c in TRAIN]
    random.Random(0).shuffle(shuffled)
    assert Vocabulary.build(shuffled, 1).words == Vocabulary.build(TRAIN, 1).words


def test_min_word_freq_drops_rare_words():
    vocabulary = Vocabulary.build(TRAIN, min_word_freq=2)
    assert vocabulary.words == list(SPECIALS) + ["a", "red", "circle", "square"]
    assert vocabulary.encode(["the", "blue", "circle"], 10) == [1, 3, 3, 6, 2]
    assert Vocabulary.build(TRAIN, min_word_freq=5).words == list(SPECIALS)


def test_special_tokens_in_captions_are_not_added_twice():
    vocabulary = Vocabulary.build([["<unk>", "a", "<end>"]], 1)
    assert vocabulary.words == list(SPECIALS) + ["a"]


def test_encode_adds_start_and_end_and_truncates_to_max_len_words():
    vocabulary = Vocabulary.build(TRAIN, 1)
    ids = vocabulary.encode(["a", "red", "circle", "the", "zebra"], max_len=10)
    assert ids == [vocabulary.start, 4, 5, 6, 9, vocabulary.unk, vocabulary.end]
    assert vocabulary.encode(["a", "red", "circle", "the"], max_len=2) == [vocabulary.start, 4, 5, vocabulary.end]
    assert vocabulary.encode([], max_len=2) == [vocabulary.start, vocabulary.end]


def test_decode_stops_at_the_first_end_and_drops_pad_and_start():
    vocabulary = Vocabulary.build(TRAIN, 1)
    assert vocabulary.decode([1, 4, 5, 0, 6, 2, 7, 8]) == ["a", "red", "circle"]
    assert vocabulary.decode(np.array([4, 3, 9])) == ["a", "<unk>", "the"]
    assert vocabulary.decode([2, 4]) == []
    assert vocabulary.decode(vocabulary.encode(["the", "red", "square"], 5)) == ["the", "red", "square"]


def test_encode_captions_pads_to_max_len_plus_two():
    vocabulary = Vocabulary.build(TRAIN, 1)
    encoded = encode_captions(vocabulary, [["a", "red", "circle"], ["a"], ["a", "red", "circle", "the"]], [0, 0, 5], 3)
    assert encoded["captions"].shape == (3, 5) and encoded["captions"].dtype == np.int32
    np.testing.assert_array_equal(encoded["captions"][1], [1, 4, 2, 0, 0])
    np.testing.assert_array_equal(encoded["captions"][2], [1, 4, 5, 6, 2])  # truncated to 3 words
    np.testing.assert_array_equal(encoded["lengths"], [5, 3, 5])
    np.testing.assert_array_equal(encoded["image_index"], [0, 0, 5])


def test_unk_rate_counts_unknown_tokens():
    vocabulary = Vocabulary.build(TRAIN, 1)
    assert unk_rate(vocabulary, [["a", "zebra"], ["red", "cat", "dog", "square"]]) == pytest.approx(3 / 6)
    assert unk_rate(vocabulary, []) == 0.0


def test_save_and_load_round_trip_and_bad_files(tmp_path):
    vocabulary = Vocabulary.build(TRAIN, 1)
    vocabulary.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json").words == vocabulary.words
    (tmp_path / "bad.json").write_text('{"tokens": []}', encoding="utf-8")
    with pytest.raises(CaptioningError, match=r"bad\.json: expected an object with a 'words' list"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(CaptioningError, match="must start with <pad> <start> <end> <unk>"):
        Vocabulary(["a", "<pad>", "<start>", "<end>", "<unk>"])


def test_vocab_stage_counts_the_training_split_only(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    from stages import vocab as vocab_stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("vocab:\n  min_word_freq: 2\n  max_len: 3\n", encoding="utf-8")
    table = CaptionTable(
        "scenes",
        tmp_path / "images",
        [
            ImageRecord("a.png", "train", ["a red circle", "a red circle at the top"]),
            ImageRecord("b.png", "train", ["a blue square", "once"]),
            ImageRecord("c.png", "val", ["a zebra zebra zebra"]),
            ImageRecord("d.png", "test", ["a giraffe giraffe"]),
        ],
    )
    write_table(tmp_path / "dataset.json", table)
    argv = ["vocab", "--table", "dataset.json", "--vocab", "vocab.json", "--encoded", "captions.npz"]
    monkeypatch.setattr(sys, "argv", argv + ["--metrics", "metrics.json"])
    vocab_stage.main()

    words = Vocabulary.load(tmp_path / "vocab.json").words
    assert words == list(SPECIALS) + ["a", "circle", "red"]  # "zebra"/"giraffe" only outside train
    encoded = np.load(tmp_path / "captions.npz")
    assert len(encoded["lengths"]) == 4  # training captions only
    np.testing.assert_array_equal(encoded["image_index"], [0, 0, 1, 1])
    np.testing.assert_array_equal(encoded["lengths"], [5, 5, 5, 3])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["unk_rate_val"] == pytest.approx(3 / 4)
    assert metrics["truncated_train_captions"] == 1


def test_a_1000_word_caption_is_kept_and_only_training_truncates_it(tmp_path: Path, monkeypatch, capsys):
    """The reference stays whole in the table; the vocab stage cuts the training copy to vocab.max_len and counts it."""
    flickr30k_files(
        "results_20130124.token", f"a.jpg#0\t{THOUSAND_WORDS}\na.jpg#1\tA dog .\nb.jpg#0\tA cat .\nc.jpg#0\tA cow .\n"
    )(tmp_path)
    table = read_dataset("flickr30k", tmp_path / "f30k")
    assert {r.image: r.captions for r in table.images}["a.jpg"] == [THOUSAND_WORDS, "A dog ."]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_document({"vocab": {"max_len": 24}})), encoding="utf-8")
    rows = [
        {"image": "a.png", "split": "train", "captions": [THOUSAND_WORDS, "a dog"]},
        {"image": "b.png", "split": "test", "captions": [THOUSAND_WORDS]},
    ]
    table_file(rows)(tmp_path)
    result = run_stage_here(tmp_path, "vocab", monkeypatch, capsys)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "metrics/vocab.json").read_text())["truncated_train_captions"] == 1
    encoded = np.load(tmp_path / "data/captions.npz")
    assert encoded["captions"].shape == (2, 24 + 2) and encoded["lengths"].tolist() == [26, 4]
    assert json.loads((tmp_path / "data/dataset.json").read_text())["images"][1]["captions"] == [THOUSAND_WORDS]
