#!/usr/bin/env bash
# Recommended settings for Flickr30k (Karpathy split), as one DVC experiment.
# Usage: bash presets/flickr30k.sh /path/to/flickr30k [extra dvc exp run options, e.g. -S train.epochs=30]
# Then self-critical training for CIDEr-D (docs/scst.md): Rennie et al.'s lr 5e-5, 5 samples per image with
# the mean-of-the-others baseline (Luo 2020), 15 epochs.
# The encoder is ResNet50; to compare with published ResNet-101 numbers (the widely copied PyTorch tutorial,
# self-critical.pytorch) add -S features.encoder=resnet101 (docs/encoders.md: its cost).
# Optional GoogleNews vectors: add -S embeddings.word2vec_path=/path/GoogleNews-vectors-negative300.bin.gz -S embeddings.dim=300
set -euo pipefail
root=${1:?usage: bash presets/flickr30k.sh DATA_ROOT [dvc exp run options]}
shift
exec dvc exp run -n "${PRESET_NAME:-flickr30k}" \
    -S data.dataset="${PRESET_DATASET:-flickr30k}" -S data.root="$root" \
    -S features.encoder=resnet50 -S features.weights=imagenet -S features.imagenet_variant=IMAGENET1K_V2 -S features.batch_size=64 \
    -S vocab.min_word_freq=5 -S vocab.max_len=20 \
    -S embeddings.dim=300 -S embeddings.epochs=5 \
    -S model.attention_dim=512 -S model.decoder_dim=512 -S model.dropout=0.5 \
    -S train.lr=0.0004 -S train.epochs=20 -S train.batch_size=64 -S train.step_size=8 -S train.gamma=0.5 \
    -S train.alpha_c=1.0 -S train.select_by=bleu_4 -S train.val_max_len=30 \
    -S evaluate.beam_size=5 -S evaluate.max_len=30 \
    -S scst.epochs=15 -S scst.lr=0.00005 -S scst.samples=5 -S scst.baseline=mean -S scst.max_len=21 \
    -S scst.batch_size=50 -S scst.step_size=5 -S scst.gamma=0.8 \
    "$@"
