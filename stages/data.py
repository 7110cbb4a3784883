"""Stage `data`: materialise the dataset as image files plus the caption table.

Generated scenes are drawn into --images. A real dataset (Flickr30k, Flickr8k, COCO, your own photos) is read in place
under data.root: the table names its images by folder under data.root and content, --images only holds
MANIFEST.txt, and the images whose content differs from the previous table are named.
"""

import argparse

from captioning.cli import log, run, stage_arguments
from captioning.data.readers.dataset import read_dataset, report_changes, write_manifest
from captioning.data.scenes import write_scenes
from captioning.data.table import check_splits, write_table
from captioning.params import load_params


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(__doc__, ["images", "table"])


def main() -> None:
    args = arguments().parse_args()
    params = load_params("data")

    if params.dataset == "scenes":
        table = write_scenes(
            args.images,
            seed=params.seed,
            num_train=params.num_train,
            num_val=params.num_val,
            num_test=params.num_test,
            image_size=params.image_size,
            min_objects=params.min_objects,
            max_objects=params.max_objects,
            captions_per_image=params.captions_per_image,
        )
    else:
        table = read_dataset(params.dataset, params.root, params.format, params.seed)
        check_splits(table, f"{params.dataset} in data.root={params.root}")
        report_changes(args.table, table)
        write_manifest(args.images, table)
    write_table(args.table, table)
    log.info("%d %s images in %s, table %s", len(table.images), table.dataset, table.image_root, args.table)


if __name__ == "__main__":
    run(main)
