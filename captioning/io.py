"""Writing stage outputs safely: a temporary name beside the target, renamed only when complete.

An interrupted stage therefore never leaves a file that DVC could cache as if it were whole. A write
that fails for want of space or of permission is one CaptioningError naming the output (the temporary
is removed, the previous version kept); a temporary left behind by a killed process (`kill -9`) is
removed by the next stage that starts (see remove_stale_temporaries). Reading torch files safely
(load_plain: weights only, a refusal in one line) is here too, for the model files and `features.weights`.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from captioning.errors import CaptioningError

log = logging.getLogger(__name__)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def temporary_path(target: Path, pid: int | None = None) -> Path:
    return target.with_name(f".{target.name}.tmp-{os.getpid() if pid is None else pid}")


def output_error(path: str | Path, error: OSError, atomic: bool = True) -> CaptioningError | None:
    """The one-line error for a write that failed for want of space or permission, else None.

    `atomic`: the write went through atomic_path, so its partial file is gone and the previous version kept.
    """
    if error.errno in NO_SPACE:
        kept = (
            "the partial file was removed; the previous version and any resumable state are kept"
            if atomic
            else "any resumable state is kept"
        )
        return CaptioningError(f"{path}: no space left on device ({kept}: free some space and rerun)")
    if error.errno == errno.EROFS:
        return CaptioningError(f"{path}: cannot write it, the file system is read-only")
    if error.errno in (errno.EACCES, errno.EPERM):
        return CaptioningError(f"{path}: cannot write it, its folder is read-only for this user (permission denied)")
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def _stale_temporaries(folder: Path, name: str | None = None) -> Iterator[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match and (name is None or match["name"] == name):
            pid = int(match["pid"])
            if pid != os.getpid() and not _process_alive(pid):
                yield Path(entry.path)


def remove_stale_temporaries(folders: Iterable[str | Path], recursive: bool = True) -> list[Path]:
    """Remove `.NAME.tmp-<pid>` files and folders of processes that are no longer running.

    Only temporaries whose process id is not alive are removed (a running stage's are left alone); a
    reused process id keeps a leftover a little longer, never removes a live one. Hidden folders (.git,
    .dvc) and the temporaries themselves are not searched.
    """
    removed = []
    pending = [Path(folder) for folder in folders if Path(folder).is_dir()]
    while pending:
        folder = pending.pop()
        for stale in _stale_temporaries(folder):
            log.info("removing %s, left behind by an interrupted run (process %s)", stale, stale.name.rsplit("-", 1)[1])
            _remove(stale)
            removed.append(stale)
        if recursive:
            try:
                with os.scandir(folder) as entries:
                    pending.extend(
                        Path(e.path) for e in entries if e.is_dir(follow_symlinks=False) and e.name[0] != "."
                    )
            except OSError:
                continue
    return removed


def check_writable(*paths: str | Path) -> None:
    """Stop now, with one line, if an output cannot be written: before hours of work, not after them.

    Each path's folder is created if needed and must be writable (os.access: a read-only file system
    or folder). Stale temporaries of the output, left by a killed run, are removed.
    """
    for path in map(Path, paths):
        folder = path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise (output_error(path, error) or CaptioningError(f"{path}: cannot create {folder} ({error})")) from None
        if not os.access(folder, os.W_OK):
            read_only = errno.EROFS if _on_read_only_mount(folder) else errno.EACCES
            raise output_error(path, OSError(read_only, os.strerror(read_only)))
        for stale in _stale_temporaries(folder, path.name):
            log.info("removing %s, left behind by an interrupted run", stale)
            _remove(stale)


def _on_read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path (file or folder) that replaces `target` when the block succeeds.

    On any exception the temporary is removed and the target left as it was; an OSError for want of
    space or permission becomes one CaptioningError naming the target.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        translated = output_error(target, error)
        if translated is None:
            raise
        raise translated from None
    for stale in _stale_temporaries(target.parent, target.name):
        _remove(stale)
    temporary = temporary_path(target)
    _remove(temporary)
    try:
        yield temporary
        if target.exists() and target.is_dir() and not target.is_symlink() and temporary.is_dir():
            _remove(target)  # os.replace cannot replace a non-empty folder
        os.replace(temporary, target)
    except BaseException as error:
        _remove(temporary)
        if isinstance(error, OSError) and _about(error, temporary, target):
            translated = output_error(target, error)
            if translated is None and isinstance(error, IsADirectoryError | NotADirectoryError | FileExistsError):
                kind = "folder" if target.is_dir() else "file"
                translated = CaptioningError(
                    f"{target}: cannot replace this {kind} with the new output ({error.strerror}); remove it"
                )
            if translated is not None:
                raise translated from None
        raise


def _about(error: OSError, temporary: Path, target: Path) -> bool:
    """Whether `error` concerns the output (h5py's errors name no file) rather than some input read meanwhile."""
    if error.filename is None:
        return True
    named = str(error.filename)
    return named.startswith(str(temporary)) or named == str(target)


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` (a temporary of atomic_path); a full disk raises OSError(ENOSPC) here."""
    with open(path, "wb") as file:
        file.write(data)


def write_json(path: str | Path, value: object, indent: int | None = 2) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False) + "\n"
    with atomic_path(path) as temporary:
        write_bytes(temporary, text.encode("utf-8"))


def read_json(path: str | Path) -> object:
    """A JSON file's value (a UTF-8 byte-order mark is accepted, as the text readers accept one)."""
    path = Path(path)
    if not path.is_file():
        raise CaptioningError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
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


# Reading torch files safely, shared by the model-file loader (captioning.checkpoint) and the features stage's
# `features.weights` loader, which must say the same. torch is imported when a file is read: the stages that never
# read one (data, vocab) do not pay for it.

PICKLED = "not a plain state dict (it holds pickled Python objects, which can run code): not loaded, for safety"


class UnloadableFile(Exception):
    """torch.load(weights_only=True) refused a file: `reason` is one line, without the advice to load it unsafely."""

    def __init__(self, reason: str, pickled: bool):
        super().__init__(reason)
        self.reason, self.pickled = reason, pickled


def load_plain(path: str | Path, map_location: object = "cpu") -> object:
    """torch.load with weights_only=True; a refusal is UnloadableFile (PICKLED for pickled objects)."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "GLOBAL" not in str(error):  # no pickled object: not a pickle at all: a text file, a truncated one
            raise UnloadableFile(_unpickler_reason(error), pickled=False) from None
        # weights_only refused a pickled object; torch's advice to load it with weights_only=False is not ours
        raise UnloadableFile(PICKLED, pickled=True) from None
    except Exception as error:
        raise UnloadableFile(_first_line(error), pickled=False) from None


def _unpickler_reason(error: Exception) -> str:
    """The one line of torch's weights-only error that says what is wrong, without its advice."""
    _, marker, rest = str(error).partition("WeightsUnpickler error:")
    lines = [line.strip() for line in rest.splitlines() if line.strip()] if marker else []
    return lines[0] if lines else _first_line(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
