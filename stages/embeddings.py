"""Stage `embeddings`: a Word2Vec vector for every vocabulary word (trained here, or loaded from a file)."""

import argparse

import numpy as np

from captioning.cli import log, run, stage_arguments
from captioning.data.table import read_table
from captioning.io import atomic_path, write_json
from captioning.params import load_params
from captioning.text.embeddings import embedding_matrix, load_word2vec, train_word2vec
from captioning.text.vocabulary import Vocabulary


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(__doc__, ["table", "vocab", "output", "metrics"])


def main() -> None:
    args = arguments().parse_args()
    params = load_params("embeddings")

    vocabulary = Vocabulary.load(args.vocab)
    if params.word2vec_path:
        vectors = load_word2vec(params.word2vec_path, params.limit, params.dim)
        source = params.word2vec_path
    else:
        sentences, _ = read_table(args.table).tokenized_captions("train")
        vectors = train_word2vec(sentences, params.dim, params.window, params.epochs, params.seed)
        source = "training captions"
    matrix, coverage = embedding_matrix(vocabulary.words, vectors, params.seed)
    with atomic_path(args.output) as temporary:
        with open(temporary, "wb") as file:
            np.save(file, matrix)
    write_json(args.metrics, {"coverage": round(coverage, 6), "dim": int(matrix.shape[1])})
    log.info("%d x %d embeddings from %s, coverage %.3f", *matrix.shape, source, coverage)


if __name__ == "__main__":
    run(main)
