"""The model's settings, declared once: what the network is made of, with every value's type,
range and choices. The training config (``engine/config.py``) extends these; the command line,
YAML files, ``--set`` overrides and the ``config.yaml`` saved in each run all come from them,
and checkpoints rebuild their model from them.

Every value the paper text lost is a setting here, with the default these notes reconstruct
(see "Defaults the paper lost" in the README). No torch here: ``dsspn --help`` reads this.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

BACKBONES = ("resnet18", "resnet50", "resnet101")
OUTPUT_STRIDES = (8, 16, 32)
# The heads, one line each: name -> where its class is (``contract.Head`` says what a head
# owes). Imported only when a model is built: no torch here. The settings of the heads
# declared in this file are in ``HEAD_SETTINGS`` (below them); another head's are read from
# its class (``head_settings_class``).
HEADS = {
    "dsspn": "dsspn_cli.model.head:DSSPNHead",
    "flat": "dsspn_cli.model.flat:FlatHead",
}


def _not_a_flag(value):
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


def _finite(value):
    """Infinity and NaN (YAML's .inf, .nan, or '1e400'), said as such before the range."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):      # not a number: the type check says so
        return value
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return value


# Whole numbers and flags are strict (YAML's `iters: true` is a mistake, not 1); other numbers
# accept strings, because PyYAML reads `lr: 1e-3` as the string '1e-3', and are finite
# (infinity or NaN would pass a plain float and fail later, deep in the work).
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, BeforeValidator(_not_a_flag), BeforeValidator(_finite)]


