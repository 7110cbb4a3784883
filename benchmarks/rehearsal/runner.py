"""Running the stages of the project copy, each as `dvc repro -s <stage>` through the probe, and what each
run measured (StageRun: one row of the report)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass
class StageRun:
    name: str
    seconds: float  # the stage process
    dvc_seconds: float  # `dvc repro -s` from start to end
    max_rss_kb: int
    bytes_written: int
    items: int
    unit: str
    note: str = ""
    cpu_seconds: float = (
        0.0  # user + system time of the stage and its waited-for children: what contention cannot inflate much
    )
    tree_rss_kb: int = 0  # the stage's processes together (with METEOR's Java), sampled

    @classmethod
    def from_probe(cls, name: str, probe: dict, dvc_seconds: float, written: int, items: int, unit: str, note: str):
        """A row from the probe's record of the stage process."""
        return cls(
            name,
            probe["seconds"],
            dvc_seconds,
            probe["max_rss_kb"],
            written,
            items,
            unit,
            note,
            probe.get("cpu_seconds", 0.0),
            probe.get("tree_rss_kb", 0),
        )

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else float("nan")


def run_stage(project: Path, stage: str, env: dict, probe_log: Path, log_file) -> tuple[float, dict | None]:
    """`dvc repro -s stage`: its wall time and the probe's record of the stage process (None: it did not run)."""
    probe_log.unlink(missing_ok=True)
    start = time.perf_counter()
    log_file.write(f"\n===== dvc repro -s {stage}\n")
    log_file.flush()
    result = subprocess.run(["dvc", "repro", "-s", stage], cwd=project, env=env, stdout=log_file, stderr=log_file)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"error: dvc repro -s {stage} failed ({result.returncode}); see {log_file.name}")
    records = [json.loads(line) for line in probe_log.read_text().splitlines()] if probe_log.exists() else []
    stage_records = [r for r in records if "stages." + stage in r["argv"]]
    return seconds, stage_records[-1] if stage_records else None


def run_under_torchrun(project: Path, env: dict, probe_log: Path, log_file, captions: int) -> StageRun:
    """The train stage's own command under `torchrun --standalone --nproc_per_node=1`: the launcher and the stage
    under it. One process makes no process group, so NCCL is not exercised (benchmarks/gpu_check.sh checks it)."""
    command = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["train"]["cmd"].split()
    assert command[:3] == ["python", "-m", "stages.train"], command
    torchrun = ["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *command[1:]]
    probe_log.unlink(missing_ok=True)
    log_file.write(f"\n===== {' '.join(torchrun)}\n")
    log_file.flush()
    start = time.perf_counter()
    result = subprocess.run(torchrun, cwd=project, env=env, stdout=log_file, stderr=log_file)
    if result.returncode != 0:
        raise SystemExit(f"error: train under torchrun failed ({result.returncode}); see {log_file.name}")
    probe = json.loads(probe_log.read_text().splitlines()[-1])
    metrics = last_epoch_timings(project)
    note = f"epoch {metrics.get('epoch_seconds', float('nan')):.0f} s, torchrun, 1 process (no process group)"
    return StageRun.from_probe("train (torchrun)", probe, time.perf_counter() - start, 0, captions, "captions", note)


def write_standin_features(project: Path, log_file) -> tuple[float, dict]:
    """data/features.h5 in the stage's format and size, filled with seeded random rows, committed with
    `dvc commit` as the features stage's output (so DVC hashes and caches it as it would the real one).

    For a rehearsal whose CPU time cannot cover the ResNet50 (8.2 GFLOP an image): the features stage's
    own cost is measured on the smaller sizes, where its rate per image is flat.
    """
    import numpy as np

    from captioning.data.table import read_table
    from captioning.features.store import FeatureWriter

    names = [record.image for record in read_table(project / "data/dataset.json").images]
    output = project / "data/features.h5"
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    attrs = {"weights": "stand-in", "imagenet_variant": "", "seed": 0, "image_size": 224, "precision": "none"}
    writer = FeatureWriter(output, len(names), 49, 2048, attrs)
    pool = rng.standard_normal((1024, 49, 2048), dtype=np.float32).astype(np.float16)  # rows drawn from these
    for first in range(0, len(names), 256):
        batch = names[first : first + 256]
        writer.append(batch, pool[rng.integers(0, len(pool), len(batch))])
    writer.close([])
    seconds = time.perf_counter() - start
    log_file.write("\n===== stand-in features written; dvc commit -f features\n")
    log_file.flush()
    commit_start = time.perf_counter()
    result = subprocess.run(
        ["dvc", "commit", "-f", "features"], cwd=project, stdout=log_file, stderr=log_file, env=os.environ
    )
    if result.returncode != 0:
        raise SystemExit(f"error: dvc commit -f features failed; see {log_file.name}")
    # Written by this process, whose own memory (the dataset, the project copy) says nothing about the stage's.
    return seconds + (time.perf_counter() - commit_start), {"seconds": seconds, "max_rss_kb": 0}


def dvc_changed(project: Path, stage: str, env: dict) -> bool:
    """Whether `dvc status` finds the stage's deps, params or outputs changed since it last ran."""
    result = subprocess.run(["dvc", "status", stage], cwd=project, env=env, capture_output=True, text=True)
    return result.returncode != 0 or "changed" in result.stdout or "modified" in result.stdout


def streamed_in_log(log: Path) -> bool:
    """Whether the last train stage in the log read its features batch by batch (the store logs why)."""
    text = log.read_text(errors="replace")
    return "read batch by batch" in text[text.rfind("===== dvc repro -s train") :]


def train_note(project: Path, how: str) -> str:
    """The train row's note: the last epoch's seconds and share of waiting for data (the run's timings file)."""
    metrics = last_epoch_timings(project)
    return (
        f"epoch {metrics.get('epoch_seconds', float('nan')):.0f} s, data wait "
        f"{100 * metrics.get('data_wait_share', float('nan')):.1f}%, {how}"
    )


def last_epoch_timings(project: Path) -> dict:
    """The train stage's last epoch's wall-clock numbers (scratch/train/timings.jsonl, one line per epoch)."""
    path = project / "scratch/train/timings.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1]) if lines else {}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
