"""The training config: one declared schema, from which come the ``dsspn train`` options, the
checks of YAML config files and ``--set KEY=VALUE`` overrides, and the ``config.yaml`` each run
saves (and checkpoints carry).

``resolve_config`` reads a config file, lays the command line over it and checks every value
before anything is written; a bad value is one line naming the key and what it accepts.

The recipe defaults are the paper's (section 4.1): SGD with momentum 0.9 and weight decay
1e-4, the poly schedule (power 0.9), learning rate 0.003 for the new layers and 1/100 of it
for a pretrained backbone, random flip, crop 513 and rescale 0.5-2, batch 8. Without data,
training uses the built-in sample data with ``SAMPLE_DATA_DEFAULTS`` (a CPU demo).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from dsspn_cli.errors import UserError, shown
from dsspn_cli.model.config import (
    Bool,
    Float,
    ModelConfig,
    NonNegativeInt,
    PositiveInt,
)

DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
# Number formats (``world.resolve_precision``); auto: bf16 on a GPU that has it, else fp16
# on CUDA, fp32 on CPU.
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
# Inference (evaluate, predict, validation): images with a side above TILE run in tiles.
TILE = 2048
MIN_TILE = 64

# The settings a model's weights depend on (besides its tree): a run resumed must have its
# checkpoint's; one that starts from a checkpoint takes those it is not given from it.
ARCHITECTURE = ("backbone", "output_stride", "head")

# Without data, the built-in sample data with settings a 2-core CPU trains in minutes,
# for the settings the user did not give (the architecture of a checkpoint started from
# comes before them).
SAMPLE_DATA_DEFAULTS = {"backbone": "resnet18", "output_stride": 16, "crop": 112,
                        "iters": 600, "batch_size": 8, "lr": 0.01, "checkpoint_every": 200,
                        "val_every": 200, "val_images": 8}


def _within(low=None, high=None, *, above=None, below=None):
    """A finite number setting (``Float``) within its range: 1e300 would pass a plain float
    and fail later, deep in a transform, the optimiser or a collective. The limits are
    wide enough for any value a run could train with, because checkpoints carry their config
    and are checked by this schema when they are loaded."""
    return Annotated[Float, Field(ge=low, le=high, gt=above, lt=below)]


def _whole(low: int, high: int):
    """A whole number setting within [low, high]."""
    return Annotated[int, Field(strict=True, ge=low, le=high)]


# Counts of steps: a run of more than a billion is a typing mistake.
Steps = _whole(1, 10**9)
StepsOrZero = _whole(0, 10**9)
Crop = _whole(32, 8192)
# The random rescale factor: the image is resized by it before the crop, so a large one
# makes a huge image (a 1024x2048 photo at 8 is 8192x16384 pixels).
Scale = _within(above=0, high=8)
LearningRate = _within(above=0, high=10)
Momentum = _within(0, below=1)
WeightDecay = _within(0, 1)
PolyPower = _within(0, 100)
Weight = _within(0, 1e6)
Workers = _whole(0, 256)              # processes: more would exhaust the machine, not help
Minutes = _within(above=0, high=7 * 24 * 60)
# numpy's generators take seeds from 0; torch's at most 2**64 - 1, which the per-sample
# seed (seed * 1000003 + index) must stay under.
Seed = _whole(0, 2**32 - 1)


class TrainConfig(ModelConfig):
    """Everything a run needs; saved as RUN/config.yaml."""

    data: dict[str, str] = Field(default_factory=dict, description="dataset format -> root "
                                 "folder (--data FORMAT=ROOT); none: the built-in sample data")
    out: str = Field("runs/train", min_length=1, description="run folder")
    tree: Optional[str] = Field(None, description="concept tree file (default: the shipped "
                                "four-dataset tree)")
    iters: Optional[StepsOrZero] = Field(None, description="training steps (default: one "
                                         "epoch, or --epochs; 0: none, the starting weights "
                                         "are checkpointed and validated)")
    epochs: Optional[StepsOrZero] = Field(None, description="epochs, when --iters is not "
                                          "given (0: as --iters 0)")
    batch_size: PositiveInt | dict[str, PositiveInt] = Field(
        8, description="images per step and process; in YAML or --set also one per dataset "
        "(batch_size.coco=4: the paper's 4 for COCO-Stuff and ADE20K, 6 for Cityscapes and "
        "Mapillary)")
    crop: Crop = Field(513, description="training crop side in pixels")
    scale: tuple[Scale, Scale] = Field(
        (0.5, 2.0), strict=False, description="random rescale range [low, high]")
    lr: LearningRate = Field(0.003, description="learning rate of the new layers")
    backbone_lr: Optional[LearningRate] = Field(None, description="learning rate of the "
                                                "backbone (default: lr/100 when pretrained, "
                                                "else lr)")
    momentum: Momentum = Field(0.9, description="SGD momentum")
    weight_decay: WeightDecay = Field(1e-4, description="SGD weight decay")
    poly_power: PolyPower = Field(0.9, description="power of the poly schedule")
    weights: Optional[dict[str, Weight]] = Field(
        None, description="dataset -> sampling weight in joint training (default: by size)")
    workers: Workers = Field(2, description="data loader processes")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N")
    seed: Seed = Field(0, description="random seed (weights, sampling, augmentation)")
    precision: Literal[PRECISIONS] = Field(
        "auto", description="number format of training and validation: fp32, fp16 (CUDA, "
        "with loss scaling), bf16 (GPUs of compute capability 8.0+, and CPUs), or auto: bf16 "
        "where the GPU has it, else fp16 on CUDA, fp32 on CPU")
    log_every: Steps = Field(10, description="steps between metrics.jsonl lines")
    checkpoint_every: Steps = Field(100, description="steps between checkpoints")
    keep: PositiveInt = Field(3, description="step checkpoints kept besides last and best")
    val_every: StepsOrZero = Field(5000, description="steps between validations, and "
                                   "one at the end (0: at each checkpoint)")
    val_images: Optional[NonNegativeInt] = Field(
        500, description="validation images per dataset, spread evenly over its validation "
        "split, the same ones each time (0 or null: all; the full score is 'dsspn evaluate')")
    dist_timeout: Minutes = Field(30.0, description="minutes a process waits in a "
                                  "collective for the others (torchrun) before the job "
                                  "stops")
    init_from: Optional[str] = Field(None, description="start from this checkpoint's weights "
                                     "(same tree), built as it was trained: backbone, output "
                                     "stride and head settings not given are its own")
    grow_from: Optional[str] = Field(None, description="start from a checkpoint trained on "
                                     "another tree (one this tree was merged onto with "
                                     "'hierarchy merge --onto'): its backbone and every neuron "
                                     "that survives here, built as it was trained (backbone, "
                                     "output stride and head settings not given are its own)")
    finetune: StepsOrZero = Field(0, description="universal schedule: after joint "
                                  "training, this many steps on each dataset at a tenth "
                                  "of the learning rates")
    skip_bad: Bool = Field(False, description="leave out samples that cannot be read "
                           "(listed in RUN/bad-files.txt) instead of stopping before step 1")
    scan: Bool = Field(True, description="read every training and validation sample once "
                       "before step 1 to find unusable files (--no-scan: a bad file then stops "
                       "the run when it is read)")

    @model_validator(mode="before")
    @classmethod
    def _amp_is_precision(cls, values):
        # Before 'precision' there was 'amp: true|false' (fp16 on CUDA); configs and
        # checkpoints of that time still load.
        if isinstance(values, dict) and isinstance(values.get("amp"), bool):
            values = dict(values)
            values.setdefault("precision", "auto" if values.pop("amp") else "fp32")
        return values

    @model_validator(mode="after")
    def _skip_bad_needs_the_scan(self):
        if self.skip_bad and not self.scan:
            raise ValueError("skip_bad leaves out the files the scan before step 1 finds; "
                             "drop --no-scan, or --skip-bad")
        return self

    @field_validator("data")
    @classmethod
    def _known_formats(cls, value: dict) -> dict:
        # The message names this field: a config file's 'data:' has no --format option.
        from dsspn_cli.data.formats import FORMATS, canonical

        for fmt, root in value.items():
            if canonical(fmt) is None:
                raise ValueError(f"unknown dataset format '{_visible(fmt)}'; use one of "
                                 f"{', '.join(FORMATS)} as the key, the root folder as the "
                                 "value")
            if not root.strip():
                raise ValueError(f"{_visible(fmt)}: the root folder is empty; give the "
                                 "dataset's folder")
        return value

    @field_validator("data", "out", "tree", "backbone_weights", "init_from", "grow_from")
    @classmethod
    def _usable_paths(cls, value):
        # A NUL byte cannot be in a path: said here, naming the setting, not by the first
        # open() after the run folder is made.
        texts = list(value.values()) if isinstance(value, dict) else [value]
        if any(isinstance(text, str) and "\0" in text for text in texts):
            raise ValueError("a path cannot hold a NUL byte; give the path without it")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError("use auto, cpu, cuda or cuda:N")
        return value

    @field_validator("scale")
    @classmethod
    def _scale(cls, value):
        if value[0] > value[1]:
            raise ValueError("give [low, high] with low <= high")
        return value

    @model_validator(mode="after")
    def _per_dataset_settings_name_the_datasets(self):
        for key, what, value in _per_dataset(self):
            missing = [fmt for fmt in self.data if fmt not in value]
            if missing:
                raise ValueError(f"{key}: no {what} for dataset '{missing[0]}'; give one "
                                 "per --data")
        return self

    @model_validator(mode="after")
    def _one_start(self):
        if self.init_from and self.grow_from:
            raise ValueError("init_from and grow_from: give one checkpoint to start from")
        return self

    def batch_sizes(self) -> list[int]:
        """The batch size of each dataset, in the order of ``data``."""
        if isinstance(self.batch_size, int):
            return [self.batch_size] * len(self.data)
        return [self.batch_size[fmt] for fmt in self.data]

    @property
    def backbone_learning_rate(self) -> float:
        if self.backbone_lr is not None:
            return self.backbone_lr
        return self.lr / 100 if self.backbone_weights else self.lr

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes``, checked like any config."""
        return checked({**self.to_dict(), **changes}, "options")

    def to_dict(self) -> dict:
        """Plain values (lists, not tuples), as config.yaml and checkpoints hold them."""
        return self.model_dump(mode="json")


