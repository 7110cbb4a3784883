"""captioning/environment.py: the record of what produced a result."""

from __future__ import annotations

import json
import platform
from importlib import metadata

import torch

from captioning.environment import PACKAGES, cpu_model, describe_environment


def test_describes_this_interpreter_its_packages_and_the_precision():
    described = describe_environment(torch.device("cpu"), "bf16")
    assert described["python"] == platform.python_version()
    assert described["torch"] == metadata.version("torch") and torch.__version__.startswith(described["torch"])
    assert all(described[package] == metadata.version(package) for package in PACKAGES)
    assert described["gpu"] == "none" and described["precision"] == "bf16"
    assert described["cpu"] == cpu_model() and described["cpu"]
    assert json.loads(json.dumps(described)) == described  # plain strings: a metrics file and a weights_only load
