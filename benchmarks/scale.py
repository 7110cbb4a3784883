"""Flickr30k at full scale, rehearsed with generated data in the real format.

    python benchmarks/scale.py --images 31014            # the whole rehearsal (~1.5 h on an idle 2-core CPU)
    python benchmarks/scale.py --images 1500             # a few minutes

1. Writes a Flickr30k-shaped dataset into --workdir (outside the repository and its DVC outputs):
   N generated scenes (captioning/data/scenes.py) as JPEG, quality 90, at Flickr30k's usual sizes
   500x375 and 375x500, and Karpathy's dataset_flickr30k.json with the 29,000 / 1,014 / 1,000 split
   scaled to N, five captions per image with `tokens` and `raw`. Each caption ends with a short tail of
   words drawn from a Zipf law over 20,000 made-up words, so that vocab.min_word_freq 5 leaves a
   vocabulary of Flickr30k's size (~7,000 words at full size) and the output layer costs what it would.
2. Copies the project (git-tracked files) into --workdir, sets the Flickr30k preset's params
   (presets/flickr30k.sh) with features.weights none and train.epochs --epochs, and runs every stage
   with `dvc repro -s <stage>`, so DVC's hashing and caching are part of the cost.
3. Optionally (--stream) trains once more with train.feature_memory_gb 1: the features are then read from
   the HDF5 file batch by batch, and the epoch's data_wait_share says how long training waited for them.
4. Prints one row per stage: wall time, throughput, peak RSS of the stage process (and its workers, the
   largest one), disk written; DVC's own time (dvc's wall time minus the stage's) is its own row.

Each stage's `python` is started through a probe (a `python` shim first on PATH) that times it and reads
its peak RSS with wait4, so the memory column is the stage's, not dvc's.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--probe":
    # The stage probe: `python --probe LOG REAL_PYTHON args...`, run by the shim in place of `python`.
    # Kept free of heavy imports so it adds milliseconds, not seconds, to each stage.
    import json
    import time

    log_path, real_python, arguments = sys.argv[2], sys.argv[3], sys.argv[4:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.execv(real_python, [real_python, *arguments])
    tree_peak = 0  # the stage's processes together (e.g. train and its METEOR Java), sampled every 0.5 s
    try:
        import psutil

        stage = psutil.Process(pid)
    except Exception:  # noqa: BLE001 - without psutil (or the process already gone) the column stays empty
        stage = None
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if stage is not None:
            try:
                tree = [stage, *stage.children(recursive=True)]
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except Exception:  # noqa: BLE001 - a process that ends between listing and reading it
                pass
        time.sleep(0.5)
    record = {
        "argv": arguments,
        "seconds": time.perf_counter() - start,
        "max_rss_kb": usage.ru_maxrss,  # the largest of the stage process and the children it waited for
        "tree_rss_kb": tree_peak // 1024,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "status": os.waitstatus_to_exitcode(status),
    }
    for path in (log_path, log_path + ".all"):
        with open(path, "a") as log_file:
            log_file.write(json.dumps(record) + "\n")
    sys.exit(max(0, record["status"]) if record["status"] >= 0 else 128 - record["status"])

import argparse  # noqa: E402
import bisect  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._timing import machine_header  # noqa: E402
from captioning.data.scenes import captions_for, draw_scene, sample_objects  # noqa: E402
from captioning.text.tokenizer import tokenize  # noqa: E402

FLICKR30K = {"images": 31_014, "train": 29_000, "val": 1_014, "test": 1_000}
COCO = {"images": 123_287, "captions": 616_767}
STAGES = ("data", "vocab", "features", "embeddings", "train", "finetune", "evaluate")
SIZES = ((500, 375), (375, 500))  # Flickr30k's usual landscape and portrait sizes
TAIL_WORDS = 20_000  # made-up words of the caption tails, Zipf-distributed
DATASET_MARK = "COMPLETE"


# ---------------------------------------------------------------- the dataset


def split_sizes(images: int) -> dict[str, int]:
    """Flickr30k's 29,000 / 1,014 / 1,000 split, scaled to `images` (val and test at least 1 each)."""
    val = max(1, round(images * FLICKR30K["val"] / FLICKR30K["images"]))
    test = max(1, round(images * FLICKR30K["test"] / FLICKR30K["images"]))
    return {"train": images - val - test, "val": val, "test": test}


def tail_word(rank: int) -> str:
    """The made-up word of this Zipf rank: letters only, so every tokenizer keeps it whole."""
    letters = ""
    rank += 26 * 26  # at least three letters: never 'a' or another real word of the scenes
    while rank:
        rank, digit = divmod(rank, 26)
        letters = chr(ord("a") + digit) + letters
    return "z" + letters


