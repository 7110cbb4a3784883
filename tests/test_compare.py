"""captioning/commands/compare.py: two sides (revision, experiment, workspace) of a small DVC repository, compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import captioning.commands.compare as compare_module
import captioning.scoring.metrics as metrics
from captioning.commands.compare import check_same_images, compare, expand_runs, main, read_side
from captioning.errors import CaptioningError
from captioning.scoring.metrics import METEOR_SWITCH, CaptionScorer

IMAGES = 60
# Writes reports/predictions.json as the evaluate stage does: the first `quality` share of the images get a
# caption equal to one of their references, the others a poor one.
WRITER = textwrap.dedent(
    """
    import json, yaml
    quality = yaml.safe_load(open("params.yaml"))["quality"]
    colours, shapes = ["red", "blue", "green", "yellow"], ["circle", "square", "triangle"]
    rows = []
    for i in range({images}):
        colour, shape = colours[i % 4], shapes[i % 3]
        references = [f"a {{colour}} {{shape}} at the top", f"there is a {{colour}} {{shape}} near the top edge"]
        caption = references[0] if i < quality * {images} else f"a {{shape}}"
        rows.append({{"image": f"{{i:03d}}.png", "caption": caption, "references": references}})
    json.dump(rows, open("reports/predictions.json", "w"))
    """
).format(images=IMAGES)


def dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def write_pipeline(repo: Path, cached: bool) -> None:
    out = "      - reports/predictions.json" + ("" if cached else ":\n          cache: false")
    (repo / "dvc.yaml").write_text(
        f"stages:\n  evaluate:\n    cmd: python write.py\n    deps: [write.py]\n    params: [quality]\n"
        f"    outs:\n{out}\n"
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """v1: predictions as a DVC-cached output (quality 0.2); HEAD: a git-tracked one (quality 0.3); two "seeds"
    of a weak and of a strong configuration, the experiments low-s2, low-s10 (quality 0.25, 0.3) and high-s2,
    high-s10 (0.8, 0.85); the experiment `better` (quality 0.9), whose results are also the workspace's."""
    repo = tmp_path_factory.mktemp("compare")
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.org")
    git(repo, "config", "user.name", "test")
    dvc(repo, "init", "-q")
    (repo / "reports").mkdir()
    (repo / "write.py").write_text(WRITER)
    (repo / "params.yaml").write_text("quality: 0.2\n")
    write_pipeline(repo, cached=True)
    dvc(repo, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    git(repo, "tag", "v1")
    dvc(repo, "remove", "evaluate", "--outs")
    (repo / "params.yaml").write_text("quality: 0.3\n")
    write_pipeline(repo, cached=False)
    dvc(repo, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "predictions in git")
    for name, quality in [("low-s2", 0.25), ("low-s10", 0.3), ("high-s2", 0.8), ("high-s10", 0.85)]:
        dvc(repo, "exp", "run", "-q", "-S", f"quality={quality}", "-n", name)
    dvc(repo, "exp", "run", "-q", "-S", "quality=0.9", "-n", "better")
    return repo


@pytest.fixture(scope="module")
def scorer():
    if not metrics.java_available():
        pytest.skip("Java is not installed")
    with CaptionScorer(meteor=False) as scorer:  # METEOR is tested in test_statistics.py
        yield scorer


def test_sides_are_read_from_a_revision_an_experiment_the_dvc_cache_and_the_workspace(repo):
    good = lambda side: sum(caption == refs[0] for caption, refs in side.values())  # noqa: E731
    assert good(read_side("v1", root=repo)) == 12  # through DVC's cache
    assert good(read_side("HEAD", root=repo)) == 18  # from git
    assert good(read_side("better", root=repo)) == 54  # an experiment, by the name dvc exp show lists
    assert read_side("workspace", root=repo) == read_side("better", root=repo)


def test_a_better_experiment_is_significantly_better_and_identical_sides_are_not(repo, scorer):
    head, better = read_side("HEAD", root=repo), read_side("better", root=repo)
    check_same_images(head, better, ("HEAD", "better"))
    differences = compare([head], [better], 1000, 0, scorer)
    assert set(differences) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"}
    for key, difference in differences.items():
        assert difference.delta > 0 and difference.low > 0 and difference.p < 0.01, key
        assert difference.p_holm < 0.05, key
    for key, difference in compare([better], [read_side("workspace", root=repo)], 1000, 0, scorer).items():
        assert (difference.delta, difference.p, difference.p_holm) == (0.0, 1.0, 1.0), key


def test_runs_over_different_images_or_references_are_refused(repo):
    head = read_side("HEAD", root=repo)
    fewer = {image: row for image, row in list(head.items())[5:]}
    with pytest.raises(CaptioningError, match="different test images: 5 of 60 images are on one side only"):
        check_same_images(head, fewer, ("HEAD", "workspace"))
    changed = {image: (caption, [*refs, "one more"]) for image, (caption, refs) in head.items()}
    with pytest.raises(CaptioningError, match="different references for 60 of 60 test images"):
        check_same_images(head, changed, ("HEAD", "workspace"))


@pytest.fixture
def in_repo(repo, scorer, monkeypatch) -> Path:
    """The command run in `repo`, scoring with the module's one scorer (kept open between calls)."""
    monkeypatch.chdir(repo)
    monkeypatch.setattr(compare_module, "CaptionScorer", lambda: scorer)
    monkeypatch.setattr(scorer, "close", lambda: None)
    return repo


def test_the_command_prints_json_markdown_and_a_table(in_repo, capsys):
    assert main(["HEAD", "better", "--json", "--resamples", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result) == ["bleu_1", "bleu_2", "bleu_3", "bleu_4", "rouge_l", "cider"]
    fields = {"a", "b", "delta", "low", "high", "mc_error", "p_images", "p_seeds", "p", "p_holm"}
    fields |= {"resamples", "seed", "images", "runs"}
    assert set(result["bleu_4"]) == fields
    assert result["bleu_4"]["delta"] == pytest.approx(result["bleu_4"]["b"] - result["bleu_4"]["a"])
    assert (result["bleu_4"]["resamples"], result["bleu_4"]["seed"], result["bleu_4"]["images"]) == (200, 0, IMAGES)
    assert result["bleu_4"]["runs"] == {"a": ["HEAD"], "b": ["better"], "paired": False}
    assert result["bleu_4"]["p_seeds"] is None  # one run a side: nothing to test over seeds
    assert result["bleu_4"]["p"] == 1 / 201  # no shuffle as extreme: the floor
    assert main(["HEAD", "better", "--md", "--resamples", "200"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| metric | A (HEAD) | B (better) | B - A | 95% interval | p | p (Holm) |"
    assert table[2].startswith("| bleu_1 | ") and len(table) >= 8
    # at the floor p is a bound, not a value: < 1/R; Holm's over 6 metrics, < 6/R
    assert table[2].endswith(" | < 0.005 | < 0.03 |"), table[2]
    assert main(["HEAD", "better", "--resamples", "200"]) == 0
    output = capsys.readouterr().out
    assert "paired bootstrap" in output and "Holm's adjustment over the 6 metrics" in output


def test_a_pattern_expands_to_experiment_names_in_natural_order(repo):
    assert expand_runs("low-s*", root=repo) == ["low-s2", "low-s10"]
    assert expand_runs("high-s10,HEAD, low-s?", root=repo) == ["high-s10", "HEAD", "low-s2"]
    with pytest.raises(CaptioningError, match="no experiment matches 'soft-s\\*'"):
        expand_runs("soft-s*", root=repo)


def test_seed_level_sides_compare_the_means_over_runs_paired_in_order(in_repo, scorer, capsys):
    repo = in_repo
    assert main(["low-s*", "high-s*", "--json", "--resamples", "200"]) == 0
    result = json.loads(capsys.readouterr().out)
    pairs = [("low-s2", "high-s2"), ("low-s10", "high-s10")]
    singles = [compare([read_side(a, root=repo)], [read_side(b, root=repo)], 200, 0, scorer) for a, b in pairs]
    for key, difference in result.items():
        assert difference["runs"] == {"a": ["low-s2", "low-s10"], "b": ["high-s2", "high-s10"], "paired": False}
        assert difference["delta"] == pytest.approx((singles[0][key].delta + singles[1][key].delta) / 2), key
        assert difference["a"] == pytest.approx((singles[0][key].a + singles[1][key].a) / 2), key
        # Beyond the images' noise, but two runs a side cannot say more: 2 of the 6 splits are as extreme.
        assert difference["delta"] > 0 and difference["p_images"] < 0.05, key
        assert difference["p_seeds"] == difference["p"] == pytest.approx(2 / 6), key
    assert main(["low-s*", "high-s*", "--json", "--resamples", "200", "--paired"]) == 0
    for key, difference in json.loads(capsys.readouterr().out).items():
        assert difference["p_seeds"] == 2 / 4 and difference["runs"]["paired"], key
    # the same runs on both sides, named two ways: no difference
    assert main(["low-s*", "low-s2,low-s10", "--json", "--resamples", "200"]) == 0
    for key, difference in json.loads(capsys.readouterr().out).items():
        assert (difference["delta"], difference["p"], difference["p_holm"]) == (0.0, 1.0, 1.0), key
    assert main(["low-s*", "high-s*", "--resamples", "200"]) == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0].split() == (
        "metric mean A (low-s*) mean B (high-s*) B - A 95% interval p images p seeds p (Holm)".split()
    )
    assert output.splitlines()[1].split()[-2:] == ["0.3333", "1.000"]  # p seeds, Holm of the larger p
    assert "2 runs a side, 60 test images; A: low-s2, low-s10; B: high-s2, high-s10" in output
    assert "exact relabelling of the 4 runs (6 splits)" in output


@pytest.mark.parametrize(
    ("sides", "message"),
    [
        (["HEAD", "nonsense"], "'nonsense' is neither a git revision nor an experiment"),
        (["HEAD", "workspace", "--predictions", "reports/none.json"], "reports/none.json does not exist at 'HEAD'"),
        (["nothing-*", "HEAD"], "no experiment matches 'nothing-*'"),
        (["low-s*", "high-s2"], "A names 2 (low-s2, low-s10) and B 1 (high-s2); name as many on each side"),
        (["low-s2,,low-s10", "high-s*"], "'low-s2,,low-s10': an empty name between commas"),
    ],
)
def test_a_side_that_cannot_be_read_is_one_line_and_exit_1(repo, monkeypatch, capsys, sides, message):
    monkeypatch.chdir(repo)
    assert main(sides) == 1
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


@pytest.mark.skipif(not metrics.java_available(), reason="Java is not installed")
def test_the_module_command_runs_compare_with_meteor(repo):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), METEOR_SWITCH: "on"}
    done = subprocess.run(
        [sys.executable, "-m", "captioning", "compare", "better", "workspace", "--json", "--resamples", "100"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["meteor"]["p"] == 1.0
