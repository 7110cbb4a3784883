"""Driving the demo page in a headless Chromium: for its browser test (tests/test_demo.py) and for the README's
screenshot (benchmarks/demo.py --screenshot). A test tool, so it lives here and not in the installed package.

The server runs as `python -m captioning demo` in a child process; the browser is the system's
Chromium (Debian's /usr/bin/chromium, launched through Playwright's bundled driver, never a browser
that Playwright downloads), with everything that would reach the internet switched off. Every
request the page makes is recorded; any that is not for the demo server is refused.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY = "demo: serving on "
# Upper bounds of every wait, not pauses: each wait ends as soon as its condition holds. Generous,
# because on a shared 2-core machine under heavy load one step can take tens of seconds.
WAIT_MS = 120_000
SETTLE_MS = 500  # how long the message must stay the same to count as the final answer (wait_for_message)
START_S = 300.0


def chromium_path() -> str | None:
    return shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if Path(p).is_file()), None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DemoServer:
    """`python -m captioning demo` in a child process, from start-up to its URL; stopped on exit."""

    def __init__(self, model: Path, port: int | None = None, extra: list[str] | None = None, env: dict | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.command = [sys.executable, "-m", "captioning", "demo", "--model", str(model), "--port", str(self.port)]
        self.command += extra or []
        self.env = {**os.environ, **(env or {})}
        self.output: list[str] = []
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = START_S) -> DemoServer:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in self.process.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)  # the process closed its output: it has ended

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"the demo did not start in {timeout:.0f} s:\n{''.join(self.output)}") from None
            if line is None:
                self.stop()
                raise RuntimeError(f"the demo exited while starting:\n{''.join(self.output)}")
            if READY in line:
                return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Requests:
    """Every URL the page asked for, and those refused for not being the demo server's."""

    allowed_prefix: str
    seen: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def route(self, route) -> None:
        url = route.request.url
        self.seen.append(url)
        if url.startswith(self.allowed_prefix) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.refused.append(url)
            route.abort()


def open_page(playwright, url: str, viewport: tuple[int, int] = (1280, 900)):
    """(browser, page, Requests) with the demo page loaded and its file input ready."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("Chromium not found: apt-get install chromium")
    browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.set_default_timeout(WAIT_MS)
    requests = Requests(url.rstrip("/"))
    page.route("**/*", requests.route)
    page.goto(url, wait_until="load")
    page.locator("#upload input[type=file]").wait_for(state="attached")
    return browser, page, requests


def clear(page, timeout: float = WAIT_MS) -> None:
    """Remove the file shown, if any, and wait until its outputs are emptied (so the clearing cannot land later)."""
    button = page.locator("#upload button[aria-label='Clear']")
    if button.count():
        button.first.click()
        page.wait_for_function("() => !(document.querySelector('#message')?.innerText || '').trim()", timeout=timeout)


def upload(page, path: str | Path, timeout: float = WAIT_MS) -> str:
    """Upload a file (clearing the one shown) and wait until the page reports on it, naming it; that message."""
    clear(page, timeout)
    files = page.locator("#upload input[type=file]")
    files.wait_for(state="attached", timeout=timeout)
    files.set_input_files(str(path))
    return wait_for_message(page, Path(path).name, timeout)


def pick_test_image(page, name: str, timeout: float = WAIT_MS) -> str:
    """Choose a test image in the picker and wait until the page reports on it; that message."""
    page.locator("#pick input").click()
    page.get_by_role("option", name=name, exact=True).click()
    return wait_for_message(page, name, timeout)


def wait_for_message(page, name: str, timeout: float = WAIT_MS) -> str:
    """Wait until the message names `name`, Gradio's progress overlay ("processing | ...") has left it, and it
    stays so for SETTLE_MS; that message.

    While the overlay shows, the outputs are not all updated yet: reading them then would race the server.
    Choosing an image can run a second event a moment after the first has answered, so one quiet reading is
    not enough: the message must still be the same one SETTLE_MS later.
    """
    condition = (
        "name => { const text = document.querySelector('#message')?.innerText || '';"
        " return text.includes(name) && !/processing/i.test(text) ? text : null; }"
    )
    deadline = time.monotonic() + timeout / 1000
    while True:
        remaining = max(1.0, (deadline - time.monotonic()) * 1000)
        text = page.wait_for_function(condition, arg=name, timeout=remaining).json_value()
        page.wait_for_timeout(SETTLE_MS)
        if page.evaluate(condition, name) == text:
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo's message never settled on {name!r}: last {text!r}")


def caption_text(page) -> str:
    return page.locator("#caption textarea").input_value()


def attention_src(page) -> str | None:
    image = page.locator("#attention img")
    return image.get_attribute("src") if image.count() else None


def choose_word(page, index: int, timeout: float = WAIT_MS) -> str:
    """Click the index-th word and wait for its attention image to replace the current one; the new src."""
    before = attention_src(page)
    page.locator("#words label").nth(index).click()
    page.wait_for_function(
        "before => { const img = document.querySelector('#attention img');"
        " return img && img.complete && img.naturalWidth > 0 && img.getAttribute('src') !== before; }",
        arg=before,
        timeout=timeout,
    )
    return attention_src(page)


def wait_for_attention_image(page, timeout: float = WAIT_MS) -> str:
    page.wait_for_function(
        "() => { const img = document.querySelector('#attention img');"
        " return img && img.complete && img.naturalWidth > 0; }",
        timeout=timeout,
    )
    return attention_src(page)


def screenshot(model: Path, image: Path, out: Path, word: int = 1, extra: list[str] | None = None) -> None:
    """Serve the model, caption `image` in the page, choose its `word`-th word and save the page as a PNG."""
    from playwright.sync_api import sync_playwright

    with DemoServer(model, extra=extra) as server, sync_playwright() as playwright:
        browser, page, _ = open_page(playwright, server.url)
        try:
            upload(page, image)
            wait_for_attention_image(page)
            if page.locator("#words label").count() > word:
                choose_word(page, word)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
