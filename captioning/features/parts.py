"""Resumable and parallel feature extraction: the image list in fixed-size parts, merged at the end.

Each chunk of `chunk_size` images is extracted into its own HDF5 file in a scratch folder named by the
run key, through atomic_path, so a part either exists whole or not at all. A process extracts all its
parts with one pool of decoding workers (extract_parts), started once and decoding ahead across the
parts' boundaries, so features.num_workers can grow to the host's cores. A run killed part-way leaves its
finished parts; a rerun with the same key (same params, encoder and table) extracts only the missing ones.
The parts may be shared among several processes (process p takes every nproc-th missing part; one GPU
each where there are GPUs). The merge copies them, one part at a time and in image order, into the one
output file, so the output is the same, byte for byte, whatever the number of processes or of decoding
workers, the part size or the interruptions. The scratch folder is not a DVC output: it is deleted once
the output is in place.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import multiprocessing
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import h5py
import numpy as np
import torch

from captioning.cli import raise_if_interrupted
from captioning.data.table import CaptionTable
from captioning.device import resolve_precision
from captioning.errors import CaptioningError
from captioning.features.encoder import FrozenEncoder, build_encoder, display_name
from captioning.features.extract import ExtractionReport, encoder_fingerprint, extract_parts
from captioning.features.recipe import FeatureRecipe
from captioning.features.store import FEATURES, NAMES, SKIPPED, FeatureWriter
from captioning.io import atomic_path, run_fingerprint
from captioning.params import FeaturesParams

log = logging.getLogger(__name__)

CHUNK_SIZE = 256  # images per part: the work a kill -9 can lose, and the unit shared among processes
# HDF5 keeps the image names (variable-length strings) of each write in heap space of their own, so a file written
# part by part had bytes that followed the part size. The merge writes blocks of this many rows whatever the part
# size: 256, the default part size, keeps the bytes the part-by-part merge wrote at the default.
ROWS_PER_WRITE = 256
CPU = torch.device("cpu")


def part_paths(folder: Path, images: int, chunk_size: int) -> list[Path]:
    return [folder / f"part-{i:05d}.h5" for i in range((images + chunk_size - 1) // chunk_size)]


def extract_table(
    table: CaptionTable,
    table_path: Path,
    output: Path,
    scratch: Path,
    params: FeaturesParams,
    on_bad_image: str,
    device: torch.device = CPU,
) -> ExtractionReport:
    """Every image of the caption table (read from `table_path`), in table order, into `output`: the features
    stage. The parts' folder in `scratch` is named by what they hold: the params, the recipe (the encoder's
    fingerprint and the resolved precision), data.on_bad_image and the table file. features.nproc and
    features.num_workers change who computes the parts, not what they hold, so a rerun may change them."""
    precision = resolve_precision(params.precision, device)
    make_encoder = partial(build_encoder, params.weights, params.seed, params.imagenet_variant, params.encoder)
    recipe = FeatureRecipe.of(params, precision, encoder_fingerprint(make_encoder()))  # each process builds its own
    name, weights = display_name(params.encoder), params.weights
    log.info("%s (%s weights) on %s, %s, batch %d", name, weights, device, precision, params.batch_size)
    content = dataclasses.replace(params, nproc=1, num_workers=0)
    run_key = run_fingerprint([content, recipe, on_bad_image], [table_path])
    names = [record.image for record in table.images]
    return extract_in_parts(
        make_encoder,
        table.image_root,
        names,
        output,
        scratch,
        run_key,
        chunk_size=params.chunk_size,
        nproc=params.nproc,
        device=device,
        attrs=recipe.to_dict(),
        image_size=params.image_size,
        batch_size=params.batch_size,
        precision=precision,
        num_workers=params.num_workers,
        on_bad_image=on_bad_image,
    )


def extract_in_parts(
    make_encoder: Callable[[], FrozenEncoder],
    image_root: Path,
    names: list[str],
    output: Path,
    scratch: Path,
    run_key: str,
    *,
    chunk_size: int = CHUNK_SIZE,
    nproc: int = 1,
    device: torch.device = CPU,
    attrs: dict | None = None,
    **options,
) -> ExtractionReport:
    """Features of `names` (in that order) into `output`, through parts in `scratch`/`run_key`.

    `make_encoder` builds the encoder in each process that needs one (it must pickle when nproc > 1);
    `options` go to extract_parts (image_size, batch_size, precision, num_workers, on_bad_image).
    """
    if not names:
        raise CaptioningError("the caption table lists no images: nothing to extract (rerun the data stage)")
    start = time.perf_counter()
    folder = scratch / run_key
    _remove_other_runs(scratch, keep=folder)
    chunks = [names[i : i + chunk_size] for i in range(0, len(names), chunk_size)]
    paths = part_paths(folder, len(names), chunk_size)
    missing = [i for i, path in enumerate(paths) if not _readable(path)]
    if len(missing) < len(paths):
        log.info("reusing %d of %d finished parts in %s", len(paths) - len(missing), len(paths), folder)
    work = [(chunks[i], paths[i]) for i in missing]
    nproc = max(1, min(nproc, len(work)))
    if nproc == 1:
        _extract_parts(make_encoder, image_root, work, device, options)
    else:
        _extract_in_processes(make_encoder, image_root, work, nproc, device, options)

    raise_if_interrupted()
    with atomic_path(output) as temporary:
        report = merge_parts(paths, temporary, capacity=len(names), attrs=attrs)
    shutil.rmtree(folder)
    report.seconds = time.perf_counter() - start
    return report


def merge_parts(paths: list[Path], output: Path, capacity: int, attrs: dict | None) -> ExtractionReport:
    """Copy the parts in order into one new features file, one part in memory at a time, written in blocks of
    ROWS_PER_WRITE rows: the file's bytes do not depend on the parts' size (features.chunk_size)."""
    with h5py.File(paths[0], "r") as first:
        _, regions, dim = first[FEATURES].shape
    writer = FeatureWriter(output, capacity, regions, dim, attrs)
    report = ExtractionReport()
    try:
        for names, features in _row_blocks(paths, ROWS_PER_WRITE, report.skipped):
            writer.append(names, features)
    except BaseException:
        writer.abandon()
        raise
    writer.close(report.skipped)
    report.written = writer.count
    return report


def _row_blocks(paths: list[Path], rows: int, skipped: list[str]) -> Iterator[tuple[list[str], np.ndarray]]:
    """The parts' image names and features, in order, regrouped into blocks of `rows` (the last one shorter);
    each part's skipped images are added to `skipped`."""
    names: list[str] = []
    features: list[np.ndarray] = []
    for path in paths:
        with h5py.File(path, "r") as part:
            if len(part[NAMES]):
                names += list(part[NAMES].asstr()[:])
                features.append(part[FEATURES][:])
            skipped += list(part[SKIPPED].asstr()[:])
        if len(names) >= rows:
            pending = np.concatenate(features) if len(features) > 1 else features[0]
            start = 0
            while len(names) - start >= rows:
                yield names[start : start + rows], pending[start : start + rows]
                start += rows
            names, features = names[start:], [pending[start:]]
    if names:
        yield names, np.concatenate(features)


