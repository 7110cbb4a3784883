"""requirements.lock: for every supported Python and platform, every dependency pyproject.toml declares is locked
once, at a version it accepts, with hashes; the Makefile installs it and refuses other Pythons."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # the lock holds tomli for 3.10 (pytest's, coverage's)
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LOCKED_EXTRAS = ("dev", "demo", "ssh")  # what `make setup` installs; the Makefile's `lock` target names the same
UNLOCKED_EXTRAS = ("s3",)  # declared for users, untested here: pip resolves them when asked (docs/remote.md)
SUPPORTED = ("3.10", "3.11", "3.12", "3.13")  # the Makefile's check and requires-python say the same (tested below)
PLATFORMS = {  # the marker values of pyproject.toml's [tool.uv] environments
    "Linux x86-64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "Linux aarch64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    "macOS arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
}
LOCK_LINE = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)(?:\s*;\s*([^\\\n]+?))?\s*\\?$", re.M)


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def marker_environment(python: str, platform: str) -> dict[str, str]:
    return {
        "python_version": ".".join(python.split(".")[:2]),
        "python_full_version": python,
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        **PLATFORMS[platform],
    }


def locked_for(text: str, python: str, platform: str) -> dict[str, list[str]]:
    """The versions pip installs from the lock on this Python and platform: the lines whose markers hold."""
    environment = marker_environment(python, platform)
    locked: dict[str, list[str]] = {}
    for name, version, marker in LOCK_LINE.findall(text):
        if not marker or Marker(marker).evaluate(environment):
            locked.setdefault(canonicalize_name(name), []).append(version)
    return locked


def declared_requirements() -> list[Requirement]:
    project = pyproject()
    declared = list(project["project"]["dependencies"])
    for extra in LOCKED_EXTRAS:
        declared += project["project"]["optional-dependencies"][extra]
    declared += project["build-system"]["requires"]  # `pip install --no-build-isolation -e .` builds with them
    return [Requirement(line) for line in declared]


def disagreements(text: str, requirements: list[Requirement], python: str, platform: str) -> list[str]:
    """What is wrong with the lock on this Python and platform: a declared package missing, locked twice, refused."""
    locked = locked_for(text, python, platform)
    problems = [f"{name} is locked twice: {versions}" for name, versions in locked.items() if len(versions) > 1]
    environment = marker_environment(python, platform)
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{requirement.name} is in pyproject.toml but not in requirements.lock")
        elif not requirement.specifier.contains(locked[name][0], prereleases=True):
            problems.append(
                f"requirements.lock has {name}=={locked[name][0]}, which pyproject.toml's {requirement} refuses"
            )
    return problems


def check_lock(text: str, python: str, platform: str) -> None:
    """The check: on this Python and platform, every dependency pyproject.toml declares is locked once, at a version
    it accepts."""
    problems = disagreements(text, declared_requirements(), python, platform)
    assert not problems, f"Python {python} on {platform}: {'; '.join(problems)}: run make lock"


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("python", [f"{minor}.{patch}" for minor in SUPPORTED for patch in (0, 99)])
def test_every_declared_dependency_is_locked_once_at_an_accepted_version(python, platform):
    check_lock((REPO / "requirements.lock").read_text(), python, platform)


BROKEN_LOCKS = [
    pytest.param(
        lambda text: re.sub(r"^torch==.*\n(    .*\n)*", "", text, flags=re.M),
        ("3.11.7", "Linux x86-64"),
        "torch is in pyproject.toml but not in requirements.lock",
        id="torch-missing",
    ),
    pytest.param(
        lambda text: re.sub(r"^torch==[^\s;]+", "torch==2.0.0", text, flags=re.M),
        ("3.12.1", "macOS arm64"),
        "requirements.lock has torch==2.0.0, which pyproject.toml's torch>=2.4 refuses",
        id="torch-refused-version",
    ),
    pytest.param(
        lambda text: text + "\ntorch==2.14.1 \\\n    --hash=sha256:" + "0" * 64 + "\n",
        ("3.13.0", "Linux aarch64"),
        "torch is locked twice",
        id="torch-twice",
    ),
]


@pytest.mark.parametrize(("breakage", "where", "problem"), BROKEN_LOCKS)
def test_the_lock_check_fails_on_a_broken_lock(breakage, where, problem):
    """The check above is not vacuous: run on a broken copy of the real lock, it fails naming the package."""
    text = (REPO / "requirements.lock").read_text()
    check_lock(text, *where)  # the real lock passes there
    broken = breakage(text)
    assert broken != text, "the breakage no longer matches the lock: update it"
    with pytest.raises(AssertionError, match=re.escape(problem)):
        check_lock(broken, *where)


def test_the_lock_check_fails_on_a_package_missing_for_one_python_only():
    """pandas is locked once for 3.10 and once for 3.11 and later: without the first, 3.10 fails and 3.11 passes."""
    text = (REPO / "requirements.lock").read_text()
    broken = re.sub(r"^pandas==[^\n]*python_full_version < '3.11'[^\n]*\n(    .*\n)*", "", text, flags=re.M)
    assert broken != text, "the breakage no longer matches the lock: update it"
    check_lock(broken, "3.11.7", "Linux x86-64")
    with pytest.raises(AssertionError, match="pandas is in pyproject.toml but not in requirements.lock"):
        check_lock(broken, "3.10.13", "Linux x86-64")


def test_lock_pins_every_package_with_a_hash():
    text = (REPO / "requirements.lock").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", body)
    pinned = [entry for entry in entries if re.match(r"[A-Za-z0-9_.-]+==", entry)]
    assert len(pinned) == len(LOCK_LINE.findall(text)) > 100  # the whole tree: torch's CUDA libraries, DVC's, Gradio's
    assert all("--hash=sha256:" in entry for entry in pinned)
    assert {"torch", "torchvision", "dvc", "numpy", "setuptools"} <= set(locked_for(text, "3.11.7", "Linux x86-64"))


def test_supported_pythons_agree():
    """pyproject's requires-python, the Makefile's check and the platforms here name the same Pythons and places."""
    requires_python = SpecifierSet(pyproject()["project"]["requires-python"])
    for minor in range(6, 16):
        assert requires_python.contains(f"3.{minor}.5") == (f"3.{minor}" in SUPPORTED)
    assert requires_python.contains("3.12.1") and requires_python.contains("3.10.0")
    makefile = (REPO / "Makefile").read_text()
    first, last = SUPPORTED[0].split("."), SUPPORTED[-1].split(".")
    assert f"({first[0]}, {first[1]}) <= sys.version_info[:2] <= ({last[0]}, {last[1]})" in makefile
    assert re.search(r"^SUPPORTED := CPython 3\.10-3\.13$", makefile, re.M)
    environments = [Marker(m) for m in pyproject()["tool"]["uv"]["environments"]]
    assert len(environments) == len(PLATFORMS)
    for platform in PLATFORMS:
        assert sum(m.evaluate(marker_environment("3.11.7", platform)) for m in environments) == 1


def check_python(tmp_path: Path, version: tuple[int, int, int]) -> subprocess.CompletedProcess:
    """The Makefile's version check, run by this interpreter posing as `version`."""
    makefile = (REPO / "Makefile").read_text()
    check = re.search(r"^define CHECK_PYTHON\n(.*?)^endef$", makefile, re.S | re.M).group(1)
    supported = re.search(r"^SUPPORTED := (.*)$", makefile, re.M).group(1)
    script = tmp_path / "check.py"
    script.write_text(check.replace("$(PYTHON)", "python3").replace("$(SUPPORTED)", supported))
    pose = f"import sys; sys.version_info = {(*version, 'final', 0)!r}; exec(open(sys.argv[1]).read())"
    return subprocess.run([sys.executable, "-c", pose, str(script)], capture_output=True, text=True)


