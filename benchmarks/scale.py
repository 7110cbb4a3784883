"""Flickr30k at full scale, rehearsed with generated data in the real format.

    python benchmarks/scale.py --images 31014            # the whole rehearsal (~1.5 h on an idle 2-core CPU)
    python benchmarks/scale.py --images 1500             # a few minutes
    python benchmarks/scale.py --compare a.json b.json   # rehearsals of several sizes (--json) side by side

1. Writes a Flickr30k-shaped dataset into --workdir (outside the repository and its DVC outputs): N generated
   scenes as JPEGs and Karpathy's dataset_flickr30k.json, with a vocabulary of Flickr30k's size
   (benchmarks/rehearsal/dataset.py).
2. Copies the project into --workdir with the tests' sandbox (tests/tiny_repo.py), sets the Flickr30k
   preset's params (presets/flickr30k.sh) with features.weights none and train.epochs --epochs
   (benchmarks/rehearsal/project.py), and runs every stage with `dvc repro -s <stage>`, so DVC's hashing and
   caching are part of the cost (benchmarks/rehearsal/runner.py).
3. Optionally (--stream) trains once more with train.feature_memory_gb 1: the features are then read from
   the HDF5 file batch by batch, and the epoch's data_wait_share says how long training waited for them.
4. Prints one row per stage: wall time, throughput, peak RSS of the stage process (and its workers, the
   largest one), disk written; DVC's own time (dvc's wall time minus the stage's) is its own row
   (benchmarks/rehearsal/report.py).

Each stage's `python` is started through a probe (a `python` shim first on PATH runs
benchmarks/rehearsal/probe.py) that times it and reads its peak RSS with wait4, so the memory column is the
stage's, not dvc's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._timing import machine_header  # noqa: E402
from benchmarks.rehearsal.dataset import FLICKR30K, split_sizes, write_dataset  # noqa: E402
from benchmarks.rehearsal.measure import disk_bytes, largest_file  # noqa: E402
from benchmarks.rehearsal.project import commit, environment, prepare_project, write_settings, write_shim  # noqa: E402
from benchmarks.rehearsal.report import compare, minutes, print_table  # noqa: E402
from benchmarks.rehearsal.runner import (  # noqa: E402
    StageRun,
    dvc_changed,
    read_json,
    run_stage,
    run_under_torchrun,
    streamed_in_log,
    train_note,
    write_standin_features,
)

STAGES = ("data", "vocab", "features", "embeddings", "train", "finetune", "evaluate")


def arguments() -> argparse.ArgumentParser:
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
    return parser


def stage_items(stage: str, args: argparse.Namespace, dataset: dict, project: Path, log: Path) -> tuple[int, str, str]:
    """What a stage's throughput counts (items, unit) and the note of its row."""
    sizes = split_sizes(args.images)
    if stage == "vocab":
        words = read_json(project / "metrics/vocab.json").get("vocab_size")
        return dataset["captions"], "captions", f"vocabulary {words} words"
    if stage == "train":
        features = "features streamed" if streamed_in_log(log) else "features in RAM"
        return sizes["train"] * 5 * args.epochs, "captions", train_note(project, features)
    if stage == "features":
        standin = "STAND-IN: random values written, not the ResNet50" if args.standin_features else ""
        return args.images, "images", standin
    if stage == "finetune":
        note = f"SCST, {args.scst_epochs} epochs" if args.scst_epochs else "SCST off: the model file is copied"
        return sizes["train"] * args.scst_epochs, "images", note
    if stage == "embeddings":
        return sizes["train"] * 5, "captions", ""
    if stage == "evaluate":
        return sizes["test"], "images", "beam 5, METEOR, figures, gallery"
    return args.images, "images", ""  # data


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--compare":
        print(compare([Path(p) for p in sys.argv[2:]]))
        return
    args = arguments().parse_args()
    if args.images < 30:
        raise SystemExit("error: --images must be at least 30 (val and test need a few images each)")
    if shutil.which("dvc", path=str(Path(sys.executable).parent)) is None and shutil.which("dvc") is None:
        raise SystemExit("error: dvc not found on PATH (use the project's virtualenv)")
    stages = [stage for stage in args.stages.split(",") if stage]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"error: --stages: no stage named {', '.join(unknown)} (stages: {', '.join(STAGES)})")

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
        write_settings(project, extra)
        commit(project, "settings")
    print("params: " + ", ".join(f"{k}={v}" for k, v in settings.items() if k != "data.root"), flush=True)

    shim, probe_log = project / ".scale" / "bin", project / ".scale" / "probe.jsonl"
    write_shim(shim)
    env = environment(shim, probe_log)
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    captions = split_sizes(args.images)["train"] * 5 * args.epochs
    runs: list[StageRun] = []
    started = time.perf_counter()
    saved_path = project / ".scale" / "runs.json"
    saved = read_json(saved_path) if args.resume else {}
    log_path = workdir / f"pipeline-{args.images}{args.name}.log"
    with open(log_path, "a" if args.resume else "w") as log_file:
        for stage in stages:
            before = disk_bytes(project)
            standin = stage == "features" and args.standin_features
            if standin and stage in saved and not dvc_changed(project, stage, env):
                dvc_seconds, probe = 0.0, None  # the earlier run's stand-in is still the stage's output
            elif standin:
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
            items, unit, note = stage_items(stage, args, dataset, project, log_path)
            runs.append(StageRun.from_probe(stage, probe, dvc_seconds, written, items, unit, note))
            saved[stage] = runs[-1].__dict__
            saved_path.write_text(json.dumps(saved))
            print(f"{stage}: {minutes(probe['seconds'])} (dvc {minutes(dvc_seconds)})", flush=True)
        total = time.perf_counter() - started
        if args.stream:
            write_settings(project, {"train.feature_memory_gb": "1"})
            commit(project, "stream the features")
            before = disk_bytes(project)
            dvc_seconds, probe = run_stage(project, "train", env, probe_log, log_file)
            if probe is None:
                raise SystemExit(f"error: the streamed train stage did not run; see {log_file.name}")
            note = train_note(project, "feature_memory_gb 1")
            written = disk_bytes(project) - before
            runs.append(
                StageRun.from_probe("train (streamed)", probe, dvc_seconds, written, captions, "captions", note)
            )
            print(f"train (streamed): {minutes(probe['seconds'])}", flush=True)
        if args.torchrun:
            runs.append(run_under_torchrun(project, env, probe_log, log_file, captions))
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
