"""Sharing a run through a real DVC remote (docs/remote.md), end to end on the tiny pipeline.

One person runs the pipeline and pushes; a colleague's fresh clone pulls, `dvc status` is clean, `dvc repro`
runs nothing, and the model and metrics are the same files. Through a folder remote and over SSH (OpenSSH's
own sshd on 127.0.0.1, started here with generated keys); an experiment through a bare git repository plus the
remote; the features left off the remote; and the faults: a stopped server, a wrong path, a folder the login
may not write, a half-finished push, a pull over a local change. Each fails in one line, loses nothing, and a
rerun completes; `python -m captioning remote` names the cause.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from tiny_repo import commit_all, copy_repository, environment

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread_each")]
STAGES = ("data", "vocab", "features", "embeddings", "train", "finetune", "evaluate")
SCRATCH_STATE = b"the resumable state of an interrupted training"


def sh(cwd: Path, *command: str, check: bool = True, home: Path | None = None) -> subprocess.CompletedProcess:
    """Run a command; `home` replaces HOME (where SSH reads known_hosts)."""
    env = dict(environment(), **({"HOME": str(home)} if home else {}))
    result = subprocess.run(list(command), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def diagnose(repo: Path, remote: str, home: Path | None = None) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "captioning", "remote", "-r", remote, check=False, home=home)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(("ERROR", "error"))]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def stored(remote: Path, path: Path) -> bool:
    digest = md5(path)
    return (remote / "files/md5" / digest[:2] / digest[2:]).is_file()


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@dataclass
class Team:
    root: Path
    author: Path  # ran the pipeline
    origin: Path  # the bare git repository everybody clones
    store: Path  # the folder remote committed as the default


@pytest.fixture(scope="module")
def team(tiny_pipeline: Path, tmp_path_factory, one_thread_each) -> Team:
    root = tmp_path_factory.mktemp("team")
    author, origin, store = root / "author", root / "origin.git", root / "store"
    copy_repository(tiny_pipeline, author)  # the tiny project after `dvc repro`, committed
    (author / "scratch/train").mkdir(parents=True, exist_ok=True)
    (author / "scratch/train/state.pt").write_bytes(SCRATCH_STATE)
    sh(author, "dvc", "remote", "add", "-d", "store", str(store))
    commit_all(author, "tiny pipeline, shared through the folder remote 'store'")
    sh(root, "git", "init", "-q", "--bare", "-b", "main", str(origin))
    sh(author, "git", "remote", "add", "origin", str(origin))
    sh(author, "git", "push", "-q", "origin", "HEAD:main")
    assert "files pushed" in sh(author, "dvc", "push").stdout
    return Team(root, author, origin, store)


def clone(team: Team, name: str, branch: str = "main") -> Path:
    target = team.root / name
    sh(team.root, "git", "clone", "-q", "-b", branch, str(team.origin), str(target))
    sh(target, "git", "config", "user.email", "colleague@example.com")
    sh(target, "git", "config", "user.name", "A Colleague")
    return target


def assert_restored(clone: Path, author: Path) -> None:
    """The clone holds the author's run: nothing to do for DVC, the same model, features and metrics."""
    assert "up to date" in sh(clone, "dvc", "status").stdout
    repro = sh(clone, "dvc", "repro").stdout
    assert "Running stage" not in repro, repro
    assert all(f"Stage '{stage}' didn't change" in repro for stage in STAGES), repro
    for name in ("models/model.pt", "data/features.h5", "reports/predictions.json"):
        assert (clone / name).read_bytes() == (author / name).read_bytes(), name
    assert files_under(clone / "metrics") == files_under(author / "metrics")


def test_a_fresh_clone_pulls_the_run_from_a_folder_remote_and_reruns_nothing(team: Team):
    colleague = clone(team, "colleague")
    pulled = sh(colleague, "dvc", "pull")
    assert "fetched" in pulled.stdout, pulled.stdout
    assert_restored(colleague, team.author)
    assert stored(team.store, team.author / "data/features.h5")  # the costliest output travels
    assert not stored(team.store, team.author / "scratch/train/state.pt")  # resume state never does
    assert not (colleague / "scratch").exists()
    assert diagnose(colleague, "store").returncode == 0
    assert "Everything is up to date" in sh(team.author, "dvc", "push").stdout


