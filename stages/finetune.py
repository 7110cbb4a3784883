"""Stage `finetune`: self-critical training of the cross-entropy model for CIDEr-D (scst.epochs 0: passed through)."""

import argparse

from captioning.cli import run, stage_arguments
from captioning.finetune.run import FinetuneFiles, run_finetuning
from captioning.params import load_params


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(
        __doc__, ["table", "vocab", "features", "input", "model", "live"], scratch="scratch/finetune"
    )


def main() -> None:
    args = arguments().parse_args()
    params, implementation = load_params("scst"), load_params("model").implementation
    memory_gb = load_params("train").feature_memory_gb  # the RAM budget for features, as the train stage's (a knob)
    run_finetuning(FinetuneFiles(**vars(args)), params, implementation, memory_gb)


if __name__ == "__main__":
    run(main)
