"""The project's tokenizer: deterministic, no downloaded corpora.

Unicode NFKC normalisation, lowercase, invisible format characters (zero-width space and joiners,
category Cf) read as spaces, then nltk's RegexpTokenizer keeps runs of letters and digits (with an
inner apostrophe: "man's"); punctuation, symbols and emoji are dropped, as in the Karpathy `tokens`
and the PTB tokenizer used for scoring.
"""

from __future__ import annotations

import unicodedata

from nltk.tokenize import RegexpTokenizer

_WORDS = RegexpTokenizer(r"[^\W_]+(?:'[^\W_]+)?")


def _visible(text: str) -> str:
    # Python's \w matches the zero-width joiners: without this, "\u200d" alone would be a word
    return "".join(" " if unicodedata.category(c) == "Cf" else c for c in text)


def tokenize(text: str) -> list[str]:
    return _WORDS.tokenize(_visible(unicodedata.normalize("NFKC", text)).lower())
