"""What a rehearsal leaves on disk: bytes under a folder (hard links once) and its largest file."""

from __future__ import annotations

import os
from pathlib import Path


def disk_bytes(folder: Path) -> int:
    """Bytes of the files under folder, each hard-linked file once (DVC's cache links its outputs)."""
    seen, total = set(), 0
    for directory, _, files in os.walk(folder):
        for name in files:
            status = os.lstat(os.path.join(directory, name))
            if (status.st_dev, status.st_ino) not in seen:
                seen.add((status.st_dev, status.st_ino))
                total += status.st_size
    return total


def largest_file(folder: Path) -> tuple[str, int]:
    """The largest file outside DVC's cache and git's objects, relative to folder, and its size."""
    best = ("", 0)
    for directory, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            size = os.lstat(path).st_size
            if size > best[1] and "/.dvc/cache/" not in path and "/.git/" not in path:
                best = (os.path.relpath(path, folder), size)
    return best
