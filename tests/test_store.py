"""captioning/features/store.py: HDF5 round trip, in memory or batch by batch, with the same results; a damaged
features file, or one written on a full disk, is one line naming it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from fixtures_real import image_bytes
from repo_params import repo_document
from tiny_repo import NO_SPACE, leftovers, stage_command, table_file

from captioning.errors import CaptioningError
from captioning.features import store as store_module
from captioning.features.encoder import FEATURE_DIM
from captioning.features.store import FeatureStore, FeatureWriter, memory_budget_bytes

REPO = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 64  # 2 x 2 regions
NAMES = [f"img_{i}.png" for i in range(7)]


@pytest.fixture
def values() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(len(NAMES), 5, 8)).astype(np.float32) * 10


def test_round_trip_gives_identical_float16_features_names_and_attrs(feature_file, values):
    store = FeatureStore(feature_file(NAMES, values, skipped=["bad.png", "missing.png"]))
    assert store.names == NAMES
    assert store.shape == (7, 5, 8) and store.nbytes == 7 * 5 * 8 * 2
    assert store.in_memory is not None and store.in_memory.dtype == np.float16
    np.testing.assert_array_equal(store.rows(np.arange(7)), values.astype(np.float16))
    assert store.skipped == {"bad.png", "missing.png"}
    assert store.attrs == {"image_size": 64}
    store.close()


def test_rows_in_any_order_with_repeats_agree_in_memory_and_budgeted(feature_file, values):
    path = feature_file(NAMES, values)
    in_memory, budgeted = FeatureStore(path), FeatureStore(path, memory_budget_bytes=100)
    assert in_memory.in_memory is not None and budgeted.in_memory is None
    rows = np.array([5, 0, 5, 3, 6, 0, 1, 5])
    expected = values.astype(np.float16)[rows]
    np.testing.assert_array_equal(in_memory.rows(rows), expected)
    np.testing.assert_array_equal(budgeted.rows(rows), expected)
    assert budgeted.rows(rows).dtype == np.float16
    np.testing.assert_array_equal(budgeted.rows(np.array([4])), values.astype(np.float16)[[4]])
    assert FeatureStore(path, memory_budget_bytes=in_memory.nbytes).in_memory is not None  # a budget that fits


def test_streamed_rows_are_read_once_each_in_runs_of_consecutive_rows(feature_file, values):
    store = FeatureStore(feature_file(NAMES, values), memory_budget_bytes=0)
    reads = []
    read_direct = store.dataset.read_direct
    store.dataset.read_direct = lambda array, source, *dest: reads.append(source) or read_direct(array, source, *dest)
    rows = np.array([5, 1, 2, 6, 2, 3])
    np.testing.assert_array_equal(store.rows(rows), values.astype(np.float16)[rows])
    assert reads == [np.s_[1:4], np.s_[5:7]]  # rows 1-3 and 5-6, forward, the repeated row 2 once
    reads.clear()
    np.testing.assert_array_equal(store.rows(np.array([4, 0, 2])), values.astype(np.float16)[[4, 0, 2]])
    assert reads == [np.s_[0], np.s_[2], np.s_[4]]


def test_writer_grows_past_and_trims_to_its_capacity(tmp_path, values):
    grown = FeatureWriter(tmp_path / "grown.h5", capacity=2, regions=5, dim=8)
    for start in range(0, 7, 3):
        grown.append(NAMES[start : start + 3], values[start : start + 3])
    grown.close()
    trimmed = FeatureWriter(tmp_path / "trimmed.h5", capacity=50, regions=5, dim=8)
    trimmed.append(NAMES[:4], values[:4])
    trimmed.close()
    store = FeatureStore(tmp_path / "grown.h5")
    assert store.names == NAMES and store.skipped == set()
    np.testing.assert_array_equal(store.rows(np.arange(7)), values.astype(np.float16))
    store = FeatureStore(tmp_path / "trimmed.h5")
    assert store.names == NAMES[:4] and store.shape == (4, 5, 8)


def test_rows_for_maps_names_to_rows(feature_file, values):
    store = FeatureStore(feature_file(NAMES, values))
    np.testing.assert_array_equal(store.rows_for(["img_3.png", "img_0.png", "img_3.png"]), [3, 0, 3])


def test_rows_for_an_unknown_name_names_the_features_file_and_the_table(feature_file, values):
    path = feature_file(NAMES, values)
    store = FeatureStore(path)
    with pytest.raises(CaptioningError) as caught:
        store.rows_for(["img_1.png", "other.png"], "data/dataset.json")
    message = str(caught.value)
    assert str(path) in message and "data/dataset.json" in message and "other.png" in message


def test_missing_or_foreign_files_raise_captioning_error(tmp_path):
    with pytest.raises(CaptioningError, match="features file not found"):
        FeatureStore(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file.create_dataset("something", data=np.zeros(3))
    with pytest.raises(CaptioningError, match=r"other\.h5: not a readable features file"):
        FeatureStore(tmp_path / "other.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(CaptioningError, match=r"text\.h5: not a readable features file"):
        FeatureStore(tmp_path / "text.h5")


def test_features_that_fit_the_budget_but_not_the_free_memory_are_read_batch_by_batch(feature_file, values):
    path = feature_file(NAMES, values)
    nbytes = FeatureStore(path).nbytes
    budget = 100 * nbytes  # the default 8 GB against Flickr30k's 6.2 GB, in small
    short = FeatureStore(path, memory_budget_bytes=budget, available_bytes=nbytes)  # needs twice its size free
    roomy = FeatureStore(path, memory_budget_bytes=budget, available_bytes=2 * nbytes)
    assert short.in_memory is None and roomy.in_memory is not None
    rows = np.array([6, 2, 2, 0])
    np.testing.assert_array_equal(short.rows(rows), roomy.rows(rows))
    assert FeatureStore(path, available_bytes=1).in_memory is not None  # no budget: whole, as asked


def test_the_auto_budget_is_half_the_available_memory_shared_by_the_processes(monkeypatch):
    monkeypatch.setattr(store_module, "available_memory_bytes", lambda: 64 * 10**9)
    assert memory_budget_bytes("auto") == 32 * 10**9
    assert memory_budget_bytes("auto", processes=8) == 4 * 10**9  # DDP: each process loads its own copy
    assert memory_budget_bytes(2.5, processes=8) == memory_budget_bytes(2.5) == 2_500_000_000  # GB as written
    assert memory_budget_bytes(0) == 0
    monkeypatch.setattr(store_module, "available_memory_bytes", lambda: None)  # no /proc/meminfo
    assert memory_budget_bytes("auto") == 4 * 10**9


class FlushFails:
    """An h5py.File whose close fails as HDF5's does on a full disk: a RuntimeError with the errno in its text."""

    def __init__(self, file: h5py.File):
        self.file = file

    def __getattr__(self, name):
        return getattr(self.file, name)

    def close(self):
        raise RuntimeError(
            "Disable slist on flush dest failure failed (file write failed: time = ..., filename = 'x', "
            "file descriptor = 3, errno = 28, error message = 'No space left on device', ...)"
        )