def test_features_left_off_the_remote_are_rebuilt_and_nothing_else(team: Team):
    """The documented opt-out: push: false on data/features.h5; a colleague pulls with --allow-missing."""
    frugal = clone(team, "frugal")
    sh(frugal, "dvc", "pull")
    dvc_yaml = frugal / "dvc.yaml"
    text = dvc_yaml.read_text()
    assert text.count("push: true") == 1
    dvc_yaml.write_text(text.replace("push: true", "push: false"))
    sh(frugal, "dvc", "remote", "add", "-d", "lean", str(team.root / "lean"))
    commit_all(frugal, "keep the features off the remote")
    sh(frugal, "git", "push", "-q", "origin", "HEAD:frugal")
    sh(frugal, "dvc", "push")
    assert not stored(team.root / "lean", frugal / "data/features.h5")
    assert stored(team.root / "lean", frugal / "models/model.pt")

    colleague = clone(team, "frugal-colleague", branch="frugal")
    assert sh(colleague, "dvc", "pull", check=False).returncode != 0  # plain pull: the features are not there
    sh(colleague, "dvc", "pull", "--allow-missing")
    repro = sh(colleague, "dvc", "repro").stdout
    assert "Running stage 'features'" in repro, repro
    assert all(f"Stage '{stage}' didn't change" in repro for stage in STAGES if stage != "features"), repro
    assert (colleague / "data/features.h5").read_bytes() == (team.author / "data/features.h5").read_bytes()
    assert "up to date" in sh(colleague, "dvc", "status").stdout


def test_an_experiment_travels_through_git_and_the_remote(team: Team):
    alice = clone(team, "alice")
    sh(alice, "dvc", "pull")
    run = sh(alice, "dvc", "exp", "run", "-n", "beam-1", "-S", "evaluate.beam_size=1")
    assert "Running stage 'evaluate'" in run.stdout and "Running stage 'train'" not in run.stdout
    sh(alice, "dvc", "exp", "push", "origin", "beam-1")

    bob = clone(team, "bob")
    sh(bob, "dvc", "pull")
    sh(bob, "dvc", "exp", "pull", "origin", "beam-1")
    assert "beam-1" in sh(bob, "dvc", "exp", "show", "--md").stdout
    sh(bob, "dvc", "exp", "apply", "beam-1")
    assert yaml.safe_load((bob / "params.yaml").read_text())["evaluate"]["beam_size"] == 1
    for name in ("metrics/evaluate.json", "reports/predictions.json", "models/model.pt"):
        assert (bob / name).read_bytes() == (alice / name).read_bytes(), name
    assert "up to date" in sh(bob, "dvc", "status").stdout
    assert "Running stage" not in sh(bob, "dvc", "repro").stdout


def test_a_wrong_path_fails_creates_nothing_and_the_corrected_url_pulls(team: Team):
    colleague = clone(team, "typo")
    wrong = team.root / "stor" / "captioning"
    sh(colleague, "dvc", "remote", "modify", "--local", "store", "url", str(wrong))
    failed = sh(colleague, "dvc", "pull", check=False)
    assert failed.returncode != 0
    assert not wrong.parent.exists()
    diagnosis = diagnose(colleague, "store")
    assert diagnosis.returncode == 1 and len(diagnosis.stderr.splitlines()) == 1
    assert f"the folder {wrong} does not exist" in diagnosis.stderr
    sh(colleague, "dvc", "remote", "modify", "--local", "--unset", "store", "url")
    sh(colleague, "dvc", "pull")
    assert_restored(colleague, team.author)


