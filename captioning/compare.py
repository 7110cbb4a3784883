"""python -m captioning compare A B: B's test scores against A's, image by image, with intervals and p-values.

A and B are git revisions (HEAD, main, a tag, a commit), experiment names as `dvc exp show` lists them, or
`workspace` (the files on disk). Each side's reports/predictions.json, the captions the evaluate stage wrote
beside their references, is read from git or DVC's cache; nothing is re-run. Both sides are scored with the
test metrics and compared on the same images: B minus A, its 95% paired-bootstrap interval and a p-value from
approximate randomisation (captioning.significance).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from captioning.errors import CaptioningError
from captioning.io import read_json
from captioning.metrics import METRIC_KEYS, CaptionScorer
from captioning.significance import RESAMPLES, Difference, paired_comparison

PREDICTIONS = "reports/predictions.json"
WORKSPACE = "workspace"
Predictions = dict[str, tuple[str, list[str]]]  # image -> (caption, references)


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


def compare(
    a: Predictions, b: Predictions, resamples: int = RESAMPLES, seed: int = 0, scorer: CaptionScorer | None = None
) -> dict[str, Difference]:
    """Every test metric of B minus A, paired over the images."""
    references = {image: refs for image, (_, refs) in a.items()}
    with contextlib.nullcontext(scorer) if scorer else CaptionScorer() as scoring:
        statistics_a = scoring.statistics({image: caption for image, (caption, _) in a.items()}, references)
        statistics_b = scoring.statistics({image: caption for image, (caption, _) in b.items()}, references)
    return paired_comparison(statistics_a, statistics_b, resamples, seed)


def _ordered(differences: dict[str, Difference]) -> list[str]:
    known = [key for key in METRIC_KEYS if key in differences]
    return known + sorted(key for key in differences if key not in known)


def format_table(differences: dict[str, Difference], names: tuple[str, str], markdown: bool) -> str:
    header = ["metric", f"A ({names[0]})", f"B ({names[1]})", "B - A", "95% interval", "p"]
    rows = [
        [key, f"{d.a:.4f}", f"{d.b:.4f}", f"{d.delta:+.4f}", f"[{d.low:+.4f}, {d.high:+.4f}]", f"{d.p:.3f}"]
        for key, d in ((key, differences[key]) for key in _ordered(differences))
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", metavar="A", help="git revision, experiment name or 'workspace'")
    parser.add_argument("b", metavar="B", help="git revision, experiment name or 'workspace'")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--md", action="store_true", help="print a Markdown table (for a pull request)")
    output.add_argument("--json", action="store_true", help="print {metric: {a, b, delta, low, high, p}}")
    parser.add_argument("--predictions", default=PREDICTIONS, help="the predictions file, relative to the repository")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples and shuffles")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error("--resamples must be >= 1")
    from captioning.cli import setup_logging

    setup_logging()
    names = (args.a, args.b)
    try:
        a, b = (read_side(side, args.predictions) for side in names)
        check_same_images(a, b, names)
        differences = compare(a, b, args.resamples, args.seed)
    except CaptioningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({key: differences[key].as_dict() for key in _ordered(differences)}, indent=2))
        return 0
    print(format_table(differences, names, args.md))
    print(
        f"\n{len(a)} test images. Interval: paired bootstrap over images ({args.resamples} resamples); "
        f"p: approximate randomisation, two-sided ({args.resamples} shuffles); seed {args.seed}."
    )
    return 0