def _tail_cumulative() -> list[float]:
    total, cumulative = 0.0, []
    for rank in range(1, TAIL_WORDS + 1):
        total += 1.0 / rank
        cumulative.append(total)
    return [c / total for c in cumulative]


def write_image(task: tuple[int, str, Path, list]) -> dict:
    """One scene as a Flickr30k-sized JPEG and its Karpathy entry (sentences without ids)."""
    index, split, folder, cumulative = task
    rng = random.Random(f"scale-{index}")
    width, height = SIZES[index % 2]
    side = max(width, height)
    objects = sample_objects(rng, side, 1, 1 if rng.random() < 0.6 else 2)  # mean caption ~13 words
    image = draw_scene(objects, side, rng).resize((width, height))
    name = f"{1_000_000_000 + index}.jpg"
    image.save(folder / name, quality=90)
    sentences = []
    for caption in captions_for(objects, 5, rng):
        tail = [tail_word(bisect.bisect_left(cumulative, rng.random())) for _ in range(rng.randint(1, 3))]
        words = caption.split() + tail
        raw = " ".join(words).capitalize() + "."  # Flickr30k's raw: punctuation attached to the last word
        sentences.append({"tokens": tokenize(raw), "raw": raw})
    return {"filename": name, "split": split, "sentences": sentences}


def write_dataset(root: Path, images: int, jobs: int) -> dict:
    """dataset_flickr30k.json and flickr30k-images/ under root; reused when already complete."""
    if (root / DATASET_MARK).is_file():
        return json.loads((root / DATASET_MARK).read_text())
    shutil.rmtree(root, ignore_errors=True)
    folder = root / "flickr30k-images"
    folder.mkdir(parents=True)
    sizes = split_sizes(images)
    splits = ["train"] * sizes["train"] + ["val"] * sizes["val"] + ["test"] * sizes["test"]
    cumulative = _tail_cumulative()
    start = time.perf_counter()
    tasks = [(i, split, folder, cumulative) for i, split in enumerate(splits)]
    with ProcessPoolExecutor(jobs) as pool:
        entries = list(pool.map(write_image, tasks, chunksize=64))
    sentence_id = 0
    for image_id, entry in enumerate(entries):
        entry["imgid"] = image_id
        entry["sentids"] = []
        for sentence in entry["sentences"]:
            sentence.update(imgid=image_id, sentid=sentence_id)
            entry["sentids"].append(sentence_id)
            sentence_id += 1
    (root / "dataset_flickr30k.json").write_text(json.dumps({"images": entries, "dataset": "flickr30k"}))
    info = {"images": images, "captions": sentence_id, "seconds": time.perf_counter() - start, **sizes}
    info["bytes"] = disk_bytes(root)
    (root / DATASET_MARK).write_text(json.dumps(info))
    return info


# ---------------------------------------------------------------- the project copy


def copy_project(target: Path) -> None:
    """The project as a fresh clone has it: git-tracked (and not ignored) files, without metrics and docs."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in listed:
        source = REPO / name
        if source.is_file() and not name.startswith(("metrics/", "docs/")) and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def preset_settings(preset: Path) -> dict[str, str]:
    """The `-S key=value` settings of a preset script (values with shell variables are left out)."""
    settings = {}
    for token in shlex.split(preset.read_text(), comments=True):
        match = re.fullmatch(r"([a-z_]+\.[a-z_0-9]+)=(.*)", token)
        if match and "$" not in match.group(2):
            settings[match.group(1)] = match.group(2)
    return settings


def write_params(project: Path, settings: dict[str, object]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in settings.items():
        section, name = key.split(".")
        if isinstance(value, str):
            value = yaml.safe_load(value) if value else ""
        params[section][name] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def environment(shim: Path, probe_log: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PATH=f"{shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        SCALE_PROBE_LOG=str(probe_log),
        TQDM_DISABLE="1",
        DVC_NO_ANALYTICS="1",
        PYTHONHASHSEED="0",
    )


def write_shim(folder: Path) -> None:
    """A `python` that runs the real interpreter through this file's --probe."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python"
    real = sys.executable
    shim.write_text(f'#!/bin/sh\nexec "{real}" "{Path(__file__).resolve()}" --probe "$SCALE_PROBE_LOG" "{real}" "$@"\n')
    shim.chmod(0o755)


def git(project: Path, *arguments: str) -> None:
    subprocess.run(["git", *arguments], cwd=project, check=True, capture_output=True)


