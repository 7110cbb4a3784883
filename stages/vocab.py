"""Stage `vocab`: tokenise, count words on the training split only, encode captions."""

import argparse

import numpy as np

from captioning.cli import log, run, stage_arguments
from captioning.data.table import read_table
from captioning.io import atomic_path, write_json
from captioning.params import load_params
from captioning.text.vocabulary import Vocabulary, check_has_words, encode_captions, unk_rate


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(__doc__, ["table", "vocab", "encoded", "metrics"])


def main() -> None:
    args = arguments().parse_args()
    params = load_params("vocab")

    table = read_table(args.table)
    tokenized = {split: [] for split in ("train", "val", "test")}
    train_image_index = []
    for index, record in enumerate(table.images):
        captions = record.tokenized()
        tokenized[record.split].extend(captions)
        if record.split == "train":
            train_image_index.extend([index] * len(captions))

    vocabulary = Vocabulary.build(tokenized["train"], params.min_word_freq)
    check_has_words(vocabulary, tokenized["train"], params.min_word_freq)
    encoded = encode_captions(vocabulary, tokenized["train"], train_image_index, params.max_len)
    vocabulary.save(args.vocab)
    with atomic_path(args.encoded) as temporary:
        with open(temporary, "wb") as file:
            np.savez(file, **encoded)

    metrics = {"vocab_size": len(vocabulary)}
    metrics.update({f"unk_rate_{split}": round(unk_rate(vocabulary, t), 6) for split, t in tokenized.items() if t})
    metrics["truncated_train_captions"] = int(sum(len(t) > params.max_len for t in tokenized["train"]))
    write_json(args.metrics, metrics)
    log.info("vocabulary of %d words; %s", len(vocabulary), metrics)


if __name__ == "__main__":
    run(main)
