"""The vocabulary: words seen at least `min_word_freq` times in the training captions, plus specials."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from captioning.errors import CaptioningError
from captioning.io import atomic_path, read_json, write_json

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)


class Vocabulary:
    def __init__(self, words: list[str]):
        if list(words[: len(SPECIALS)]) != list(SPECIALS):
            raise CaptioningError(f"a vocabulary must start with {' '.join(SPECIALS)}")
        self.words = list(words)
        self.index = {word: i for i, word in enumerate(self.words)}
        self.pad, self.start, self.end, self.unk = (self.index[s] for s in SPECIALS)

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, tokenized_captions: Iterable[list[str]], min_word_freq: int) -> Vocabulary:
        counts = Counter(token for caption in tokenized_captions for token in caption)
        # Most frequent first, ties alphabetical: the same captions always give the same ids.
        kept = sorted((w for w, n in counts.items() if n >= min_word_freq), key=lambda w: (-counts[w], w))
        return cls(list(SPECIALS) + [w for w in kept if w not in SPECIALS])

    def encode(self, tokens: list[str], max_len: int) -> list[int]:
        """<start> w1 .. wn <end>, with at most max_len words kept."""
        return [self.start] + [self.index.get(t, self.unk) for t in tokens[:max_len]] + [self.end]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first <end>, without specials."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.end:
                break
            if i not in (self.pad, self.start):
                words.append(self.words[i])
        return words

    def save(self, path: str | Path) -> None:
        write_json(path, {"words": self.words})

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        document = read_json(path)
        if not isinstance(document, dict) or not isinstance(document.get("words"), list):
            raise CaptioningError(f"{path}: expected an object with a 'words' list")
        return cls(document["words"])


def check_has_words(vocabulary: Vocabulary, tokenized_captions: list[list[str]], min_word_freq: int) -> None:
    """A vocabulary of the special tokens alone trains a model that can only say `<unk>`: stop instead."""
    if len(vocabulary) > len(SPECIALS):
        return
    counts = Counter(token for caption in tokenized_captions for token in caption if token not in SPECIALS)
    if not counts:
        raise CaptioningError(
            f"the training split has no words ({len(tokenized_captions)} training captions): check the caption table"
        )
    word, most = min(counts.items(), key=lambda item: (-item[1], item[0]))  # the most frequent, ties by name
    raise CaptioningError(
        f"params.yaml: vocab.min_word_freq={min_word_freq} keeps no word: the most frequent of the "
        f"{len(counts)} training words ({word!r}) appears {most} times; lower it to at most {most}"
    )


def encode_captions(
    vocabulary: Vocabulary, tokenized: list[list[str]], image_index: list[int], max_len: int
) -> dict[str, np.ndarray]:
    """Pad every encoded caption to max_len + 2 ids; `lengths` counts <start> and <end>."""
    ids = np.full((len(tokenized), max_len + 2), vocabulary.pad, dtype=np.int32)
    lengths = np.zeros(len(tokenized), dtype=np.int32)
    for row, tokens in enumerate(tokenized):
        encoded = vocabulary.encode(tokens, max_len)
        ids[row, : len(encoded)] = encoded
        lengths[row] = len(encoded)
    return {"captions": ids, "lengths": lengths, "image_index": np.asarray(image_index, dtype=np.int32)}


def save_encoded(path: str | Path, encoded: dict[str, np.ndarray]) -> None:
    """encode_captions' arrays as one .npz file, written to a temporary name and renamed."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, **encoded)


def vocabulary_metrics(vocabulary: Vocabulary, tokenized: dict[str, list[list[str]]], max_len: int) -> dict:
    """The vocabulary's size, the <unk> rate of each split that has captions, and how many training captions
    are cut to max_len words."""
    metrics = {"vocab_size": len(vocabulary)}
    metrics.update({f"unk_rate_{split}": round(unk_rate(vocabulary, t), 6) for split, t in tokenized.items() if t})
    metrics["truncated_train_captions"] = int(sum(len(t) > max_len for t in tokenized["train"]))
    return metrics


def unk_rate(vocabulary: Vocabulary, tokenized: list[list[str]]) -> float:
    total = sum(len(t) for t in tokenized)
    unknown = sum(1 for tokens in tokenized for t in tokens if t not in vocabulary.index)
    return unknown / total if total else 0.0
