"""Several training processes (DistributedDataParallel under torchrun), the nanoGPT way: a few helpers.

The train stage relaunches itself under torchrun when train.nproc_per_node * train.nnodes > 1; torchrun
gives each process its RANK, LOCAL_RANK and WORLD_SIZE. Every rank draws the same length-bucketed
batches (same seed) and takes every WORLD_SIZE-th caption of each: train.batch_size is the global batch.
DDP sums the ranks' gradients, so a step equals a one-process step on the whole batch. Rank 0 validates,
logs and writes; the others receive its scores. Without torchrun every helper acts as a world of one.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import logging
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from captioning.device import select_device
from captioning.params import TrainParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    rank: int
    local_rank: int
    size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    return all(name in os.environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def torchrun_command(params: TrainParams, module: str, args: list[str], node_rank: int | None = None) -> list[str]:
    """`python -m torch.distributed.run ... -m module args` for this node (or for `node_rank`)."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={params.nproc_per_node}"]
    if params.nnodes == 1:
        command.append("--standalone")  # a free port on this machine: runs side by side never collide
    else:
        command += [
            f"--nnodes={params.nnodes}",
            f"--node_rank={params.node_rank if node_rank is None else node_rank}",
            f"--master_addr={params.master_addr}",
            f"--master_port={params.master_port}",
        ]
    return [*command, "-m", module, *args]


def relaunch_with_torchrun(params: TrainParams, module: str, args: list[str]) -> None:
    """Replace this process by torchrun running `python -m module args` in nproc_per_node processes."""
    select_device()  # a GPU that torch cannot use stops here, in one line, not in every process
    command = torchrun_command(params, module, args)
    log.info("%d processes on this node, %d in all: %s", params.nproc_per_node, params.world_size, " ".join(command))
    for other in range(params.nnodes):
        if other != params.node_rank:
            log.info("node %d must run: %s", other, " ".join(torchrun_command(params, module, args, other)))
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execv(sys.executable, command)


def setup() -> World:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs); a world of one without it."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return World(0, 0, 1, select_device())
    rank, local_rank, size = (int(os.environ[name]) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    die_with_parent()  # torchrun killed (kill -9 of the stage) -> no orphaned rank trains on
    if select_device().type == "cuda":  # each process on the GPU of its local rank
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=datetime.timedelta(minutes=30), device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)  # one log, rank 0's
    return World(rank, local_rank, size, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def wrap(decoder: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the decoder when there are several ranks, else the decoder itself."""
    if world_size() == 1:
        return decoder
    # Every trainable parameter takes part in every forward (soft attention and the global-context
    # baseline alike): no find_unused_parameters, whose search costs a graph traversal per step.
    return DistributedDataParallel(decoder, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def broadcast(value):
    """Rank 0's value (any picklable object) on every rank."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(value: float, device: torch.device) -> float:
    if world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item()


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent process dies, instead of running on as an orphan."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
