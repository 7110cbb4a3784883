"""One self-critical fine-tuning run from the finetune stage's files and params: the cross-entropy model
and the inputs read and checked, finetune() logging to DVCLive, and the kept epoch's model saved
(scst.epochs 0: the cross-entropy model passed through unchanged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from captioning.checkpoint import check_vocabulary, load_model
from captioning.data.table import read_table
from captioning.device import select_device
from captioning.environment import describe_environment
from captioning.features.store import FeatureStore, memory_budget_bytes
from captioning.finetune.scst import RewardImages, finetune, pass_through, save_finetuned
from captioning.io import check_writable, run_fingerprint
from captioning.params import ScstParams
from captioning.scoring.metrics import CaptionScorer
from captioning.scoring.split import EvaluationImages
from captioning.text.vocabulary import Vocabulary
from captioning.train.epochs import EpochLog
from captioning.train.resume import ResumeFile
from captioning.train.validation import Validation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneFiles:
    """The finetune stage's inputs (`input`: the cross-entropy model) and outputs, and its resumable state's folder."""

    table: Path
    vocab: Path
    features: Path
    input: Path
    model: Path
    live: Path
    scratch: Path


def run_finetuning(
    files: FinetuneFiles, params: ScstParams, implementation: str, feature_memory_gb: float | str
) -> None:
    """Fine-tune files.input with SCST and save the kept epoch's model as files.model. The features are held in RAM
    up to `feature_memory_gb` (train.feature_memory_gb: GB, or auto) and read batch by batch beyond it."""
    # every output, before DVCLive starts its log (it empties files.live) and before any work; the state if used
    check_writable(files.model, files.live / "metrics.json", *[files.scratch / "state.pt"] * (params.epochs > 0))
    device = select_device()
    decoder, saved = load_model(files.input, device, implementation)
    with EpochLog(files.live, timings=files.scratch / "timings.jsonl") as epoch_log:
        if params.epochs == 0:
            pass_through(files.input, files.model)
            epoch_log.summarize(best_epoch=0, best_val_cider=saved.get("validation", {}).get("cider"))
            log.info("scst.epochs is 0: %s passed through unchanged as %s", files.input, files.model)
            return
        vocabulary, table = Vocabulary.load(files.vocab), read_table(files.table)
        check_vocabulary(files.input, saved["words"], files.vocab, vocabulary.words)
        store = FeatureStore(files.features, memory_budget_bytes=memory_budget_bytes(feature_memory_gb))
        images, val = RewardImages.from_split(table, store, "train"), EvaluationImages.from_split(table, store, "val")
        inputs = [files.table, files.vocab, files.features, files.input]
        resume = ResumeFile(files.scratch / "state.pt", run_fingerprint([params, implementation], inputs))
        with CaptionScorer() as scorer:
            validation = Validation(val, store, vocabulary, scorer, params.max_len, device)
            best = finetune(
                decoder, images, store, vocabulary, validation, params, on_epoch_end=epoch_log, resume=resume
            )
        epoch_log.summarize(best_epoch=best["epoch"], best_val_cider=best["cider"], best_val_bleu_4=best["bleu_4"])
    save_finetuned(files.model, decoder, saved, best, describe_environment(device, "fp32"))
    resume.path.unlink(missing_ok=True)
    log.info("kept scst epoch %d: %s", best["epoch"], {k: round(v, 4) for k, v in best.items() if k != "epoch"})