def test_a_half_finished_push_is_named_and_completed_by_a_rerun(team: Team):
    """DVC writes each file of a push under a temporary name and renames it, and a folder's listing (`.dir`)
    after its files, so an interrupted push leaves whole files with some missing and no listing of an incomplete
    folder: a complete remote without half its files and without the listings is that state."""
    partial = team.root / "partial"
    shutil.copytree(team.store, partial)
    objects = sorted(path for path in partial.rglob("*") if path.is_file())
    for path in objects[::2] + [path for path in objects if path.suffix == ".dir"]:
        path.unlink(missing_ok=True)

    colleague = clone(team, "after-a-partial-push")
    sh(colleague, "dvc", "remote", "modify", "--local", "store", "url", str(partial))
    assert sh(colleague, "dvc", "pull", check=False).returncode != 0
    diagnosis = diagnose(colleague, "store")
    assert diagnosis.returncode == 1 and len(diagnosis.stderr.splitlines()) == 1
    assert "the push from where they were made did not finish; rerun `dvc push` there" in diagnosis.stderr

    sh(team.author, "dvc", "remote", "add", "--local", "partial", str(partial))
    assert "are not on remote 'partial'" in diagnose(team.author, "partial").stderr
    pushed = sh(team.author, "dvc", "push", "-r", "partial")
    assert "files pushed" in pushed.stdout, pushed.stdout
    assert "Everything is up to date" in sh(team.author, "dvc", "push", "-r", "partial").stdout
    sh(colleague, "dvc", "pull")
    assert_restored(colleague, team.author)


def test_a_pull_keeps_a_local_change_and_completes_once_it_is_moved_aside(team: Team):
    colleague = clone(team, "with-local-work")
    (colleague / "models").mkdir()
    (colleague / "models/model.pt").write_bytes(b"a model trained here, not committed")
    failed = sh(colleague, "dvc", "pull", check=False)
    assert failed.returncode != 0
    assert len(error_lines(failed)) == 1 and "Use `--force` to force" in failed.stderr
    assert (colleague / "models/model.pt").read_bytes() == b"a model trained here, not committed"
    diagnosis = diagnose(colleague, "store")
    assert diagnosis.stderr.startswith("error: models/model.pt: changed in this workspace")
    (colleague / "models/model.pt").rename(colleague / "models/mine.pt")
    sh(colleague, "dvc", "pull")
    assert_restored(colleague, team.author)
    assert (colleague / "models/mine.pt").read_bytes() == b"a model trained here, not committed"


# --- over SSH: OpenSSH's sshd on 127.0.0.1 --------------------------------------------------------------------


