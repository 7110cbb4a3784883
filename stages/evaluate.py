"""Stage `evaluate`: beam search on the test split, scored with pycocoevalcap; attention figures and a gallery."""

import argparse

from captioning.checkpoint import check_vocabulary, load_model
from captioning.cli import run, stage_arguments
from captioning.data.table import check_contents, read_table
from captioning.device import select_device
from captioning.features.store import FeatureStore
from captioning.model.decoding import beam_search
from captioning.params import load_params
from captioning.reports.evaluation import caption_and_score
from captioning.reports.outputs import write_environment, write_figures_and_gallery, write_predictions, write_scores
from captioning.text.vocabulary import Vocabulary


def arguments() -> argparse.ArgumentParser:
    paths = ["table", "vocab", "features", "model", "metrics", "intervals", "environment", "predictions"]
    return stage_arguments(__doc__, [*paths, "attention", "gallery"])


def main() -> None:
    args = arguments().parse_args()
    params = load_params("evaluate")
    device, vocabulary = select_device(), Vocabulary.load(args.vocab)
    decoder, saved = load_model(args.model, device)
    check_vocabulary(args.model, saved["words"], args.vocab, vocabulary.words)
    store = FeatureStore(args.features, memory_budget_bytes=0)  # the test split only: read as needed
    table = read_table(args.table, load_params("data").root)  # data.root: where, on this machine, not what
    check_contents(table, table.split("test"), args.table)  # the figures and the gallery show them

    def decode(model, features):
        start, end = vocabulary.start, vocabulary.end
        return beam_search(model, features, start, end, params.beam_size, params.max_len, params.length_penalty)

    test = caption_and_score(decoder, table, store, "test", vocabulary, device, decode, params.batch_size)
    write_scores(args.metrics, args.intervals, test, params.bootstrap_resamples, params.bootstrap_seed)
    write_predictions(args.predictions, test.images, test.captions)
    write_environment(args.environment, saved.get("environment"), device)
    write_figures_and_gallery(
        table, test.images, test.captions, test.weights, test.metrics, args.attention, args.gallery, params
    )


if __name__ == "__main__":
    run(main)