def _per_dataset(config: TrainConfig) -> list[tuple[str, str, dict]]:
    """The settings given per dataset (a mapping from dataset to value), as (key, what one
    value is called, the mapping): weights, then batch_size; none without data."""
    if not config.data:
        return []
    found = [(key, what, getattr(config, key))
             for key, what in (("weights", "weight"), ("batch_size", "batch size"))]
    return [(key, what, value) for key, what, value in found if isinstance(value, dict)]


def checked(values: dict, where: Any, origins: dict | None = None) -> TrainConfig:
    """``values`` as a TrainConfig, or one line naming the first bad key and what it takes.
    ``origins``: where keys came from other than ``where`` ({'batch_size': '--batch-size 0'})."""
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as exc:
        loc = ".".join(str(part) for part in exc.errors(include_url=False)[0]["loc"])
        for key, origin in (origins or {}).items():     # the key, above it or below it
            if key == loc or loc.startswith(key + ".") or key.startswith(loc + "."):
                where = origin
        raise UserError(f"{where}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """The first problem of a pydantic ValidationError, as 'key: what is wrong (got X)'."""
    errors = exc.errors(include_url=False)
    # A value that fits no branch of 'one or one per dataset' gets an error per branch: the
    # one that got furthest into the value says what is wrong.
    first = errors[0]["loc"][:1]
    error = max((e for e in errors if e["loc"][:1] == first), key=lambda e: len(e["loc"]))
    key = _visible(".".join(str(part) for part in error["loc"] if not _is_branch(part)))
    if error["type"] == "extra_forbidden":
        import difflib

        known = (error.get("ctx") or {}).get("known") or known_keys(error["loc"][:-1])
        near = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        return f"unknown setting '{key}'{hint}; known: {', '.join(known)}"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    message = message[:1].lower() + message[1:]
    # YAML's words, not Python's.
    message = message.replace("valid tuple", "list").replace("valid dictionary", "mapping")
    if not key:                   # a rule between settings: the message names them
        return message
    return f"{key}: {message} (got {shown(error.get('input'))})"


def _is_branch(part) -> bool:
    """pydantic's name of a union member in an error's location ('constrained-int',
    'dict[str,constrained-int]'), not a key."""
    # Not any part with a '[': a key the user typed may hold one.
    return isinstance(part, str) and bool(re.fullmatch(
        r"(constrained-)?(int|float|str|bool)|function-.*|[a-z]+\[.*\]", part))


def known_keys(prefix: tuple = ()) -> list[str]:
    """The settings at a place in the schema ('' for the top level, ('head',) below it)."""
    model = TrainConfig
    for part in prefix:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and hasattr(annotation, "model_fields")):
            return []
        model = annotation
    return sorted(model.model_fields)


# ------------------------------------------------------------------------------ reading


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """``head.hidden=64`` -> (['head', 'hidden'], 64); the value is read as YAML, by the
    reader config files go through, so a value fails the same way in both."""
    from dsspn_cli.yamltext import YamlProblem, load

    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise UserError(f"{_given(text)}: write KEY=VALUE, like head.hidden=64 or lr=0.01")
    try:
        value = load(raw) if raw.strip() else None
    except YamlProblem as exc:
        raise UserError(f"{_given(text)}: the value is not valid YAML ({exc.problem}); write "
                        "it as in a config file, quoting text with special characters"
                        ) from None
    return key.strip().split("."), value


def _given(text: str) -> str:
    """'--set KEY=VALUE' for messages: on one line, and short (a value may be 5000 digits)."""
    text = _visible(text)
    return f"--set {text if len(text) <= 80 else text[:60] + '...'}"


def _visible(text: str) -> str:
    """User text for a message, with what does not print escaped (a line break, an escape
    sequence that would reach the terminal)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _put(values: dict, keys: list[str], value, source: str) -> None:
    node = values
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise UserError(f"{source}: '{key}' is a single value, so '{'.'.join(keys)}' "
                            "cannot be set")
        node = child
    node[keys[-1]] = value


def _merge(base: dict, over: dict) -> dict:
    """``over`` laid on ``base``, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: str | Path) -> dict:
    from dsspn_cli.files import read_yaml

    loaded = read_yaml(path, "training config")
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: a training config is a YAML mapping of settings (data:, "
                        "iters:, batch_size: ...); see 'dsspn train --help'")
    return loaded


def resolve_config(file: str | Path | None = None, options: dict | None = None,
                   assignments: list[str] | None = None,
                   flags: dict | None = None) -> tuple[TrainConfig, dict]:
    """The config file, then the command line's options ({key: value}), then ``--set``
    assignments over it; without data anywhere, ``SAMPLE_DATA_DEFAULTS`` for what none of
    them sets. ``flags`` names the option each key came from, for messages.

    Returns the checked config and the sample-data defaults that were applied (to tell the
    user). The config's ``model_fields_set`` holds what was given, and the defaults applied:
    a run that starts from a checkpoint takes the architecture not given from it (``train``),
    so the defaults leave it alone. Nothing is written here.
    """
    values = read_config_file(file) if file is not None else {}
    given: dict = {}
    origins = {}
    for key, value in (options or {}).items():
        if value is not None:
            _put(given, key.split("."), value, "options")
            text = value if isinstance(value, str) else shown(value)
            origins[key] = f"{(flags or {}).get(key, key)} {text}"
    for text in assignments or []:
        keys, value = parse_assignment(text)
        _put(given, keys, value, _given(text))
        origins[".".join(keys)] = _given(text)
    values = _merge(values, given)
    applied = {}
    if not values.get("data"):
        start = values.get("init_from") or values.get("grow_from")
        applied = {k: v for k, v in SAMPLE_DATA_DEFAULTS.items()
                   if k not in values and not (start and k in ARCHITECTURE)}
        values.update(applied)
    where = file if file is not None else "options"
    config = checked(values, where, origins)
    _no_stray_datasets(config, where, origins)
    return config, applied


def _no_stray_datasets(config: TrainConfig, where, origins: dict) -> None:
    """A weight or batch size for a dataset the run does not train on would be ignored: a
    typing mistake ('cityscape') or a config reused for fewer datasets. Checked for the
    settings a run starts with, not in the schema: a checkpoint carrying such a config still
    loads."""
    for key, what, value in _per_dataset(config):
        stray = [fmt for fmt in value if fmt not in config.data]
        if stray:
            origin = origins.get(f"{key}.{stray[0]}") or origins.get(key) or where
            raise UserError(f"{origin}: {key}: a {what} for '{_visible(stray[0])}', which is "
                            f"not among the datasets ({', '.join(config.data)}); give one per "
                            "--data, named like it")


__all__ = ["TrainConfig", "resolve_config", "checked", "describe", "parse_assignment",
           "ARCHITECTURE", "SAMPLE_DATA_DEFAULTS", "PRECISIONS", "TILE", "MIN_TILE"]
