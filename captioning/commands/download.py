"""`python -m captioning download DATASET DIR`: fetch a dataset from a public mirror and unpack it.

- flickr30k: Hugging Face `nlphuji/flickr30k` (flickr_annotations_30k.csv with the Karpathy split,
  flickr30k-images.zip, about 4.4 GB).
- flickr8k: the copy in the GitHub releases of `jbrownlee/Datasets` (Flickr8k_text.zip with the token
  and split files, Flickr8k_Dataset.zip, about 1 GB).

Files are written as `NAME.part` and renamed when complete; a rerun resumes a `.part` file with an HTTP
Range request (or starts again if the server ignores it). A SHA-256 is checked where one is listed and
logged otherwise, so it can be pinned. Zip and tar archives are unpacked into DIR (entries that would
land outside DIR are refused, macOS `__MACOSX/` entries skipped), marked done with a hidden
`.NAME.extracted` file and deleted unless --keep-archives. Then set data.dataset and data.root=DIR.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from captioning.errors import CaptioningError

log = logging.getLogger(__name__)
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class Resource:
    url: str
    filename: str
    sha256: str | None = None  # None: not published by the mirror; the computed one is logged

    @property
    def is_archive(self) -> bool:
        return self.filename.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


_HF = "https://huggingface.co/datasets/nlphuji/flickr30k/resolve/main"
_GITHUB = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k"
SOURCES: dict[str, tuple[Resource, ...]] = {
    "flickr30k": (
        Resource(f"{_HF}/flickr_annotations_30k.csv", "flickr_annotations_30k.csv"),
        Resource(f"{_HF}/flickr30k-images.zip", "flickr30k-images.zip"),
    ),
    "flickr8k": (
        Resource(f"{_GITHUB}/Flickr8k_text.zip", "Flickr8k_text.zip"),
        Resource(f"{_GITHUB}/Flickr8k_Dataset.zip", "Flickr8k_Dataset.zip"),
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": "captioning-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            return None  # nothing after `offset`: the partial file is complete
        raise CaptioningError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CaptioningError(
            f"cannot reach {url} ({reason}): offline? Download it by hand to the target folder and rerun"
        ) from None


def _expected_total(response, offset: int) -> int | None:
    """The full size of the file, from Content-Range (partial answer) or Content-Length."""
    content_range = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", response.headers.get("Content-Range", ""))
    if offset and content_range:
        if int(content_range.group(1)) != offset:
            raise CaptioningError(f"{response.url}: the server resumed at the wrong byte; delete the .part file")
        return int(content_range.group(2))
    length = response.headers.get("Content-Length", "")
    return int(length) + offset if length.isdigit() else None


def download(url: str, target: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` to `target`, resuming `target.part` if an earlier run left one."""
    if target.is_file():
        log.info("%s is already downloaded", target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    offset = partial.stat().st_size if partial.is_file() else 0
    response = _open(url, offset, timeout)
    if response is not None:
        with response:
            status = getattr(response, "status", None) or 200  # file:// answers have no status
            if offset and status != 206:
                log.info("%s: the server does not resume downloads; starting again", url)
                offset = 0
            total = _expected_total(response, offset)
            if total is not None and total - offset > shutil.disk_usage(target.parent).free:
                raise CaptioningError(f"{target.parent}: not enough free disk space for {total - offset:,} bytes")
            if offset:
                log.info("%s: resuming at byte %d", target.name, offset)
            try:
                with (
                    open(partial, "ab" if offset else "wb") as file,
                    tqdm(
                        total=total,
                        initial=offset,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=target.name,
                        disable=None,
                    ) as bar,
                ):
                    while block := response.read(CHUNK_SIZE):
                        file.write(block)
                        bar.update(len(block))
            except OSError as error:  # connection lost or disk full: keep the .part file for the next run
                raise CaptioningError(f"{url}: download interrupted ({error}); rerun to resume") from None
        size = partial.stat().st_size
        if total is not None and size != total:
            raise CaptioningError(f"{url}: download stopped at {size:,} of {total:,} bytes; rerun to resume")
    digest = sha256_of(partial)
    if sha256 is not None and digest != sha256.lower():
        partial.unlink()
        raise CaptioningError(
            f"{target}: SHA-256 {digest} is not the expected {sha256}; deleted, rerun to download again"
        )
    log.info("%s: SHA-256 %s", target.name, digest)
    os.replace(partial, target)
    return target


def _inside(archive: Path, destination: Path, name: str) -> None:
    root = destination.resolve()
    if not (root / name).resolve().is_relative_to(root) or os.path.isabs(name):
        raise CaptioningError(f"{archive}: entry {name!r} would be written outside {destination}; not extracting")


def extract(archive: Path, destination: Path) -> None:
    """Unpack a zip or tar archive into `destination`, refusing entries that would leave it."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.infolist() if not m.filename.startswith("__MACOSX/")]
            for member in members:
                _inside(archive, destination, member.filename)
            for member in tqdm(members, desc=f"unpacking {archive.name}", unit="file", disable=None):
                bundle.extract(member, destination)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as bundle:
            members = [m for m in bundle.getmembers() if not m.name.startswith("__MACOSX/")]
            for member in members:
                _inside(archive, destination, member.name)
                if member.issym() or member.islnk():
                    _inside(archive, destination, os.path.join(os.path.dirname(member.name), member.linkname))
            if hasattr(tarfile, "data_filter"):
                bundle.extractall(destination, members=members, filter="data")
            else:
                bundle.extractall(destination, members=members)
    else:
        raise CaptioningError(f"{archive}: not a zip or tar archive; delete it and rerun to download again")


def fetch(resource: Resource, directory: Path, keep_archives: bool = False, timeout: float = 60.0) -> None:
    """Download one resource into `directory` and unpack it if it is an archive (both skipped when done)."""
    target = directory / resource.filename
    marker = directory / f".{resource.filename}.extracted"
    if resource.is_archive and marker.is_file():
        log.info("%s is already unpacked", resource.filename)
        return
    download(resource.url, target, resource.sha256, timeout)
    if resource.is_archive:
        extract(target, directory)
        marker.write_text(f"{resource.url}\n", encoding="utf-8")
        if not keep_archives:
            target.unlink()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning download", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(SOURCES))
    parser.add_argument("directory", type=Path, help="where to put the files (becomes data.root)")
    parser.add_argument("--keep-archives", action="store_true", help="keep the zip files after unpacking")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    from captioning.cli import setup_logging

    setup_logging()
    try:
        for resource in SOURCES[args.dataset]:
            fetch(resource, args.directory, args.keep_archives, args.timeout)
    except CaptioningError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    log.info(
        "%s is in %s: set data.dataset=%s and data.root=%s", args.dataset, args.directory, args.dataset, args.directory
    )
    return 0
