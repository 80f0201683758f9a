"""Training and evaluation transforms: random rescale, crop (padding with ignore), flip and
ImageNet normalisation, as in the paper (section 4.1).

Every random choice comes from a ``torch.Generator`` the caller seeds per sample, so a sample
gets the same augmentation whatever the number of loader workers or their order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dsspn_cli.hierarchy.tables import IGNORE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensors(image: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """HxWx3 uint8 + HxW int -> 3xHxW float in [0, 1] + HxW int64."""
    image, target = (np.array(a) if not a.flags.writeable else np.ascontiguousarray(a)
                     for a in (image, target))
    image_t = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
    return image_t, torch.from_numpy(target).long()


def normalise(image: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - mean) / std


def subsample(target: torch.Tensor, stride: int) -> torch.Tensor:
    """Labels at 1/stride resolution, on the pixels the network's stride-s features sit on
    (0, s, 2s, ...): a 513 crop gives 65 rows, as ResNet's output stride 8 does."""
    if stride == 1:
        return target
    return target[..., ::stride, ::stride]


def resize(image: np.ndarray, target: np.ndarray, size: tuple[int, int]):
    """Image bilinear, concept map nearest, to (height, width)."""
    from PIL import Image

    height, width = size
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    target = np.asarray(Image.fromarray(target.astype(np.int32), mode="I").resize(
        (width, height), Image.NEAREST)).astype(np.int64)
    return image, target


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


@dataclass
class TrainTransform:
    crop: tuple[int, int] = (513, 513)
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    label_stride: int = 1

    def __call__(self, image: np.ndarray, target: np.ndarray, generator: torch.Generator):
        height, width = target.shape
        factor = _uniform(generator, *self.scale)
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        if size != (height, width):
            # Pillow resizes the same way whatever the thread count (torch's interpolate can
            # differ in the last bit between a worker and the main process).
            image, target = resize(image, target, size)
        image_t, target_t = to_tensors(image, target)
        image_t = normalise(image_t)
        # Pad to the crop size: the image with zeros (the mean colour after normalisation),
        # the target with ignore, so padding never counts in the loss.
        crop_h, crop_w = self.crop
        pad_h, pad_w = max(0, crop_h - size[0]), max(0, crop_w - size[1])
        if pad_h or pad_w:
            image_t = F.pad(image_t, (0, pad_w, 0, pad_h), value=0.0)
            target_t = F.pad(target_t, (0, pad_w, 0, pad_h), value=IGNORE)
        top = int(torch.randint(0, image_t.shape[1] - crop_h + 1, (), generator=generator))
        left = int(torch.randint(0, image_t.shape[2] - crop_w + 1, (), generator=generator))
        image_t = image_t[:, top:top + crop_h, left:left + crop_w]
        target_t = target_t[top:top + crop_h, left:left + crop_w]
        if self.flip and torch.rand((), generator=generator).item() < 0.5:
            image_t, target_t = image_t.flip(-1), target_t.flip(-1)
        return image_t.contiguous(), subsample(target_t, self.label_stride).contiguous()


@dataclass
class EvalTransform:
    """Full image, normalised; the full-resolution target (evaluation scores every pixel)."""

    def __call__(self, image: np.ndarray, target: np.ndarray, generator=None):
        image_t, target_t = to_tensors(image, target)
        return normalise(image_t), target_t
