"""captioning/environment.py: the record of what produced a result."""

from __future__ import annotations

import io
import json
import platform
import sys

import h5py
import numpy as np
import pytest
import torch
from packaging.version import Version

import captioning.environment
from captioning.environment import PACKAGES, cpu_model, describe_environment

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480C
flags\t\t: fpu vme

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480C
"""


def test_a_cpu_run_records_this_python_the_packages_the_precision_and_no_gpu():
    described = describe_environment(torch.device("cpu"), "bf16")
    assert list(described) == ["python", *PACKAGES, "cpu", "gpu", "precision"]
    assert described["python"] == "{}.{}.{}".format(*sys.version_info[:3])
    assert torch.__version__.startswith(described["torch"])  # without the local tag (+cpu, +cu121)
    assert described["numpy"] == np.__version__ and described["h5py"] == h5py.__version__
    assert all(Version(described[package]).release for package in PACKAGES)  # versions, none "not installed"
    assert (described["gpu"], described["precision"]) == ("none", "bf16")
    assert all(isinstance(value, str) and value for value in described.values())
    assert json.loads(json.dumps(described)) == described  # plain strings: a metrics file and a weights_only load


def test_a_cuda_run_records_the_gpu_by_name(monkeypatch):
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: asked.append(device) or "NVIDIA H100 80GB HBM3")
    described = describe_environment(torch.device("cuda", 1), "fp16")
    assert (described["gpu"], described["precision"]) == ("NVIDIA H100 80GB HBM3", "fp16")
    assert asked == [torch.device("cuda", 1)]


def test_a_package_that_is_not_installed_is_recorded_as_such(monkeypatch):
    monkeypatch.setattr(captioning.environment, "PACKAGES", ("torch", "no-such-package-for-captioning"))
    described = describe_environment(torch.device("cpu"), "fp32")
    assert described["no-such-package-for-captioning"] == "not installed"
    assert "numpy" not in described and Version(described["torch"]).release


@pytest.fixture
def cpuinfo(monkeypatch):
    """Set what cpu_model reads as /proc/cpuinfo: a text, or None where there is no such file (macOS)."""

    def set_to(text: str | None) -> None:
        def fake_open(path):
            assert path == "/proc/cpuinfo"
            if text is None:
                raise FileNotFoundError(path)
            return io.StringIO(text)

        monkeypatch.setattr(captioning.environment, "open", fake_open, raising=False)

    return set_to


def test_the_cpu_is_the_model_name_from_cpuinfo(cpuinfo):
    cpuinfo(CPUINFO)
    assert cpu_model() == "Intel(R) Xeon(R) Platinum 8480C"
    assert describe_environment(torch.device("cpu"), "fp32")["cpu"] == "Intel(R) Xeon(R) Platinum 8480C"


@pytest.mark.parametrize(
    ("text", "processor", "machine", "expected"),
    [
        pytest.param(None, "arm", "arm64", "arm", id="no-cpuinfo"),
        pytest.param(None, "", "arm64", "arm64", id="no-cpuinfo-no-processor"),
        pytest.param(None, "", "", "unknown CPU", id="nothing-known"),
        pytest.param("processor\t: 0\nBogoMIPS\t: 50\n", "", "aarch64", "aarch64", id="cpuinfo-without-model-name"),
    ],
)
def test_without_a_model_name_the_cpu_is_what_platform_says(cpuinfo, monkeypatch, text, processor, machine, expected):
    """macOS has no /proc/cpuinfo; Linux on some ARM boards lists processors without a `model name` line."""
    cpuinfo(text)
    monkeypatch.setattr(platform, "processor", lambda: processor)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert cpu_model() == expected
