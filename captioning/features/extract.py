"""Streaming feature extraction: image files -> frozen ResNet -> HDF5, never all in memory.

Images are decoded and resized in DataLoader workers while the main process runs the encoder; the
workers start once per call and decode ahead across the files it writes (the features stage's parts);
images that cannot be decoded are skipped and named in the output (or stop the run, by policy).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioning.cli import ctrl_c_deferred, ignore_ctrl_c, raise_if_interrupted
from captioning.data.images import BadImageError, load_rgb, resize_to_array
from captioning.device import autocast
from captioning.errors import CaptioningError
from captioning.features.encoder import FEATURE_DIM, FrozenEncoder
from captioning.features.store import FeatureWriter
from captioning.io import atomic_path

log = logging.getLogger(__name__)


class ImageFiles(Dataset):
    """(name, uint8 image (3, size, size)) per file, or (name, error message) when it cannot be read."""

    def __init__(self, root: Path, names: list[str], size: int):
        self.root, self.names, self.size = root, names, size

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        name = self.names[index]
        try:
            return name, torch.from_numpy(resize_to_array(load_rgb(self.root / name), self.size))
        except BadImageError as error:
            return name, str(error)


def _collate(items):
    good = [(name, image) for name, image in items if isinstance(image, torch.Tensor)]
    bad = [(name, message) for name, message in items if isinstance(message, str)]
    images = torch.stack([image for _, image in good]) if good else None
    return [name for name, _ in good], images, bad


@dataclass
class ExtractionReport:
    written: int = 0
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds else 0.0


def extract_features(
    encoder: FrozenEncoder, image_root: Path, names: list[str], output: Path, **options
) -> ExtractionReport:
    """Write the features of `names` (in that order) to `output`; the caller renames it into place. `options`:
    those of extract_parts (image_size, batch_size, precision, device, num_workers, on_bad_image, attrs)."""
    return extract_parts(encoder, image_root, [(names, output)], place=contextlib.nullcontext, **options)


def extract_parts(
    encoder: FrozenEncoder,
    image_root: Path,
    parts: list[tuple[list[str], Path]],
    *,
    image_size: int = 224,
    batch_size: int = 32,
    precision: str = "fp32",
    device: torch.device | None = None,
    num_workers: int = 1,
    on_bad_image: str = "skip",
    attrs: dict | None = None,
    place: Callable[[Path], AbstractContextManager[Path]] = atomic_path,
) -> ExtractionReport:
    """Write the features of each part's names (in that order) to the part's file, part after part.

    One DataLoader feeds all the parts: its workers start once and decode ahead across the parts' boundaries.
    Each part is cut into batches of its own (a batch never holds two parts' images), so a part's file is the
    same whatever the other parts. `place(path)` yields the file to write and puts it in place once the part
    is written (atomic_path: a part exists whole or not at all).
    """
    device = device or torch.device("cpu")
    encoder = encoder.to(device).to(memory_format=torch.channels_last)
    sizes = [len(names) for names, _ in parts]
    loader = DataLoader(
        ImageFiles(image_root, [name for names, _ in parts for name in names], image_size),
        batch_sampler=_part_batches(sizes, batch_size),
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
        worker_init_fn=ignore_ctrl_c,
    )
    regions = math.ceil(image_size / 32) ** 2  # a ResNet's output stride is 32, rounding up
    encode = partial(_encode, encoder, device, precision)
    report = ExtractionReport()
    start = time.perf_counter()
    batches = None
    try:
        with ctrl_c_deferred():  # Ctrl-C while the workers start is raised once they all run
            batches = iter(loader)
        with torch.inference_mode(), tqdm(total=sum(sizes), unit="img", desc="features") as progress:
            for (_, path), size in zip(parts, sizes):
                raise_if_interrupted()  # a Ctrl-C whose KeyboardInterrupt Python ignored (in a __del__) stops here
                with place(path) as temporary:
                    writer = FeatureWriter(temporary, size, regions, FEATURE_DIM, attrs)
                    # islice: the part's last batch ends the loop, not the iterator's own worker shutdown (below)
                    part_batches = itertools.islice(batches, math.ceil(size / batch_size))
                    skipped = _write_part(part_batches, writer, encode, on_bad_image, progress)
                report.written += writer.count
                report.skipped += skipped
                log.info("wrote %s (%d images)", path, size)
    finally:
        with ctrl_c_deferred():  # here, not in the iterator's __del__, where a KeyboardInterrupt is ignored
            _stop_workers(batches)
    report.seconds = time.perf_counter() - start
    return report


def _part_batches(sizes: list[int], batch_size: int) -> list[list[int]]:
    """The batches of dataset indices, part after part: each part's images cut into `batch_size` batches."""
    batches = []
    first = 0
    for size in sizes:
        batches += [list(range(i, min(i + batch_size, first + size))) for i in range(first, first + size, batch_size)]
        first += size
    return batches


def _encode(encoder: FrozenEncoder, device: torch.device, precision: str, images: torch.Tensor) -> np.ndarray:
    with autocast(device, precision):
        features = encoder(images.to(device, non_blocking=True))  # (B, regions, 2048)
    return features.to(torch.float16).cpu().numpy()


def _write_part(batches, writer: FeatureWriter, encode, on_bad_image: str, progress: tqdm) -> list[str]:
    """Write the batches' features with `writer` and close it; returns the images skipped."""
    skipped = []
    try:
        for names, images, bad in batches:
            for name, message in bad:
                if on_bad_image == "error":
                    raise BadImageError(f"{message} (set data.on_bad_image: skip to skip such images)")
                log.warning("skipped: %s", message)
                skipped.append(name)
            if images is not None:
                features = encode(images)
                _check_finite(features, names)
                writer.append(names, features)
            progress.update(len(names) + len(bad))
    except BaseException:
        writer.abandon()
        raise
    writer.close(skipped)
    return skipped


def _check_finite(features: np.ndarray, names: list[str]) -> None:
    """Stop at features float16 cannot hold: an encoder whose maps exceed 65,504 would train on inf and NaN."""
    finite = np.isfinite(features).all(axis=(1, 2))
    if not finite.all():
        name = names[int(np.argmin(finite))]
        raise CaptioningError(
            f"{name}: its features exceed float16's range (65,504), in which they are stored: the encoder's weights "
            "(features.weights) give maps too large; ImageNet weights stay far below it"
        )


def _stop_workers(batches) -> None:
    """End the DataLoader's worker processes now (joined), as the iterator's __del__ would."""
    stop = getattr(batches, "_shutdown_workers", None)  # absent with num_workers 0 (no workers) or before iter()
    if stop is not None:
        stop()


def encoder_fingerprint(encoder: FrozenEncoder) -> str:
    """A short checksum of the encoder's weights, recorded with the features and the model."""
    total = np.float64(0.0)
    for i, tensor in enumerate(encoder.state_dict().values()):
        total += np.float64(tensor.double().sum().item()) * (i + 1)
    return f"{total:.6e}"
