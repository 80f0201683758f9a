"""From feature cells to pixels: bilinear upsampling of h x w maps to H x W, written out so that
a whole map and a few chosen pixels are computed with the same arithmetic (the descent decides
at feature resolution and refines only some pixels; both must agree to the last bit).

Per axis, output pixel ``y`` reads the cells ``i0 = floor(src)`` and ``i1 = i0 + 1`` (clamped)
with weight ``src - i0``, where ``src = (y + 0.5) * h / H - 0.5`` (PyTorch's
``align_corners=False``: a cell's centre at pixel ``s*i + (s-1)/2``) or, with ``stride`` s,
``src = y / s`` (a cell at pixel ``s*i``, where the strided convolutions of a ResNet put it and
where training takes its labels).
"""

from __future__ import annotations

import torch


def _axis(cells: int, pixels: int, stride: int | None, device):
    position = torch.arange(pixels, device=device, dtype=torch.float32)
    if stride is None:
        source = ((position + 0.5) * (cells / pixels) - 0.5).clamp(min=0)
    else:
        source = position / stride
    source = source.clamp(max=cells - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=cells - 1)
    return low, high, source - low


def _lerp(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return a + weight * (b - a)


class FeatureGrid:
    def __init__(self, cells: tuple[int, int], size: tuple[int, int], stride: int | None = None,
                 device=None):
        self.cells, self.size, self.stride = tuple(cells), tuple(size), stride
        self.rows = _axis(cells[0], size[0], stride, device)
        self.cols = _axis(cells[1], size[1], stride, device)

    def upsample(self, maps: torch.Tensor) -> torch.Tensor:
        """(..., h, w) -> (..., H, W)."""
        i0, i1, wy = self.rows
        j0, j1, wx = self.cols
        wx, wy = wx.to(maps.dtype), wy.to(maps.dtype)
        across = _lerp(maps.index_select(-1, j0), maps.index_select(-1, j1), wx)
        return _lerp(across.index_select(-2, i0), across.index_select(-2, i1), wy[:, None])

    def at(self, maps: torch.Tensor, image: torch.Tensor, y: torch.Tensor, x: torch.Tensor):
        """The upsampled values of ``maps`` (B x J x h x w) at pixels (image, y, x): n x J."""
        i0, i1, wy = (t[y] for t in self.rows)
        j0, j1, wx = (t[x] for t in self.cols)
        wx, wy = wx.to(maps.dtype)[:, None], wy.to(maps.dtype)[:, None]
        top = _lerp(maps[image, :, i0, j0], maps[image, :, i0, j1], wx)
        bottom = _lerp(maps[image, :, i1, j0], maps[image, :, i1, j1], wx)
        return _lerp(top, bottom, wy)

    def agreed(self, cells: torch.Tensor, disagree: int = -1) -> torch.Tensor:
        """A cell map (B x h x w) read at the pixels: the value of the four cells a pixel
        interpolates between where they hold the same one, else ``disagree`` (B x H x W).
        Every pixel between the same four cells reads the same answer, so it is found on the
        cells and spread with one gather."""
        down = cells.index_select(-2, self._second(cells.shape[-2], self.rows))
        right = cells.index_select(-1, self._second(cells.shape[-1], self.cols))
        diagonal = down.index_select(-1, self._second(cells.shape[-1], self.cols))
        same = (cells == right) & (cells == down) & (down == diagonal)
        block = torch.where(same, cells, torch.full_like(cells, disagree))
        return block.index_select(-2, self.rows[0]).index_select(-1, self.cols[0])

    @staticmethod
    def _second(count: int, axis) -> torch.Tensor:
        """For each cell, the cell a pixel reads beside it when it reads it first (the next
        one, or itself at the edge)."""
        low, high, _ = axis
        second = torch.arange(count, device=low.device)
        second[low] = high
        return second


__all__ = ["FeatureGrid"]