def _extract_parts(
    make_encoder: Callable[[], FrozenEncoder],
    image_root: Path,
    work: list[tuple[list[str], Path]],
    device: torch.device,
    options: dict,
) -> None:
    """One process's parts, with one pool of decoding workers for all of them."""
    extract_parts(make_encoder(), image_root, work, device=device, **options)


def _extract_in_processes(make_encoder, image_root, work, nproc: int, device: torch.device, options: dict) -> None:
    """Process p extracts parts p::nproc, on GPU p (modulo the GPUs present) or on cores // nproc threads."""
    threads = max(1, torch.get_num_threads() // nproc)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    each = f"{gpus} GPUs" if gpus else f"{threads} threads each"
    log.info("extracting %d parts in %d processes (%s)", len(work), nproc, each)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    with ProcessPoolExecutor(nproc, mp_context=context, initializer=_start_worker, initargs=(threads,)) as pool:
        futures = [
            pool.submit(
                _extract_parts,
                make_encoder,
                image_root,
                work[p::nproc],
                torch.device("cuda", p % gpus) if gpus else device,
                options,
            )
            for p in range(nproc)
        ]
        for future in futures:
            future.result()  # re-raises a worker's error (e.g. a bad image under on_bad_image: error)


def _start_worker(threads: int) -> None:
    from captioning.cli import setup_logging

    setup_logging()
    torch.set_num_threads(threads)
    with contextlib.suppress(Exception):  # Linux: die with the stage (kill -9) instead of running on orphaned
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _readable(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as part:
            return {FEATURES, NAMES, SKIPPED} <= set(part)
    except OSError:
        log.warning("extracting %s again: the file is unreadable", path)
        return False


def _remove_other_runs(scratch: Path, keep: Path) -> None:
    """Parts of another configuration or other inputs can never be reused by this one: free their space."""
    if not scratch.is_dir():
        return
    for folder in scratch.iterdir():
        if folder != keep and folder.is_dir():
            log.info("removing %s: parts of another configuration or other inputs", folder)
            shutil.rmtree(folder, ignore_errors=True)
