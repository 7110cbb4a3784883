"""Stage `evaluate`: beam search on the test split, scored with pycocoevalcap; attention figures and a gallery."""

import argparse

from captioning.checkpoint import check_vocabulary, load_model
from captioning.cli import log, run, stage_arguments
from captioning.data.table import read_table
from captioning.decoding import beam_search
from captioning.device import select_device
from captioning.environment import describe_environment
from captioning.evaluation import EvaluationImages, decode_captions, scene_metrics
from captioning.features.store import FeatureStore
from captioning.io import write_json
from captioning.metrics import CaptionScorer
from captioning.params import load_params
from captioning.reports import write_figures_and_gallery, write_predictions
from captioning.significance import bootstrap_intervals
from captioning.text.vocabulary import Vocabulary


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(
        __doc__,
        [
            "table",
            "vocab",
            "features",
            "model",
            "metrics",
            "intervals",
            "environment",
            "predictions",
            "attention",
            "gallery",
        ],
    )


def main() -> None:
    args = arguments().parse_args()
    params = load_params("evaluate")

    device = select_device()
    vocabulary = Vocabulary.load(args.vocab)
    decoder, saved = load_model(args.model, device)
    check_vocabulary(args.model, saved["words"], args.vocab, vocabulary.words)
    store = FeatureStore(args.features, memory_budget_bytes=0)  # the test split only: read as needed
    table = read_table(args.table)
    test = EvaluationImages.from_split(table, store, "test")

    def decode(model, features):
        return beam_search(
            model, features, vocabulary.start, vocabulary.end, params.beam_size, params.max_len, params.length_penalty
        )

    captions, weights = decode_captions(decoder, store, test, vocabulary, device, decode, params.batch_size)
    with CaptionScorer() as scorer:
        statistics = scorer.statistics(captions, dict(zip(test.names, test.references)))
    metrics = {**statistics.reported, **scene_metrics(table, test.names, captions, weights)}
    write_json(args.metrics, {k: round(v, 6) for k, v in metrics.items()})
    intervals = bootstrap_intervals(statistics, params.bootstrap_resamples, params.bootstrap_seed)
    write_json(args.intervals, {k: {end: round(v, 6) for end, v in ends.items()} for k, ends in intervals.items()})
    write_predictions(args.predictions, test, captions)
    # What trained the model (recorded in its file) and what decoded and scored it here.
    trained = saved.get("environment", "not recorded (a model file from before environments were recorded)")
    write_json(args.environment, {"train": trained, "evaluate": describe_environment(device, "fp32")})
    scores = {k: round(v, 4) for k, v in metrics.items()}
    log.info("test (%d images, beam %d): %s", len(test.names), params.beam_size, scores)
    write_figures_and_gallery(table, test, captions, weights, metrics, args.attention, args.gallery, params)


if __name__ == "__main__":
    run(main)
