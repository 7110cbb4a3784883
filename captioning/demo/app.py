"""`python -m captioning demo`: caption your own photos in the browser (a local Gradio app).

Drop an image (or pick one of the test images): the page shows the beam-search caption, the best
three beams with their scores, each word's attention over the image (choose the word), and where
the model comes from. It works offline: no analytics, no fonts or scripts from elsewhere; every
request the page makes goes to the server that serves it.

Gradio is an optional extra (pip install -e '.[demo]'); only this module imports it.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.util
import io
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time
from functools import wraps
from pathlib import Path

from PIL import Image

from captioning.data.images import BadImageError
from captioning.demo.explain import Explainer, Explanation, attention_overlay, provenance, split_images
from captioning.errors import CaptioningError
from captioning.params import load_params
from captioning.reports.figures import attention_grid

log = logging.getLogger(__name__)

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # nothing to fetch, unlike a web font
MONO_FONTS = ["ui-monospace", "monospace"]
# The page captions one image at a time. On a shared 2-core machine one intra-op thread is several
# times faster than two (a busy core stalls the other at every operation; benchmarks/demo.py).
DEMO_THREADS = 1
MAX_UPLOAD = "250mb"  # Gradio refuses larger uploads (its own message); 50 MP of 16-bit RGB fits
UPLOADS_KEPT_S = 3600  # uploads and the images shown are deleted from Gradio's cache after an hour
# Under load (docs/demo.md): one caption at a time, so memory holds one decoded photo whatever the number of
# users (a 12-megapixel photo is ~36 MB decoded) and the one torch thread is not shared; up to QUEUE_SIZE
# requests wait their turn (about QUEUE_SIZE x 0.5 s at the back), and a request beyond that is refused at
# once with Gradio's "Queue is full" (HTTP 503; gradio_client raises QueueError) instead of waiting minutes.
MODEL_CONCURRENCY = 1
QUEUE_SIZE = 64


def data_root_here() -> str | None:
    """params.yaml's data.root when the demo runs in the project (a real dataset's test images are under it)."""
    try:
        return load_params("data").root
    except CaptioningError:
        return None


def markdown_table(header: tuple[str, ...], rows: list[tuple]) -> str:
    def cell(value: object) -> str:
        return plain(str(value)).replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def provenance_markdown(rows: list[tuple[str, str]]) -> str:
    return "### The model\n" + "\n".join(f"- **{what}**: {plain(value)}" for what, value in rows)


def beams_table(explanation: Explanation) -> str:
    rows = [
        (rank, " ".join(beam.words) or "(empty)", f"{beam.log_probability:.3f}", f"{beam.score:.3f}")
        for rank, beam in enumerate(explanation.beams, start=1)
    ]
    return markdown_table(("beam", "caption", "log-probability", "score (log p / length)"), rows)


def plain(text: str) -> str:
    """Text shown as it is in a Markdown component (a file named my_photo_1.jpg is not in italics)."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~-])", r"\\\1", text)


def success_message(name: str, explanation: Explanation) -> str:
    message = f"Captioned {plain(name)} in {explanation.seconds:.2f} s. "
    if attention_grid(explanation.weights) is None:
        message += "This model has no spatial attention (model.attention none): the image is shown as it is."
    else:
        message += "Choose a word to see where the model looked."
    if explanation.notes:
        message += " Converted as the features stage does: " + "; ".join(explanation.notes) + "."
    return message


