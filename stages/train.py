"""Stage `train`: the attention decoder on the precomputed features; keeps the best epoch's model."""

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from dvclive import Live

from captioning import distributed
from captioning.checkpoint import save_model
from captioning.cli import log, run
from captioning.data.table import check_splits, read_table
from captioning.device import resolve_precision
from captioning.errors import CaptioningError
from captioning.evaluation import EvaluationImages
from captioning.features.store import FeatureStore
from captioning.io import check_writable, run_fingerprint
from captioning.metrics import CaptionScorer
from captioning.model import CaptionDecoder, DecoderConfig
from captioning.params import load_params
from captioning.text.vocabulary import Vocabulary
from captioning.training import CaptionSet, feature_statistics, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", type=Path, default=Path("data/dataset.json"))
    parser.add_argument("--vocab", type=Path, default=Path("data/vocab.json"))
    parser.add_argument("--encoded", type=Path, default=Path("data/captions.npz"))
    parser.add_argument("--features", type=Path, default=Path("data/features.h5"))
    parser.add_argument("--embeddings", type=Path, default=Path("data/embeddings.npy"))
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--live", type=Path, default=Path("metrics/train"))
    parser.add_argument("--scratch", type=Path, default=Path("scratch/train"), help="resumable state, not an output")
    args = parser.parse_args()
    params, model_params = load_params("train"), load_params("model")
    finetune = load_params("embeddings").finetune
    if params.world_size > 1 and not distributed.under_torchrun():
        distributed.relaunch_with_torchrun(params, "stages.train", sys.argv[1:])  # does not return
    world = distributed.setup()  # rank, world size and device; a world of one without torchrun

    torch.manual_seed(params.seed)
    table, vocabulary = read_table(args.table), Vocabulary.load(args.vocab)
    store = FeatureStore(args.features, memory_budget_bytes=int(params.feature_memory_gb * 2**30))
    check_splits(table, args.table, store.skipped)
    check_writable(args.model, args.scratch / "state.pt")
    train = CaptionSet.from_encoded(np.load(args.encoded), table, store)
    val = EvaluationImages.from_split(table, store, "val")

    embeddings = torch.from_numpy(np.load(args.embeddings))
    if embeddings.shape[0] != len(vocabulary):
        raise CaptioningError(
            f"{args.embeddings} has {embeddings.shape[0]} rows but {args.vocab} has {len(vocabulary)} words: "
            "it was built for another vocabulary; rerun the embeddings stage (dvc repro embeddings)"
        )
    config = DecoderConfig(
        vocab_size=len(vocabulary),
        embed_dim=embeddings.shape[1],
        feature_dim=store.shape[2],
        decoder_dim=model_params.decoder_dim,
        attention_dim=model_params.attention_dim,
        dropout=model_params.dropout,
        attention=model_params.attention,
        deep_output=model_params.deep_output,
    )
    device = world.device
    precision = resolve_precision(params.precision, device)
    decoder = CaptionDecoder(config)
    decoder.load_embeddings(embeddings, finetune)
    decoder.set_feature_statistics(*feature_statistics(store, np.unique(train.feature_rows), seed=params.seed))
    decoder.to(device)
    log.info(
        "training on %d captions, %d validation images, %s, %s, %d process(es)",
        len(train.lengths),
        len(val.names),
        device,
        precision,
        world.size,
    )

    inputs = [args.table, args.vocab, args.encoded, args.features, args.embeddings]
    run_key = run_fingerprint([params, model_params, finetune], inputs)
    # Only rank 0 validates, logs and writes: the other ranks get None for both.
    logger = Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None) if world.is_main else nullcontext()
    scoring = CaptionScorer() if world.is_main else nullcontext()
    with logger as live, scoring as scorer:

        def on_epoch_end(epoch: int, values: dict, is_best: bool) -> None:
            if live is None:
                return
            for key, value in values.items():
                live.log_metric(key, value)
            live.next_step()

        best = fit(
            decoder,
            train,
            val,
            store,
            vocabulary,
            params,
            device,
            precision,
            scorer,
            on_epoch_end,
            resume_path=args.scratch / "state.pt",
            run_key=run_key,
        )
        if live is not None:
            live.summary["best_epoch"] = best["epoch"]
            live.summary[f"best_val_{params.select_by}"] = best[params.select_by]
            live.make_summary()
    distributed.teardown()
    if not world.is_main:
        return
    save_model(
        args.model,
        decoder,
        vocabulary.words,
        store.attrs,
        epoch=best["epoch"],
        validation={k: v for k, v in best.items() if k != "epoch"},
    )
    (args.scratch / "state.pt").unlink(missing_ok=True)
    log.info("best epoch %d: %s", best["epoch"], {k: round(v, 4) for k, v in best.items() if k != "epoch"})


if __name__ == "__main__":
    run(main)
