#!/usr/bin/env bash
# Recommended settings for COCO (Karpathy split, restval in train): Flickr30k's, fewer epochs over more images.
# Usage: bash presets/coco.sh /path/to/coco [dvc exp run options]
set -euo pipefail
root=${1:?usage: bash presets/coco.sh DATA_ROOT [dvc exp run options]}
shift
PRESET_NAME=${PRESET_NAME:-coco} PRESET_DATASET=coco exec bash "$(dirname "$0")/flickr30k.sh" "$root" \
    -S train.epochs=10 -S train.step_size=4 "$@"
