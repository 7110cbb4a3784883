"""One training run from the train stage's files and params: the inputs read and checked, the decoder
built, fit() logging to DVCLive (one or several processes), and the best epoch's model saved.

Only rank 0 validates, logs to DVCLive and writes the model; the other ranks train their share.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from captioning.checkpoint import save_model
from captioning.data.table import check_splits, read_table
from captioning.device import resolve_precision
from captioning.environment import describe_environment
from captioning.errors import CaptioningError
from captioning.features.recipe import FeatureRecipe
from captioning.features.store import FeatureStore, memory_budget_bytes
from captioning.io import check_writable, run_fingerprint
from captioning.model import CaptionDecoder, DecoderConfig, build_decoder
from captioning.params import ModelParams, TrainParams, without_machine_knobs
from captioning.scoring.metrics import CaptionScorer
from captioning.scoring.split import EvaluationImages
from captioning.text.vocabulary import Vocabulary
from captioning.train import distributed
from captioning.train.batching import CaptionSet
from captioning.train.cross_entropy import feature_statistics, fit
from captioning.train.epochs import EpochLog
from captioning.train.resume import ResumeFile
from captioning.train.validation import Validation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingFiles:
    """The train stage's inputs and outputs, and where an interrupted run's state waits to be resumed."""

    table: Path
    vocab: Path
    encoded: Path
    features: Path
    embeddings: Path
    model: Path
    live: Path
    scratch: Path

    @property
    def inputs(self) -> list[Path]:
        return [self.table, self.vocab, self.encoded, self.features, self.embeddings]


def run_training(
    files: TrainingFiles, params: TrainParams, model_params: ModelParams, finetune: bool, relaunch: list[str]
) -> None:
    """Train and save the best epoch's model. With train.world_size > 1 outside torchrun, this process is
    replaced by torchrun running `python -m relaunch[0] relaunch[1:]` (the stage again) in every process."""
    if params.world_size > 1 and not distributed.under_torchrun():
        distributed.relaunch_with_torchrun(params, relaunch[0], relaunch[1:])  # does not return
    world = distributed.setup()  # rank, world size and device; a world of one without torchrun

    torch.manual_seed(params.seed)
    table, vocabulary = read_table(files.table), Vocabulary.load(files.vocab)
    budget = memory_budget_bytes(params.feature_memory_gb, processes=params.nproc_per_node)  # each process loads them
    store = FeatureStore(files.features, memory_budget_bytes=budget)
    recipe = FeatureRecipe.from_dict(store.attrs, str(files.features), "rerun the features stage (dvc repro features)")
    check_splits(table, files.table, store.skipped)
    check_writable(files.model, files.live / "metrics.json", files.scratch / "state.pt")  # before DVCLive empties live
    train = CaptionSet.from_encoded(np.load(files.encoded), table, store)
    val = EvaluationImages.from_split(table, store, "val")
    embeddings = load_embeddings(files.embeddings, files.vocab, len(vocabulary))

    device, precision = world.device, resolve_precision(params.precision, world.device)
    decoder = build_model(len(vocabulary), embeddings.shape[1], store.shape[2], model_params)
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

    resume = ResumeFile(
        files.scratch / "state.pt",
        run_fingerprint([without_machine_knobs("train", params), model_params, finetune], files.inputs),
    )
    scoring = CaptionScorer() if world.is_main else nullcontext()
    epoch_log = EpochLog(files.live, enabled=world.is_main, timings=files.scratch / "timings.jsonl")
    with epoch_log, scoring as scorer:  # scorer: None on the ranks other than 0
        validation = Validation(val, store, vocabulary, scorer, params.val_max_len, device)
        best = fit(
            decoder, train, store, validation, params, precision=precision, on_epoch_end=epoch_log, resume=resume
        )
        epoch_log.summarize(best_epoch=best["epoch"], **{f"best_val_{params.select_by}": best[params.select_by]})
    distributed.teardown()
    if world.is_main:
        scores = {k: v for k, v in best.items() if k != "epoch"}
        # The recipe in name order, as the features file lists it (the model file is as it was before FeatureRecipe).
        feature_recipe = dict(sorted(recipe.to_dict().items()))
        save_model(
            files.model,
            decoder,
            vocabulary.words,
            feature_recipe,
            epoch=best["epoch"],
            validation=scores,
            dataset=table.dataset,  # provenance, shown by the demo
            environment=describe_environment(device, precision),
        )
        resume.path.unlink(missing_ok=True)
        log.info("best epoch %d: %s", best["epoch"], {k: round(v, 4) for k, v in scores.items()})


def load_embeddings(path: Path, vocab_path: Path, vocabulary_size: int) -> torch.Tensor:
    """The embeddings stage's (V, E) matrix, which must have one row per vocabulary word."""
    embeddings = torch.from_numpy(np.load(path))
    if embeddings.shape[0] != vocabulary_size:
        raise CaptioningError(
            f"{path} has {embeddings.shape[0]} rows but {vocab_path} has {vocabulary_size} words: "
            "it was built for another vocabulary; rerun the embeddings stage (dvc repro embeddings)"
        )
    return embeddings


def build_model(vocab_size: int, embed_dim: int, feature_dim: int, model_params: ModelParams) -> CaptionDecoder:
    """The decoder the model params describe (untrained)."""
    config = DecoderConfig.from_params(model_params, vocab_size, embed_dim, feature_dim)
    return build_decoder(config, model_params.implementation)
