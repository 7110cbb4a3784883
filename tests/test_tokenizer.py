"""captioning/text/tokenizer.py: lowercase words, punctuation dropped, deterministic."""

from __future__ import annotations

import random

import pytest

from captioning.text.tokenizer import _WORDS, WORD_PATTERN, tokenize


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


def test_the_words_are_the_ones_nltks_regexp_tokenizer_finds():
    """The same pattern in the same engine: equal on any text, so tokenize's normalisation sees no difference."""
    from nltk.tokenize import RegexpTokenizer

    nltk_words = RegexpTokenizer(WORD_PATTERN)
    alphabet = "aZé9_'’ -.,\n\t\u200b\u0301ﬁ!\U0001f436"  # \u0301 alone: a word for regex's \w, not for re's
    texts = ["".join(random.Random(seed).choices(alphabet, k=seed % 40)) for seed in range(2000)]
    texts += ["A man's hat, a dogs' bone!", "don't 'quote' me''s", "o'clock 3'4 _a_ é'é"]
    for text in texts:
        assert _WORDS.findall(text) == nltk_words.tokenize(text), repr(text)
