"""The rehearsal's report: one markdown row per stage run, and several rehearsals (their --json files) side by
side."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.rehearsal.runner import StageRun


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return ""


def minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def print_table(runs: list[StageRun], dataset: dict, total_seconds: float, largest: tuple[str, int]) -> str:
    lines = [
        "| stage | wall | throughput | CPU time | CPU per 1k items | peak RSS (process / with children) "
        "| disk written | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        rate = f"{run.rate:,.1f} {run.unit}/s" if run.items else "-"
        per_thousand = f"{1000 * run.cpu_seconds / run.items:.2f} s" if run.items and run.cpu_seconds else "-"
        lines.append(
            f"| {run.name} | {minutes(run.seconds)} | {rate} | {minutes(run.cpu_seconds)} | "
            f"{per_thousand} | {human_bytes(run.max_rss_kb * 1024)} / {human_bytes(run.tree_rss_kb * 1024)} | "
            f"{human_bytes(run.bytes_written)} | {run.note} |"
        )
    dvc_overhead = sum(r.dvc_seconds - r.seconds for r in runs)
    lines.append(f"| dvc (hashing, caching, locks) | {minutes(dvc_overhead)} | | | | | | summed over the stages |")
    lines.append("")
    lines.append(
        f"dataset written by the benchmark (not a stage): {dataset['images']:,} JPEGs, {dataset['captions']:,} "
        f"captions ({dataset['train']:,} / {dataset['val']:,} / {dataset['test']:,} images), "
        f"{human_bytes(dataset['bytes'])}, {minutes(dataset['seconds'])}"
    )
    lines.append(f"total time of the pipeline (dvc included): {minutes(total_seconds)}")
    lines.append(f"largest file: {largest[0]} ({human_bytes(largest[1])})")
    return "\n".join(lines)


def _probe_records(project: Path) -> dict[str, dict]:
    """Every stage run the probe saw in a project copy, by table row name (the second train is the streamed one)."""
    records: dict[str, dict] = {}
    log = project / ".scale" / "probe.jsonl.all"
    for line in log.read_text().splitlines() if log.is_file() else []:
        record = json.loads(line)
        stage = next((a.removeprefix("stages.") for a in record["argv"] if a.startswith("stages.")), None)
        if stage is None or record["status"] != 0:
            continue
        name = "train (streamed)" if stage == "train" and "train" in records else stage
        records[name] = record
    return records


def compare(paths: list[Path]) -> str:
    """Rehearsals of several sizes (their --json files) side by side: CPU seconds per 1,000 items and growth.

    CPU time (user + system) is the column to compare: wall time on a busy machine is an upper bound.
    """
    documents = sorted((json.loads(path.read_text()) for path in paths), key=lambda d: d["images"])
    probes = [_probe_records(path.parent / f"project-{d['images']}") for path, d in zip(paths, documents)]
    sizes = [d["images"] for d in documents]
    header = ["stage", "unit"] + [f"{n:,} images: wall / CPU / CPU per 1k / peak RSS" for n in sizes]
    header.append(f"CPU per item, {sizes[-1]:,} vs {sizes[0]:,}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    names = list(dict.fromkeys(s["name"] for d in documents for s in d["stages"]))
    for name in names:
        cells, per_item, unit = [name], [], ""
        for document, probe in zip(documents, probes):
            run = next((s for s in document["stages"] if s["name"] == name), None)
            if run is None:
                cells.append("")
                continue
            unit = run["unit"]
            cpu = run.get("cpu_seconds") or probe.get(name, {}).get("cpu_seconds", 0.0)
            rss = max(run.get("tree_rss_kb", 0), probe.get(name, {}).get("tree_rss_kb", 0), run["max_rss_kb"])
            if not cpu:
                cpu_text = "n/a"
            elif not run["items"]:  # a stage with no items of its own (finetune with SCST off copies a file)
                cpu_text = f"{minutes(cpu)} / -"
            else:
                cpu_text = f"{minutes(cpu)} / {1000 * cpu / run['items']:.2f} s"
            if cpu and run["items"]:
                per_item.append(cpu / run["items"])
            cells.append(f"{minutes(run['seconds'])} / {cpu_text} / {human_bytes(rss * 1024)}")
        cells.insert(1, unit)
        cells.append(f"{per_item[-1] / per_item[0]:.2f}x" if len(per_item) == len(documents) > 1 else "")
        lines.append("| " + " | ".join(cells) + " |")
    totals = [minutes(d["total_seconds"]) for d in documents]
    lines.append("| total wall (dvc included) | | " + " | ".join(totals) + " | |")
    return "\n".join(lines)
