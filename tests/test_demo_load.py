"""The demo as a server under load, over HTTP on the loopback: many users at once (good, bad and one 12-megapixel
photo), a full queue, and clients that stall or go away mid-upload. benchmarks/demo_load.py runs the same at full N.

The server runs in this process (build_app and launch, as `python -m captioning demo` does), on the tiny model of
tests/test_demo.py, so that each reply can be checked against what the same model says for that image alone.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tiny_model import write_tiny_model

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from demo_browser import free_port  # noqa: E402

from captioning.commands.caption import Captioner  # noqa: E402
from captioning.demo.app import UPLOADS_KEPT_S, build_app, remove_orphaned_uploads  # noqa: E402
from captioning.demo.explain import Explainer, attention_overlay  # noqa: E402
from captioning.demo.load import ask, many_at_once, start_abandoned_upload  # noqa: E402
from captioning.text.vocabulary import SPECIALS  # noqa: E402

WORDS = [*SPECIALS, "a", "red", "blue", "green", "square", "circle", "triangle", "left", "of"]
IMAGE_SIZE, BEAM, MAX_LEN = 64, 3, 6
WAIT_S = 120.0  # upper bound of every wait for a condition (a busy shared machine), never a pause


def scene(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(120, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        side = max(8, min(width, height) // 4)
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        draw.ellipse((x, y, x + side, y + side), fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
    return image


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good images of several sizes and formats, a 12-megapixel photo, and files that cannot be captioned."""
    folder = tmp_path_factory.mktemp("uploads")
    paths = {}
    for seed, (width, height, suffix) in enumerate([(300, 200, "png"), (120, 90, "jpg"), (64, 64, "png"),
                                                    (500, 375, "jpg"), (90, 160, "webp")]):  # fmt: skip
        paths[f"scene{seed}.{suffix}"] = folder / f"scene{seed}.{suffix}"
        scene(width, height, seed).save(paths[f"scene{seed}.{suffix}"])
    paths["phone.jpg"] = folder / "phone.jpg"
    scene(4000, 3000, 9).save(paths["phone.jpg"], quality=90)  # 12 megapixels
    paths["notes.txt"] = folder / "notes.txt"
    paths["notes.txt"].write_text("not an image\n")
    paths["empty.png"] = folder / "empty.png"
    paths["empty.png"].write_bytes(b"")
    paths["huge.png"] = folder / "huge.png"
    Image.new("1", (8000, 6251)).save(paths["huge.png"])  # over the 50,000,000-pixel limit, a few kB
    return paths


BAD = {
    "notes.txt": "Cannot caption this file. notes.txt: cannot decode image",
    "empty.png": "Cannot caption this file. empty.png: the file is empty (0 bytes)",
    "huge.png": "Cannot caption this file. huge.png: 8000x6251 pixels is over the 50,000,000-pixel limit",
}


@pytest.fixture(scope="module")
def explainer(tmp_path_factory) -> Explainer:
    model = write_tiny_model(tmp_path_factory.mktemp("model") / "model.pt", WORDS, IMAGE_SIZE)
    return Explainer(Captioner.load(model, torch.device("cpu")), BEAM, MAX_LEN)


def launch(app, cache: Path):
    app.launch(server_port=free_port(), prevent_thread_lock=True, quiet=True, ssr_mode=False, pwa=False,
               mcp_server=False)  # fmt: skip
    assert Path(app.server_app.uploaded_file_dir) == cache
    return app


@pytest.fixture(scope="module")
def server(explainer, tmp_path_factory):
    """The demo's app with its own limits (one caption at a time, a queue of QUEUE_SIZE), in Gradio's cache here."""
    cache = tmp_path_factory.mktemp("gradio")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(cache))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        app = launch(build_app(explainer, [("model file", "tiny")], {}), cache)
        try:
            yield app
        finally:
            app.close()
            torch.set_num_threads(threads)


def url_of(app) -> str:
    return f"http://127.0.0.1:{app.server_port}/"


