"""captioning/commands/remote.py on a one-file DVC project and a folder remote: each cause of a failed push or pull is
found and named in one line. The same faults on the real pipeline and over SSH: tests/test_team_remote.py."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from dvc.repo import Repo

from captioning.commands.remote import check

pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")  # inside dvc's own code


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git + DVC project tracking data.txt, with a folder remote 'store' as the default, nothing pushed."""
    root = tmp_path / "project"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    with Repo.init(str(root)) as repo:
        (root / "data.txt").write_text("region features\n")
        repo.add([str(root / "data.txt")])
        with repo.config.edit() as config:
            config["remote"]["store"] = {"url": str(tmp_path / "store")}
            config["core"]["remote"] = "store"
    return root


def push(root: Path) -> None:
    with Repo(str(root)) as repo:
        repo.push()


def test_no_remote_is_named(tmp_path: Path):
    root = tmp_path / "bare"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    Repo.init(str(root)).close()
    finding = check(root)
    assert not finding.ok and finding.message.startswith("no default remote: add one with `dvc remote add -d")


def test_an_unknown_remote_and_a_folder_outside_any_project_are_named(project: Path, tmp_path: Path):
    assert check(project, "nope").message == "no remote named 'nope': `dvc remote list` shows the configured ones"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    finding = check(outside)
    assert not finding.ok and finding.message.startswith(f"{outside} is not in a DVC project")


def test_a_folder_that_does_not_exist_is_named_and_not_created(project: Path):
    finding = check(project)
    store = project.parent / "store"
    assert not finding.ok and f"the folder {store} does not exist" in finding.message
    assert not store.exists()


def test_a_complete_remote_is_ok(project: Path):
    push(project)
    finding = check(project)
    assert finding.ok and "holds every file of this commit" in finding.message
    assert [path.name for path in (project.parent / "store").rglob(".captioning-write-test-*")] == []


def test_an_output_not_pushed_yet_is_counted(project: Path):
    push(project)
    (project / "more.txt").write_text("another output\n")
    with Repo(str(project)) as repo:
        repo.add([str(project / "more.txt")])
    finding = check(project)
    assert not finding.ok and finding.message.startswith("1 file(s) are not on remote 'store'")
    assert "more.txt" in finding.message


def test_files_missing_on_both_sides_point_at_the_unfinished_push(project: Path):
    push(project)
    for stored in (project.parent / "store").rglob("*"):
        if stored.is_file():
            stored.unlink()
    shutil.rmtree(project / ".dvc/cache")
    (project / "data.txt").unlink()
    finding = check(project)
    assert (
        not finding.ok and "lacks 1 file(s) of this commit that this workspace lacks too (data.txt)" in finding.message
    )


def test_a_local_change_that_pull_would_not_overwrite_is_named(project: Path):
    push(project)
    (project / "data.txt").write_text("edited here\n")
    finding = check(project)
    assert not finding.ok and finding.message.startswith("data.txt: changed in this workspace")
    assert (project / "data.txt").read_text() == "edited here\n"


def test_an_ssh_server_that_is_down_is_named(project: Path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with Repo(str(project)) as repo, repo.config.edit() as config:
        config["remote"]["box"] = {"url": f"ssh://someone@127.0.0.1:{port}/srv/dvc"}
    finding = check(project, "box")
    assert (
        not finding.ok and f"remote 'box' (ssh://someone@127.0.0.1:{port}/srv/dvc) cannot be reached" in finding.message
    )


def test_the_command_prints_one_line_and_exits_1_until_the_remote_is_complete(project: Path, capsys):
    from captioning.__main__ import main

    assert main(["remote", "--repo", str(project)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: remote 'store'")
    push(project)
    assert main(["remote", "--repo", str(project), "-r", "store"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("remote 'store'") and captured.out.count("\n") == 1
