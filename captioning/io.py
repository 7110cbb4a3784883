"""Writing stage outputs safely: a temporary name beside the target, renamed only when complete.

An interrupted stage therefore never leaves a file that DVC could cache as if it were whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path (file or folder) that replaces `target` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(temporary)
    try:
        yield temporary
    except BaseException:
        _remove(temporary)
        raise
    if target.exists() and target.is_dir() and temporary.is_dir():
        _remove(target)  # os.replace cannot replace a non-empty folder
    os.replace(temporary, target)


def write_json(path: str | Path, value: object, indent: int | None = 2) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> object:
    from captioning.errors import CaptioningError

    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CaptioningError(f"{path}: not valid JSON ({error})") from None


def code_fingerprint() -> str:
    """A hash of the library's source: state saved by other code is never resumed."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def run_fingerprint(settings: list, inputs: list[str | Path]) -> str:
    """Identifies a run by its settings, its input files (size, modification time) and the code, for resuming."""
    described = [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in settings]
    described.append(code_fingerprint())
    for path in map(Path, inputs):
        stat = path.stat()
        described.append([str(path), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
