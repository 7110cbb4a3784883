"""A copy of the project with tiny params, for tests that run the real stages and dvc commands."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from captioning import cli

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_STAGES = ("data", "vocab", "features", "embeddings")

TINY = {
    "data": {"num_train": 40, "num_val": 6, "num_test": 6, "image_size": 64},
    "features": {"image_size": 64, "batch_size": 16, "num_workers": 0},
    "embeddings": {"dim": 16, "epochs": 2},
    "model": {"attention_dim": 16, "decoder_dim": 16, "dropout": 0.0},
    "train": {"epochs": 2, "batch_size": 16, "step_size": 1},
    "evaluate": {"beam_size": 2, "batch_size": 8},
    "scst": {"samples": 2, "batch_size": 8, "max_len": 12},
}


def stage_command(name: str, **paths: str | Path) -> list[str]:
    """The stage's command as dvc.yaml runs it, with this interpreter for `python` and the options in `paths`
    replaced (or added): stage_command("train", model="models/one.pt") writes where dvc repro would not."""
    command = shlex.split(yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"][name]["cmd"])
    for option, value in paths.items():
        if f"--{option}" in command:
            command[command.index(f"--{option}") + 1] = str(value)
        else:
            command += [f"--{option}", str(value)]
    return [sys.executable, *command[1:]]


def run_stage_here(folder: Path, stage: str, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """What `run(stage_command(stage), folder)` does, in this process: the stage's main() inside
    captioning.cli.run, as `python -m stages.<name>` runs it, with dvc.yaml's arguments, in `folder`, without a
    new interpreter's seconds of imports. An exception that run() does not turn into its one line propagates (a
    traceback in the real process) and fails the test."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    command = stage_command(stage)
    monkeypatch.setattr(sys, "argv", [f"stages/{stage}.py", *command[3:]])
    main = importlib.import_module(f"stages.{stage}").main
    capsys.readouterr()
    try:
        cli.run(main)
        status = 0
    except SystemExit as exited:
        status = exited.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(command, status, captured.out, captured.err)


def run_stage(folder: Path, stage: str) -> subprocess.CompletedProcess:
    """The stage as a real `python -m stages.<name>` process in `folder`: for its exit status and stderr."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    return subprocess.run(stage_command(stage), cwd=folder, env=env, capture_output=True, text=True, timeout=300)


# What a stage in a scratch folder reads, and what a failed run must not leave behind.

NO_SPACE = (
    "{path}: no space left on device (the partial file was removed; the previous version and any resumable state "
    "are kept: free some space and rerun)"
)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders of atomic_path that were not cleaned up."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp-*"))


def table_file(images: list[dict], image_files: dict[str, bytes] | None = None, text: str | None = None):
    """data/dataset.json (images in data/images), or `text` written verbatim as the table."""

    def write(folder: Path) -> None:
        (folder / "data/images").mkdir(parents=True)
        document = {"dataset": "scenes", "image_root": "images", "images": images}
        (folder / "data/dataset.json").write_text(text if text is not None else json.dumps(document))
        for name, data in (image_files or {}).items():
            (folder / "data/images" / name).write_bytes(data)

    return write


def environment() -> dict[str, str]:
    """This interpreter's tools (dvc, python) first on PATH; no progress bars, no analytics."""
    return dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        TQDM_DISABLE="1",
        DVC_NO_ANALYTICS="1",
    )


def run(command: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=environment(), capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def copy_project(target: Path) -> None:
    """The project as a fresh clone would have it: tracked (and not ignored) files only."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    ).stdout.split()
    for name in listed:
        source = REPO / name
        if source.is_file() and not name.startswith(("metrics/", "docs/")) and name != "dvc.lock":
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def write_params(repo: Path, overrides: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_repository(source: Path, target: Path) -> Path:
    """A copy of a tiny repository built once per test session (conftest's tiny_upstream, tiny_pipeline): its git
    history, DVC cache, dvc.lock and outputs, so a test changes its own copy and dvc sees nothing to rerun.

    Files linked to each other stay linked in the copy, as DVC's hardlink cache has them: an output is a read-only
    link to its cache object (replace it to change it, never write through it)."""
    copied: dict[tuple[int, int], str] = {}

    def copy_keeping_links(from_path: str, to_path: str) -> str:
        status = os.stat(from_path)
        if status.st_nlink > 1:
            first = copied.setdefault((status.st_dev, status.st_ino), to_path)
            if first != to_path:
                os.link(first, to_path)
                return to_path
        return shutil.copy2(from_path, to_path)

    shutil.copytree(source, target, symlinks=True, copy_function=copy_keeping_links)
    return target


def build_tiny(target: Path, stages: tuple[str, ...] = ()) -> Path:
    """The project in `target` with TINY params, committed; `dvc repro` of `stages` (all when empty), committed."""
    target.mkdir(parents=True, exist_ok=True)
    copy_project(target)
    write_params(target, TINY)
    commit_all(target)
    return reproduce(target, stages)


def reproduce(repo: Path, stages: tuple[str, ...] = ()) -> Path:
    """`dvc repro` of `stages` (all when empty) in `repo`, then everything committed, as an author would."""
    run(["dvc", "repro", *stages], repo)
    commit_all(repo, f"tiny pipeline: {' '.join(stages) or 'every stage'}")
    return repo


def commit_all(repo: Path, message: str = "project") -> None:
    """Make `repo` a git repository with everything committed, as a clone is (DVCLive needs a commit)."""
    if not (repo / ".git").exists():
        run(["git", "init", "-q"], repo)
        run(["git", "config", "user.email", "test@example.com"], repo)
        run(["git", "config", "user.name", "Captioning Tests"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", message], repo)
