"""captioning/text/embeddings.py: reproducible Word2Vec, and the embedding matrix built from any vectors."""

from __future__ import annotations

import numpy as np
import pytest
from gensim.models import KeyedVectors

from captioning.errors import CaptioningError
from captioning.text.embeddings import embedding_matrix, load_word2vec, train_word2vec
from captioning.text.vocabulary import SPECIALS

SENTENCES = [
    ["a", "red", "circle", "at", "the", "top"],
    ["a", "blue", "square", "on", "the", "left"],
    ["a", "small", "red", "square", "in", "the", "center"],
] * 3


def keyed_vectors(words: list[str], dim: int = 4, seed: int = 0) -> KeyedVectors:
    vectors = KeyedVectors(vector_size=dim)
    vectors.add_vectors(words, np.random.default_rng(seed).normal(size=(len(words), dim)).astype(np.float32))
    return vectors


def test_train_word2vec_is_deterministic_across_calls():
    first = train_word2vec(SENTENCES, dim=8, window=2, epochs=3, seed=0)
    second = train_word2vec(SENTENCES, dim=8, window=2, epochs=3, seed=0)
    assert first.index_to_key == second.index_to_key
    assert set(first.index_to_key) == {w for s in SENTENCES for w in s}
    assert first.vectors.shape == (len(first.index_to_key), 8)
    np.testing.assert_array_equal(first.vectors, second.vectors)
    other = train_word2vec(SENTENCES, dim=8, window=2, epochs=3, seed=1)
    assert not np.allclose(first.vectors, other.vectors)


def test_embedding_matrix_zeros_pad_copies_found_words_and_reports_coverage():
    vectors = keyed_vectors(["red", "circle", "Paris", "unused"])
    words = list(SPECIALS) + ["red", "circle", "paris", "zebra"]
    matrix, coverage = embedding_matrix(words, vectors, seed=0)
    assert matrix.shape == (8, 4) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[0], 0.0)  # <pad>
    assert all(np.abs(matrix[i]).sum() > 0 for i in range(1, 4))  # other specials: random, not zero
    np.testing.assert_array_equal(matrix[4], vectors["red"])
    np.testing.assert_array_equal(matrix[5], vectors["circle"])
    np.testing.assert_array_equal(matrix[6], vectors["Paris"])  # capitalised fallback
    assert np.abs(matrix[7]).sum() > 0 and not any(np.array_equal(matrix[7], v) for v in vectors.vectors)
    assert coverage == pytest.approx(3 / 4)
    again, _ = embedding_matrix(words, vectors, seed=0)
    np.testing.assert_array_equal(matrix, again)
    assert embedding_matrix(list(SPECIALS), vectors, seed=0)[1] == 0.0


def test_embedding_matrix_from_trained_vectors_covers_every_training_word():
    vectors = train_word2vec(SENTENCES, dim=8, window=2, epochs=1, seed=0)
    words = list(SPECIALS) + sorted({w for s in SENTENCES for w in s})
    matrix, coverage = embedding_matrix(words, vectors, seed=0)
    assert coverage == 1.0 and matrix.shape == (len(words), 8)


@pytest.mark.parametrize("binary", [False, True])
def test_load_word2vec_reads_text_and_binary_files_with_a_limit(tmp_path, binary):
    vectors = keyed_vectors(["the", "red", "circle"])
    path = tmp_path / ("vectors.bin" if binary else "vectors.txt")
    vectors.save_word2vec_format(str(path), binary=binary)
    loaded = load_word2vec(str(path), dim=4)
    assert loaded.index_to_key == ["the", "red", "circle"]
    np.testing.assert_allclose(loaded.vectors, vectors.vectors, rtol=1e-5)
    assert load_word2vec(str(path), limit=2).index_to_key == ["the", "red"]


def test_load_word2vec_errors_say_what_to_do(tmp_path):
    path = tmp_path / "vectors.txt"
    keyed_vectors(["red"], dim=4).save_word2vec_format(str(path))
    with pytest.raises(
        CaptioningError, match="embeddings.dim is 300 but .* has 4-dimensional vectors; set embeddings.dim=4"
    ):
        load_word2vec(str(path), dim=300)
    with pytest.raises(CaptioningError, match=r"missing\.bin not found"):
        load_word2vec(str(tmp_path / "missing.bin"))
    (tmp_path / "junk.txt").write_text("hello world\n")
    with pytest.raises(CaptioningError, match=r"junk\.txt is not a text word2vec file"):
        load_word2vec(str(tmp_path / "junk.txt"))