@pytest.mark.parametrize("version", [(3, 10, 0), (3, 11, 7), (3, 12, 1), (3, 13, 0)])
def test_makefile_accepts_a_supported_python(tmp_path, version):
    accepted = check_python(tmp_path, version)
    assert accepted.returncode == 0, accepted.stderr


@pytest.mark.parametrize("version", [(3, 9, 18), (3, 14, 0)])
def test_makefile_refuses_another_python_in_one_line_before_installing(tmp_path, version):
    refused = check_python(tmp_path, version)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: python3 is CPython ")
    assert "this project supports CPython 3.10-3.13 (" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    makefile = (REPO / "Makefile").read_text()
    setup = makefile[makefile.index("$(STAMP): requirements.lock") :]
    assert setup.index('$(PYTHON) -c "$$CHECK_PYTHON"') < setup.index("$(PYTHON) -m venv")


def test_makefile_installs_the_lock_and_nothing_else():
    makefile = (REPO / "Makefile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in makefile
    assert "pip install --no-deps --no-build-isolation -e ." in makefile
    assert "--extra dev --extra demo --extra ssh --group build" in makefile  # the extras LOCKED_EXTRAS checks


def test_build_group_is_the_build_requirements():
    project = pyproject()
    assert project["dependency-groups"]["build"] == project["build-system"]["requires"]


def test_every_extra_is_either_locked_or_named_as_unlocked():
    extras = pyproject()["project"]["optional-dependencies"]
    assert sorted(extras) == sorted(LOCKED_EXTRAS + UNLOCKED_EXTRAS)
