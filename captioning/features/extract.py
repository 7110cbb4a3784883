"""Streaming feature extraction: image files -> frozen ResNet50 -> HDF5, never all in memory.

Images are decoded and resized in DataLoader workers while the main process runs the encoder;
images that cannot be decoded are skipped and named in the output (or stop the run, by policy).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioning.cli import ctrl_c_deferred, ignore_ctrl_c
from captioning.data.images import BadImageError, load_rgb, resize_to_array
from captioning.device import autocast
from captioning.features.encoder import FEATURE_DIM, FrozenEncoder
from captioning.features.store import FeatureWriter

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
    encoder: FrozenEncoder,
    image_root: Path,
    names: list[str],
    output: Path,
    *,
    image_size: int = 224,
    batch_size: int = 32,
    precision: str = "fp32",
    device: torch.device | None = None,
    num_workers: int = 1,
    on_bad_image: str = "skip",
    attrs: dict | None = None,
) -> ExtractionReport:
    """Write the features of `names` (in that order) to `output`; the caller renames it into place."""
    device = device or torch.device("cpu")
    encoder = encoder.to(device).to(memory_format=torch.channels_last)
    loader = DataLoader(
        ImageFiles(image_root, names, image_size),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers else None,
        worker_init_fn=ignore_ctrl_c,
    )
    regions = math.ceil(image_size / 32) ** 2  # ResNet50's output stride is 32, rounding up
    writer = FeatureWriter(output, len(names), regions, FEATURE_DIM, attrs)
    report = ExtractionReport()
    start = time.perf_counter()
    try:
        with ctrl_c_deferred():  # Ctrl-C while the workers start is raised once they all run
            batches = iter(loader)
        try:
            with torch.inference_mode(), tqdm(total=len(names), unit="img", desc="features") as progress:
                # islice: the last batch ends the loop, not the iterator's own worker shutdown (done below)
                for batch_names, images, bad in itertools.islice(batches, len(loader)):
                    for name, message in bad:
                        if on_bad_image == "error":
                            raise BadImageError(f"{message} (set data.on_bad_image: skip to skip such images)")
                        log.warning("skipped: %s", message)
                        report.skipped.append(name)
                    if images is not None:
                        with autocast(device, precision):
                            features = encoder(images.to(device, non_blocking=True))
                        writer.append(batch_names, features.to(torch.float16).cpu().numpy())
                    progress.update(len(batch_names) + len(bad))
        finally:
            with ctrl_c_deferred():  # here, not in the iterator's __del__, where a KeyboardInterrupt is ignored
                _stop_workers(batches)
    except BaseException:
        writer.abandon()
        raise
    writer.close(report.skipped)
    report.written = writer.count
    report.seconds = time.perf_counter() - start
    return report


def _stop_workers(batches) -> None:
    """End the DataLoader's worker processes now (joined), as the iterator's __del__ would."""
    stop = getattr(batches, "_shutdown_workers", None)  # absent with num_workers 0: no workers
    if stop is not None:
        stop()


def encoder_fingerprint(encoder: FrozenEncoder) -> str:
    """A short checksum of the encoder's weights, recorded with the features and the model."""
    total = np.float64(0.0)
    for i, tensor in enumerate(encoder.state_dict().values()):
        total += np.float64(tensor.double().sum().item()) * (i + 1)
    return f"{total:.6e}"
