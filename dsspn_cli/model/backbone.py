"""The backbone: a dilated ResNet whose parameter and buffer names are torchvision's.

DSSPN (CVPR 2018) builds its head on a ResNet-101 with the last two stages dilated (output
stride 8, DeepLab style) and, starting from ImageNet weights, "fixes the moving means and
variations in batch normalization". This module writes that network out in one place, without
torchvision, so that torchvision's ImageNet checkpoint files (``resnet18-*.pth``,
``resnet50-*.pth``, ``resnet101-*.pth``: plain state dicts) load unchanged:

- ``BasicBlock`` (ResNet-18/34) and ``Bottleneck`` (ResNet-50/101, stride on the 3x3 conv as
  torchvision's "v1.5").
- ``ResNet(block, layers, output_stride, norm)``: stem conv1 7x7/2, bn1, relu, maxpool 3x3/2,
  then layer1-4. Output stride 8 dilates layer3 (2) and layer4 (4) instead of striding them;
  16 dilates layer4 (2) only; 32 is the plain classifier backbone. The first block of a dilated
  stage keeps the previous dilation on its 3x3 conv, as torchvision's
  ``replace_stride_with_dilation``. No avgpool/fc: the segmentation head replaces them.
- ``FrozenBatchNorm2d``: batch norm with statistics and affine held as buffers
  (``norm="frozen"``, used when starting from pretrained weights); ``norm="batch"`` uses
  ``nn.BatchNorm2d`` for training from scratch.
- ``build_backbone(name, output_stride, pretrained)`` and ``load_backbone_weights(model,
  path)``, which loads safely (``weights_only``) and explains any mismatch in one line.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from dsspn_cli.errors import UserError, os_problem
from dsspn_cli.model.config import BACKBONES, OUTPUT_STRIDES, backbone_norm

__all__ = [
    "BACKBONES",
    "BasicBlock",
    "Bottleneck",
    "FrozenBatchNorm2d",
    "ResNet",
    "build_backbone",
    "load_backbone_weights",
    "resnet18",
    "resnet50",
    "resnet101",
]

NORMS = ("batch", "frozen")


# ----------------------------------------------------------------------------------------------
# Normalisation


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine: ``weight``, ``bias``, ``running_mean`` and
    ``running_var`` are buffers, so nothing here trains and ``train()`` changes nothing.

    State-dict compatible with ``nn.BatchNorm2d`` (as ``torchvision.ops.FrozenBatchNorm2d``):
    ``num_batches_tracked`` in a checkpoint is accepted and dropped.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        # The affine is folded in float32 and applied in the activation's dtype: under
        # autocast a float32 scale would promote every activation back to float32.
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype).reshape(1, -1, 1, 1) + \
            shift.to(x.dtype).reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _norm_layer(norm: str) -> Callable[[int], nn.Module]:
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "frozen":
        return FrozenBatchNorm2d
    raise UserError(f"unknown norm {norm!r}; use one of: {', '.join(NORMS)}")


# ----------------------------------------------------------------------------------------------
# Blocks


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution keeping the size (at stride 1) for any dilation."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34). Unlike torchvision's, it allows dilation."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 - 3x3 - 1x1 (ResNet-50/101), the stride on the 3x3 conv (torchvision's v1.5)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilation: int = 1,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = norm_layer(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# ----------------------------------------------------------------------------------------------
# The network


class ResNet(nn.Module):
    """A ResNet trunk (no avgpool/fc); ``forward(x)`` returns the layer4 feature map.

    ``output_stride`` 8 or 16 replaces the strides of layer3+4 or layer4 by dilation, so the
    map is 1/8 or 1/16 of the input (rounded up, as the strided convs and the maxpool do).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int] | tuple,
                 output_stride: int = 8, norm: str = "batch", arch: str | None = None):
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise UserError(f"output stride {output_stride} is not supported; use one of: "
                            f"{', '.join(map(str, OUTPUT_STRIDES))}")
        self.arch = arch or f"resnet({block.__name__}, {list(layers)})"
        self.output_stride = output_stride
        self.norm = norm
        self._norm_layer = _norm_layer(norm)
        dilate = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}
        dilate3, dilate4 = dilate[output_stride][1:]

        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = self._norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=dilate3)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=dilate4)
        del self._norm_layer

        #: Channels of each stage's output; ``out_channels`` is layer4's.
        self.feature_channels = {"layer1": 64 * block.expansion, "layer2": 128 * block.expansion,
                                 "layer3": 256 * block.expansion, "layer4": 512 * block.expansion}
        self.out_channels = self.feature_channels["layer4"]
        self.reset_parameters()

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False) -> nn.Sequential:
        norm_layer = self._norm_layer
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       norm_layer(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation, norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, dilation=self.dilation,
                                norm_layer=norm_layer))
        return nn.Sequential(*layers)

    def reset_parameters(self) -> None:
        """torchvision's initialisation: Kaiming normal (fan_out, relu) convs, BN 1 and 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, FrozenBatchNorm2d):
                m.weight.fill_(1)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Every stage's output: {'layer1': ..., 'layer2': ..., 'layer3': ..., 'layer4': ...}."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            feats[name] = x
        return feats

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def extra_repr(self) -> str:
        return f"arch={self.arch}, output_stride={self.output_stride}, norm={self.norm}"


_ARCHS: dict[str, tuple[type, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def _resnet(name: str, output_stride: int = 8, norm: str = "batch") -> ResNet:
    block, layers = _ARCHS[name]
    return ResNet(block, layers, output_stride=output_stride, norm=norm, arch=name)


def resnet18(output_stride: int = 8, norm: str = "batch") -> ResNet:
    return _resnet("resnet18", output_stride, norm)


def resnet50(output_stride: int = 8, norm: str = "batch") -> ResNet:
    return _resnet("resnet50", output_stride, norm)


def resnet101(output_stride: int = 8, norm: str = "batch") -> ResNet:
    return _resnet("resnet101", output_stride, norm)


def build_backbone(name: str, output_stride: int = 8, pretrained: str | Path | None = None,
                   norm: str | None = None) -> ResNet:
    """The named dilated ResNet. With ``pretrained`` (a torchvision checkpoint file) its batch
    norm is frozen (unless ``norm`` says otherwise) and the weights are loaded."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; use one of: {', '.join(BACKBONES)}")
    if norm is None:
        norm = backbone_norm(pretrained)
    model = _resnet(name, output_stride, norm)
    if pretrained is not None:
        load_backbone_weights(model, pretrained)
    return model


