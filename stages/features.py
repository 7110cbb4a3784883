"""Stage `features`: every image of the caption table through the frozen ResNet50, into HDF5 (resumable parts)."""

import argparse
import dataclasses
from functools import partial

from captioning.cli import log, run, stage_arguments
from captioning.data.table import read_table
from captioning.device import resolve_precision, select_device
from captioning.features.encoder import build_encoder
from captioning.features.extract import encoder_fingerprint
from captioning.features.parts import extract_in_parts
from captioning.features.recipe import FeatureRecipe
from captioning.io import check_writable, run_fingerprint
from captioning.params import load_params


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(__doc__, ["table", "output"], scratch="scratch/features")


def main() -> None:
    args = arguments().parse_args()
    params = load_params("features")
    on_bad_image = load_params("data").on_bad_image

    table = read_table(args.table)
    check_writable(args.output, args.scratch / "parts")
    device = select_device()
    precision = resolve_precision(params.precision, device)
    make_encoder = partial(build_encoder, params.weights, params.seed, params.imagenet_variant)
    recipe = FeatureRecipe.of(params, precision, encoder_fingerprint(make_encoder()))  # each process builds its own
    log.info("ResNet50 (%s weights) on %s, %s, batch %d", params.weights, device, precision, params.batch_size)
    # nproc and num_workers change who computes the parts, not what they hold: a rerun may change them
    content = dataclasses.replace(params, nproc=1, num_workers=0)
    run_key = run_fingerprint([content, recipe, on_bad_image], [args.table])
    report = extract_in_parts(
        make_encoder,
        table.image_root,
        [record.image for record in table.images],
        args.output,
        args.scratch,
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
    rate, skipped = report.images_per_second, len(report.skipped)
    log.info("%d images in %.0f s (%.1f images/s), %d skipped", report.written, report.seconds, rate, skipped)


if __name__ == "__main__":
    run(main)
