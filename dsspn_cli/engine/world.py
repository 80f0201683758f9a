"""Where a job runs: its device, and, under ``torchrun``, its place among the processes.

``setup_world`` gives a single-process World, or joins the process group torchrun describes
(gloo on CPU, NCCL on GPU, each rank on the GPU of its local rank). The collectives every rank
calls at the same moment live here too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

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


def setup_world(device: str = "auto") -> World:
    """Single process, or the process group torchrun describes."""
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
                                store=store, rank=rank, world_size=size)
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
    return bool(flags[0].item()), int(flags[1].item())


def ranks_in_sync(model: torch.nn.Module) -> bool:
    """Whether every rank holds bit-identical weights (DDP must keep them so, also for the
    neurons some ranks did not use)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
    positions = torch.arange(flat.numel(), dtype=flat.dtype, device=flat.device)
    digest = torch.stack([flat.sum(), (flat * flat).sum(), (flat * positions).sum()])
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


__all__ = ["World", "resolve_device", "setup_world", "teardown_world", "agree",
           "ranks_in_sync"]