def prepare_project(
    project: Path, dataset_root: Path, epochs: int, scst_epochs: int, resume: bool
) -> dict[str, object]:
    """A fresh copy of the project with the rehearsal's params; with `resume`, the earlier copy and its outputs."""
    resume = resume and (project / ".git").is_dir()
    if not resume:
        shutil.rmtree(project, ignore_errors=True)
        project.mkdir(parents=True)
    copy_project(project)
    settings: dict[str, object] = dict(preset_settings(REPO / "presets" / "flickr30k.sh"))
    settings.update(
        {
            "data.dataset": "flickr30k",
            "data.root": str(dataset_root),
            "data.format": "karpathy",
            "features.weights": "none",
            "train.epochs": epochs,
            "scst.epochs": scst_epochs,
        }
    )
    write_params(project, settings)
    if not resume:
        git(project, "init", "-q")
        git(project, "config", "user.email", "scale@example.com")
        git(project, "config", "user.name", "Scale Rehearsal")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "scale rehearsal", "--allow-empty")
    return settings


# ---------------------------------------------------------------- measuring


def disk_bytes(folder: Path) -> int:
    """Bytes of the files under folder, each hard-linked file once (DVC's cache links its outputs)."""
    seen, total = set(), 0
    for directory, _, files in os.walk(folder):
        for name in files:
            status = os.lstat(os.path.join(directory, name))
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                total += status.st_size
    return total


def largest_file(folder: Path) -> tuple[str, int]:
    best = ("", 0)
    for directory, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            size = os.lstat(path).st_size
            if size > best[1] and "/.dvc/cache/" not in path and "/.git/" not in path:
                best = (os.path.relpath(path, folder), size)
    return best


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

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else float("nan")


