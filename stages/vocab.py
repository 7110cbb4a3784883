"""Stage `vocab`: tokenise, count words on the training split only, encode captions."""

import argparse

from captioning.cli import log, run, stage_arguments
from captioning.data.table import read_table
from captioning.io import write_json
from captioning.params import load_params
from captioning.text.vocabulary import Vocabulary, check_has_words, encode_captions, save_encoded, vocabulary_metrics


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(__doc__, ["table", "vocab", "encoded", "metrics"])


def main() -> None:
    args = arguments().parse_args()
    params = load_params("vocab")

    table = read_table(args.table)
    train, train_image_index = table.tokenized_captions("train")
    vocabulary = Vocabulary.build(train, params.min_word_freq)
    check_has_words(vocabulary, train, params.min_word_freq)
    vocabulary.save(args.vocab)
    save_encoded(args.encoded, encode_captions(vocabulary, train, train_image_index, params.max_len))

    tokenized = {"train": train, **{split: table.tokenized_captions(split)[0] for split in ("val", "test")}}
    metrics = vocabulary_metrics(vocabulary, tokenized, params.max_len)
    write_json(args.metrics, metrics)
    log.info("vocabulary of %d words; %s", len(vocabulary), metrics)


if __name__ == "__main__":
    run(main)
