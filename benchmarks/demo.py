"""The demo's latency: one uploaded image to its caption and attention, once the model is loaded (goal <= 1 s).

Times each step the page runs for an upload, on three kinds of image: a generated scene (224 x 224
PNG, as the pipeline draws them), a Flickr-like JPEG (500 x 375) and a 12-megapixel phone photo
(4000 x 3000 JPEG). The whole upload is Explainer.explain_file (open and convert as the features
stage, resize, encoder, the ranked beams) plus the first word's attention image; choosing another
word is one attention image. Gradio's own round trip (upload, queue, PNG out) comes on top: run
with --browser to time the page in headless Chromium from file chosen to caption shown.

The model is models/model.pt, or, without it, an untrained decoder shaped as params.yaml's model and
features sections (no <end> ever wins, so every caption runs to max_len: the slowest case).

    python benchmarks/demo.py [--model models/model.pt] [--repeats 7] [--browser]
    python benchmarks/demo.py --screenshot docs/demo.png [--model models/model.pt] [--image photo.jpg]

--screenshot serves the model, captions --image (default: the first test image of data/dataset.json,
else a generated scene) in headless Chromium, chooses its second word and saves the page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _timing import interleaved, machine_header, median
from PIL import Image

from captioning.checkpoint import save_model
from captioning.commands.caption import Captioner
from captioning.data.scenes import generate_scenes
from captioning.demo.app import DEMO_THREADS
from captioning.demo.beams import ranked_beams
from captioning.demo.explain import Explainer, attention_overlay, display_image, read_image, split_images
from captioning.device import resolve_precision
from captioning.features.encoder import build_encoder
from captioning.features.extract import encoder_fingerprint
from captioning.model import CaptionDecoder, DecoderConfig
from captioning.model.decoding import beam_search
from captioning.params import load_params
from captioning.text.vocabulary import SPECIALS

GOAL_SECONDS = 1.0
# The page is driven by the browser test's helper (tests/demo_browser.py): a test tool, not part of the package.
BROWSER_HELPERS = Path(__file__).resolve().parents[1] / "tests"
THREADS = DEMO_THREADS  # as the demo runs (its --threads default)
OTHER_THREADS = 2


def untrained_model(path: Path) -> Path:
    """A decoder of params.yaml's sizes over a seeded random ResNet50 (weights none), saved as train does."""
    model, features = load_params("model"), load_params("features")
    words = [*SPECIALS, *(f"word{i}" for i in range(26))]  # about the generated scenes' vocabulary
    torch.manual_seed(0)
    config = DecoderConfig.from_params(model, len(words), load_params("embeddings").dim, feature_dim=2048)
    decoder = CaptionDecoder(config)
    with torch.no_grad():
        decoder.output.bias[: len(SPECIALS)] = -1e4  # never a special word, never <end>
    encoder = build_encoder("none", features.seed)
    recipe = {
        "weights": "none",
        "imagenet_variant": features.imagenet_variant,
        "seed": features.seed,
        "image_size": features.image_size,
        "precision": resolve_precision(features.precision, torch.device("cpu")),
        "encoder_fingerprint": encoder_fingerprint(encoder),
    }
    save_model(path, decoder, words, recipe, epoch=0, validation={})
    return path


