"""What every entry point shares: logging set-up and turning user errors into one line and exit 1.

Also, when a stage starts, temporaries left in the output folders by a killed run are removed, and
Ctrl-C ends a stage with one line saying what was kept and how to continue (exit status 130).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from captioning import interrupts
from captioning.errors import CaptioningError
from captioning.io import output_error, remove_stale_temporaries

log = logging.getLogger("captioning")
OUTPUT_FOLDERS = ("data", "models", "metrics", "reports", "scratch")  # where the stages write (dvc.yaml's outs)
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as shells report it
KEPT_ON_INTERRUPT = {
    "features": "the finished parts in scratch/features/ are kept; rerun the stage (dvc repro) to continue from them",
    "train": "the state after the last completed epoch is kept in scratch/train/; rerun the stage (dvc repro) to "
    "continue after it",
    "finetune": "the state after the last completed SCST epoch is kept in scratch/finetune/; rerun the stage "
    "(dvc repro) to continue after it",
}


def stage_arguments(description: str, paths: list[str], scratch: str | None = None) -> argparse.ArgumentParser:
    """A stage's command line: every file it reads or writes is a required --option, so dvc.yaml's `cmd` is the
    one place that names them and a stage run by hand is given the same paths. `scratch`: the default folder of
    resumable state (not an output, so not in dvc.yaml)."""
    parser = argparse.ArgumentParser(description=description)
    for name in paths:
        parser.add_argument(f"--{name}", type=Path, required=True)
    if scratch is not None:
        parser.add_argument("--scratch", type=Path, default=Path(scratch), help="resumable state, not an output")
    return parser


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gensim").setLevel(logging.WARNING)


def interrupted_message(stage: str) -> str:
    kept = KEPT_ON_INTERRUPT.get(stage, "rerun the stage (dvc repro) to run it again")
    return f"interrupted: no partial output was written (dvc checkout restores the last recorded one); {kept}"


def _stage_name(main: Callable) -> str:
    """`train` for stages/train.py, also when it runs as __main__ (python -m stages.train, torchrun)."""
    module = sys.modules.get(main.__module__)
    return Path(getattr(module, "__file__", None) or main.__module__).stem


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(); a CaptioningError becomes `error: <message>` on stderr and exit status 1.

    A disk that fills up or a read-only folder is reported the same way (the file and the cause); Ctrl-C
    prints one line and exits with status 130, also one that came where Python ignores a KeyboardInterrupt
    (captioning.interrupts).
    """
    setup_logging()
    stage = _stage_name(main)
    with interrupts.remembered():
        _run(main, stage)


def _run(main: Callable[[], None], stage: str) -> None:
    try:
        remove_stale_temporaries(OUTPUT_FOLDERS)
        main()
        interrupts.check()  # a Ctrl-C whose KeyboardInterrupt Python ignored still ends the stage with 130
    except CaptioningError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        translated = output_error(error.filename or "an output", error, atomic=False)  # e.g. DVCLive's own writes
        if translated is None:
            raise
        print(f"error: {translated}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(interrupted_message(stage), file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
