"""requirements.lock: every dependency pyproject.toml declares is locked, at a version it accepts, with hashes."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
LOCKED_EXTRAS = ("dev", "demo", "ssh")  # what `make setup` installs; the Makefile's `lock` target names the same
UNLOCKED_EXTRAS = ("s3",)  # declared for users, untested here: pip resolves them when asked (docs/remote.md)


def locked_versions(text: str) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        declared += project["optional-dependencies"][extra]
    return [Requirement(line) for line in declared]


def test_every_declared_dependency_is_locked_at_an_accepted_version():
    locked = locked_versions((REPO / "requirements.lock").read_text())
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is in pyproject.toml but not in requirements.lock: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock has {name}=={locked[name]}, which pyproject.toml's {requirement} refuses: run make lock"
        )


def test_lock_pins_every_package_with_a_hash():
    text = (REPO / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 1)[1])
    pinned = [entry for entry in entries if re.match(r"[A-Za-z0-9_.-]+==", entry)]
    assert len(pinned) > 100  # the whole tree: torch's CUDA libraries, DVC's, Gradio's
    assert all("--hash=sha256:" in entry for entry in pinned)
    assert {"torch", "torchvision", "dvc", "numpy", "setuptools"} <= set(locked_versions(text))


def test_lock_check_notices_a_disagreement(tmp_path):
    """The check above is not vacuous: a lock missing a declared package, or at a refused version, fails it."""
    locked = locked_versions((REPO / "requirements.lock").read_text())
    torch = next(r for r in declared_requirements() if r.name == "torch")
    assert torch.specifier.contains(locked["torch"])
    assert not Requirement("torch>=99").specifier.contains(locked["torch"])
    assert "no-such-package" not in locked


def test_makefile_installs_the_lock_and_nothing_else():
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in makefile
    assert "pip install --no-deps --no-build-isolation -e ." in makefile
    assert "--extra dev --extra demo --extra ssh " in makefile  # the extras LOCKED_EXTRAS checks


def test_every_extra_is_either_locked_or_named_as_unlocked():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert sorted(extras) == sorted(LOCKED_EXTRAS + UNLOCKED_EXTRAS)
