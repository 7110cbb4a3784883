"""python -m captioning compare A B: B's test scores against A's, image by image, with intervals and p-values.

A and B are git revisions (HEAD, main, a tag, a commit), experiment names as `dvc exp show` lists them, or
`workspace` (the files on disk). Each side's reports/predictions.json, the captions the evaluate stage wrote
beside their references, is read from git or DVC's cache; nothing is re-run. Both sides are scored with the
test metrics and compared on the same images: B minus A, its 95% paired-bootstrap interval and a p-value from
approximate randomisation with Holm's adjustment over the metrics (captioning.scoring.significance).

A side may be several runs (training seeds): comma-separated names (`soft-s0,soft-s1`) or a pattern over the
experiment names (`'soft-s*'`, in natural order). The statistic is the mean over the runs, and a claim needs
two p-values: over the images, and over the runs (exact, runs relabelled between the sides; with --paired, where
B's k-th run continues A's k-th, as SCST from its seed's model, the pairs' differences sign-flipped).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import math
import re
import sys
from pathlib import Path

from captioning.errors import CaptioningError
from captioning.io import read_json
from captioning.scoring.metrics import METRIC_KEYS, CaptionScorer
from captioning.scoring.significance import RESAMPLES, Difference, mc_decimals, paired_comparison

PREDICTIONS = "reports/predictions.json"
WORKSPACE = "workspace"
Predictions = dict[str, tuple[str, list[str]]]  # image -> (caption, references)


def expand_runs(side: str, root: Path = Path(".")) -> list[str]:
    """The runs a side names: comma-separated names, each a revision, an experiment, `workspace` or a pattern
    (`*`, `?`, `[...]`) over the experiment names, which expands to the matching names in natural order."""
    runs = []
    for name in (part.strip() for part in side.split(",")):
        if not name:
            raise CaptioningError(f"{side!r}: an empty name between commas")
        if not any(character in name for character in "*?["):
            runs.append(name)
            continue
        matching = sorted(fnmatch.filter(experiment_names(root), name), key=_natural)
        if not matching:
            raise CaptioningError(f"no experiment matches {name!r} (see dvc exp show); quote the pattern in a shell")
        runs.extend(matching)
    return runs


def experiment_names(root: Path) -> set[str]:
    """Every experiment's name, over all baselines (read from git's refs: no DVC lock, so a running
    experiment does not stop a comparison)."""
    from dvc.repo.experiments.utils import exp_refs
    from dvc.scm import SCM, SCMError

    try:
        return {ref.name for ref in exp_refs(SCM(str(root)))}
    except SCMError as error:
        raise CaptioningError(f"experiments cannot be listed in {root.resolve()}: {error}") from None


def _natural(name: str) -> list:
    """soft-s2 before soft-s10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def read_side(side: str, path: str = PREDICTIONS, root: Path = Path(".")) -> Predictions:
    """The captions and references of one side: a revision or experiment through DVC, or the workspace."""
    where = f"{path} in the workspace" if side == WORKSPACE else f"{path} at {side!r}"
    if side == WORKSPACE:
        rows = read_json(root / path)
    else:
        rows = json.loads(_read_revision(side, path, root))
    if not isinstance(rows, list) or not rows:
        raise CaptioningError(f"{where}: expected a non-empty list of {{image, caption, references}} rows")
    predictions: Predictions = {}
    for number, row in enumerate(rows, start=1):
        try:
            image, caption, references = row["image"], row["caption"], row["references"]
        except (KeyError, TypeError):
            raise CaptioningError(f"{where}: row {number} is not an {{image, caption, references}} object") from None
        if not (isinstance(caption, str) and isinstance(references, list) and references):
            raise CaptioningError(f"{where}: row {number} ({image}) needs a caption and a non-empty references list")
        if image in predictions:
            raise CaptioningError(f"{where}: image {image} appears twice (rows up to {number})")
        predictions[image] = (caption, [str(r) for r in references])
    return predictions


def _read_revision(side: str, path: str, root: Path) -> str:
    import dvc.api
    from dvc.exceptions import DvcException, PathMissingError
    from dvc.scm import RevError

    try:
        return dvc.api.read(path, repo=str(root), rev=side)
    except RevError:
        raise CaptioningError(f"{side!r} is neither a git revision nor an experiment (see dvc exp show)") from None
    except PathMissingError:
        raise CaptioningError(f"{path} does not exist at {side!r}: was the evaluate stage run there?") from None
    except (DvcException, FileNotFoundError) as error:
        raise CaptioningError(
            f"{path} at {side!r} cannot be read ({error}); `dvc pull` fetches it if a remote has it"
        ) from None


def check_same_images(a: Predictions, b: Predictions, names: tuple[str, str]) -> None:
    """A paired comparison needs the same test images with the same references on both sides."""
    differ = len(a.keys() ^ b.keys())
    if differ:
        raise CaptioningError(
            f"{names[0]} and {names[1]} were evaluated on different test images: {differ} of "
            f"{len(a.keys() | b.keys())} images are on one side only; compare runs over the same test split"
        )
    changed = sum(a[image][1] != b[image][1] for image in a)
    if changed:
        raise CaptioningError(
            f"{names[0]} and {names[1]} have different references for {changed} of {len(a)} test images; "
            "compare runs over the same dataset"
        )


def check_paired(runs: tuple[list[str], list[str]]) -> None:
    """Runs are compared in pairs, in order: as many on each side."""
    if len(runs[0]) != len(runs[1]):
        raise CaptioningError(
            f"runs are compared in pairs, A's k-th with B's k-th, but A names {len(runs[0])} "
            f"({', '.join(runs[0])}) and B {len(runs[1])} ({', '.join(runs[1])}); name as many on each side"
        )


