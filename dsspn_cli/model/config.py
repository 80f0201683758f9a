"""The model's settings, declared once: what the network is made of, with every value's type,
range and choices. The training config (``engine/config.py``) extends these; the command line,
YAML files, ``--set`` overrides and the ``config.yaml`` saved in each run all come from them,
and checkpoints rebuild their model from them.

Every value the paper text lost is a setting here, with the default these notes reconstruct
(see "Defaults the paper lost" in the README). No torch here: ``dsspn --help`` reads this.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, model_validator

BACKBONES = ("resnet18", "resnet50", "resnet101")
OUTPUT_STRIDES = (8, 16, 32)
HEADS = ("dsspn", "flat")


def _not_a_flag(value):
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


# Whole numbers and flags are strict (YAML's `iters: true` is a mistake, not 1); other numbers
# accept strings, because PyYAML reads `lr: 1e-3` as the string '1e-3'.
Int = Annotated[int, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, BeforeValidator(_not_a_flag)]
PositiveFloat = Annotated[float, BeforeValidator(_not_a_flag), Field(gt=0)]
NonNegativeFloat = Annotated[float, BeforeValidator(_not_a_flag), Field(ge=0)]


class Settings(BaseModel):
    """Unknown keys are errors, assignments are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HeadConfig(Settings):
    """The segmentation head. ``type`` chooses it; the other settings shape the DSSPN head
    (paper section 3) except ``flat_rates``, which shapes the flat baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal[HEADS] = Field("dsspn", description="dsspn (the concept tree's semantic "
                                 "neurons) or flat (one softmax over the labelled concepts, "
                                 "DeepLabv2's ASPP: the baseline)",
                                 json_schema_extra={"flag": "--head"})
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
    flat_rates: tuple[PositiveInt, ...] = Field(
        (6, 12, 18, 24), min_length=1, strict=False,
        description="atrous rates of the flat baseline's ASPP (DeepLabv2's)")

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


class ModelConfig(Settings):
    """The network: backbone and head."""

    backbone: Literal[BACKBONES] = Field("resnet101", description="dilated ResNet (the "
                                         "paper's: resnet101)")
    backbone_weights: Optional[str] = Field(None, description="torchvision ImageNet "
                                            "checkpoint (resnet101-*.pth); its batch-norm "
                                            "statistics are then frozen")
    output_stride: Literal[OUTPUT_STRIDES] = Field(8, description="input size / feature size "
                                                   "(the paper's: 8)")
    head: HeadConfig = Field(default_factory=HeadConfig, description="the head's settings "
                             "(--set head.KEY=VALUE)")

    @property
    def backbone_norm(self) -> str:
        return backbone_norm(self.backbone_weights)


def backbone_norm(pretrained) -> str:
    """The paper freezes batch-norm statistics when starting from ImageNet weights; from
    scratch they train."""
    return "frozen" if pretrained else "batch"


__all__ = ["HeadConfig", "ModelConfig", "Settings", "BACKBONES", "OUTPUT_STRIDES", "HEADS",
           "backbone_norm"]
