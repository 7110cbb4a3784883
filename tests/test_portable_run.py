"""A run on a real dataset travels between machines whose copies of the dataset live in different folders.

The author runs the pipeline on a miniature Flickr30k download and pushes it to a DVC remote; the dataset then
moves to another folder (a teammate's copy). The teammate clones, pulls, points data.root at the new folder, and
`dvc repro` reruns the data stage alone, which writes the same caption table: the table and every other output
name images by name and content, never by a folder of the machine that made them (captioning/data/table.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from fixtures_real import make_flickr30k, write_jpeg
from tiny_repo import TINY, commit_all, copy_project, run, write_params

OUTPUTS = ("data", "models", "metrics", "reports")


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def files_under(repo: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(repo)): path.read_bytes()
        for folder in OUTPUTS
        for path in sorted((repo / folder).rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_a_pulled_run_needs_only_the_data_stage_in_another_folder(tmp_path: Path, one_thread_each):
    mini = make_flickr30k(tmp_path / "author-disk" / "flickr30k", "karpathy")
    author, store = tmp_path / "author", tmp_path / "store"
    author.mkdir()
    copy_project(author)
    write_params(author, {**TINY, "data": {"dataset": "flickr30k", "root": str(mini.root)}, "evaluate": {"figures": 1}})
    commit_all(author)
    run(["dvc", "remote", "add", "-d", "store", str(store)], author)
    assert ran_stages(run(["dvc", "repro"], author).stdout)[-1] == "evaluate"
    commit_all(author, "a run on the miniature Flickr30k")
    run(["dvc", "push"], author)

    made = files_under(author)
    for name, content in made.items():  # the outputs name no folder of the machine that made them
        assert str(tmp_path).encode() not in content, f"{name} records a folder of the author's machine"

    theirs = tmp_path / "teammate-disk" / "datasets" / "f30k"
    theirs.parent.mkdir(parents=True)
    shutil.move(mini.root, theirs)  # the author's folder is gone
    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", str(author), str(teammate)], tmp_path)
    run(["dvc", "pull"], teammate)
    write_params(teammate, {"data": {"root": str(theirs)}})
    assert ran_stages(run(["dvc", "repro"], teammate).stdout) == ["data"]
    assert "up to date" in run(["dvc", "status"], teammate).stdout
    assert files_under(teammate) == made

    # evaluate, rerun alone, reads the test images (figures, gallery) from the teammate's folder
    (teammate / "reports" / "gallery.html").unlink()
    assert ran_stages(run(["dvc", "repro", "--force", "--single-item", "evaluate"], teammate).stdout) == ["evaluate"]
    assert (teammate / "reports" / "gallery.html").read_bytes() == made["reports/gallery.html"]

    # a copy with one other image: the data stage names it, and what depends on the table is out of date
    other = tmp_path / "teammate-disk" / "other-copy"
    shutil.copytree(theirs, other)
    write_jpeg(other / "flickr30k-images" / "1000092795.jpg", seed=99)
    write_params(teammate, {"data": {"root": str(other)}})
    data = run(["dvc", "repro", "--single-item", "data"], teammate)
    named = r"1 images differ from the previous caption table \S+ \(other content, or missing\): 1000092795.jpg;"
    assert re.search(named, data.stderr)
    assert {"vocab", "features", "embeddings"} <= set(
        re.findall(r"^(\w+):\n", run(["dvc", "status"], teammate).stdout, re.M)
    )
