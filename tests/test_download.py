"""The download command against a local HTTP server on 127.0.0.1 (never the internet): resume,
checksums, offline messages, safe extraction, and a whole `download flickr8k` into the reader."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import urllib.error
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fixtures_real import make_flickr8k

from captioning.commands import download as downloader
from captioning.data.readers.dataset import read_dataset
from captioning.errors import CaptioningError

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


class Server:
    """Serves `files` ({path: bytes}); honours Range unless `ignore_range`; `cut` stops a body early."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[dict[str, str]] = []
        self.ignore_range = False
        self.cut: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, **dict(self.headers)})
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if "Range" in self.headers and not server.ignore_range:
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:] if server.cut is None else body[start : start + server.cut])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    running = Server()
    running.files["/data.bin"] = PAYLOAD
    yield running
    running.close()


def test_download_writes_the_file_and_checks_its_sha256(server, tmp_path):
    target = tmp_path / "data.bin"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    downloader.download(f"{server.url}/data.bin", target, sha256=digest, timeout=5)
    assert target.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
    downloader.download(f"{server.url}/data.bin", target, timeout=5)  # already there: no request
    assert len(server.requests) == 1


def test_wrong_sha256_deletes_the_download(server, tmp_path):
    with pytest.raises(CaptioningError, match=r"data.bin: SHA-256 [0-9a-f]{64} is not the expected 00ff"):
        downloader.download(f"{server.url}/data.bin", tmp_path / "data.bin", sha256="00ff", timeout=5)
    assert not (tmp_path / "data.bin").exists() and not (tmp_path / "data.bin.part").exists()


def test_partial_download_resumes_with_a_range_request(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    downloader.download(f"{server.url}/data.bin", tmp_path / "data.bin", timeout=5)
    assert server.requests[0]["Range"] == "bytes=1000-"
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_complete_partial_file_is_accepted(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    downloader.download(f"{server.url}/data.bin", tmp_path / "data.bin", timeout=5)  # server answers 416
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_server_without_range_support_starts_again(server, tmp_path):
    server.ignore_range = True
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes")
    downloader.download(f"{server.url}/data.bin", tmp_path / "data.bin", timeout=5)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_interrupted_download_is_resumed_by_the_next_run(server, tmp_path):
    server.cut = 4000
    with pytest.raises(CaptioningError, match=r"stopped at 4,000 of 10,240 bytes; rerun to resume"):
        downloader.download(f"{server.url}/data.bin", tmp_path / "data.bin", timeout=5)
    assert (tmp_path / "data.bin.part").read_bytes() == PAYLOAD[:4000]
    server.cut = None
    downloader.download(f"{server.url}/data.bin", tmp_path / "data.bin", timeout=5)
    assert server.requests[-1]["Range"] == "bytes=4000-"
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_file_url_downloads(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    downloader.download(source.as_uri(), tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == PAYLOAD


def test_http_error_and_offline_are_one_line(server, tmp_path, monkeypatch):
    with pytest.raises(CaptioningError, match=r"missing.zip: HTTP 404"):
        downloader.download(f"{server.url}/missing.zip", tmp_path / "missing.zip", timeout=5)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(CaptioningError, match=r"cannot reach http://127.0.0.1:\d+/x.zip \(.*\): offline\?"):
        downloader.download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", timeout=5)

    def no_dns(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr("urllib.request.urlopen", no_dns)
    with pytest.raises(CaptioningError) as caught:
        downloader.download("https://huggingface.co/x.zip", tmp_path / "x.zip")
    assert "name resolution" in str(caught.value) and "\n" not in str(caught.value)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, content in files.items():
            bundle.writestr(name, content)
    return buffer.getvalue()


def tar_bytes(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            bundle.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            bundle.addfile(info)
    return buffer.getvalue()


def test_extract_zip_and_tar(tmp_path):
    (tmp_path / "a.zip").write_bytes(zip_bytes({"images/x.jpg": b"x", "__MACOSX/images/._x.jpg": b"junk"}))
    downloader.extract(tmp_path / "a.zip", tmp_path / "out")
    assert (tmp_path / "out" / "images" / "x.jpg").read_bytes() == b"x"
    assert not (tmp_path / "out" / "__MACOSX").exists()
    (tmp_path / "b.tar.gz").write_bytes(tar_bytes({"text/captions.txt": b"image,caption\n"}))
    downloader.extract(tmp_path / "b.tar.gz", tmp_path / "out")
    assert (tmp_path / "out" / "text" / "captions.txt").is_file()
    (tmp_path / "c.zip").write_bytes(b"not an archive")
    with pytest.raises(CaptioningError, match=r"c.zip: not a zip or tar archive"):
        downloader.extract(tmp_path / "c.zip", tmp_path / "out")


@pytest.mark.parametrize(
    ("archive", "content"),
    [
        ("evil.zip", zip_bytes({"ok.txt": b"ok", "../evil.txt": b"evil"})),
        ("evil.tar.gz", tar_bytes({"ok.txt": b"ok", "/tmp/evil.txt": b"evil"})),
        ("evil.tar.gz", tar_bytes({"ok.txt": b"ok"}, links={"link": "../../evil.txt"})),
    ],
)
def test_extract_refuses_entries_outside_the_folder(tmp_path, archive, content):
    (tmp_path / archive).write_bytes(content)
    with pytest.raises(CaptioningError, match=r"would be written outside"):
        downloader.extract(tmp_path / archive, tmp_path / "out")
    assert not (tmp_path / "out" / "ok.txt").exists() and not (tmp_path / "evil.txt").exists()


def test_download_command_fetches_and_unpacks_flickr8k(server, tmp_path, monkeypatch, capsys):
    mini = make_flickr8k(tmp_path / "original", "token", count=6)
    text = {
        p.relative_to(mini.root / "Flickr8k_text").as_posix(): p.read_bytes()
        for p in (mini.root / "Flickr8k_text").iterdir()
    }
    images = {p.relative_to(mini.root).as_posix(): p.read_bytes() for p in mini.image_dir.iterdir()}
    server.files["/Flickr8k_text.zip"] = zip_bytes(text)
    server.files["/Flickr8k_Dataset.zip"] = zip_bytes(images)
    resources = tuple(
        downloader.Resource(f"{server.url}/{name}", name) for name in ("Flickr8k_text.zip", "Flickr8k_Dataset.zip")
    )
    monkeypatch.setitem(downloader.SOURCES, "flickr8k", resources)
    target = tmp_path / "downloads" / "flickr8k"
    assert downloader.main(["flickr8k", str(target), "--timeout", "5"]) == 0
    assert not (target / "Flickr8k_Dataset.zip").exists() and (target / ".Flickr8k_Dataset.zip.extracted").is_file()
    table = read_dataset("flickr8k", target)
    assert table.image_root == (target / "Flicker8k_Dataset").resolve() and len(table.images) == 5
    count = len(server.requests)
    assert downloader.main(["flickr8k", str(target)]) == 0 and len(server.requests) == count  # nothing to redo
    server.close()
    resources = (downloader.Resource(f"{server.url}/more.csv", "more.csv"),)
    monkeypatch.setitem(downloader.SOURCES, "flickr8k", resources)
    capsys.readouterr()
    assert downloader.main(["flickr8k", str(target), "--timeout", "5"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: cannot reach") and error.count("\n") == 1
