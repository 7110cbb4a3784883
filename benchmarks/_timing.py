"""Shared by the benchmarks: the machine header, interleaved timing, and the markdown table.

Timings on a shared machine are noisy, so every benchmark runs its candidates side by side, one
repeat of each in turn (the order alternating between repeats), and reports medians and ratios.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from captioning.environment import cpu_model


def machine_header(title: str) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"## {title}\n\n"
        f"machine: {cpu_model()}, {cores} cores usable, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op threads, native bf16: {'yes' if bf16 else 'no'}), "
        f"OMP_WAIT_POLICY {os.environ.get('OMP_WAIT_POLICY', 'unset')}, python {platform.python_version()}, "
        f"load average {load} (other users' work shares these cores)\n"
    )


def interleaved(candidates: dict[str, Callable[[], float | None]], repeats: int) -> dict[str, list[float]]:
    """Run each candidate `repeats` times, round robin; a candidate returns its own seconds or None (timed here)."""
    names = list(candidates)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            measured = candidates[name]()
            seconds[name].append(measured if measured is not None else time.perf_counter() - start)
    return seconds


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(rows: list[tuple[str, str, float, float | str]], header=("candidate", "metric", "median", "ratio")) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for candidate, metric, value, ratio in rows:
        ratio_text = f"{ratio:.2f}x" if isinstance(ratio, float) else ratio
        lines.append(f"| {candidate} | {metric} | {value:.4g} | {ratio_text} |")
    return "\n".join(lines)


def verdict(ratio: float, goal: float, unit: str = "x") -> str:
    return f"ratio {ratio:.2f}{unit} (goal >= {goal:g}{unit}): {'PASS' if ratio >= goal else 'FAIL'}"
