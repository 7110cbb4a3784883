"""Peak memory when the features file is larger than the memory budget: streamed, never loaded whole.

Writes a features file of --images x 49 x 2048 float16 with FeatureWriter (chunk by chunk, as the
features stage does), then reads one epoch of shuffled training batches through FeatureStore with a
budget smaller than the file. Each step runs in a fresh process so its peak RSS is its own; the
table compares each peak with the file size. Prints `PASS` when no step held the file in memory.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _timing import machine_header

MB = 2**20


def write(path: Path, images: int) -> None:
    from captioning.features.store import FeatureWriter

    writer = FeatureWriter(path, images, 49, 2048)
    rng = np.random.default_rng(0)
    for start in range(0, images, 64):
        count = min(64, images - start)
        block = rng.standard_normal((count, 49, 2048), dtype=np.float32).astype(np.float16)
        writer.append([f"image_{i}" for i in range(start, start + count)], block)
    writer.close()


def read(path: Path, budget_mb: int, batch_size: int) -> None:
    from captioning.features.store import FeatureStore

    store = FeatureStore(path, memory_budget_bytes=budget_mb * MB)
    assert store.in_memory is None, "the file fits the budget: choose more images or a smaller budget"
    order = np.random.default_rng(0).permutation(store.shape[0])
    for start in range(0, len(order), batch_size):
        store.rows(order[start : start + batch_size]).astype(np.float32).sum()
    store.close()


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3000, help="rows of the generated file (3000: ~600 MB)")
    parser.add_argument("--budget-mb", type=int, default=100, help="train.feature_memory_gb, in MB")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--step", choices=("write", "read"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "write":
        write(args.path, args.images)
        print(peak_mb())
        return
    if args.step == "read":
        read(args.path, args.budget_mb, args.batch_size)
        print(peak_mb())
        return

    with tempfile.TemporaryDirectory(prefix="memory-bench-") as temporary:
        path = Path(temporary) / "features.h5"
        common = [sys.executable, __file__, "--path", str(path), "--images", str(args.images)]
        baseline = float(subprocess.check_output([sys.executable, "-c", _BASELINE]).decode())
        written = float(subprocess.check_output([*common, "--step", "write"]).decode())
        size = path.stat().st_size / MB
        options = ["--budget-mb", str(args.budget_mb), "--batch-size", str(args.batch_size)]
        streamed = float(subprocess.check_output([*common, "--step", "read", *options]).decode())
    print(machine_header("Peak memory with a features file larger than the budget"))
    print(f"{args.images} x 49 x 2048 float16 = {size:.0f} MB on disk, budget {args.budget_mb} MB\n")
    print("| step | peak RSS (MB) | above an idle interpreter with numpy and h5py (MB) | share of the file |")
    print("|---|---|---|---|")
    for name, peak in (("write the file chunk by chunk", written), ("one epoch of shuffled batches", streamed)):
        print(f"| {name} | {peak:.0f} | {peak - baseline:.0f} | {(peak - baseline) / size:.0%} |")
    worst = max(written, streamed) - baseline
    print(f"\nworst {worst:.0f} MB above idle for a {size:.0f} MB file: {'PASS' if worst < size / 2 else 'FAIL'}")


_BASELINE = (
    "import resource, numpy, h5py, captioning.features.store; "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
)

if __name__ == "__main__":
    main()
