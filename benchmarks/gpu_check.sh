#!/usr/bin/env bash
# The Flickr30k rehearsal (benchmarks/scale.py) on a CUDA machine: the features stage and one training
# epoch with AMP (bf16 where the GPU has it, else fp16), the same table as on the CPU, then the same
# epoch once more through torchrun with one process (NCCL), as train.nproc_per_node > 1 would run it.
#
#   bash benchmarks/gpu_check.sh [IMAGES] [WORKDIR]     # defaults: 31014 images, /tmp/scale-gpu
#
# Nothing downloads: features.weights stays none (a seeded random ResNet50), as in the CPU rehearsal.
set -euo pipefail
images=${1:-31014}
workdir=${2:-/tmp/scale-gpu}
cd "$(dirname "$0")/.."

python=${PYTHON:-python}
if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "error: no CUDA device visible to $python (torch.cuda.is_available() is False); run this on a GPU machine" >&2
    exit 1
fi
if ! "$python" -c 'import torch.distributed as d, sys; sys.exit(0 if d.is_nccl_available() else 1)'; then
    echo "error: this torch build has no NCCL; the torchrun check needs it" >&2
    exit 1
fi
"$python" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")'
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader || true

mkdir -p "$workdir"
# precision auto = AMP: bf16 on GPUs that support it, fp16 on older ones (captioning/device.py).
PYTHONPATH=$PWD "$python" benchmarks/scale.py --images "$images" --workdir "$workdir" \
    --stages data,vocab,features,embeddings,train --torchrun \
    --set features.precision=auto --set train.precision=auto --set features.num_workers=4 \
    --json "$workdir/gpu-$images.json" "${@:3}"
