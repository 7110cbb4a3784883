"""captioning/io.py: atomic writes leave either the old or the new target, never a half-written one; a full disk
or a read-only folder is one line; the temporaries of killed runs are removed when a stage starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from repo_params import repo_document
from tiny_repo import NO_SPACE, leftovers, run_stage

import captioning.io
from captioning.errors import CaptioningError
from captioning.io import atomic_path, check_writable, read_json, write_json


def test_on_success_a_new_file_replaces_the_old_one(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(target) as temporary:
        assert temporary != target and temporary.parent == tmp_path
        temporary.write_text("new")
        assert target.read_text() == "old"  # untouched until the block succeeds
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_on_success_a_new_folder_replaces_the_old_one(tmp_path):
    target = tmp_path / "images"
    target.mkdir()
    (target / "old.png").write_text("old")
    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "new.png").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]


def test_missing_parent_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_path(target) as temporary:
        temporary.write_text("x")
    assert target.read_text() == "x"


@pytest.mark.parametrize("folder", [False, True])
@pytest.mark.parametrize("exception", [RuntimeError, KeyboardInterrupt])
def test_on_exception_neither_target_nor_temporary_remain(tmp_path, folder, exception):
    target = tmp_path / "out"
    with pytest.raises(exception):
        with atomic_path(target) as temporary:
            if folder:
                temporary.mkdir()
                (temporary / "part").write_text("half")
            else:
                temporary.write_text("half")
            raise exception("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_on_exception_the_old_target_is_kept(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError):
        with atomic_path(target) as temporary:
            temporary.write_text("new")
            raise ValueError
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_stale_temporary_from_an_earlier_run_is_replaced(tmp_path):
    target = tmp_path / "out"
    with atomic_path(target) as temporary:
        temporary.write_text("first")
    temporary.mkdir()  # what a killed run of this process id could leave
    (temporary / "stale").write_text("x")
    with atomic_path(target) as again:
        assert again == temporary and not again.exists()
        again.write_text("fresh")
    assert target.read_text() == "fresh"


def test_json_round_trip_keeps_non_ascii_text(tmp_path):
    path = tmp_path / "sub" / "value.json"
    value = {"caption": "un café à Zürich", "numbers": [1, 2.5], "nested": {"ok": True}}
    write_json(path, value)
    assert read_json(path) == value
    assert "café" in path.read_text(encoding="utf-8")


def test_read_json_errors_name_the_file(tmp_path):
    with pytest.raises(CaptioningError, match=r"missing\.json: file not found"):
        read_json(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(CaptioningError, match=r"broken\.json: not valid JSON"):
        read_json(broken)


# ---------------------------------------------------------------------------------------------------------------------
# Outputs that cannot be written: a full disk or a read-only folder is one line naming the output, nothing partial
# is left; a long stage checks before it starts.


def test_disk_full_while_writing_json(tmp_path: Path, full_disk):
    path = tmp_path / "metrics/evaluate.json"
    with pytest.raises(CaptioningError) as caught:
        write_json(path, {"bleu_4": 0.5})
    assert str(caught.value) == NO_SPACE.format(path=path)
    assert not path.exists() and leftovers(tmp_path) == []


def test_a_read_only_output_folder_is_found_before_the_work_starts(tmp_path: Path, monkeypatch):
    """check_writable, which the train and features stages call before their first epoch or image.

    Tests run as root here, and root may write in a chmod-ed folder: so os.access is patched to answer as it
    does for another user (EACCES) or on a read-only mount (with ST_RDONLY). What this proves is the decision and
    the message, not the kernel's answer.
    """
    check_writable(tmp_path / "models/model.pt")  # writable: nothing happens, the folder is created
    assert (tmp_path / "models").is_dir()
    monkeypatch.setattr(captioning.io.os, "access", lambda path, mode: False)
    with pytest.raises(CaptioningError) as caught:
        check_writable(tmp_path / "models/model.pt")
    message = f"{tmp_path}/models/model.pt: cannot write it, its folder is read-only for this user (permission denied)"
    assert str(caught.value) == message
    monkeypatch.setattr(captioning.io, "_on_read_only_mount", lambda folder: True)
    with pytest.raises(CaptioningError) as caught:
        check_writable(tmp_path / "models/model.pt")
    assert str(caught.value) == f"{tmp_path}/models/model.pt: cannot write it, the file system is read-only"


# ---------------------------------------------------------------------------------------------------------------------
# Leftovers: temporaries of killed runs are removed when a stage starts; a failed rename removes its own.


def dead_pid() -> int:
    """The process id of a process that has exited (pids are not reused within a test's lifetime)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_killed_runs_are_removed_when_a_stage_starts(tmp_path: Path):
    folder = tmp_path.resolve()
    dead, alive = dead_pid(), os.getpid()
    stale = [f"data/.images.tmp-{dead}/scene_000000.png", f"models/.model.pt.tmp-{dead}",
             f"scratch/features/0123abcd/.part-00000.h5.tmp-{dead}"]  # fmt: skip
    running = f"data/.other.json.tmp-{alive}"  # a live process's: left alone
    for name in [*stale, running]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"partial")
    data = {"num_train": 3, "num_val": 1, "num_test": 1, "image_size": 32}
    (folder / "params.yaml").write_text(yaml.safe_dump(repo_document({"data": data})), encoding="utf-8")
    result = run_stage(folder, "data")
    assert result.returncode == 0, result.stderr
    assert leftovers(folder) == [running]
    assert (folder / "data/dataset.json").is_file()


def test_a_failed_final_rename_removes_its_temporary(tmp_path: Path):
    target = tmp_path / "model.pt"
    (target / "inside").mkdir(parents=True)  # the target is a folder: a file cannot replace it
    with pytest.raises(CaptioningError) as caught, atomic_path(target) as temporary:
        temporary.write_bytes(b"new model")
    assert str(caught.value) == f"{target}: cannot replace this folder with the new output (Is a directory); remove it"
    assert leftovers(tmp_path) == [] and (target / "inside").is_dir()
