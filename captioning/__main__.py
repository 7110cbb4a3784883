"""`python -m captioning COMMAND ...` and the `captioning` console command.

Commands:
  caption IMAGE [IMAGE ...]   caption images with a trained model (--attention OUT.png draws its attention)
  download DATASET DIR        fetch Flickr30k or Flickr8k from a public mirror
  demo [--model M] [--port P] caption your own photos in the browser (needs pip install -e '.[demo]')
  compare A B [--md|--json]   B's test scores minus A's, with 95% intervals and p-values; A and B are git
                              revisions, experiment names (dvc exp show) or `workspace`, or several runs
                              each (soft-s0,soft-s1 or 'soft-s*'; --paired where B's continue A's)
  remote [--remote NAME]      why a dvc push or pull failed, in one line (docs/remote.md)
"""

from __future__ import annotations

import sys

COMMANDS = ("caption", "download", "demo", "compare", "remote")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "caption":
        from captioning.commands.caption import main as caption_main

        return caption_main(rest)
    if command == "download":
        from captioning.commands.download import main as download_main

        return download_main(rest)
    if command == "demo":
        from captioning.demo.app import main as demo_main

        return demo_main(rest)
    if command == "compare":
        from captioning.commands.compare import main as compare_main

        return compare_main(rest)
    if command == "remote":
        from captioning.commands.remote import main as remote_main

        return remote_main(rest)
    print(f"error: unknown command {command!r}; use one of {', '.join(COMMANDS)} (see --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
