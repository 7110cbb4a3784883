"""Many users of the demo at once, over HTTP: what its load test and benchmarks/demo_load.py send.

Each request is one user: a gradio_client session of its own that uploads one file to the page's upload
event and waits for the page's answer (the caption and the message line), as the browser does. The
requests start together (a barrier), so the server sees them all at once. Loopback only: the client's
telemetry is off and it downloads nothing (the attention image stays on the server; its path is kept).
"""

from __future__ import annotations

import re
import socket
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

UPLOAD_API = "/on_upload"  # the page's upload event (captioning.demo.app.build_app)


@dataclass
class Reply:
    name: str  # the file that was sent
    caption: str  # "" when the page showed a message instead
    message: str  # the page's message line, or the client's error (e.g. the queue is full)
    attention: str | None  # where the server saved the first word's attention image
    seconds: float  # from the request's start to its answer
    refused: bool = False  # the server did not take the request (queue full)


def shown_text(markdown: str) -> str:
    """The message as the page shows it: its Markdown source without bold marks and escapes."""
    return re.sub(r"\\(.)", r"\1", markdown.replace("**", ""))


def ask(url: str, path: str | Path) -> Reply:
    """Upload one file as a new user and wait for the answer."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    path = Path(path)
    started = time.perf_counter()
    try:
        client = Client(url, verbose=False, analytics_enabled=False, download_files=False)
        caption, _beams, _words, attention, message = client.predict(handle_file(str(path)), api_name=UPLOAD_API)
    except QueueError as error:
        return Reply(path.name, "", str(error), None, time.perf_counter() - started, refused=True)
    shown = attention.get("path") if isinstance(attention, dict) else None
    return Reply(path.name, caption, shown_text(message), shown, time.perf_counter() - started)


def many_at_once(url: str, paths: list[Path]) -> list[Reply]:
    """One user per file, all starting together; the replies in the order of `paths`."""
    barrier = threading.Barrier(len(paths))

    def one(path: Path) -> Reply:
        barrier.wait()
        return ask(url, path)

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(one, paths))


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie (linear interpolation, as numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = share * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(replies: list[Reply], wall_seconds: float) -> dict[str, float]:
    seconds = [reply.seconds for reply in replies]
    return {
        "requests": len(replies),
        "captioned": sum(bool(reply.caption) for reply in replies),
        "messages": sum(not reply.caption and not reply.refused for reply in replies),
        "refused": sum(reply.refused for reply in replies),
        "requests_per_s": len(replies) / wall_seconds,
        "p50_s": statistics.median(seconds),
        "p95_s": percentile(seconds, 0.95),
        "max_s": max(seconds),
    }


def start_abandoned_upload(url: str, name: str = "photo.jpg", announced: int = 10_000_000, sent: int = 300_000):
    """An upload that announces `announced` bytes, sends `sent` and then sends nothing more (a client that
    stalled); closing the returned socket is the client going away mid-upload."""
    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    boundary = "captioning-demo-load"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    head = (
        f"POST /gradio_api/upload HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {announced}\r\n\r\n"
    ).encode()
    connection = socket.create_connection((host, int(port)))
    connection.sendall(head + part + b"\xff" * sent)
    return connection
