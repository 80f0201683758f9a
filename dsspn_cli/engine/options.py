"""The inference options ``dsspn predict``, ``evaluate`` and ``export`` share, checked in one
place before any work, each a one-line error."""

from __future__ import annotations

from dsspn_cli.engine.config import MIN_TILE
from dsspn_cli.errors import UserError


def check_options(*, tile: int | None = None, level: int | None = None,
                  device: str | None = None, precision: str | None = None):
    """``--tile`` at least ``MIN_TILE`` pixels, ``--level`` a depth of 0 or more, ``--device``
    one dsspn runs on and ``--precision`` one that device computes in; an option left None
    is not checked. Returns the device (a ``torch.device``) when ``device`` or ``precision``
    is given (``auto`` without ``device``), else None."""
    if tile is not None and tile < MIN_TILE:
        raise UserError(f"--tile {tile}: tiles must be at least {MIN_TILE} pixels")
    if level is not None and level < 0:
        raise UserError(f"--level {level}: give a depth of 0 or more (0 = the root)")
    if device is None and precision is None:
        return None
    from dsspn_cli.engine.world import resolve_device, resolve_precision

    chosen = resolve_device(device or "auto")
    if precision is not None:
        resolve_precision(precision, chosen)
    return chosen


__all__ = ["check_options"]
