"""Stage `train`: the attention decoder on the precomputed features; keeps the best epoch's model."""

import argparse
import sys

from captioning.cli import run, stage_arguments
from captioning.params import load_params
from captioning.train.run import TrainingFiles, run_training


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(
        __doc__, ["table", "vocab", "encoded", "features", "embeddings", "model", "live"], scratch="scratch/train"
    )


def main() -> None:
    args = arguments().parse_args()
    params, model_params = load_params("train"), load_params("model")
    finetune = load_params("embeddings").finetune
    # Several processes: this stage is run again under torchrun, with the same arguments, in each of them.
    run_training(TrainingFiles(**vars(args)), params, model_params, finetune, relaunch=["stages.train", *sys.argv[1:]])


if __name__ == "__main__":
    run(main)
