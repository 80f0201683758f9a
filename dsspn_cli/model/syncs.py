"""Waits of the host on the device: the head's one way to read a device tensor on the host,
and the counter that sees every such wait, on the CPU as on a GPU.

A GPU runs ahead of the Python code that queues its work until the host needs a value the
device computes: a size (``nonzero``), a scalar (``item``, ``bool``, ``int``:
``aten._local_scalar_dense``) or a copy to the host. Each such wait drains the device's
queue, so the head keeps them to about one per tree depth; ``HostSyncCounter`` counts them
(the benchmark's figure, and a test's bound).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def on_host(tensor: torch.Tensor) -> list:
    """``tensor`` as (nested) Python lists: one copy to the host, which the counter sees
    whatever the device (``Tensor.tolist`` alone reads a CPU tensor without an operator)."""
    return tensor.to("cpu", copy=True).tolist()


class HostSyncCounter(TorchDispatchMode):
    """Counts the operations that make the host wait for the device."""

    WAITS = (torch.ops.aten._local_scalar_dense, torch.ops.aten.nonzero)

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if func.overloadpacket in self.WAITS or (
                func.overloadpacket is torch.ops.aten._to_copy and device is not None
                and torch.device(device).type == "cpu"):
            self.count += 1
        return func(*args, **kwargs)


__all__ = ["HostSyncCounter", "on_host"]