def check_reply(reply, path: Path, explainer: Explainer) -> None:
    """The reply is this file's own: its name in the message, its caption, its image under the attention map."""
    if path.name in BAD:
        assert reply.message.startswith(BAD[path.name]) and "\n" not in reply.message, reply
        assert reply.caption == "" and reply.attention is None
        return
    expected = explainer.explain_file(path)
    assert reply.message.startswith(f"Captioned {path.name} in "), reply
    assert reply.caption == " ".join(expected.words), reply
    with Image.open(reply.attention) as shown:
        served = np.asarray(shown.convert("RGB"), dtype=np.float32)
    overlay = np.asarray(attention_overlay(expected.display, expected.weights[0]), dtype=np.float32)
    assert served.shape == overlay.shape, (path.name, served.shape, overlay.shape)
    np.testing.assert_allclose(served, overlay, atol=3)


def test_concurrent_users_each_get_their_own_answer_and_the_server_keeps_serving(server, files, explainer):
    """Every file twice (16 users at once; the full-size run is benchmarks/demo_load.py): a caption or one line each,
    no reply carrying another request's caption or image; then the server still answers."""
    order = [*files.values(), *reversed(files.values())]
    replies = many_at_once(url_of(server), order)
    assert [reply.name for reply in replies] == [path.name for path in order]
    assert not any(reply.refused for reply in replies)  # 16 fit the queue
    for reply, path in zip(replies, order):
        check_reply(reply, path, explainer)
    check_reply(ask(url_of(server), files["scene0.png"]), files["scene0.png"], explainer)


class Gate:
    """An explainer that holds each caption until the test opens the gate: requests pile up deterministically."""

    def __init__(self, explainer: Explainer):
        self.explainer, self.opened, self.entered = explainer, threading.Event(), threading.Event()

    def explain_file(self, path, name=None):
        self.entered.set()
        assert self.opened.wait(WAIT_S), "the test never opened the gate"
        return self.explainer.explain_file(path, name)


def test_a_full_queue_refuses_at_once_and_the_queued_requests_are_answered(explainer, files, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    gate = Gate(explainer)
    app = launch(build_app(gate, [("model file", "tiny")], {}, queue_size=2), tmp_path)
    try:
        url, photo = url_of(app), files["scene1.jpg"]
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(ask, url, photo)
            wait_until(gate.entered.is_set, "the first request to reach the model")
            queued = [pool.submit(ask, url, photo) for _ in range(2)]
            wait_until(lambda: len(app._queue) == 2, "two requests waiting in the queue")
            refused = ask(url, photo)  # a third waiting request: over queue_size
            assert refused.refused and refused.message == "Queue is full! Please try again.", refused
            assert not first.done() and not any(job.done() for job in queued)
            gate.opened.set()
            for job in (first, *queued):
                check_reply(job.result(timeout=WAIT_S), photo, explainer)
        check_reply(ask(url, photo), photo, explainer)  # and it serves on
    finally:
        gate.opened.set()
        app.close()


def test_stalled_and_abandoned_uploads_block_no_one_and_leave_nothing_past_the_expiry(server, files, explainer):
    cache = Path(server.server_app.uploaded_file_dir)

    def partial_uploads() -> list[Path]:
        return [path for path in cache.glob("tmp*") if path.stat().st_size > 0]

    url, photo = url_of(server), files["scene3.jpg"]
    stalled = start_abandoned_upload(url)  # announces 10 MB, sends 300 kB, then nothing
    try:
        wait_until(lambda: partial_uploads(), "the stalled upload's temporary file")
        check_reply(ask(url, photo), photo, explainer)  # served meanwhile: no worker waits on the stalled client
    finally:
        stalled.close()  # the client goes away mid-upload
    check_reply(ask(url, photo), photo, explainer)
    left = partial_uploads()
    assert left, "Gradio removed the abandoned upload itself: remove_orphaned_uploads may be unneeded"
    tracked = sorted(path for path in cache.rglob("*") if path.is_file() and path.parent != cache)
    assert remove_orphaned_uploads(cache, UPLOADS_KEPT_S) == []  # nothing is old enough yet
    an_hour_later = time.time() + UPLOADS_KEPT_S + 1
    removed = remove_orphaned_uploads(cache, UPLOADS_KEPT_S, now=an_hour_later)
    assert set(left) <= set(removed) and list(cache.glob("tmp*")) == []
    assert sorted(path for path in cache.rglob("*") if path.is_file() and path.parent != cache) == tracked
    check_reply(ask(url, photo), photo, explainer)