# ----------------------------------------------------------------------------------------------
# Loading checkpoints


def _read_checkpoint(path: Path) -> object:
    if not path.exists():
        raise UserError(f"{path}: no such file; pass the path of a torchvision ImageNet "
                        f"checkpoint (e.g. resnet101-63fe2227.pth)")
    if not path.is_file():
        raise UserError(f"{path}: not a file; pass the path of a checkpoint file")
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {os_problem(exc)}") from None
    # torch.save writes a zip archive (PK\x03\x04); the legacy format is a pickle (\x80 PROTO).
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise UserError(f"{path}: not a PyTorch checkpoint (it is "
                        f"{'empty' if not head else 'neither a torch.save zip nor a pickle'}); "
                        f"pass a torchvision .pth file")
    try:
        # weights_only: tensors and plain containers only; never runs code from the file.
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = str(exc).strip().splitlines()
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            raise UserError(f"{path}: refused to load: it holds Python objects other than "
                            f"tensors, which could run code; re-save just the weights with "
                            f"torch.save(model.state_dict(), path)") from None
        raise UserError(f"{path}: not a readable PyTorch checkpoint "
                        f"({why[0] if why else 'unpickling failed'}); pass a torchvision "
                        f".pth file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: damaged or not a PyTorch checkpoint ({why}); download it "
                        f"again or pass a torchvision .pth file") from None


