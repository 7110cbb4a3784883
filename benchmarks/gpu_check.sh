#!/usr/bin/env bash
# The Flickr30k rehearsal (benchmarks/scale.py) on a CUDA machine: the features stage and one training
# epoch with AMP (bf16 where the GPU has it natively, else fp16), the same table as on the CPU, then the same
# epoch once more through torchrun with one process. One process makes no process group: that run checks the
# launcher and the stage under it, not NCCL. NCCL needs two processes on two GPUs: with two GPUs or more, an
# all-reduce between two processes (one GPU each) is checked too; with one, the script says it was not verified.
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
    echo "error: this torch build has no NCCL; the multi-GPU training needs it" >&2
    exit 1
fi
"$python" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")'
nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader || true

# What a step launches and waits for, on this GPU and on its CPU (benchmarks/profile_step.py; docs/speed.md).
PYTHONPATH=$PWD "$python" benchmarks/profile_step.py --device cuda --no-paper-scst
PYTHONPATH=$PWD "$python" benchmarks/profile_step.py --device cpu --no-paper-scst
echo "verified: host syncs and operators per step on the GPU, beside the CPU's (the two tables above)"

# The fast module's CUDA-only branch (the fused LSTM cell) against the literal module, on this GPU.
"$python" -m pytest -q -p no:randomly tests/test_fast.py -k "on_cuda" -n 0
echo "verified: the fast module's fused LSTM cell gives the literal module's loss and gradients on this GPU"

mkdir -p "$workdir"
# GPU memory and busy share (utilization.gpu: the share of time a kernel ran), sampled every 0.5 s during the stages.
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader,nounits -i 0 -lms 500 \
    > "$workdir/gpu-samples.csv" &
sampler=$!
trap 'kill $sampler 2>/dev/null || true' EXIT
# precision auto = AMP: bf16 on GPUs with native bf16, fp16 on older ones (captioning/device.py).
PYTHONPATH=$PWD "$python" benchmarks/scale.py --images "$images" --workdir "$workdir" \
    --stages data,vocab,features,embeddings,train --torchrun \
    --set features.precision=auto --set train.precision=auto --set features.num_workers=4 \
    --json "$workdir/gpu-$images.json" "${@:3}"
kill $sampler 2>/dev/null || true
awk -F', *' '{ if ($1 > peak) peak = $1; busy += $2; n++ }
    END { if (n) printf "GPU 0 during the stages: peak memory %d MiB, busy %.0f%% of %d samples (0.5 s apart)\n", peak, busy / n, n }' \
    "$workdir/gpu-samples.csv"

# NCCL itself: two processes, one GPU each, sum a tensor (each adds rank + 1: 1 + 2 = 3).
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
nccl_check='
import os, torch, torch.distributed as dist
rank = int(os.environ["LOCAL_RANK"])
torch.cuda.set_device(rank)
dist.init_process_group("nccl")
value = torch.full((1,), float(rank + 1), device="cuda")
dist.all_reduce(value)
assert value.item() == 3.0, value.item()
dist.destroy_process_group()
'
echo
echo "verified: the stages on one GPU with AMP (the table above), the GPU's peak memory and busy share"
echo "verified: the train stage under torchrun with one process (no process group: NCCL not exercised there)"
if [ "$gpus" -ge 2 ]; then
    "$python" -m torch.distributed.run --standalone --nproc_per_node=2 --no-python "$python" -c "$nccl_check"
    echo "verified: NCCL, an all-reduce between 2 processes on 2 of the $gpus GPUs"
else
    echo "not verified: NCCL (one GPU; it needs two processes on two GPUs)"
fi
