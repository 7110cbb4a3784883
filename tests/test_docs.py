"""The README and docs/ name only what exists, speak of the project, and hold no one machine's paths."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A path in the repository: under one of its folders (outputs such as data/ or models/ are made by the pipeline).
PROJECT_PATH = re.compile(r"(?<![\w/.~-])((?:captioning|stages|tests|benchmarks|docs|presets)/[\w./-]*[\w/])")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
# How the text was written, not what the project does or what was measured.
ABOUT_THE_WRITING = re.compile(r"\b(?:this|the) session\b|session's|other engineers|shared machine", re.IGNORECASE)


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_project_path_a_page_names_exists(page: Path):
    text = page.read_text(encoding="utf-8")
    named = {match.rstrip(".") for match in PROJECT_PATH.findall(text)}
    assert [name for name in sorted(named) if not (REPO / name).exists()] == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_link_of_a_page_leads_somewhere(page: Path):
    targets = [target for target in LINK.findall(page.read_text(encoding="utf-8")) if "://" not in target]
    assert [target for target in targets if not (page.parent / target).exists()] == []


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_a_page_speaks_of_the_project_not_of_how_it_was_written(page: Path):
    lines = page.read_text(encoding="utf-8").splitlines()
    assert [f"{number}: {line}" for number, line in enumerate(lines, 1) if ABOUT_THE_WRITING.search(line)] == []


def test_no_file_holds_a_folder_of_one_machine():
    """Defaults and commands use relative paths or the system's temporary folder (e.g. scale.py's --workdir)."""
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    machine_folders = re.compile("(?<![\\w.])/(?:" + "work|home" + ")/")
    found = []
    for name in listed:
        path = REPO / name
        if name == "tests/test_docs.py" or not path.is_file() or path.suffix not in (".py", ".md", ".sh", ".yaml"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [
            f"{name}:{number}" for number, line in enumerate(text.splitlines(), 1) if machine_folders.search(line)
        ]
    assert found == []


def test_the_readme_headline_table_is_the_committed_metrics():
    """The README's main results row says what metrics/evaluate.json (from the committed dvc.lock's run) says."""
    metrics = json.loads((REPO / "metrics" / "evaluate.json").read_text(encoding="utf-8"))
    keys = ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l"]
    expected = [f"{metrics[key]:.3f}" for key in keys] + [f"{metrics['cider']:.2f}"]
    header = "| BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | ROUGE-L | CIDEr |"
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    row = lines[lines.index(header) + 2]
    assert [cell.strip("* ") for cell in row.strip("|").split("|")] == expected
