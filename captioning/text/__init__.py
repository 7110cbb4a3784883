"""Text: the tokenizer and the vocabulary built on the training captions."""
