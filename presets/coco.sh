#!/usr/bin/env bash
# Recommended settings for COCO (Karpathy split, restval in train): Flickr30k's, fewer epochs over more images.
# SCST as in the public COCO recipes: lr 2e-5, 5 samples, mean baseline, ~25 epochs, captions of up to 16 words.
# Usage: bash presets/coco.sh /path/to/coco [dvc exp run options]
set -euo pipefail
root=${1:?usage: bash presets/coco.sh DATA_ROOT [dvc exp run options]}
shift
PRESET_NAME=${PRESET_NAME:-coco} PRESET_DATASET=coco exec bash "$(dirname "$0")/flickr30k.sh" "$root" \
    -S train.epochs=10 -S train.step_size=4 \
    -S scst.epochs=25 -S scst.lr=0.00002 -S scst.max_len=17 -S scst.step_size=10 "$@"
