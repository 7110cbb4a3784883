"""Word embeddings that initialise the decoder: Word2Vec trained on the training captions, or loaded.

Lookup for a loaded word2vec file (e.g. GoogleNews, case-sensitive, without "a"/"and"/"of"):
exact word, then Capitalised, then a seeded random vector. <pad> is zeros; the other specials random.
The embedding size is the file's (300 for GoogleNews): embeddings.dim must say the same, or the stage
stops before loading the file. embeddings.limit keeps only the first (most frequent) words of the file.
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import numpy as np

from captioning.errors import CaptioningError
from captioning.text.vocabulary import PAD, SPECIALS

log = logging.getLogger(__name__)
GENSIM_DOWNLOADER_NAMES = ("word2vec-google-news-300",)


def _stable_hash(text: str) -> int:
    # gensim seeds each initial vector with hash(word); Python's hash changes per process.
    return zlib.crc32(text.encode("utf-8"))


def train_word2vec(sentences: list[list[str]], dim: int, window: int, epochs: int, seed: int):
    """Word2Vec (skip-gram) on the training captions; bit-reproducible (one worker, stable hash)."""
    from gensim.models import Word2Vec

    model = Word2Vec(
        sentences,
        vector_size=dim,
        window=window,
        min_count=1,
        workers=1,
        seed=seed,
        epochs=epochs,
        sg=1,
        hashfxn=_stable_hash,
    )
    return model.wv


def word2vec_header(path: Path, binary: bool) -> tuple[int, int]:
    """(number of words, dimension) from the first line of a word2vec file, without loading it."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            first_line = file.readline(200)
        count, dim = (int(value) for value in first_line.split())
        return count, dim
    except (OSError, ValueError):
        kind = "binary" if binary else "text"
        raise CaptioningError(
            f"embeddings.word2vec_path: {path} is not a {kind} word2vec file (its first line must be '<words> <dim>')"
        ) from None


def _check_dim(source: str, found: int, dim: int | None) -> None:
    if dim is not None and found != dim:
        raise CaptioningError(
            f"params.yaml: embeddings.dim is {dim} but {source} has {found}-dimensional vectors; "
            f"set embeddings.dim={found}"
        )


def load_word2vec(path_or_name: str, limit: int = 0, dim: int | None = None):
    """KeyedVectors from a word2vec file (.bin/.bin.gz binary, anything else text) or a gensim downloader name.

    `limit` keeps the first (most frequent) words only; 0 keeps all. With `dim`, a file whose vectors have
    another dimension is refused before it is loaded (the model's embedding size follows the vectors).
    """
    from gensim.models import KeyedVectors

    limit = limit or None
    if path_or_name in GENSIM_DOWNLOADER_NAMES:
        try:
            import gensim.downloader

            vectors = gensim.downloader.load(path_or_name)
        except Exception as error:
            raise CaptioningError(
                f"embeddings.word2vec_path: cannot download {path_or_name} ({error}); download "
                "GoogleNews-vectors-negative300.bin.gz elsewhere and set embeddings.word2vec_path to its path"
            ) from None
        _check_dim(path_or_name, vectors.vector_size, dim)
        return vectors
    path = Path(path_or_name)
    if not path.is_file():
        raise CaptioningError(f"embeddings.word2vec_path: {path} not found")
    binary = path.name.endswith((".bin", ".bin.gz"))
    _check_dim(str(path), word2vec_header(path, binary)[1], dim)
    count, found_dim = word2vec_header(path, binary)
    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=binary, limit=limit)
    except Exception:
        # gensim's reasons ("could not broadcast input array...", "pop from empty list") do not say where
        where = _first_bad_text_line(path, count, found_dim, limit) if not binary else None
        reason = where or (
            f"it ends early or is damaged: its first line announces {count} vectors of {found_dim} values; "
            "a truncated download?"
        )
        kind = "binary" if binary else "text"
        raise CaptioningError(
            f"embeddings.word2vec_path: {path} is not a valid {kind} word2vec file: {reason}"
        ) from None


def _first_bad_text_line(path: Path, count: int, dim: int, limit: int | None) -> str | None:
    """Where a text word2vec file breaks its format: `WORD v1 ... v<dim>` on each of `count` lines."""
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    wanted = min(count, limit) if limit else count
    lines = 0
    with opener(path, "rt", encoding="utf-8", errors="replace") as file:
        next(file, None)  # the header, checked already
        for number, line in enumerate(file, start=2):
            if lines == wanted:
                return None
            fields = line.rstrip("\r\n").rstrip(" ").split(" ")
            if len(fields) != dim + 1 or not fields[0]:
                got = "nothing" if not fields[0] else f"{fields[0][:40]!r} and {len(fields) - 1} values"
                return f"line {number}: expected a word and {dim} numbers, got {got}"
            for value in fields[1:]:
                try:
                    float(value)
                except ValueError:
                    return f"line {number}: {value[:40]!r} (of {fields[0][:40]!r}) is not a number"
            lines += 1
    if lines < wanted:
        return f"it has {lines} vectors but its first line announces {count}"
    return None


def embedding_matrix(words: list[str], vectors, seed: int) -> tuple[np.ndarray, float]:
    """(vocab, dim) float32 matrix and the fraction of non-special words found in `vectors`."""
    rng = np.random.default_rng(seed)
    dim = vectors.vector_size
    scale = float(np.std(vectors.vectors)) if len(vectors.key_to_index) else 0.1
    matrix = rng.normal(0.0, scale, size=(len(words), dim)).astype(np.float32)
    found = 0
    for row, word in enumerate(words):
        if word == PAD:
            matrix[row] = 0.0
        elif word in SPECIALS:
            continue
        else:
            for candidate in (word, word.capitalize()):
                if candidate in vectors.key_to_index:
                    matrix[row] = vectors[candidate]
                    found += 1
                    break
    regular = len([w for w in words if w not in SPECIALS])
    return matrix, (found / regular if regular else 0.0)
