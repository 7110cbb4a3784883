#!/usr/bin/env bash
# Recommended settings for Flickr8k: those of Flickr30k (a smaller set trains the same model).
# Usage: bash presets/flickr8k.sh /path/to/flickr8k [dvc exp run options]
PRESET_NAME=${PRESET_NAME:-flickr8k} PRESET_DATASET=flickr8k exec bash "$(dirname "$0")/flickr30k.sh" "$@"
