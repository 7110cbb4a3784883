"""Resuming an interrupted run: the state after every epoch, and its exact restoration.

The epoch loop (captioning/train/epochs.py) of cross-entropy and self-critical training saves after each
epoch the model, optimizer, scheduler, the numpy RNG, the CUDA RNGs (where CUDA is in use: dropout on
the GPU draws from them), the history and the best epoch so far, plus each kind of training's own
random state, under a `run_key` naming the configuration and inputs, so that a run continued from the
file equals an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from captioning.checkpoint import save_torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumeFile:
    """Where a run saves its state after every epoch, and the key (configuration and inputs) it is saved under."""

    path: Path
    run_key: str


@dataclass
class ResumableRun:
    """What a run needs to continue exactly, saved to `path` (None: not saved) under `run_key`."""

    path: Path | None
    run_key: str
    decoder: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    rng: np.random.Generator

    def save(self, history: list, best: dict, best_state: dict, **extra) -> None:
        """`extra`: what only this kind of run needs (its torch RNG state, hard attention's baseline)."""
        if self.path is None:
            return
        state = {
            "run_key": self.run_key,
            "model": self.decoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            **({"cuda_rng": torch.cuda.get_rng_state_all()} if torch.cuda.is_initialized() else {}),
            "history": [list(h) for h in history],
            "best": best,
            "best_state": best_state,
            **extra,
        }
        save_torch(self.path, state)  # a full disk: one line naming the file, not torch's "unexpected pos"

    def load(self) -> dict | None:
        """The saved state of an interrupted run with the same key, or None (starting afresh)."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # a file cut short by a crash is no reason to stop: start over
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            log.warning("ignoring unreadable training state %s (%s)", self.path, reason)
            return None
        if state.get("run_key") != self.run_key:
            log.info("ignoring training state %s: it belongs to another configuration or other inputs", self.path)
            return None
        return state

    def restore(self, saved: dict) -> tuple[list, dict, dict]:
        """Puts the saved weights, optimizer, scheduler and RNGs back; returns (history, best, best_state). A state
        saved without CUDA RNGs (on a CPU, or by an older version) leaves them as they are."""
        self.decoder.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.rng.bit_generator.state = json.loads(saved["numpy_rng"])
        cuda_rng = saved.get("cuda_rng")
        if cuda_rng is not None and torch.cuda.is_available():
            devices = torch.cuda.device_count()
            if len(cuda_rng) != devices:
                log.warning("the state has the CUDA RNGs of %d GPUs, this machine %d: the common ones restored",
                            len(cuda_rng), devices)  # fmt: skip
            torch.cuda.set_rng_state_all(cuda_rng[:devices])
        return [tuple(h) for h in saved["history"]], saved["best"], saved["best_state"]