def run_stage(project: Path, stage: str, env: dict, probe_log: Path, log_file) -> tuple[float, dict]:
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
    """The train stage's own command under `torchrun --standalone --nproc_per_node=1` (NCCL on a GPU)."""
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
    metrics = read_json(project / "metrics/train/metrics.json")
    note = f"epoch {metrics.get('epoch_seconds', float('nan')):.0f} s, torchrun, 1 process (NCCL on a GPU)"
    return StageRun(
        "train (torchrun)",
        probe["seconds"],
        time.perf_counter() - start,
        probe["max_rss_kb"],
        0,
        captions,
        "captions",
        note,
        probe["cpu_seconds"],
        probe.get("tree_rss_kb", 0),
    )


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


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


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

    CPU time (user + system) is the column to compare: wall time on a shared machine is an upper bound.
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


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--compare":
        print(compare([Path(p) for p in sys.argv[2:]]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=FLICKR30K["images"])
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir(), "scale-data"), help="dataset and project copy"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--scst-epochs", type=int, default=0, help="self-critical epochs of the finetune stage (0: the model is copied)"
    )
    parser.add_argument("--stream", action="store_true", help="then train again with train.feature_memory_gb 1")
    parser.add_argument("--jobs", type=int, default=2, help="processes writing the dataset")
    parser.add_argument("--dim", type=int, help="attention_dim and decoder_dim instead of the preset's 512")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another param setting")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"the stages to run, in order (default {','.join(STAGES)})"
    )
    parser.add_argument(
        "--torchrun", action="store_true", help="then run the train stage's command under torchrun, one process"
    )
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--name", default="", help="suffix of the project copy, for two runs on one dataset")
    parser.add_argument(
        "--standin-features",
        action="store_true",
        help="write random features of the real shape instead of running the ResNet50 (dvc commit records them)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the earlier project copy; stages DVC finds up to date keep their rows",
    )
    args = parser.parse_args()
    if args.images < 30:
        raise SystemExit("error: --images must be at least 30 (val and test need a few images each)")
    if shutil.which("dvc", path=str(Path(sys.executable).parent)) is None and shutil.which("dvc") is None:
        raise SystemExit("error: dvc not found on PATH (use the project's virtualenv)")

    workdir = args.workdir.resolve()
    if workdir == REPO or REPO in workdir.parents:
        raise SystemExit(f"error: --workdir {workdir} is inside the repository; choose a folder outside it")
    dataset_root = workdir / f"flickr30k-{args.images}"
    project = workdir / f"project-{args.images}{args.name}"
    print(machine_header(f"Flickr30k rehearsal, {args.images:,} images"), flush=True)
    dataset = write_dataset(dataset_root, args.images, args.jobs)
    print(f"dataset: {dataset_root} ({dataset['images']:,} images, {minutes(dataset['seconds'])})", flush=True)
    settings = prepare_project(project, dataset_root, args.epochs, args.scst_epochs, args.resume)
    extra = dict(setting.partition("=")[::2] for setting in args.set)
    if args.dim:
        extra.update({"model.attention_dim": str(args.dim), "model.decoder_dim": str(args.dim)})
    if extra:
        settings.update(extra)
        write_params(project, extra)
        git(project, "commit", "-qam", "settings")
    stages = [stage for stage in args.stages.split(",") if stage]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"error: --stages: no stage named {', '.join(unknown)} (stages: {', '.join(STAGES)})")
    print("params: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "data.root"), flush=True)

    shim, probe_log = project / ".scale" / "bin", project / ".scale" / "probe.jsonl"
    write_shim(shim)
    env = environment(shim, probe_log)
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    sizes = split_sizes(args.images)
    runs: list[StageRun] = []
    started = time.perf_counter()
    saved_path = project / ".scale" / "runs.json"
    saved = read_json(saved_path) if args.resume else {}
    with open(workdir / f"pipeline-{args.images}{args.name}.log", "a" if args.resume else "w") as log_file:
        for stage in stages:
            before = disk_bytes(project)
            if (
                stage == "features"
                and args.standin_features
                and stage in saved
                and not dvc_changed(project, stage, env)
            ):
                dvc_seconds, probe = 0.0, None  # the earlier run's stand-in is still the stage's output
            elif stage == "features" and args.standin_features:
                dvc_seconds, probe = write_standin_features(project, log_file)
            else:
                dvc_seconds, probe = run_stage(project, stage, env, probe_log, log_file)
            if probe is None and stage in saved:
                runs.append(StageRun(**saved[stage]))
                print(f"{stage}: up to date, the earlier run's row is kept", flush=True)
                continue
            if probe is None:
                raise SystemExit(f"error: the probe saw no `python -m stages.{stage}`; see {log_file.name}")
            written = disk_bytes(project) - before
            items, unit, note = {
                "data": (args.images, "images", ""),
                "vocab": (dataset["captions"], "captions", ""),
                "features": (
                    args.images,
                    "images",
                    "STAND-IN: random values written, not the ResNet50" if args.standin_features else "",
                ),
                "embeddings": (sizes["train"] * 5, "captions", ""),
                "train": (sizes["train"] * 5 * args.epochs, "captions", ""),
                "finetune": (
                    sizes["train"] * args.scst_epochs,
                    "images",
                    f"SCST, {args.scst_epochs} epochs" if args.scst_epochs else "SCST off: the model file is copied",
                ),
                "evaluate": (sizes["test"], "images", "beam 5, METEOR, figures, gallery"),
            }[stage]
            if stage == "vocab":
                note = f"vocabulary {read_json(project / 'metrics/vocab.json').get('vocab_size')} words"
            if stage == "train":
                metrics = read_json(project / "metrics/train/metrics.json")
                note = (
                    f"epoch {metrics.get('epoch_seconds', float('nan')):.0f} s, data wait "
                    f"{100 * metrics.get('data_wait_share', float('nan')):.1f}%, features "
                    + ("streamed" if streamed_in_log(workdir / f"pipeline-{args.images}{args.name}.log") else "in RAM")
                )
            runs.append(
                StageRun(
                    stage,
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
            )
            saved[stage] = runs[-1].__dict__
            saved_path.write_text(json.dumps(saved))
            print(f"{stage}: {minutes(probe['seconds'])} (dvc {minutes(dvc_seconds)})", flush=True)
        total = time.perf_counter() - started
        if args.stream:
            write_params(project, {"train.feature_memory_gb": "1"})
            git(project, "commit", "-qam", "stream the features")
            before = disk_bytes(project)
            dvc_seconds, probe = run_stage(project, "train", env, probe_log, log_file)
            if probe is None:
                raise SystemExit(f"error: the streamed train stage did not run; see {log_file.name}")
            metrics = read_json(project / "metrics/train/metrics.json")
            note = (
                f"epoch {metrics.get('epoch_seconds', float('nan')):.0f} s, data wait "
                f"{100 * metrics.get('data_wait_share', float('nan')):.1f}%, feature_memory_gb 1"
            )
            streamed = StageRun(
                "train (streamed)",
                probe["seconds"],
                dvc_seconds,
                probe["max_rss_kb"],
                disk_bytes(project) - before,
                sizes["train"] * 5 * args.epochs,
                "captions",
                note,
                probe["cpu_seconds"],
                probe.get("tree_rss_kb", 0),
            )
            runs.append(streamed)
            print(f"train (streamed): {minutes(probe['seconds'])}", flush=True)
        if args.torchrun:
            runs.append(run_under_torchrun(project, env, probe_log, log_file, sizes["train"] * 5 * args.epochs))
    largest = largest_file(project)
    print()
    print(print_table(runs, dataset, total, largest))
    if args.json:
        document = {
            "images": args.images,
            "dataset": dataset,
            "total_seconds": total,
            "largest_file": largest,
            "stages": [{**run.__dict__, "rate": run.rate} for run in runs],
            "evaluate": read_json(project / "metrics/evaluate.json"),
            "train": read_json(project / "metrics/train/metrics.json"),
            "load": os.getloadavg(),
        }
        args.json.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
