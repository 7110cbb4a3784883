"""Stage `finetune`: self-critical training of the cross-entropy model for CIDEr-D (scst.epochs 0: passed through)."""

import argparse

from dvclive import Live

from captioning.checkpoint import check_vocabulary, load_model
from captioning.cli import log, run, stage_arguments
from captioning.data.table import read_table
from captioning.device import select_device
from captioning.environment import describe_environment
from captioning.evaluation import EvaluationImages
from captioning.features.store import FeatureStore
from captioning.io import run_fingerprint
from captioning.metrics import CaptionScorer
from captioning.params import load_params
from captioning.scst import RewardImages, finetune, pass_through, save_finetuned
from captioning.text.vocabulary import Vocabulary


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(
        __doc__, ["table", "vocab", "features", "input", "model", "live"], scratch="scratch/finetune"
    )


def main() -> None:
    args = arguments().parse_args()
    params, implementation = load_params("scst"), load_params("model").implementation

    device = select_device()
    decoder, saved = load_model(args.input, device, implementation)
    with Live(str(args.live), dvcyaml=False, save_dvc_exp=False, report=None) as live:
        if params.epochs == 0:
            pass_through(args.input, args.model)
            live.summary.update(best_epoch=0, best_val_cider=saved.get("validation", {}).get("cider"))
            live.make_summary()
            log.info("scst.epochs is 0: %s passed through unchanged as %s", args.input, args.model)
            return
        vocabulary, table = Vocabulary.load(args.vocab), read_table(args.table)
        check_vocabulary(args.input, saved["words"], args.vocab, vocabulary.words)
        store = FeatureStore(args.features)
        images, val = RewardImages.from_split(table, store, "train"), EvaluationImages.from_split(table, store, "val")
        run_key = run_fingerprint([params, implementation], [args.table, args.vocab, args.features, args.input])

        def on_epoch_end(epoch: int, values: dict, is_best: bool) -> None:
            for key, value in values.items():
                live.log_metric(key, value)
            live.next_step()

        resume_path = args.scratch / "state.pt"
        with CaptionScorer() as scorer:
            best = finetune(
                decoder, images, val, store, vocabulary, params, device, scorer, on_epoch_end, resume_path, run_key
            )
        live.summary.update(best_epoch=best["epoch"], best_val_cider=best["cider"], best_val_bleu_4=best["bleu_4"])
        live.make_summary()
    save_finetuned(args.model, decoder, saved, best, describe_environment(device, "fp32"))
    resume_path.unlink(missing_ok=True)
    log.info("kept scst epoch %d: %s", best["epoch"], {k: round(v, 4) for k, v in best.items() if k != "epoch"})


if __name__ == "__main__":
    run(main)
