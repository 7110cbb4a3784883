"""Feature extraction end to end (image files -> extract_features -> HDF5) against the bare forward pass.

Both run the same seeded random ResNet50 at the same batch size and precision, channels_last, under
inference_mode, interleaved in one run. The end-to-end path decodes and resizes in DataLoader workers
and writes float16 rows to HDF5; the bare pass only runs the encoder on random uint8 tensors.
Several worker counts (--workers 1,2) are timed side by side, and their outputs compared byte for byte.
With --chunk-size N the end-to-end path is the features stage's (extract_in_parts): parts of N images
through one pool of workers, then the merge. Also reports how far bf16 features are from fp32 ones and
how much faster bf16 is.

    python benchmarks/features.py [--images 256] [--batch-size N] [--workers N[,N...]] [--chunk-size N]
                                  [--format png|jpeg]

Batch size, workers and precision default to params.yaml's features section.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from functools import partial
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the benchmark's output

import torch
from _timing import interleaved, machine_header, median, table, verdict
from PIL import Image

from captioning.data.images import load_rgb, resize_to_array
from captioning.data.scenes import generate_scenes
from captioning.device import autocast, resolve_precision
from captioning.features.encoder import build_encoder
from captioning.features.extract import extract_features
from captioning.features.parts import extract_in_parts
from captioning.params import load_params

GOAL = 0.8


def write_images(root: Path, count: int, image_format: str) -> list[str]:
    """`count` generated scenes as PNG (224 x 224, as the pipeline draws them) or as Flickr-like JPEG (500 x 375)."""
    table = generate_scenes(root, seed=0, num_train=count, num_val=0, num_test=0)
    names = [record.image for record in table.images]
    if image_format == "png":
        return names
    jpeg_names = []
    for name in names:
        path = root / name
        with Image.open(path) as image:
            image.convert("RGB").resize((500, 375), Image.BILINEAR).save(path.with_suffix(".jpg"), quality=90)
        path.unlink()
        jpeg_names.append(path.with_suffix(".jpg").name)
    return jpeg_names


def bare_forward(encoder, images: torch.Tensor, batches: int, precision: str) -> None:
    with torch.inference_mode(), autocast(torch.device("cpu"), precision):
        for _ in range(batches):
            encoder(images)


def main() -> None:
    params = load_params("features")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="images per end-to-end pass")
    parser.add_argument("--batch-size", type=int, default=params.batch_size)
    parser.add_argument(
        "--workers",
        type=lambda text: [int(count) for count in text.split(",")],
        default=[params.num_workers],
        help="DataLoader workers decoding images; several, comma-separated (1,2), are timed side by side",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=0, help="images per part, through the features stage's path (0: one file)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--precision", default=params.precision, help="auto | bf16 | fp32")
    parser.add_argument("--fp32-batches", type=int, default=2, help="batches of the fp32 forward (speed ratio only)")
    parser.add_argument("--format", choices=("png", "jpeg"), default="png")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    batches = max(1, args.images // args.batch_size)
    count = batches * args.batch_size

    encoder = build_encoder("none", seed=0).to(memory_format=torch.channels_last)
    random_images = torch.randint(0, 256, (args.batch_size, 3, 224, 224), dtype=torch.uint8)
    with tempfile.TemporaryDirectory(prefix="features-bench-") as temporary:
        root = Path(temporary) / "images"
        names = write_images(root, count, args.format)
        outputs = {workers: Path(temporary) / f"features-{workers}.h5" for workers in args.workers}

        # fp32 vs bf16 on real scenes: relative error of the features, before and after the float16 store.
        scenes = torch.stack([torch.from_numpy(resize_to_array(load_rgb(root / n), 224)) for n in names[:16]])
        with torch.inference_mode():
            fp32_features = encoder(scenes)
            with autocast(torch.device("cpu"), "bf16"):
                bf16_features = encoder(scenes).float()
        relative_error = float((fp32_features - bf16_features).norm() / fp32_features.norm())
        stored_error = float((fp32_features - bf16_features.half().float()).norm() / fp32_features.norm())
        fp16_error = float((fp32_features - fp32_features.half().float()).norm() / fp32_features.norm())

        for warm_precision in {precision, "fp32", "bf16"}:  # oneDNN builds its kernels on the first call
            bare_forward(encoder, random_images, 1, warm_precision)

        def end_to_end(workers: int) -> None:  # timed whole, DataLoader start-up and HDF5 files included
            options = dict(image_size=224, batch_size=args.batch_size, precision=precision, num_workers=workers)
            if args.chunk_size:
                scratch = Path(temporary) / f"scratch-{workers}"
                report = extract_in_parts(
                    lambda: encoder,
                    root,
                    names,
                    outputs[workers],
                    scratch,
                    "run",
                    chunk_size=args.chunk_size,
                    **options,
                )
            else:
                report = extract_features(encoder, root, names, outputs[workers], **options)
            assert report.written == count, report

        path = f"{args.format} files -> parts -> HDF5" if args.chunk_size else f"{args.format} files -> HDF5"
        candidates = {f"end-to-end ({path}, {w} workers)": partial(end_to_end, w) for w in args.workers}
        candidates["bare forward"] = lambda: bare_forward(encoder, random_images, batches, precision)
        other = "fp32" if precision != "fp32" else "bf16"
        candidates[f"bare forward {other}"] = lambda: bare_forward(encoder, random_images, args.fp32_batches, other)
        seconds = interleaved(candidates, args.repeats)
        digests = {hashlib.md5(output.read_bytes()).hexdigest() for output in outputs.values()}

    images_per_pass = [count] * (len(args.workers) + 1) + [args.fp32_batches * args.batch_size]
    rates = {name: n / median(values) for n, (name, values) in zip(images_per_pass, seconds.items())}
    *ends, (bare_name, bare), (other_name, other_rate) = rates.items()
    ratio = max(e2e for _, e2e in ends) / bare  # the best worker count's
    workers_text = ", ".join(map(str, args.workers))
    parts = f" in parts of {args.chunk_size} (the features stage's path)" if args.chunk_size else ""
    print(machine_header("Feature extraction: end to end vs bare forward"))
    print(
        f"ResNet50 (seeded random weights), batch {args.batch_size}, {precision}, 224 x 224, channels_last, "
        f"torch threads {torch.get_num_threads()}, {workers_text} DataLoader workers; {count} {args.format} images "
        f"per pass{parts} ({args.fp32_batches} batches for {other}), {args.repeats} interleaved repeats\n"
    )
    print(
        table(
            [
                *((name + f", {precision}", "images/s", e2e, e2e / bare) for name, e2e in ends),
                (bare_name + f", {precision}", "images/s", bare, 1.0),
                (other_name, "images/s", other_rate, other_rate / bare),
            ]
        )
    )
    bf16_speedup = bare / other_rate if precision == "bf16" else other_rate / bare
    print(
        f"\nbf16 vs fp32 features (16 scenes): relative error ||fp32 - bf16|| / ||fp32|| = {relative_error:.2e} "
        f"({stored_error:.2e} after the float16 store; float16 storage alone: {fp16_error:.2e}); "
        f"bf16 forward is {bf16_speedup:.2f}x the speed of fp32"
    )
    if len(args.workers) > 1:
        (_, first), *others = ends
        versus = ", ".join(f"{w} workers {e2e / first:.2f}x" for w, (_, e2e) in zip(args.workers[1:], others))
        same = "yes" if len(digests) == 1 else "NO"
        print(f"end to end, against {args.workers[0]} workers: {versus}; the same output, byte for byte: {same}")
    print(verdict(ratio, GOAL))


if __name__ == "__main__":
    main()
