"""captioning/io.py: atomic writes leave either the old or the new target, never a half-written one."""

from __future__ import annotations

import pytest

from captioning.errors import CaptioningError
from captioning.io import atomic_path, read_json, write_json


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
