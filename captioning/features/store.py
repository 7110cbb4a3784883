"""The HDF5 feature store: (N, 49, 2048) float16 region features plus the image names they belong to.

Written incrementally, one chunk per image, so a Flickr30k- or COCO-sized file never has to fit in
memory; read either whole (when it fits the memory budget) or batch by batch. The budget
(train.feature_memory_gb) is by default what the machine can spare, half the memory it has available
shared among the processes that each load the file; a number of GB sets it. It is also held to that half:
Flickr30k's 6.2 GB (10^9 bytes, as every size here) would fit an 8 GB budget, but not a machine with 8 GB of
RAM, where loading them would get the stage killed.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import h5py
import numpy as np

from captioning.errors import CaptioningError

FEATURES = "features"
NAMES = "images"
SKIPPED = "skipped"  # images that could not be decoded, kept so later stages can drop them knowingly
HDF5_ERRNO = re.compile(r"errno = (\d+)")  # how HDF5 reports the system's error inside its own message
AVAILABLE_SHARE = 0.5  # features are held in RAM only when they take at most this share of the available memory
UNKNOWN_MEMORY_BUDGET = 4e9  # the `auto` budget where the available memory cannot be read (not Linux)
log = logging.getLogger(__name__)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), or None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_budget_bytes(setting: float | str, processes: int = 1) -> int:
    """train.feature_memory_gb in bytes; `auto`: AVAILABLE_SHARE of the available memory, shared by `processes`
    loading the file at once (DDP's processes on this machine), or UNKNOWN_MEMORY_BUDGET where it is unknown."""
    if setting != "auto":
        return int(float(setting) * 1e9)
    available = available_memory_bytes()
    if available is None:
        return int(UNKNOWN_MEMORY_BUDGET)
    return int(AVAILABLE_SHARE * available / max(1, processes))


def _strings(dataset: h5py.Dataset) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else n for n in dataset[:]]


class FeatureWriter:
    """Append rows to a new HDF5 file; `close()` trims it to the rows written."""

    def __init__(self, path: str | Path, capacity: int, regions: int, dim: int, attrs: dict | None = None):
        self.path = Path(path)
        # No chunk cache: each chunk is one image, written whole at once. With one, HDF5 crashes (SIGSEGV) while
        # closing a file whose write failed (disk full) instead of raising; see tests/test_store.py.
        self.file = h5py.File(self.path, "w", rdcc_nbytes=0)
        self.features = self.file.create_dataset(
            FEATURES,
            shape=(capacity, regions, dim),
            maxshape=(None, regions, dim),
            dtype=np.float16,
            chunks=(1, regions, dim),
        )
        self.names = self.file.create_dataset(NAMES, shape=(capacity,), maxshape=(None,), dtype=h5py.string_dtype())
        self.count = 0
        for key, value in (attrs or {}).items():
            self.file.attrs[key] = value

    def append(self, names: list[str], features: np.ndarray) -> None:
        end = self.count + len(names)
        if end > self.features.shape[0]:
            self.features.resize(end, axis=0)
            self.names.resize(end, axis=0)
        self.features[self.count : end] = features.astype(np.float16)
        self.names[self.count : end] = names
        self.count = end

    def close(self, skipped: list[str] = ()) -> None:
        """Trim the file to the rows written and close it.

        HDF5 writes its metadata at close; a failure there (a full disk) comes out of h5py as a RuntimeError
        whose text holds the errno: it is raised as that OSError, naming this file, like a failed append.
        """
        try:
            self.file.create_dataset(SKIPPED, data=list(skipped), dtype=h5py.string_dtype())
            self.features.resize(self.count, axis=0)
            self.names.resize(self.count, axis=0)
            self.file.close()
        except (OSError, RuntimeError) as error:
            self.abandon()
            raise _system_error(error, self.path) from None

    def abandon(self) -> None:
        """Close after a failed write, keeping quiet: the first error is the one to report, not the close's."""
        try:
            self.file.close()
        except (OSError, RuntimeError):
            pass


def _system_error(error: Exception, path: Path) -> Exception:
    if isinstance(error, OSError) and error.errno is not None:
        return error
    found = HDF5_ERRNO.search(str(error))
    if found is None:
        return error
    code = int(found[1])
    return OSError(code, os.strerror(code), str(path))