class Settings(BaseModel):
    """Unknown keys are errors, assignments are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HeadSettings(Settings):
    """A head's settings: ``type`` names the head (its line in ``HEADS``); each head's own
    settings are a subclass of this, named by its class (``DSSPNHead.Settings``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal[tuple(HEADS)] = Field("dsspn", description="dsspn (the concept tree's "
                                        "semantic neurons) or flat (one softmax over the "
                                        "labelled concepts, DeepLabv2's ASPP: the baseline)",
                                        json_schema_extra={"flag": "--head"})


class DSSPNSettings(HeadSettings):
    """The DSSPN head (paper section 3)."""

    type: Literal["dsspn"] = "dsspn"
    hidden: PositiveInt = Field(48, description="c, the hidden channels of every neuron "
                                "(the paper: 48)")
    bottleneck: Optional[PositiveInt] = Field(None, description="width of each block's 1x1 "
                                              "convolution; none = 4c (DenseNet's rule)")
    transition_rates: tuple[PositiveInt, ...] = Field(
        (6, 12, 18), min_length=1, strict=False,
        description="atrous rates of the transition ASPP to the root features (the paper's)")
    transition_width: Optional[PositiveInt] = Field(None, description="channels of the root "
                                                    "features; none = c")
    predict_kernel: Literal[1, 3] = Field(1, description="kernel of each neuron's prediction "
                                          "convolution")
    readout: Literal["skip", "hidden"] = Field(
        "skip", description="what each neuron's prediction convolution reads: its hidden "
        "features and the backbone features (a skip connection; learns at least as fast as "
        "the flat head, see the README's ablation) or its hidden features only (the paper's)")
    norm: Literal["none", "batch", "group"] = Field("none", description="normalisation inside "
                                                    "the blocks (the paper's: none)")
    loss: Literal["bce", "softmax"] = Field("bce", description="per-child sigmoid BCE (the "
                                            "paper's) or a softmax over the children")
    storage: Literal["shared", "concat"] = Field(
        "shared", description="ancestor features stored once and the block recomputed in "
        "backward (memory linear in depth), or a copy per neuron")
    ancestors: Literal["all", "parent"] = Field(
        "all", description="each neuron reads the features of all its ancestors, root first "
        "(the paper's dense block) or only its parent's (the paper's ablation)")
    combine: Literal["concat", "sum"] = Field(
        "concat", description="ancestor features concatenated (the paper's) or summed (its "
        "ablation; needs transition_width = hidden)")
    structure: Literal["dynamic", "per_image", "fixed"] = Field(
        "dynamic", description="neurons on the paths of the labels present, batched across "
        "images (the paper's); the same one image at a time; or every neuron ('DSSPN fixed')")
    exclusive_negatives: Bool = Field(True, description="a pixel labelled with a concept that "
                                      "also has finer labels trains that concept's neuron "
                                      "with every child negative")

    @model_validator(mode="after")
    def _summable(self):
        if self.combine == "sum" and self.root_width != self.hidden:
            raise ValueError("combine: sum adds the root features to the neurons' hidden "
                             "features, so transition_width must equal hidden (or be none)")
        return self

    @property
    def bottleneck_width(self) -> int:
        return self.bottleneck or 4 * self.hidden

    @property
    def root_width(self) -> int:
        return self.transition_width or self.hidden


class FlatSettings(HeadSettings):
    """The flat baseline (DeepLabv2)."""

    type: Literal["flat"] = "flat"
    flat_rates: tuple[PositiveInt, ...] = Field(
        (6, 12, 18, 24), min_length=1, strict=False,
        description="atrous rates of the flat baseline's ASPP (DeepLabv2's)")


# The settings of each head of ``HEADS`` above, so that reading a config imports no head
# (and so no torch); each head's class names the same (``DSSPNHead.Settings``).
HEAD_SETTINGS: dict[str, type[HeadSettings]] = {
    "dsspn": DSSPNSettings,
    "flat": FlatSettings,
}


def head_class(name: str):
    """The head registered as ``name`` in ``HEADS`` (imported now: it needs torch)."""
    import importlib

    module, _, attribute = HEADS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def head_settings_class(name: str) -> type[HeadSettings]:
    """The settings of the head ``name``: from ``HEAD_SETTINGS``, without importing the head;
    a head registered elsewhere (one line in ``HEADS``) from its class."""
    settings = HEAD_SETTINGS.get(name)
    return settings if settings is not None else head_class(name).Settings


# Before each head had its own settings, one HeadConfig held those of both, and the configs
# and checkpoints saved then hold every one of these.
_ONE_FOR_BOTH = frozenset({
    "type", "hidden", "bottleneck", "transition_rates", "transition_width", "predict_kernel",
    "readout", "norm", "loss", "storage", "ancestors", "combine", "structure",
    "exclusive_negatives", "flat_rates"})


def head_settings(values: dict) -> HeadSettings:
    """``values`` (``type`` and settings) as the settings of the head ``type`` names.

    A setting of another head is left out where it changes nothing: in a config saved before
    each head had its own settings (it holds every setting of both), or where it holds that
    head's default; given otherwise, it is refused ('head.flat_rates: a setting of the flat
    head, not of the dsspn head'). A key no head has is refused with the chosen head's keys."""
    name = values.get("type", HeadSettings.model_fields["type"].default)
    if not isinstance(name, str) or name not in HEADS:
        return HeadSettings.model_validate(values)       # refused, naming the heads there are
    own = head_settings_class(name)
    saved_before = _ONE_FOR_BOTH <= values.keys()
    kept, problems = {}, []
    for key, value in values.items():
        if key in own.model_fields:
            kept[key] = value
            continue
        other = next((n for n in HEADS if n != name and
                      key in head_settings_class(n).model_fields), None)
        if other is None:
            problems.append(InitErrorDetails(type="extra_forbidden", loc=(key,), input=value,
                                             ctx={"known": sorted(own.model_fields)}))
        elif not (saved_before or _is_default(head_settings_class(other), key, value)):
            problems.append(InitErrorDetails(type=PydanticCustomError(
                "other_head", "a setting of the {other} head (--head {other}), not of the "
                "{head} head", {"other": other, "head": name}), loc=(key,), input=value))
    if problems:
        raise ValidationError.from_exception_data(own.__name__, problems)
    return own.model_validate(kept)


def _is_default(settings: type[HeadSettings], key: str, value) -> bool:
    try:
        return getattr(settings.model_validate({key: value}), key) == \
            settings.model_fields[key].default
    except ValidationError:
        return False


class ModelConfig(Settings):
    """The network: backbone and head."""

    backbone: Literal[BACKBONES] = Field("resnet101", description="dilated ResNet (the "
                                         "paper's: resnet101)")
    backbone_weights: Optional[str] = Field(None, description="torchvision ImageNet "
                                            "checkpoint (resnet101-*.pth); its batch-norm "
                                            "statistics are then frozen")
    output_stride: Literal[OUTPUT_STRIDES] = Field(8, description="input size / feature size "
                                                   "(the paper's: 8)")
    head: SerializeAsAny[HeadSettings] = Field(
        default_factory=DSSPNSettings, description="the head's settings (--set head.KEY=VALUE)")

    @field_validator("head", mode="wrap")
    @classmethod
    def _the_heads_own(cls, value, handler):
        """A mapping is read as the settings of the head its ``type`` names."""
        if isinstance(value, dict):
            return head_settings(value)
        return handler(value)

    @property
    def backbone_norm(self) -> str:
        return backbone_norm(self.backbone_weights)


def backbone_norm(pretrained) -> str:
    """The paper freezes batch-norm statistics when starting from ImageNet weights; from
    scratch they train."""
    return "frozen" if pretrained else "batch"


__all__ = ["HeadSettings", "DSSPNSettings", "FlatSettings", "ModelConfig", "Settings",
           "BACKBONES", "OUTPUT_STRIDES", "HEADS", "HEAD_SETTINGS", "head_class",
           "head_settings_class", "head_settings", "backbone_norm"]
