"""Stage `train`: the attention decoder on the precomputed features; keeps the best epoch's model."""

import argparse
import sys
from pathlib import Path

from captioning.cli import run
from captioning.params import load_params
from captioning.training_run import TrainingFiles, run_training


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
    # Several processes: this stage is run again under torchrun, with the same arguments, in each of them.
    run_training(TrainingFiles(**vars(args)), params, model_params, finetune, relaunch=["stages.train", *sys.argv[1:]])


if __name__ == "__main__":
    run(main)
