"""The demo under load: N users upload at once over HTTP (loopback), and the server answers them all.

Serves `python -m captioning demo` (its own limits: one caption at a time, a queue of QUEUE_SIZE) in a
child process, then sends N uploads that start together (captioning.demo.load.many_at_once, one
gradio_client session per user): generated scenes (224 x 224 PNG) and Flickr-like JPEGs (500 x 375),
one 12-megapixel phone photo (4000 x 3000 JPEG) and three files that cannot be captioned (text, empty,
over the pixel limit). Prints requests/s over the burst, the p50/p95/max latency of one request (upload,
queue, caption, answer), how many got a caption, a message or a "queue is full", whether every reply
named its own file, and the server's peak memory (VmHWM) before and after the burst.

The model is models/model.pt, or, without it, the untrained decoder of benchmarks/demo.py (every caption
runs to 30 words: the slowest case).

    python benchmarks/demo_load.py [--users 40] [--model models/model.pt]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _timing import machine_header
from demo import BROWSER_HELPERS, untrained_model
from PIL import Image

from captioning.data.scenes import generate_scenes
from captioning.demo.app import MODEL_CONCURRENCY, QUEUE_SIZE
from captioning.demo.load import ask, many_at_once, summary

sys.path.insert(0, str(BROWSER_HELPERS))  # the demo server helper of the browser test (tests/demo_browser.py)
from demo_browser import DemoServer  # noqa: E402


def write_files(folder: Path, users: int) -> list[Path]:
    """`users` files: a phone photo, three bad files, and scenes and Flickr-like JPEGs alternating."""
    scenes = generate_scenes(folder / "scenes", seed=0, num_train=users, num_val=1, num_test=1, image_size=224)
    paths = []
    for index, record in enumerate(scenes.images[: users - 4]):
        source = scenes.image_path(record)
        if index % 2:
            path = folder / f"flickr{index:02d}.jpg"
            Image.open(source).resize((500, 375), Image.BICUBIC).save(path, quality=90)
        else:
            path = folder / f"scene{index:02d}.png"
            path.write_bytes(source.read_bytes())
        paths.append(path)
    phone = folder / "phone.jpg"
    Image.open(scenes.image_path(scenes.images[-1])).resize((4000, 3000), Image.BICUBIC).save(phone, quality=90)
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "empty.png").write_bytes(b"")
    Image.new("1", (8000, 6251)).save(folder / "huge.png")
    bad = [folder / "notes.txt", folder / "empty.png", folder / "huge.png"]
    middle = len(paths) // 2
    return paths[:middle] + [phone] + bad + paths[middle:]


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40, help="uploads sent at once (30-50 in docs/demo.md)")
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    args = parser.parse_args()
    if args.users < 5:
        parser.error("--users must be at least 5 (the photo and the three bad files are among them)")

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        model = args.model if args.model.is_file() else untrained_model(folder / "untrained.pt")
        paths = write_files(folder, args.users)
        env = {"GRADIO_TEMP_DIR": str(folder / "gradio"), "OMP_NUM_THREADS": "1"}
        with DemoServer(model, env=env) as server:
            warm = ask(server.url, paths[0])  # the first request after start-up pays for lazy set-up
            before = peak_memory_mb(server.process.pid)
            started = time.perf_counter()
            replies = many_at_once(server.url, paths)
            wall = time.perf_counter() - started
            after = peak_memory_mb(server.process.pid)
            still = ask(server.url, paths[0])
        own = all(reply.refused or f" {reply.name} " in f" {reply.message.replace(':', ' ')} " for reply in replies)
        numbers = summary(replies, wall)

    print(machine_header("Demo under load: N uploads at once over HTTP"))
    print(f"model: {model if args.model.is_file() else 'untrained decoder of params.yaml sizes (30-word captions)'}")
    print(f"server: one caption at a time (concurrency {MODEL_CONCURRENCY}), queue of {QUEUE_SIZE}, 1 torch thread")
    print(f"a single request before the burst: {warm.seconds:.2f} s ({warm.message.split('.')[0]})\n")
    print("| users | requests/s | p50 latency | p95 latency | max | captioned | one-line message | queue full |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {numbers['requests']} | {numbers['requests_per_s']:.2f} | {numbers['p50_s']:.2f} s | "
        f"{numbers['p95_s']:.2f} s | {numbers['max_s']:.2f} s | {numbers['captioned']} | {numbers['messages']} | "
        f"{numbers['refused']} |"
    )
    print(f"\nevery reply named its own file: {'yes' if own else 'NO'}; served after the burst: "
          f"{'yes' if still.caption else 'NO'} ({still.seconds:.2f} s)")  # fmt: skip
    print(f"server peak memory (VmHWM): {before:.0f} MB before the burst, {after:.0f} MB after it")
    for reply in replies:
        if not reply.caption:
            print(f"  {reply.name}: {reply.message}")


if __name__ == "__main__":
    main()
