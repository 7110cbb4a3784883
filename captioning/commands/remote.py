"""`python -m captioning remote [--remote NAME]`: why a `dvc push` or `dvc pull` failed, in one line.

DVC's own messages for a remote that cannot be reached are one line, but a wrong path, a folder this login
may not write, a push that did not finish or a local file a pull would overwrite come as a list of hashes
or a misleading "No such file". This asks the remote (through DVC's own file systems: a folder, SSH, S3)
the questions in the order they matter and prints the first answer that explains the failure:

1. can the remote be reached (server up, login accepted)?
2. does its folder exist, and may this login write there (a probe file, removed at once)?
3. does it hold every file this commit's outputs need (or this workspace, to push them)?
4. does the workspace hold a changed output that `dvc pull` refuses to overwrite?

Exit status 0 when nothing is wrong (the line says so), 1 otherwise. Nothing in the workspace is changed.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

SHOWN = 3  # file names quoted in a line; the rest are counted


@dataclass(frozen=True)
class Finding:
    ok: bool
    message: str


def _names(paths: list[str]) -> str:
    shown = ", ".join(sorted(paths)[:SHOWN])
    return shown + (f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _reason(error: BaseException) -> str:
    return str(error).strip() or type(error).__name__


def _nearest_existing(fs, path: str) -> str:
    """The remote folder itself, or the closest of its parents that exists."""
    while path not in ("", "/") and not fs.exists(path):
        parent = posixpath.dirname(path.rstrip("/"))
        if parent == path:
            break
        path = parent
    return path


def _writable(fs, folder: str) -> str | None:
    """None if this login may create files in `folder`; otherwise why not."""
    probe = posixpath.join(folder, f".captioning-write-test-{uuid.uuid4().hex}")
    try:
        fs.pipe_file(probe, b"")
    except Exception as error:  # noqa: BLE001 - OSError from a folder, SFTPPermissionDenied over SSH, ...
        return _reason(error)
    fs.rm_file(probe)
    return None


def _changed_outputs(workspace_status: dict) -> list[str]:
    """Outputs present in the workspace with contents other than this commit's (what `dvc pull` won't overwrite)."""
    changed = []
    for entries in workspace_status.values():
        for entry in entries:
            if isinstance(entry, dict):
                outs = entry.get("changed outs", {})
                changed += [path for path, state in outs.items() if state == "modified"]
    return changed


def check(root: Path, name: str | None = None) -> Finding:
    """Ask the remote `name` (the default remote when None) of the DVC project at `root` what is wrong."""
    from dvc.config import NoRemoteError, RemoteNotFoundError
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    logging.getLogger("dvc").setLevel(logging.ERROR)  # its warnings list every missing hash
    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        return Finding(False, f"{root} is not in a DVC project: run this inside the clone (or pass --repo)")
    with repo:
        try:
            remote = repo.cloud.get_remote(name)
        except NoRemoteError:
            return Finding(False, "no default remote: add one with `dvc remote add -d NAME URL` (docs/remote.md)")
        except RemoteNotFoundError:
            return Finding(False, f"no remote named '{name}': `dvc remote list` shows the configured ones")
        url = repo.config["remote"][remote.name]["url"]
        label = f"remote '{remote.name}' ({url})"
        fs, path = remote.fs, remote.path
        try:
            existing = _nearest_existing(fs, path)
        except Exception as error:  # noqa: BLE001 - connection and login failures come as many types
            return Finding(
                False, f"{label} cannot be reached: {_reason(error)}; start the server or fix the address, then rerun"
            )
        refused = _writable(fs, existing)
        if existing != path:
            if refused:
                return Finding(False, f"{label}: its folder cannot be created in {existing} ({refused})")
            return Finding(
                False,
                f"{label}: the folder {path} does not exist, so nothing was ever pushed there: a wrong url? "
                f"(`dvc remote list`; a first `dvc push` creates it)",
            )
        if refused:
            return Finding(False, f"{label}: this login may not write in {path} ({refused}): pull works, push cannot")
        statuses = repo.status(cloud=True, remote=remote.name)
        missing = [file for file, state in statuses.items() if state == "missing"]
        if missing:
            return Finding(
                False,
                f"{label} lacks {len(missing)} file(s) of this commit that this workspace lacks too "
                f"({_names(missing)}): the push from where they were made did not finish; rerun `dvc push` there",
            )
        changed = _changed_outputs(repo.status())
        if changed:
            return Finding(
                False,
                f"{_names(changed)}: changed in this workspace, so `dvc pull` will not overwrite it: move it aside "
                f"and rerun, or `dvc pull --force` to discard the change",
            )
        unpushed = [file for file, state in statuses.items() if state == "new"]
        if unpushed:
            return Finding(False, f"{len(unpushed)} file(s) are not on {label} yet ({_names(unpushed)}): `dvc push`")
        return Finding(True, f"{label} holds every file of this commit: `dvc pull` restores it, `dvc push` has none")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning remote", description=__doc__.splitlines()[0])
    parser.add_argument("--remote", "-r", help="the remote to check (default: the project's default remote)")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="the DVC project (default: here)")
    args = parser.parse_args(argv)
    finding = check(args.repo, args.remote)
    print(finding.message if finding.ok else f"error: {finding.message}", file=sys.stdout if finding.ok else sys.stderr)
    return 0 if finding.ok else 1