def test_a_write_failing_at_close_is_the_system_error_naming_the_file(tmp_path, values):
    """The features stage's full-disk tests below have the real full disk; here the close alone fails. It becomes
    OSError(ENOSPC) naming the file, which atomic_path turns into its one line."""
    import errno

    path = tmp_path / "features.h5"
    writer = FeatureWriter(path, len(NAMES), 5, 8)
    writer.append(NAMES, values)
    real_file, writer.file = writer.file, FlushFails(writer.file)
    with pytest.raises(OSError) as caught:
        writer.close()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    real_file.close()


# ---------------------------------------------------------------------------------------------------------------------
# The HDF5 features file: truncated, empty, corrupt or missing is one CaptioningError naming it.


def written_features(path: Path) -> int:
    writer = FeatureWriter(path, 8, 4, FEATURE_DIM)
    writer.append([f"{i}.jpg" for i in range(8)], np.ones((8, 4, FEATURE_DIM), dtype=np.float32))
    writer.close(["bad.jpg"])
    return path.stat().st_size


RERUN = "; rerun the features stage"
FEATURE_FILE_CASES = [
    pytest.param(
        lambda data: data[: len(data) // 2],
        lambda size: (
            r"{path}: not a readable features file \(.*truncated file: eof = "
            + f"{size // 2}, .*stored_eof = {size}"
            + r"\)\)"
            + re.escape(RERUN)
        ),
        id="truncated-to-half",
    ),
    pytest.param(
        lambda data: data[:-1],
        lambda size: (
            r"{path}: not a readable features file \(.*truncated file: eof = "
            + f"{size - 1}, .*stored_eof = {size}"
            + r"\)\)"
            + re.escape(RERUN)
        ),
        id="truncated-by-one-byte",
    ),
    pytest.param(
        lambda data: b"",
        lambda size: r"{path}: not a readable features file \(.*file signature not found\)\)" + re.escape(RERUN),
        id="zero-bytes",
    ),
    pytest.param(
        lambda data: data[:-8000] + bytes(4000) + data[-4000:],  # the heap of the image names, written last
        lambda size: r"{path}: not a readable features file \(.+\)" + re.escape(RERUN),
        id="zeroed-metadata",
    ),
    pytest.param(None, lambda size: r"{path}: features file not found \(run the features stage\)", id="missing"),
]


@pytest.mark.parametrize(("damage", "expected"), FEATURE_FILE_CASES)
def test_damaged_features_file(tmp_path: Path, damage, expected):
    path = tmp_path / "features.h5"
    size = written_features(path)
    if damage is None:
        path.unlink()
    else:
        path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CaptioningError) as caught:
        FeatureStore(path)
    pattern = expected(size).format(path=re.escape(str(path)))
    assert re.fullmatch(pattern, str(caught.value)), str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# The features stage on a real full disk: one line naming the file, exit status 1, the finished parts kept.


