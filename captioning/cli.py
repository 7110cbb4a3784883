"""What every entry point shares: logging set-up and turning user errors into one line and exit 1."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from captioning.errors import CaptioningError

log = logging.getLogger("captioning")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gensim").setLevel(logging.WARNING)


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(); a CaptioningError becomes `error: <message>` on stderr and exit status 1."""
    setup_logging()
    try:
        main()
    except CaptioningError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
