"""What produced a result: the versions of the packages that compute it, the processor and the precision.

Floats differ slightly between processors and library versions (a different CPU gave test BLEU-4 0.794
where the committed run has 0.788), so every model file and every evaluation records this next to its
numbers: `metrics/environment.json` shows it in `dvc exp show` and `dvc metrics diff`.
"""

from __future__ import annotations

import platform
from importlib import metadata

import torch

# The packages whose versions change the numbers (features, training, decoding, scoring, the pipeline).
PACKAGES = ("torch", "torchvision", "numpy", "h5py", "gensim", "pycocoevalcap", "dvc")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe_environment(device: torch.device, precision: str) -> dict[str, str]:
    """Python and package versions, the CPU, the GPU ("none" on a CPU run) and the precision computed in."""
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    return {
        "python": platform.python_version(),
        **{package: _version(package) for package in PACKAGES},
        "cpu": cpu_model(),
        "gpu": gpu,
        "precision": precision,
    }
