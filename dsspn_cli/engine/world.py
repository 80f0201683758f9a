"""Where a job runs: its device, its number format, and, under ``torchrun``, its place among
the processes.

``setup_world`` gives a single-process World, or joins the process group torchrun describes
(gloo on CPU, NCCL on GPU, each rank on the GPU of its local rank), with an explicit timeout:
how long a rank waits in a collective for the others before the job stops. The collectives
every rank calls at the same moment live here too. ``resolve_precision`` turns ``fp32``,
``fp16``, ``bf16`` or ``auto`` into the dtype autocast runs in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from dsspn_cli.engine.config import PRECISIONS, TrainConfig
from dsspn_cli.errors import UserError


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0 writes the files and speaks for the job."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``: the devices
    dsspn runs on; any other (``meta``, ``mps``, ``xla``...) is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    works = "auto, cpu" + (f", cuda or cuda:0 to cuda:{count - 1}" if count else
                           " (no CUDA device here)")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"--device {name}: not a device; use {works}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: dsspn does not run on {device.type} devices; use "
                        f"{works}")
    if device.type == "cuda" and not count:
        raise UserError(f"--device {name}: no CUDA device is available here; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= count:
        raise UserError(f"--device {name}: this machine has {count} CUDA device"
                        f"{'s' if count != 1 else ''}; use {works}")
    if device.type == "cpu" and device.index not in (None, 0):
        raise UserError(f"--device {name}: there is one CPU device; use cpu")
    return device


DIST_TIMEOUT_MINUTES = TrainConfig.model_fields["dist_timeout"].default


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in, or None for plain fp32. ``auto``: bf16 on a GPU that
    has it, else fp16 on CUDA, fp32 on CPU. bf16 runs on any CPU (fast where it has bf16
    instructions); fp16 needs CUDA."""
    if name not in PRECISIONS:
        raise UserError(f"--precision {name}: use one of {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    bf16 = not cuda or torch.cuda.is_bf16_supported(including_emulation=False)
    if name == "auto":
        name = ("bf16" if bf16 else "fp16") if cuda else "fp32"
    if name == "fp32":
        return None
    if name == "fp16" and not cuda:
        raise UserError("--precision fp16: float16 autocast needs a CUDA device; use bf16 or "
                        "fp32 on CPU")
    if name == "bf16" and not bf16:
        raise UserError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no "
                        "bfloat16 arithmetic (it needs compute capability 8.0 or newer); use "
                        "fp16 or fp32")
    return torch.float16 if name == "fp16" else torch.bfloat16


def setup_world(device: str = "auto", timeout_minutes: float = DIST_TIMEOUT_MINUTES) -> World:
    """Single process, or the process group torchrun describes; ``timeout_minutes``: how long
    a collective waits for the other ranks before it fails."""
    chosen = resolve_device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(device=chosen)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":       # each rank takes the GPU of its local rank
        torch.cuda.set_device(local)
        chosen = torch.device("cuda", local)
    if not dist.is_initialized():
        from dsspn_cli.engine.faults import restart_count

        # torchrun keeps one key-value store across its restarts (--max-restarts): without a
        # prefix per attempt, a restarted rank can read a dead rank's address and fail to
        # connect, or wait on it.
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=size))
        store = dist.PrefixStore(f"dsspn-attempt-{restart_count()}", store)
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo",
                                store=store, rank=rank, world_size=size,
                                timeout=timedelta(minutes=timeout_minutes))
    return World(rank, size, local, chosen)


def teardown_world(world: World) -> None:
    if world.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def agree(loss: torch.Tensor, signum: int, world: World) -> tuple[bool, int]:
    """(whether any rank's loss is non-finite, a stop signal any rank received), the same on
    every rank: one small all-reduce a step, so that all ranks stop at the same step."""
    flags = torch.tensor([0.0 if torch.isfinite(loss.detach()) else 1.0, float(signum)],
                         device=loss.device)
    if world.distributed:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    non_finite, signum = flags.tolist()          # one wait on the device
    return bool(non_finite), int(signum)


def ranks_in_sync(model: torch.nn.Module) -> bool:
    """Whether every rank holds bit-identical weights and buffers (DDP must keep them so,
    also for the neurons some ranks did not use)."""
    import torch.distributed as dist

    tensors = list(model.parameters()) + list(model.buffers())
    flat = torch.cat([t.detach().flatten().double() for t in tensors])
    positions = torch.arange(flat.numel(), dtype=flat.dtype, device=flat.device)
    digest = torch.stack([flat.sum(), (flat * flat).sum(), (flat * positions).sum()])
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


__all__ = ["World", "resolve_device", "resolve_precision", "setup_world", "teardown_world",
           "agree", "ranks_in_sync", "DIST_TIMEOUT_MINUTES"]