def _features_stage_on_24_images(folder: Path, chunk_size: int, **paths: Path) -> subprocess.CompletedProcess:
    """The features stage run by hand on 24 images of 16 kB of features each, in parts of chunk_size images."""
    names = [f"{i:02d}.png" for i in range(24)]
    image = image_bytes("PNG", (10, 200, 30), (40, 30))
    table_file(
        [{"image": name, "split": "train", "captions": ["a red circle"]} for name in names], dict.fromkeys(names, image)
    )(folder)
    features = {
        "image_size": IMAGE_SIZE,
        "batch_size": 8,
        "num_workers": 1,
        "precision": "fp32",
        "chunk_size": chunk_size,
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(repo_document({"features": features})), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    return subprocess.run(
        stage_command("features", **paths), cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_features_stage_on_a_full_disk_stops_with_one_line_and_keeps_its_parts(tmp_path: Path, small_disk: Path):
    """HDF5 used to crash (exit 139) closing a file after a failed write: now one line and exit status 1."""
    folder = tmp_path.resolve()
    output = small_disk.resolve() / "features.h5"
    result = _features_stage_on_24_images(folder, chunk_size=8, output=output)  # 3 parts, 384 kB on a 256 kB disk
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: " + NO_SPACE.format(path=output)
    ]
    assert list(small_disk.iterdir()) == [] and leftovers(folder) == []
    assert len(list((folder / "scratch/features").glob("*/part-*.h5"))) == 3  # the resumable parts are kept


@pytest.mark.slow
def test_features_parts_on_a_full_disk_stop_with_one_line(tmp_path: Path, small_disk: Path):
    """The resumable parts (.part-*.h5.tmp-PID) on the full disk: h5py's flush failure at close is one line too."""
    folder = tmp_path.resolve()
    scratch = small_disk.resolve() / "scratch"
    result = _features_stage_on_24_images(folder, chunk_size=24, scratch=scratch)  # one 384 kB part
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    (part,) = scratch.glob("*/")  # the run's folder, named by its key
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: " + NO_SPACE.format(path=part / "part-00000.h5")
    ]
    assert leftovers(small_disk) == [] and not (folder / "data/features.h5").exists()
