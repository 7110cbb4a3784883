"""Device selection: CAPTIONING_DEVICE, and a GPU that torch cannot use stopping with one line.

A stand-in `nvidia-smi` (a shell script first on PATH) plays the GPU, and torch.cuda.is_available is replaced,
so the outcome is the same on a CPU machine and on a GPU machine. The stage process runs with
CUDA_VISIBLE_DEVICES="" for the same reason (torch sees no GPU there either). The rest of the suite leaves
CAPTIONING_DEVICE alone: on a GPU that torch can use the stages run on it, as a user's run does; on a machine whose
GPU torch cannot use they stop with the error, as a user's run does (`CAPTIONING_DEVICE=cpu pytest` runs them
on the CPU there).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from repo_params import repo_document
from tiny_repo import stage_command

from captioning.commands import caption
from captioning.device import DEVICE_SWITCH, NvidiaGpus, nvidia_gpus, select_device, unusable_gpu_message
from captioning.errors import CaptioningError
from captioning.train import distributed

REPO = Path(__file__).resolve().parents[1]
H100 = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5b1c0e4a-2f7d-4c1e-9a6b-3d8e0f1a2b3c)"
FIX = "run on the CPU on purpose with CAPTIONING_DEVICE=cpu"


def write_nvidia_smi(folder: Path, listing: str = H100, driver: str = "535.104.05", status: int = 0) -> Path:
    """An `nvidia-smi` that answers -L with `listing` and the driver query with `driver`, exiting with `status`."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(
        "#!/bin/sh\n"
        f'case "$*" in\n  -L) printf "%s\\n" "{listing}" ;;\n  *driver_version*) echo "{driver}" ;;\nesac\n'
        f"exit {status}\n"
    )
    script.chmod(0o755)
    return folder


