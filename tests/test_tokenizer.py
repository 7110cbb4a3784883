"""captioning/text/tokenizer.py: lowercase words, punctuation dropped, deterministic."""

from __future__ import annotations

import pytest

from captioning.text.tokenizer import tokenize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Dog runs.", ["a", "dog", "runs"]),
        ("A man's hat, a dogs' bone!", ["a", "man's", "hat", "a", "dogs", "bone"]),
        ("Two  dogs\tplay\nin 3 parks", ["two", "dogs", "play", "in", "3", "parks"]),
        ('"Quoted" (words) - and; more?', ["quoted", "words", "and", "more"]),
        ("un café à Zürich", ["un", "café", "à", "zürich"]),
        ("ﬁsh ＡＢＣ", ["fish", "abc"]),  # NFKC: ligature and full-width letters
        ("snake_case", ["snake", "case"]),
        ("'quoted'", ["quoted"]),
        ("", []),
        ("... !!", []),
        ("\u200b\u200d\u2060", []),  # zero-width space, joiner, word joiner: invisible, not a word
        ("a\u200bdog", ["a", "dog"]),
        ("\U0001f436\u200d\U0001f9ba", []),  # an emoji sequence
    ],
)
def test_tokenize(text, expected):
    assert tokenize(text) == expected


def test_decomposed_and_composed_accents_give_the_same_word():
    assert tokenize("cafe\u0301") == tokenize("caf\u00e9") == ["café"]
