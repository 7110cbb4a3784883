"""Stage `features`: every image of the caption table through the frozen ResNet50, into HDF5."""

import argparse
from pathlib import Path

from captioning.cli import log, run
from captioning.data.table import read_table
from captioning.device import resolve_precision, select_device
from captioning.features.encoder import build_encoder
from captioning.features.extract import encoder_fingerprint, extract_features
from captioning.io import atomic_path
from captioning.params import load_params

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--table", type=Path, default=Path("data/dataset.json"))
    parser.add_argument("--output", type=Path, default=Path("data/features.h5"))
    args = parser.parse_args()
    params = load_params("features")
    on_bad_image = load_params("data").on_bad_image

    table = read_table(args.table)
    device = select_device()
    precision = resolve_precision(params.precision, device)
    encoder = build_encoder(params.weights, params.seed, params.imagenet_variant)
    recipe = {
        "weights": params.weights,
        "imagenet_variant": params.imagenet_variant,
        "seed": params.seed,
        "image_size": params.image_size,
        "precision": precision,
        "encoder_fingerprint": encoder_fingerprint(encoder),
    }
    log.info("ResNet50 (%s weights) on %s, %s, batch %d", params.weights, device, precision, params.batch_size)
    with atomic_path(args.output) as temporary:
        report = extract_features(
            encoder,
            table.image_root,
            [record.image for record in table.images],
            temporary,
            image_size=params.image_size,
            batch_size=params.batch_size,
            precision=precision,
            device=device,
            num_workers=params.num_workers,
            on_bad_image=on_bad_image,
            attrs=recipe,
        )
    log.info(
        "%d images in %.0f s (%.1f images/s), %d skipped",
        report.written, report.seconds, report.images_per_second, len(report.skipped),
    )

if __name__ == "__main__":
    run(main)
