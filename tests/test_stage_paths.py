"""A stage run by hand writes where `dvc repro` writes: dvc.yaml's `cmd` is the one place that names the paths.

Each stage takes every file it reads or writes as a required option (no defaults to drift from dvc.yaml, as
the train stage's --model once did: models/model.pt by hand, models/cross_entropy.pt under dvc), so a stage
run by hand is run with dvc.yaml's command line (tests/tiny_repo.py's stage_command).
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def declared(entries: list) -> set[str]:
    """The paths of a deps/outs/metrics list (an entry is a path or {path: options})."""
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries}


def parsed(name: str) -> dict[str, str]:
    """The stage's options as its own parser reads dvc.yaml's command line."""
    command = shlex.split(STAGES[name]["cmd"])
    assert command[:3] == ["python", "-m", f"stages.{name}"], command
    arguments = importlib.import_module(f"stages.{name}").arguments().parse_args(command[3:])
    return {option: str(value) for option, value in vars(arguments).items() if option != "scratch"}


@pytest.mark.parametrize("name", list(STAGES))
def test_every_path_of_the_command_is_a_dep_or_an_output_of_the_stage(name: str):
    stage = STAGES[name]
    reads, writes = declared(stage["deps"]), declared(stage.get("outs", []) + stage.get("metrics", []))
    paths = parsed(name)
    assert set(paths.values()) <= reads | writes, name
    # Every output is named on the command line (metrics/train is where DVCLive writes metrics/train/...).
    assert writes <= set(paths.values()), name


@pytest.mark.parametrize("name", list(STAGES))
def test_a_stage_without_its_paths_names_each_missing_option(name: str, capsys):
    parser = importlib.import_module(f"stages.{name}").arguments()
    with pytest.raises(SystemExit) as exited:
        parser.parse_args([])
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.endswith("the following arguments are required: " + ", ".join(f"--{o}" for o in parsed(name)))


@pytest.mark.parametrize("name", list(STAGES))
def test_only_the_resumable_scratch_folder_has_a_default_and_no_output_lies_under_it(name: str):
    parser = importlib.import_module(f"stages.{name}").arguments()
    defaults = {action.dest: action.default for action in parser._actions if action.dest != "help"}
    assert {option for option, default in defaults.items() if default is not None} <= {"scratch"}
    if "scratch" in defaults:
        assert defaults["scratch"] == Path("scratch", name)
        assert not any(Path(path).is_relative_to("scratch") for path in parsed(name).values())


def test_each_file_a_stage_reads_is_where_an_earlier_stage_writes_it():
    written: set[str] = set()
    for name, stage in STAGES.items():
        data_deps = {path for path in declared(stage["deps"]) if not path.startswith(("stages", "captioning"))}
        assert data_deps <= written, f"{name} reads {sorted(data_deps - written)} that no earlier stage writes"
        written |= declared(stage.get("outs", []))
    assert "models/cross_entropy.pt" in written and "models/model.pt" in written


def test_the_stage_commands_the_docs_show_are_dvc_yamls():
    """A command shown for running a stage by hand (e.g. torchrun on another node) passes dvc.yaml's paths."""
    shown = 0
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8").replace("\\\n", " ")
        for name, options in re.findall(r"-m stages\.(\w+)((?: +--\w+ +[\w./-]+)+)", text):
            assert dict(re.findall(r"--(\w+) +([\w./-]+)", options)) == parsed(name), f"{page.name}: stages.{name}"
            shown += 1
    assert shown >= 1  # docs/distributed.md's line for the other nodes
