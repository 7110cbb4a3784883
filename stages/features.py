"""Stage `features`: every image of the caption table through the frozen ResNet50, into HDF5 (resumable parts)."""

import argparse

from captioning.cli import log, run, stage_arguments
from captioning.data.table import check_contents, read_table
from captioning.device import select_device
from captioning.features.parts import extract_table
from captioning.io import check_writable
from captioning.params import load_params


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(__doc__, ["table", "output"], scratch="scratch/features")


def main() -> None:
    args = arguments().parse_args()
    params = load_params("features")
    data = load_params("data")  # data.root says where the images are on this machine, not what they are
    device = select_device()  # a GPU that torch cannot use stops the stage here, before any work

    table = read_table(args.table, data.root)
    check_contents(table, table.images, args.table)
    check_writable(args.output, args.scratch / "parts")
    report = extract_table(table, args.table, args.output, args.scratch, params, data.on_bad_image, device)
    rate, skipped = report.images_per_second, len(report.skipped)
    log.info("%d images in %.0f s (%.1f images/s), %d skipped", report.written, report.seconds, rate, skipped)


if __name__ == "__main__":
    run(main)
