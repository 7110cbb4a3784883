"""Text: the tokenizer, the vocabulary built on the training captions, and the Word2Vec embeddings."""