@dataclass
class SSHServer:
    """sshd on 127.0.0.1:port, public-key login only; config, keys, log and remote folders live in `folder`."""

    sshd: str
    folder: Path
    port: int
    key: Path  # the client's private key (DVC's `keyfile`)
    home: Path  # HOME for the dvc commands: its .ssh/known_hosts holds this server's host key
    user: str = getpass.getuser()
    process: subprocess.Popen | None = None

    def url(self, path: Path, user: str | None = None) -> str:
        return f"ssh://{user or self.user}@127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        log = self.folder / "sshd.log"
        log.write_text("")
        with log.open("a") as output:
            command = [self.sshd, "-D", "-e", "-f", str(self.folder / "sshd_config")]
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=output)
        deadline = time.monotonic() + 60
        while "Server listening" not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)
        self.process = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def ssh_server():
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    sshd, keygen = shutil.which("sshd", path=search), shutil.which("ssh-keygen", path=search)
    if sshd is None or keygen is None:
        pytest.skip("OpenSSH's sshd is not installed (apt-get install openssh-server; .ci/run installs it)")
    # Not under pytest's 0700 temporary folder: when the tests run as root, the permission test logs in as
    # `nobody`, and sshd reads authorized_keys as the user who logs in.
    folder = Path(tempfile.mkdtemp(prefix="captioning-sshd-"))
    folder.chmod(0o755)
    server = None
    try:
        for name in ("host_key", "client_key"):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
        (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
        (folder / "authorized_keys").chmod(0o644)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
        port = free_port()
        (folder / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {folder / 'host_key'}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
        )
        home = folder / "home"
        (home / ".ssh").mkdir(parents=True)
        host_key = " ".join((folder / "host_key.pub").read_text().split()[:2])
        (home / ".ssh/known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
        server = SSHServer(sshd, folder, port, folder / "client_key", home)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_round_trip_over_ssh(team: Team, ssh_server: SSHServer):
    author, key = team.author, str(ssh_server.key)
    sh(author, "dvc", "remote", "add", "box", ssh_server.url(ssh_server.folder / "store"))
    sh(author, "dvc", "remote", "modify", "--local", "box", "keyfile", key)  # credentials stay out of git
    commit_all(author, "the SSH remote 'box'")
    sh(author, "git", "push", "-q", "origin", "HEAD:main")
    assert "files pushed" in sh(author, "dvc", "push", "-r", "box", home=ssh_server.home).stdout

    colleague = clone(team, "colleague-over-ssh")
    sh(colleague, "dvc", "remote", "modify", "--local", "box", "keyfile", key)
    sh(colleague, "dvc", "pull", "-r", "box", home=ssh_server.home)
    assert_restored(colleague, author)
    assert stored(ssh_server.folder / "store", author / "data/features.h5")
    assert diagnose(colleague, "box", home=ssh_server.home).returncode == 0


def test_a_stopped_server_fails_in_one_line_and_a_rerun_completes_the_push(team: Team, ssh_server: SSHServer):
    author, remote = team.author, ssh_server.folder / "later"
    sh(author, "dvc", "remote", "add", "--local", "later", ssh_server.url(remote))
    sh(author, "dvc", "remote", "modify", "--local", "later", "keyfile", str(ssh_server.key))
    ssh_server.stop()
    try:
        failed = sh(author, "dvc", "push", "-r", "later", check=False, home=ssh_server.home)
        diagnosis = diagnose(author, "later", home=ssh_server.home)
    finally:
        ssh_server.start()
    assert failed.returncode != 0
    assert len(error_lines(failed)) == 1 and "Connect call failed" in failed.stderr, failed.stderr
    assert diagnosis.returncode == 1 and len(diagnosis.stderr.splitlines()) == 1
    assert "cannot be reached" in diagnosis.stderr and f"127.0.0.1:{ssh_server.port}" in diagnosis.stderr
    assert "up to date" in sh(author, "dvc", "status").stdout  # the workspace is untouched
    assert "files pushed" in sh(author, "dvc", "push", "-r", "later", home=ssh_server.home).stdout
    assert stored(remote, author / "models/model.pt")


def test_a_folder_the_login_may_not_write_is_named_and_a_rerun_completes(team: Team, ssh_server: SSHServer):
    """Root may write anywhere, so a root test run logs in as `nobody` here."""
    author, locked = team.author, ssh_server.folder / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    user = "nobody" if os.geteuid() == 0 else ssh_server.user
    sh(author, "dvc", "remote", "add", "--local", "locked", ssh_server.url(locked / "store", user=user))
    sh(author, "dvc", "remote", "modify", "--local", "locked", "keyfile", str(ssh_server.key))
    failed = sh(author, "dvc", "push", "-r", "locked", check=False, home=ssh_server.home)
    assert failed.returncode != 0 and len(error_lines(failed)) == 1, failed.stderr
    diagnosis = diagnose(author, "locked", home=ssh_server.home)
    assert diagnosis.returncode == 1 and len(diagnosis.stderr.splitlines()) == 1
    assert f"its folder cannot be created in {locked} (Permission denied)" in diagnosis.stderr
    assert "up to date" in sh(author, "dvc", "status").stdout

    locked.chmod(0o777)  # the owner grants access
    assert "files pushed" in sh(author, "dvc", "push", "-r", "locked", home=ssh_server.home).stdout
    assert stored(locked / "store", author / "data/features.h5")
