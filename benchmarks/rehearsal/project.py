"""The rehearsal's copy of the project: the tests' sandbox (tests/tiny_repo.py) with the Flickr30k preset's
params, and a `python` shim that runs every stage through the probe (probe.py)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from tiny_repo import commit_all, copy_project, write_params  # noqa: E402 - the sandbox the tests use

PROBE = Path(__file__).resolve().parent / "probe.py"


def preset_settings(preset: Path) -> dict[str, str]:
    """The `-S key=value` settings of a preset script (values with shell variables are left out)."""
    settings = {}
    for token in shlex.split(preset.read_text(), comments=True):
        match = re.fullmatch(r"([a-z_]+\.[a-z_0-9]+)=(.*)", token)
        if match and "$" not in match.group(2):
            settings[match.group(1)] = match.group(2)
    return settings


def write_settings(project: Path, settings: dict[str, object]) -> None:
    """`section.key` settings into params.yaml; string values are read as YAML, as `dvc exp run -S` reads them."""
    overrides: dict[str, dict] = {}
    for key, value in settings.items():
        section, name = key.split(".")
        if isinstance(value, str):
            value = yaml.safe_load(value) if value else ""
        overrides.setdefault(section, {})[name] = value
    write_params(project, overrides)


def commit(project: Path, message: str) -> None:
    """Commit whatever changed (a resumed copy may have nothing new to commit)."""
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True)
    if changed.returncode != 0 or changed.stdout.strip():
        commit_all(project, message)


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
    write_settings(project, settings)
    commit(project, "scale rehearsal")
    return settings


def write_shim(folder: Path) -> None:
    """A `python` that runs the real interpreter through the probe, logging to $SCALE_PROBE_LOG."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python"
    real = sys.executable
    shim.write_text(f'#!/bin/sh\nexec "{real}" "{PROBE}" "$SCALE_PROBE_LOG" "{real}" "$@"\n')
    shim.chmod(0o755)


def environment(shim: Path, probe_log: Path) -> dict[str, str]:
    """The stages' environment: the shim first on PATH, then this interpreter's tools (dvc)."""
    return dict(
        os.environ,
        PATH=f"{shim}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        SCALE_PROBE_LOG=str(probe_log),
        TQDM_DISABLE="1",
        DVC_NO_ANALYTICS="1",
        PYTHONHASHSEED="0",
    )