def write_images(folder: Path) -> dict[str, Path]:
    table = generate_scenes(folder / "scenes", seed=0, num_train=1, num_val=0, num_test=0)
    scene = table.image_path(table.images[0])
    rng = np.random.default_rng(0)
    paths = {"scene 224 x 224 png": scene}
    with Image.open(scene) as image:
        for label, size in [("flickr-like 500 x 375 jpeg", (500, 375)), ("phone photo 4000 x 3000 jpeg", (4000, 3000))]:
            photo = image.convert("RGB").resize(size, Image.BILINEAR)
            noise = rng.integers(-12, 13, (size[1], size[0], 3))  # texture, so the JPEG is photo-sized
            photo = Image.fromarray(np.clip(np.asarray(photo, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
            paths[label] = folder / f"{size[0]}x{size[1]}.jpg"
            photo.save(paths[label], quality=90)
    return paths


def discarding(run: Callable[[], object]) -> Callable[[], None]:
    """`run` without its result: interleaved reads a returned number as the seconds a candidate measured itself."""

    def call() -> None:
        run()

    return call


def time_steps(explainer: Explainer, path: Path, repeats: int) -> tuple[dict[str, float], int]:
    """Median seconds of each step of an upload and of the whole, timed side by side; the caption's length."""
    captioner, vocabulary = explainer.captioner, explainer.captioner.vocabulary
    image, _ = read_image(path)
    features = captioner.features([captioner.prepare(image)])
    explanation = explainer.explain(image)
    search = (vocabulary.start, vocabulary.end, explainer.beam_size, explainer.max_len, explainer.length_penalty)

    def whole_upload(threads: int) -> None:
        torch.set_num_threads(threads)
        shown = explainer.explain_file(path)
        attention_overlay(shown.display, shown.weights[0])
        torch.set_num_threads(THREADS)

    candidates = {
        "open and convert (load_rgb)": lambda: read_image(path),
        "resize + encoder": lambda: captioner.features([captioner.prepare(image)]),
        f"ranked beams ({explainer.beam_size} beams)": lambda: ranked_beams(captioner.decoder, features, *search),
        "beam_search, best beam only": lambda: beam_search(captioner.decoder, features, *search),
        "display image + first word's map": lambda: attention_overlay(display_image(image), explanation.weights[0]),
        "whole upload": lambda: whole_upload(THREADS),
        f"whole upload, {OTHER_THREADS} torch threads": lambda: whole_upload(OTHER_THREADS),
        "another word (one map)": lambda: attention_overlay(explanation.display, explanation.weights[-1]),
    }
    whole_upload(OTHER_THREADS)
    whole_upload(THREADS)  # warm: oneDNN builds its kernels on the first call
    timed = {name: discarding(run) for name, run in candidates.items()}
    return {name: median(values) for name, values in interleaved(timed, repeats).items()}, len(explanation.tokens)


def time_in_browser(model: Path, paths: dict[str, Path], repeats: int) -> dict[str, float]:
    """Median seconds from a file chosen in the page to its caption shown, per image, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(BROWSER_HELPERS))
    from demo_browser import DemoServer, clear, open_page, upload

    seconds: dict[str, list[float]] = {label: [] for label in paths}
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as temporary:
        copies = {}  # distinct file names, so that each upload's message can be told from the last one's
        for label, path in paths.items():
            for repeat in range(repeats + 1):
                copy = Path(temporary) / f"{repeat}-{path.name}"
                copy.write_bytes(path.read_bytes())
                copies[label, repeat] = copy
        with DemoServer(model) as server, sync_playwright() as playwright:
            browser, page, _ = open_page(playwright, server.url)
            try:
                for repeat in range(repeats + 1):
                    for label in paths:
                        clear(page)  # the previous image's outputs, not timed
                        started = time.perf_counter()
                        upload(page, copies[label, repeat])
                        if repeat:  # the first round warms the server and the page
                            seconds[label].append(time.perf_counter() - started)
            finally:
                browser.close()
    return {label: median(values) for label, values in seconds.items()}


def screenshot_image(table: Path, folder: Path) -> Path:
    test_images = split_images(table)
    if test_images:
        return next(iter(test_images.values()))
    generated = generate_scenes(folder / "scenes", seed=0, num_train=0, num_val=0, num_test=1)
    return generated.image_path(generated.images[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--table", type=Path, default=Path("data/dataset.json"), help="test images for the page")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--browser", action="store_true", help="also time the page itself in headless Chromium")
    parser.add_argument("--screenshot", type=Path, metavar="OUT.png", help="save a screenshot of the page instead")
    parser.add_argument("--image", type=Path, help="the image in the screenshot")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as temporary:
        folder = Path(temporary)
        trained = args.model.is_file()
        model = args.model if trained else untrained_model(folder / "model.pt")
        if args.screenshot:
            sys.path.insert(0, str(BROWSER_HELPERS))
            from demo_browser import screenshot

            image = args.image or screenshot_image(args.table, folder)
            screenshot(model, image, args.screenshot, extra=["--table", str(args.table)])
            print(f"{args.screenshot}: the page with {image} ({'model ' + str(model) if trained else 'untrained'})")
            return
        torch.set_num_threads(THREADS)
        loading = time.perf_counter()
        captioner = Captioner.load(model, torch.device("cpu"))
        torch.set_num_threads(THREADS)
        loading = time.perf_counter() - loading
        explainer = Explainer(captioner)
        paths = write_images(folder)
        results = {label: time_steps(explainer, path, args.repeats) for label, path in paths.items()}
        in_browser = time_in_browser(model, paths, args.repeats) if args.browser else {}

    print(machine_header("Demo: one uploaded image to its caption and attention"))
    recipe = captioner.recipe
    print(
        f"model: {args.model if trained else 'untrained, shaped as params.yaml (every caption max_len words)'}; "
        f"encoder {recipe.image_size} px, {captioner.precision}; {THREADS} torch thread(s), as the demo; "
        f"beam {explainer.beam_size}, max_len "
        f"{explainer.max_len}; loading took {loading:.1f} s (once, at start-up); {args.repeats} interleaved repeats\n"
    )
    header = ["step", *(f"{label} (ms)" for label in paths)]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    steps = list(next(iter(results.values()))[0])
    for step in steps:
        print(f"| {step} | " + " | ".join(f"{results[label][0][step] * 1000:.0f}" for label in paths) + " |")
    print("| words in the caption | " + " | ".join(str(results[label][1]) for label in paths) + " |")
    if in_browser:
        print("| in the page: file chosen to caption shown | " + " | ".join(
            f"{in_browser[label] * 1000:.0f}" for label in paths) + " |")  # fmt: skip
    print()
    for label in paths:
        timings = results[label][0]
        whole = timings["whole upload"]
        ratio = timings[f"ranked beams ({explainer.beam_size} beams)"] / timings["beam_search, best beam only"]
        print(
            f"{label}: whole upload {whole:.3f} s = {whole / GOAL_SECONDS:.2f}x the {GOAL_SECONDS:g} s goal "
            f"({'PASS' if whole <= GOAL_SECONDS else 'FAIL'}); ranked beams cost {ratio:.2f}x beam_search"
        )


if __name__ == "__main__":
    main()
