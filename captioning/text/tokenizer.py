r"""The project's tokenizer: deterministic, no downloaded corpora.

Unicode NFKC normalisation, lowercase, invisible format characters (zero-width space and joiners,
category Cf) read as spaces, then runs of letters and digits are kept (with an inner apostrophe: "man's");
punctuation, symbols and emoji are dropped, as in the Karpathy `tokens` and the PTB tokenizer used for scoring.
The words are what nltk's RegexpTokenizer finds with the same pattern and the same engine, `regex` (whose \w,
unlike `re`'s, takes in combining marks); tests/test_tokenizer.py holds the two equal. Importing nltk itself
would cost every stage process close to a second.
"""

from __future__ import annotations

import unicodedata

import regex

WORD_PATTERN = r"[^\W_]+(?:'[^\W_]+)?"
_WORDS = regex.compile(WORD_PATTERN, regex.UNICODE | regex.MULTILINE | regex.DOTALL)  # RegexpTokenizer's flags


def _visible(text: str) -> str:
    # Python's \w matches the zero-width joiners: without this, "\u200d" alone would be a word
    return "".join(" " if unicodedata.category(c) == "Cf" else c for c in text)


def tokenize(text: str) -> list[str]:
    return _WORDS.findall(_visible(unicodedata.normalize("NFKC", text)).lower())
