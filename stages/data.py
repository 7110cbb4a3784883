"""Stage `data`: materialise the dataset as image files plus the caption table.

Generated scenes are drawn into --images. A real dataset (Flickr30k, Flickr8k, COCO) is read in place
under data.root: the table points at its absolute image folder and --images only holds MANIFEST.txt.
"""

import argparse

from captioning.cli import log, run, stage_arguments
from captioning.data.readers.dataset import read_dataset
from captioning.data.scenes import generate_scenes
from captioning.data.table import check_splits, write_table
from captioning.io import atomic_path
from captioning.params import load_params


def arguments() -> argparse.ArgumentParser:
    return stage_arguments(__doc__, ["images", "table"])


def main() -> None:
    args = arguments().parse_args()
    params = load_params("data")

    if params.dataset != "scenes":
        table = read_dataset(params.dataset, params.root, params.format, params.seed)
        check_splits(table, f"{params.dataset} in data.root={params.root}")
        with atomic_path(args.images) as image_dir:
            image_dir.mkdir()
            manifest = f"{table.dataset}: {len(table.images)} images are read in place from\n{table.image_root}\n"
            (image_dir / "MANIFEST.txt").write_text(manifest, encoding="utf-8")
    else:
        with atomic_path(args.images) as image_dir:
            table = generate_scenes(
                image_dir,
                seed=params.seed,
                num_train=params.num_train,
                num_val=params.num_val,
                num_test=params.num_test,
                image_size=params.image_size,
                min_objects=params.min_objects,
                max_objects=params.max_objects,
                captions_per_image=params.captions_per_image,
            )
        table.image_root = args.images
    write_table(args.table, table)
    log.info("%d %s images in %s, table %s", len(table.images), table.dataset, table.image_root, args.table)


if __name__ == "__main__":
    run(main)
