"""The project's tokenizer: deterministic, no downloaded corpora.

Unicode NFKC normalisation, lowercase, then nltk's RegexpTokenizer keeps runs of letters and digits
(with an inner apostrophe: "man's"); punctuation is dropped, as in the Karpathy `tokens` and the
PTB tokenizer used for scoring.
"""

from __future__ import annotations

import unicodedata

from nltk.tokenize import RegexpTokenizer

_WORDS = RegexpTokenizer(r"[^\W_]+(?:'[^\W_]+)?")


def tokenize(text: str) -> list[str]:
    return _WORDS.tokenize(unicodedata.normalize("NFKC", text).lower())