def compare(
    a: list[Predictions],
    b: list[Predictions],
    resamples: int = RESAMPLES,
    seed: int = 0,
    scorer: CaptionScorer | None = None,
    paired_runs: bool = False,
) -> dict[str, Difference]:
    """Every test metric of B minus A, paired over the images; over the runs too where `paired_runs`."""
    references = {image: refs for image, (_, refs) in a[0].items()}
    with contextlib.nullcontext(scorer) if scorer else CaptionScorer() as scoring:
        statistics = [
            [scoring.statistics({image: caption for image, (caption, _) in run.items()}, references) for run in side]
            for side in (a, b)
        ]
    return paired_comparison(*statistics, resamples, seed, paired_runs=paired_runs)


def _ordered(differences: dict[str, Difference]) -> list[str]:
    known = [key for key in METRIC_KEYS if key in differences]
    return known + sorted(key for key in differences if key not in known)


def format_p(p: float, floor: float, resamples: int) -> str:
    """p as a number, or `< 1/R` where no shuffle was as extreme (p at its floor, `floor`): not a value then."""
    if p <= floor * (1 + 1e-9) and floor < 1:
        return f"< {floor * (resamples + 1) / resamples:.2g}"
    return f"{p:.{max(3, math.ceil(math.log10(resamples)))}f}"


def format_table(differences: dict[str, Difference], names: tuple[str, str], markdown: bool, runs: int = 1) -> str:
    mean = "mean " if runs > 1 else ""
    header = ["metric", f"{mean}A ({names[0]})", f"{mean}B ({names[1]})", "B - A", "95% interval"]
    header += ["p images", "p seeds", "p (Holm)"] if runs > 1 else ["p", "p (Holm)"]
    rows = []
    for key in _ordered(differences):
        d = differences[key]
        decimals = min(4, mc_decimals(d.mc_error))
        holm_floor = min(1.0, len(differences) * d.p_floor)  # every metric at the floor: m / (R + 1) each
        interval = f"[{d.low:+.{decimals}f}, {d.high:+.{decimals}f}]"
        p = [format_p(d.p_images, d.p_floor, d.resamples)]
        if runs > 1:
            p.append(f"{d.p_seeds:.4f}")
        p.append(format_p(d.p_holm, holm_floor, d.resamples))
        rows.append([key, f"{d.a:.4f}", f"{d.b:.4f}", f"{d.delta:+.4f}", interval, *p])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])
    return "\n".join(lines)


def footer(runs: tuple[list[str], list[str]], differences: dict[str, Difference], paired_runs: bool = False) -> str:
    """What was tested, below the table."""
    first = next(iter(differences.values()))
    resamples, holm = first.resamples, f"Holm's adjustment over the {len(differences)} metrics; seed {first.seed}."
    if len(runs[0]) == 1:
        return (
            f"{first.images} test images. Interval: paired bootstrap over images ({resamples} resamples); "
            f"p: approximate randomisation, two-sided ({resamples} shuffles); {holm}"
        )
    n = len(runs[0])
    if paired_runs:
        drawn, seeds = "the pairs", f"exact sign flips of the {n} pairs' differences ({2**n} patterns)"
    else:
        drawn, seeds = "each side's runs", f"exact relabelling of the {2 * n} runs ({math.comb(2 * n, n)} splits)"
    return (
        f"{n} runs a side{' (paired)' if paired_runs else ''}, {first.images} test images; A: {', '.join(runs[0])}; "
        f"B: {', '.join(runs[1])}. Means over the runs. Interval: two-level bootstrap, {drawn} then the images "
        f"({resamples} resamples). p images: randomisation, two-sided, each shuffle exchanging whole runs of a pair "
        f"and swapping images' captions in every pair ({resamples} shuffles); p seeds: {seeds}, two-sided; "
        f"p (Holm): the larger of the two, {holm}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning compare", description=__doc__.splitlines()[0])
    side = "git revision, experiment name or 'workspace'; several runs: comma-separated, or a pattern ('soft-s*')"
    parser.add_argument("a", metavar="A", help=side)
    parser.add_argument("b", metavar="B", help=side)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--md", action="store_true", help="print a Markdown table (for a pull request)")
    output.add_argument(
        "--json", action="store_true", help="print {metric: {a, b, delta, low, high, p, p_holm, ..., runs}}"
    )
    parser.add_argument("--predictions", default=PREDICTIONS, help="the predictions file, relative to the repository")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples and shuffles")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--paired",
        action="store_true",
        help="B's k-th run continues A's k-th (SCST from its seed's model): the seed-level test flips the pairs' signs",
    )
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error("--resamples must be >= 1")
    from captioning.cli import setup_logging

    setup_logging()
    names = (args.a, args.b)
    try:
        runs = tuple(expand_runs(side) for side in names)
        check_paired(runs)
        a, b = ([read_side(run, args.predictions) for run in side] for side in runs)
        for name, predictions in zip(runs[0][1:] + runs[1], a[1:] + b):
            check_same_images(a[0], predictions, (runs[0][0], name))
        differences = compare(a, b, args.resamples, args.seed, paired_runs=args.paired)
    except CaptioningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        record = {"runs": {"a": runs[0], "b": runs[1], "paired": args.paired}}
        print(json.dumps({key: differences[key].as_dict() | record for key in _ordered(differences)}, indent=2))
        return 0
    print(format_table(differences, names, args.md, len(runs[0])))
    print(f"\n{footer(runs, differences, args.paired)}")
    return 0