def cached_png(image: Image.Image, cache: str | Path) -> str:
    """The image as a PNG in Gradio's cache, in a folder named by its content as Gradio names its own, never rewritten.

    Gradio saves an image output by rewriting that file in place, even when it exists: two users shown the same
    map (the same photo) could then fetch a half-written PNG. Here an existing file is kept, and a new one is
    written under a name of its own and renamed into place. Gradio tracks and expires the file as its own.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="png")
    data = buffer.getvalue()
    folder = Path(cache) / hashlib.sha256(data).hexdigest()
    target = folder / "attention.png"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".attention.", suffix=".png", delete=False) as staging:
            staging.write(data)
        os.replace(staging.name, target)
    return str(target)


def remove_orphaned_uploads(folder: str | Path, age_s: float, now: float | None = None) -> list[Path]:
    """Remove the files Gradio leaves in its cache untracked, so that its own expiry never removes them.

    Two kinds, both `tmp*` files at the top of the cache folder: what had arrived of an upload whose client
    went away (or stalled) mid-way, up to MAX_UPLOAD each; and an empty file per uploaded file (gr.File
    with type="filepath" opens one and forgets it). Only files not written to for `age_s` go: an upload
    still arriving is being written to. Tracked files (in the cache's sub-folders) are Gradio's business.
    """
    now = time.time() if now is None else now
    removed = []
    for path in Path(folder).glob("tmp*"):
        try:
            if path.is_file() and not path.is_symlink() and now - path.stat().st_mtime > age_s:
                path.unlink()
                removed.append(path)
        except OSError:  # gone meanwhile, or not ours to remove
            continue
    if removed:
        log.info("demo: removed %d orphaned upload files from %s", len(removed), folder)
    return removed


def keep_removing_orphaned_uploads(folder: str | Path, age_s: float = UPLOADS_KEPT_S) -> threading.Event:
    """remove_orphaned_uploads every tenth of `age_s`, in a daemon thread, until the returned event is set."""
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(age_s / 10):
            remove_orphaned_uploads(folder, age_s)

    threading.Thread(target=sweep, name="orphaned-uploads", daemon=True).start()
    return stop


def port_problem(host: str, port: int) -> str | None:
    """Why the demo cannot serve on host:port, in one line that names the command's own option, or None.

    Checked before the model loads (seconds to minutes), by binding the address as the server will
    (SO_REUSEADDR, as uvicorn sets it: a port that a stopped server left in TIME_WAIT is free).
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as error:
            return f"cannot serve on {host}:{port}: unknown host ({error.strerror}); check --host"
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"cannot serve on {host}:{port}: the port is in use (another demo?); choose another with --port"
            if error.errno == errno.EACCES:
                return f"cannot serve on {host}:{port}: permission denied (ports below 1024 need root); use --port"
            if error.errno == errno.EADDRNOTAVAIL:
                return f"cannot serve on {host}:{port}: {host} is not an address of this machine; check --host"
            return f"cannot serve on {host}:{port}: {error.strerror or error}"
    return None


def build_app(
    explainer: Explainer,
    provenance_rows: list[tuple[str, str]],
    test_images: dict[str, Path],
    queue_size: int = QUEUE_SIZE,
):
    """The page as a gr.Blocks (launch it, or mount it in a Hugging Face Space), its queue limits set."""
    import gradio as gr

    def nothing(message: str = "") -> tuple:
        """Every output of an image event (caption, beams, words, attention, message, state), emptied."""
        return "", "", gr.Radio(choices=[], value=None), None, message, None

    def overlay(explanation: Explanation, index: int) -> str:
        return cached_png(attention_overlay(explanation.display, explanation.weights[index]), attention.GRADIO_CACHE)

    def shown(name: str, explanation: Explanation) -> tuple:
        words = gr.Radio(choices=[(token, index) for index, token in enumerate(explanation.tokens)], value=0)
        first = overlay(explanation, 0) if explanation.tokens else None
        caption = " ".join(explanation.words) or "(empty caption)"
        return caption, beams_table(explanation), words, first, success_message(name, explanation), explanation

    def never_raises(handler):
        # A bad upload must leave a readable page and a serving server, whatever went wrong: a
        # BadImageError is the user's file; anything else is our bug, logged in full, still one line on the page.
        @wraps(handler)
        def wrapper(*args):
            try:
                return handler(*args)
            except BadImageError as error:
                return nothing(f"**Cannot caption this file.** {plain(str(error))}")
            except Exception as error:
                log.exception("demo: the request failed")
                return nothing(f"**Something went wrong on the server** ({plain(f'{type(error).__name__}: {error}')}).")

        return wrapper

    @never_raises
    def on_upload(path: str | None) -> tuple:
        if path is None:
            return nothing()
        name = Path(path).name
        return shown(name, explainer.explain_file(path, name))

    @never_raises
    def on_pick(name: str | None) -> tuple:
        if not name or name not in test_images:
            return nothing()
        return shown(name, explainer.explain_file(test_images[name], name))

    def on_word(index: int | None, explanation: Explanation | None) -> str | None:
        if explanation is None or index is None or not 0 <= int(index) < len(explanation.tokens):
            return None
        return overlay(explanation, int(index))

    with gr.Blocks(
        title="Show, Attend and Tell: caption your own photo",
        analytics_enabled=False,
        delete_cache=(UPLOADS_KEPT_S, UPLOADS_KEPT_S),
    ) as app:
        gr.Markdown("## Show, Attend and Tell: caption your own photo")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Drop or upload an image", type="filepath", elem_id="upload", height=140)
                pick = gr.Dropdown(
                    choices=list(test_images),
                    value=None,
                    label="... or pick a test image",
                    elem_id="pick",
                    visible=bool(test_images),
                )
                message = gr.Markdown(elem_id="message")
                gr.Markdown(provenance_markdown(provenance_rows), elem_id="provenance")
            with gr.Column(scale=2):
                caption = gr.Textbox(label="Caption (beam search)", interactive=False, elem_id="caption")
                words = gr.Radio(choices=[], label="Choose a word to see its attention", elem_id="words")
                attention = gr.Image(
                    label="Where the model looked",
                    type="filepath",
                    format="png",
                    interactive=False,
                    elem_id="attention",
                    buttons=["download"],
                )
                beams = gr.Markdown(elem_id="beams")
        state = gr.State()
        outputs = [caption, beams, words, attention, message, state]
        # uploads and picked images share the model: one concurrency group, MODEL_CONCURRENCY at a time
        model = {"concurrency_id": "model", "concurrency_limit": MODEL_CONCURRENCY}
        upload.upload(on_upload, upload, outputs, **model)
        upload.clear(nothing, None, outputs)
        pick.input(on_pick, pick, outputs, **model)
        words.input(on_word, [words, state], attention)
    return app.queue(max_size=queue_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1: this machine only; 0.0.0.0: the network")
    parser.add_argument("--table", type=Path, default=Path("data/dataset.json"), help="where to find test images")
    parser.add_argument("--beam", type=int, default=5, help="beam size")
    parser.add_argument("--max-len", type=int, default=30, help="at most this many words")
    parser.add_argument("--threads", type=int, default=DEMO_THREADS, help="torch intra-op threads")
    args = parser.parse_args(argv)
    if min(args.beam, args.max_len, args.threads) < 1 or not 0 < args.port < 65536:
        parser.error("--beam, --max-len and --threads must be >= 1, --port in 1..65535")
    from captioning.cli import setup_logging

    setup_logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up checks, one line per request
    if importlib.util.find_spec("gradio") is None:  # before the model loads: say it at once
        print("error: the demo needs Gradio: pip install -e '.[demo]'", file=sys.stderr)
        return 1
    problem = port_problem(args.host, args.port)  # before the model loads: say it at once
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    import torch

    from captioning.checkpoint import load_model
    from captioning.commands.caption import Captioner

    torch.set_num_threads(args.threads)
    try:
        captioner = Captioner.load(args.model)
        _, payload = load_model(args.model)
    except CaptioningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    explainer = Explainer(captioner, args.beam, args.max_len)
    warm = explainer.explain(Image.new("RGB", (captioner.image_size, captioner.image_size), (127, 127, 127)))
    log.info("model ready: %s (first caption %.2f s)", args.model, warm.seconds)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported: no telemetry, no version check
    import gradio as gr

    test_images = split_images(args.table, data_root=data_root_here())
    app = build_app(explainer, provenance(args.model, payload, args.table), test_images)
    try:
        app.launch(
            server_name=args.host,
            server_port=args.port,
            prevent_thread_lock=True,
            quiet=True,
            footer_links=[],
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            max_file_size=MAX_UPLOAD,
            theme=gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS),
        )
    except OSError as error:  # taken meanwhile: Gradio's message advises its launch() parameters, not our option
        problem = port_problem(args.host, args.port) or f"cannot serve on {args.host}:{args.port} ({error})"
        print(f"error: {problem}", file=sys.stderr)
        return 1
    keep_removing_orphaned_uploads(app.server_app.uploaded_file_dir)  # where the upload route writes
    log.info("demo: serving on http://%s:%d/ (Ctrl+C stops)", args.host, app.server_port)
    app.block_thread()
    return 0