def _state_dict_of(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise UserError(f"{path}: holds a {type(obj).__name__}, not a state dict; save the "
                        f"weights with torch.save(model.state_dict(), path)")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad or not obj:
        what = "is empty" if not obj else f"has non-tensor entries ({', '.join(map(str, bad[:3]))})"
        raise UserError(f"{path}: not a state dict (it {what}); save the weights with "
                        f"torch.save(model.state_dict(), path)")
    sd = dict(obj)
    # nn.DataParallel / DistributedDataParallel checkpoints prefix every key with 'module.'.
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def guess_architecture(state_dict: Mapping[str, Tensor]) -> str | None:
    """Which torchvision ResNet a state dict's keys and shapes look like, or None."""
    blocks = []
    for i in range(1, 5):
        ids = {int(k.split(".")[1]) for k in state_dict
               if k.startswith(f"layer{i}.") and k.split(".")[1].isdigit()}
        if not ids:
            return None
        blocks.append(max(ids) + 1)
    bottleneck = "layer1.0.conv3.weight" in state_dict
    for name, (block, layers) in _ARCHS.items():
        if (block is Bottleneck) == bottleneck and tuple(blocks) == layers:
            conv2 = state_dict.get("layer1.0.conv2.weight")
            if bottleneck and conv2 is not None and tuple(conv2.shape) != (64, 64, 3, 3):
                # Same layout, other widths or groups: a wide ResNet or a ResNeXt.
                variant = "resnext" if conv2.shape[1] != conv2.shape[0] else "wide_resnet"
                return f"{variant}{name[len('resnet'):]}"
            return name
    return None


def _backbone_prefix(state_dict: Mapping[str, Tensor]) -> str | None:
    """The prefix of a ResNet nested in a bigger model's state dict ('backbone.'), or None."""
    if "conv1.weight" in state_dict:
        return None
    for k in state_dict:
        if k.endswith(".conv1.weight"):
            prefix = k[: -len("conv1.weight")]
            if prefix + "layer1.0.conv1.weight" in state_dict:
                return prefix
    return None


def _first(keys, n: int = 3) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load_backbone_weights(model: ResNet, path: str | Path) -> str:
    """Load a torchvision ResNet checkpoint (state dict, or a dict with 'state_dict'/'model')
    into ``model``: ``fc.*`` is dropped, everything else must match exactly. Any problem is a
    one-line ``UserError``. Returns a summary, e.g. ``'loaded 265 tensors from x.pth'``."""
    path = Path(path)
    sd = _state_dict_of(_read_checkpoint(path), path)
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = model.state_dict()
    # Old torchvision files predate num_batches_tracked; FrozenBatchNorm2d has none.
    sd = {k: v for k, v in sd.items() if not (k.endswith("num_batches_tracked") and k not in own)}
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.zeros_like(v)

    arch = getattr(model, "arch", "this backbone")
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        guess = guess_architecture(sd)
        if guess in BACKBONES and guess != arch:
            fix = f"looks like {guess} weights; use --backbone {guess}"
        elif guess is not None and guess != arch:
            fix = (f"looks like {guess} weights, which dsspn does not build; pass "
                   f"torchvision {arch} weights")
        else:
            prefix = _backbone_prefix(sd)
            fix = (f"its keys carry the prefix {prefix!r}; strip it and re-save" if prefix
                   else f"pass torchvision {arch} weights")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_first(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
        raise UserError(f"{path}: does not fit {arch}: {'; '.join(parts)}; {fix}")

    wrong = [k for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        guess = guess_architecture(sd)
        fix = (f"looks like {guess} weights; use --backbone {guess}" if guess in BACKBONES
               and guess != arch else f"pass torchvision {arch} weights")
        raise UserError(f"{path}: {len(wrong)} tensor(s) with the wrong shape for {arch} "
                        f"({k}: {tuple(sd[k].shape)} in the file, {tuple(own[k].shape)} "
                        f"expected); {fix}")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{path}: holds NaN or infinite values ({_first(bad)}); the file is "
                        f"damaged, download it again")

    model.load_state_dict(sd, strict=True)
    n = sum(1 for k in sd if not k.endswith("num_batches_tracked"))
    return f"loaded {n} tensors from {path.name} into {arch}"
