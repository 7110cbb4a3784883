"""Where and in which precision tensors are computed: CUDA when torch can use it, bf16 autocast where it pays.

CAPTIONING_DEVICE picks where every stage and command computes: `auto` (the default: the GPU when torch can use
one, else the CPU), `cpu`, `cuda` or `cuda:N`. It belongs to the machine, not to the experiment (it changes
where, not what), so it is an environment variable and not a param in params.yaml.

A GPU that torch cannot use is an error, not a silent CPU run: when `nvidia-smi -L` lists a GPU and
torch.cuda.is_available() is False, select_device stops with one line saying what this torch needs (the CUDA
version it was built for and the driver that requires), what was found, and how to run on the CPU on purpose.
Without nvidia-smi, or when it fails or lists no GPU, the machine has no GPU as far as we know: the CPU.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import warnings
from dataclasses import dataclass

import torch

from captioning.errors import CaptioningError

DEVICE_SWITCH = "CAPTIONING_DEVICE"  # auto (unset) | cpu | cuda | cuda:N
ON_PURPOSE = f"run on the CPU on purpose with {DEVICE_SWITCH}=cpu"
# The oldest Linux driver each CUDA major version runs on (minor version compatibility; NVIDIA's CUDA toolkit
# release notes): a torch built for CUDA 13.x needs the R580 driver or newer.
MINIMUM_DRIVER = {13: "580.65.06", 12: "525.60.13", 11: "450.80.02"}
NVIDIA_SMI_SECONDS = 10  # a hung driver must not hang the stage


@dataclass(frozen=True)
class NvidiaGpus:
    """What nvidia-smi says: the GPUs' names and the driver's version (None when it does not say)."""

    names: tuple[str, ...]
    driver: str | None


def requested_device() -> str:
    """CAPTIONING_DEVICE, checked: auto (also when unset or empty), cpu, cuda or cuda:N."""
    value = os.environ.get(DEVICE_SWITCH, "").strip().lower() or "auto"
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return value
    raise CaptioningError(
        f"{DEVICE_SWITCH}={os.environ[DEVICE_SWITCH]!r} is not a device: use auto (the default: the GPU when torch "
        "can use one, else the CPU), cpu, cuda or cuda:N (the GPU of index N)"
    )


def select_device() -> torch.device:
    """The device CAPTIONING_DEVICE asks for; with auto, the GPU when torch can use one, else the CPU. A GPU that
    nvidia-smi lists but torch cannot use stops with a CaptioningError (see the module's docstring)."""
    requested = requested_device()
    if requested == "cpu":
        return torch.device("cpu")
    with warnings.catch_warnings(record=True) as caught:  # torch's own warning becomes part of the one line
        warnings.simplefilter("always")
        usable = torch.cuda.is_available()
    if usable:
        for warning in caught:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return _cuda_device(requested)
    gpus = nvidia_gpus()
    if gpus is not None:
        raise CaptioningError(unusable_gpu_message(gpus, _first_line(caught)))
    if requested != "auto":
        raise CaptioningError(
            f"{DEVICE_SWITCH}={requested} but this machine has no GPU that torch can use "
            f"(torch.cuda.is_available() is False and nvidia-smi lists none): unset {DEVICE_SWITCH} or set it to cpu"
        )
    return torch.device("cpu")


def _cuda_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda")
    device, count = torch.device(requested), torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise CaptioningError(
            f"{DEVICE_SWITCH}={requested} but torch sees {count} GPU{'s' if count != 1 else ''} "
            f"(cuda:0 to cuda:{count - 1}): choose one of them, or cuda for the first"
        )
    return device


def nvidia_gpus() -> NvidiaGpus | None:
    """The GPUs `nvidia-smi -L` lists, with the driver's version; None without nvidia-smi, when it fails (no
    driver loaded) or when it lists no GPU."""
    program = shutil.which("nvidia-smi")
    if program is None:
        return None
    listing = _nvidia_smi(program, "-L") or ""
    # "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)"; MIG instances are indented lines below their GPU
    names = tuple(re.findall(r"^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?\s*$", listing, re.MULTILINE))
    if not names:
        return None
    answer = (_nvidia_smi(program, "--query-gpu=driver_version", "--format=csv,noheader") or "").split()
    driver = answer[0] if answer and re.fullmatch(r"\d+(\.\d+)*", answer[0]) else None
    return NvidiaGpus(names, driver)


def _nvidia_smi(program: str, *arguments: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        result = subprocess.run([program, *arguments], capture_output=True, text=True, timeout=NVIDIA_SMI_SECONDS)
        if result.returncode == 0:
            return result.stdout
    return None


def unusable_gpu_message(gpus: NvidiaGpus, torch_says: str | None = None) -> str:
    """One line: the GPU and driver found, what this torch needs, and the three ways on."""
    count = f"{len(gpus.names)} GPUs" if len(gpus.names) > 1 else "a GPU"
    driver = f"driver {gpus.driver}" if gpus.driver else "driver version unknown"
    found = f"nvidia-smi lists {count} ({gpus.names[0]}, {driver}) but torch {torch.__version__} cannot use it"
    cuda = torch.version.cuda
    if cuda is None:
        return f"{found}: this torch is a CPU-only build; install a CUDA build of torch, or {ON_PURPOSE}"
    needed = MINIMUM_DRIVER.get(int(cuda.split(".")[0]))
    needs = f"it is built for CUDA {cuda}" + (f", which needs an NVIDIA driver >= {needed}" if needed else "")
    if gpus.driver and needed and _version(gpus.driver) < _version(needed):
        runs = [major for major, oldest in MINIMUM_DRIVER.items() if _version(gpus.driver) >= _version(oldest)]
        other = f"install a torch built for CUDA {max(runs)}" if runs else "install a torch built for an older CUDA"
        return f"{found}: {needs}; update the driver, or {other}, or {ON_PURPOSE}"
    causes = []
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None:
        causes.append(f"CUDA_VISIBLE_DEVICES={hidden!r} may hide it")
    if torch_says:
        causes.append(f"torch says: {torch_says}")
    cause = "; ".join(causes) or "python -c 'import torch; torch.cuda.init()' says why"
    return f"{found}: {needs}; {cause}; fix that, or {ON_PURPOSE}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _first_line(caught: list[warnings.WarningMessage]) -> str | None:
    lines = [str(warning.message).strip().splitlines() for warning in caught]
    first = next((line[0] for line in lines if line), None)
    return None if first is None else " ".join(re.sub(r"\(Triggered internally at .*", "", first).split())


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' becomes bf16 on CPUs with native bf16 and on GPUs with native bf16 (Ampere and later), fp16 on older
    GPUs (T4, V100: there torch emulates bf16, slower than fp32), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    return "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; fp32 means no autocast at all."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