class FeatureStore:
    """Read access to a features file, by image name or by row."""

    def __init__(self, path: str | Path, memory_budget_bytes: int | None = None, available_bytes: int | None = None):
        """`memory_budget_bytes`: None reads the whole file into RAM; otherwise only when it fits both the
        budget and AVAILABLE_SHARE of `available_bytes` (default: the machine's available memory now)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise CaptioningError(f"{self.path}: features file not found (run the features stage)")
        self.in_memory = None
        try:
            self.file = h5py.File(self.path, "r", rdcc_nbytes=0)  # no chunk cache: each chunk is read once, whole
            self.dataset = self.file[FEATURES]
            self.names = _strings(self.file[NAMES])
            self.skipped = set(_strings(self.file[SKIPPED])) if SKIPPED in self.file else set()
            self.attrs = dict(self.file.attrs)
            if self._fits_in_memory(memory_budget_bytes, available_bytes):
                self.in_memory = self.dataset[:]
        except (OSError, KeyError) as error:  # truncated, corrupt or foreign: h5py raises OSError
            raise CaptioningError(
                f"{self.path}: not a readable features file ({error}); rerun the features stage"
            ) from None
        self.row_of = {name: row for row, name in enumerate(self.names)}

    def _fits_in_memory(self, budget: int | None, available: int | None) -> bool:
        if budget is None:
            return True
        if self.nbytes > budget:
            if budget > 0:
                log.info(
                    "%s: %.2f GB of features exceed the %.2f GB budget: read batch by batch",
                    self.path,
                    self.nbytes / 1e9,
                    budget / 1e9,
                )
            return False
        available = available_memory_bytes() if available is None else available
        if available is not None and self.nbytes > AVAILABLE_SHARE * available:
            log.warning(
                "%s: %.2f GB of features fit the %.2f GB budget but not half of the %.2f GB of memory available: "
                "read batch by batch instead (lower train.feature_memory_gb to say so)",
                self.path,
                self.nbytes / 1e9,
                budget / 1e9,
                available / 1e9,
            )
            return False
        return True

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.dataset.shape)) * self.dataset.dtype.itemsize

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.dataset.shape)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Features of the given rows, in the given order: (len(rows), 49, 2048) float16."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.in_memory is not None:
            return self.in_memory[rows]
        # In file order (a disk is read forward, not back and forth), each run of consecutive rows in one read:
        # 64 rows as one slice take a quarter of the time of 64 one-row reads (~4 ms saved a batch; a row is an
        # HDF5 chunk). h5py's fancy indexing over scattered rows is ~100x slower (192 ms against 1.3 ms for a
        # batch of 32, benchmarks/train_step.py). A row asked for twice is read once.
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        result = np.empty((len(rows),) + self.dataset.shape[1:], dtype=self.dataset.dtype)
        run_starts = np.flatnonzero(np.diff(ordered, prepend=-2) > 1)  # runs of consecutive or repeated rows
        for start, end in zip(run_starts.tolist(), [*run_starts[1:].tolist(), len(rows)]):
            first, last, places = int(ordered[start]), int(ordered[end - 1]), order[start:end]
            if end - start == 1:  # most rows of a shuffled batch
                self.dataset.read_direct(result, np.s_[first], np.s_[int(places[0])])
            elif last - first == end - start - 1 and np.all(np.diff(places) == 1):  # to consecutive places: directly
                self.dataset.read_direct(result, np.s_[first : last + 1], np.s_[places[0] : places[-1] + 1])
            else:
                block = np.empty((last + 1 - first,) + result.shape[1:], dtype=result.dtype)
                self.dataset.read_direct(block, np.s_[first : last + 1])
                result[places] = block[ordered[start:end] - first]
        return result

    def rows_for(self, names: list[str], table_path: str | Path = "the caption table") -> np.ndarray:
        """Rows of these images; an image without features is a mismatch between the two files."""
        missing = [n for n in names if n not in self.row_of]
        if missing:
            raise CaptioningError(
                f"{self.path} has no features for {len(missing)} image(s) of {table_path} (e.g. {missing[0]}): "
                "the features file was built from another table; rerun the features stage"
            )
        return np.array([self.row_of[n] for n in names], dtype=np.int64)

    def close(self) -> None:
        self.file.close()
