"""captioning/features/store.py: HDF5 round trip, in memory or batch by batch, with the same results."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from captioning.errors import CaptioningError
from captioning.features import store as store_module
from captioning.features.store import FeatureStore, FeatureWriter, memory_budget_bytes

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
    """test_bad_input.py has the real full disk; here the close alone fails. It becomes OSError(ENOSPC) naming the
    file, which atomic_path turns into its one line."""
    import errno

    path = tmp_path / "features.h5"
    writer = FeatureWriter(path, len(NAMES), 5, 8)
    writer.append(NAMES, values)
    real_file, writer.file = writer.file, FlushFails(writer.file)
    with pytest.raises(OSError) as caught:
        writer.close()
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(path)
    real_file.close()