@pytest.fixture
def no_usable_gpu(monkeypatch):
    """torch sees no GPU (whatever this machine has); its CUDA build is 13.0, as the lock's; no CAPTIONING_DEVICE."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.delenv(DEVICE_SWITCH, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def gpu_listed(tmp_path: Path, monkeypatch, no_usable_gpu) -> Callable:
    """Put a stand-in nvidia-smi first on PATH (the H100 with driver 535 unless told otherwise)."""

    def put(**answers) -> None:
        folder = write_nvidia_smi(tmp_path / "bin", **answers)
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    put()
    return put


def h100_message(driver: str, rest: str) -> str:
    return (
        f"nvidia-smi lists a GPU (NVIDIA H100 80GB HBM3, driver {driver}) but torch {torch.__version__} cannot use "
        f"it: {rest}"
    )


def test_a_gpu_torch_cannot_use_is_one_line_naming_the_driver_it_needs(gpu_listed):
    with pytest.raises(CaptioningError) as raised:
        select_device()
    assert str(raised.value) == h100_message(
        "535.104.05",
        "it is built for CUDA 13.0, which needs an NVIDIA driver >= 580.65.06; update the driver, or install a "
        f"torch built for CUDA 12, or {FIX}",
    )


def test_the_cuda_a_driver_runs_is_named(gpu_listed, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    gpu_listed(driver="470.256.02")
    with pytest.raises(CaptioningError) as raised:
        select_device()
    assert str(raised.value) == h100_message(
        "470.256.02",
        "it is built for CUDA 12.8, which needs an NVIDIA driver >= 525.60.13; update the driver, or install a "
        f"torch built for CUDA 11, or {FIX}",
    )


def test_a_cpu_build_of_torch_says_so(gpu_listed, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(CaptioningError) as raised:
        select_device()
    assert str(raised.value) == h100_message(
        "535.104.05", f"this torch is a CPU-only build; install a CUDA build of torch, or {FIX}"
    )


def test_a_recent_driver_names_torchs_own_reason_and_hidden_devices(gpu_listed, monkeypatch):
    def unavailable() -> bool:
        warnings.warn(
            "CUDA initialization: CUDA unknown error (Triggered internally at /c10/cuda/x.cpp:109.)", stacklevel=2
        )
        return False

    monkeypatch.setattr(torch.cuda, "is_available", unavailable)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    gpu_listed(driver="580.82.07")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's warning is in the line, not printed beside it
        with pytest.raises(CaptioningError) as raised:
            select_device()
    assert str(raised.value) == h100_message(
        "580.82.07",
        "it is built for CUDA 13.0, which needs an NVIDIA driver >= 580.65.06; CUDA_VISIBLE_DEVICES='' may hide "
        f"it; torch says: CUDA initialization: CUDA unknown error; fix that, or {FIX}",
    )


def test_several_gpus_and_an_unknown_driver():
    gpus = NvidiaGpus(("NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-40GB"), None)
    assert unusable_gpu_message(gpus).startswith(
        "nvidia-smi lists 2 GPUs (NVIDIA A100-SXM4-40GB, driver version unknown) but torch"
    )


def test_the_cpu_on_purpose(gpu_listed, monkeypatch):
    monkeypatch.setenv(DEVICE_SWITCH, "cpu")
    assert select_device() == torch.device("cpu")


@pytest.mark.parametrize(
    "answers",
    [{"listing": "", "status": 0}, {"listing": "NVIDIA-SMI has failed: no driver", "status": 9}],
    ids=["lists-nothing", "fails"],
)
def test_an_nvidia_smi_without_a_gpu_is_a_cpu_machine(gpu_listed, answers: dict):
    gpu_listed(**answers)
    assert nvidia_gpus() is None
    assert select_device() == torch.device("cpu")


def test_no_nvidia_smi_is_a_cpu_machine(tmp_path: Path, monkeypatch, no_usable_gpu):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert select_device() == torch.device("cpu")


def test_cuda_asked_for_without_a_gpu(tmp_path: Path, monkeypatch, no_usable_gpu):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(DEVICE_SWITCH, "cuda")
    with pytest.raises(CaptioningError, match=r"^CAPTIONING_DEVICE=cuda but this machine has no GPU that torch can"):
        select_device()


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "cpu,cuda"])
def test_a_bad_value_names_the_variable_and_the_choices(monkeypatch, value: str):
    monkeypatch.setenv(DEVICE_SWITCH, value)
    with pytest.raises(CaptioningError) as raised:
        select_device()
    assert str(raised.value) == (
        f"CAPTIONING_DEVICE={value!r} is not a device: use auto (the default: the GPU when torch can use one, else "
        "the CPU), cpu, cuda or cuda:N (the GPU of index N)"
    )


@pytest.mark.parametrize(
    ("value", "device"), [(None, "cuda"), ("", "cuda"), ("auto", "cuda"), ("CUDA", "cuda"), ("cuda:1", "cuda:1")]
)
def test_a_gpu_torch_can_use(monkeypatch, value: str | None, device: str):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    if value is None:
        monkeypatch.delenv(DEVICE_SWITCH, raising=False)
    else:
        monkeypatch.setenv(DEVICE_SWITCH, value)
    assert select_device() == torch.device(device)


def test_a_gpu_index_torch_does_not_see(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv(DEVICE_SWITCH, "cuda:1")
    with pytest.raises(CaptioningError, match=r"^CAPTIONING_DEVICE=cuda:1 but torch sees 1 GPU \(cuda:0 to cuda:0\)"):
        select_device()


def test_the_caption_command_stops_with_the_line(gpu_listed, tmp_path: Path, capsys):
    """Before the model is read: the device is chosen first."""
    assert caption.main([str(tmp_path / "photo.jpg"), "--model", str(tmp_path / "model.pt")]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("error: " + h100_message("535.104.05", "it is built for CUDA 13.0")) and line.endswith(FIX)


def test_torchrun_is_not_started_for_a_gpu_torch_cannot_use(gpu_listed, monkeypatch):
    """The check runs once, before nproc_per_node processes would each stop with it."""
    monkeypatch.setattr(os, "execv", lambda *args: pytest.fail("torchrun started"))
    with pytest.raises(CaptioningError, match="^nvidia-smi lists a GPU"):
        distributed.relaunch_with_torchrun(None, "stages.train", [])


def features_folder(folder: Path) -> Path:
    """Two 64 x 64 images and their table, and params.yaml, for `python -m stages.features` run by hand."""
    (folder / "data/images").mkdir(parents=True)
    images = []
    for name in ("a.png", "b.png"):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "PNG")
        (folder / "data/images" / name).write_bytes(buffer.getvalue())
        images.append({"image": name, "split": "train", "captions": ["a red square"]})
    document = {"dataset": "scenes", "image_root": "images", "images": images}
    (folder / "data/dataset.json").write_text(json.dumps(document))
    features = {"image_size": 64, "batch_size": 2, "num_workers": 0, "precision": "fp32"}
    (folder / "params.yaml").write_text(yaml.safe_dump(repo_document({"features": features})))
    return folder


def features_stage(tmp_path: Path, **switch: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m stages.features` as dvc.yaml runs it, the stand-in nvidia-smi first on PATH, torch seeing no GPU."""
    folder = features_folder(tmp_path / "project")
    env = dict(os.environ, PYTHONPATH=str(REPO), TQDM_DISABLE="1", CUDA_VISIBLE_DEVICES="", **switch)
    env["PATH"] = f"{write_nvidia_smi(tmp_path / 'bin')}{os.pathsep}{env['PATH']}"
    if not switch:
        env.pop(DEVICE_SWITCH, None)
    command = stage_command("features")
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300), folder


def test_a_stage_stops_with_one_line(tmp_path: Path):
    stopped, folder = features_stage(tmp_path)
    assert stopped.returncode == 1, stopped.stderr
    [line] = stopped.stderr.splitlines()
    assert line.startswith(
        f"error: nvidia-smi lists a GPU (NVIDIA H100 80GB HBM3, driver 535.104.05) but torch {torch.__version__} "
        "cannot use it: "
    )
    if torch.version.cuda is not None and torch.version.cuda.startswith("13."):  # the lock's torch
        assert "it is built for CUDA 13.0, which needs an NVIDIA driver >= 580.65.06; update the driver" in line
    assert line.endswith(FIX)
    assert not (folder / "data/features.h5").exists()


@pytest.mark.slow
def test_a_stage_runs_on_the_cpu_on_purpose(tmp_path: Path):
    ran, folder = features_stage(tmp_path, **{DEVICE_SWITCH: "cpu"})
    assert ran.returncode == 0, ran.stderr
    assert "on cpu" in ran.stderr and (folder / "data/features.h5").is_file()
