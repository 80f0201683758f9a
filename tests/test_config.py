"""The training config: one schema for the options, YAML files, --set and config.yaml."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dsspn_cli.cli.options import setting_options
from dsspn_cli.engine.config import SAMPLE_DATA_DEFAULTS, TrainConfig, resolve_config
from dsspn_cli.errors import UserError
from dsspn_cli.model.config import (
    HEAD_SETTINGS,
    HEADS,
    DSSPNSettings,
    head_class,
    head_settings_class,
)


def test_every_single_value_setting_is_an_option():
    options = {key for key, _, _ in setting_options(TrainConfig).values()}
    singles = {"iters", "epochs", "batch_size", "crop", "lr", "backbone_lr", "momentum",
               "weight_decay", "poly_power", "workers", "device", "seed", "precision", "log_every",
               "checkpoint_every", "keep", "val_every", "val_images", "init_from",
               "finetune", "skip_bad", "scan", "dist_timeout", "backbone", "backbone_weights",
               "output_stride", "out", "tree"}
    assert singles <= options
    assert "head.type" in options           # nested, with its own flag: --head
    assert not {"data", "head", "weights", "scale"} & options     # --data and --set


def test_help_lists_the_options_with_their_choices(run):
    result = run("train", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())      # the help box unwrapped
    for flag in ("--head", "--batch-size", "--output-stride", "--set", "--no-scan",
                 "--precision", "--dist-timeout", "--val-every", "--val-images"):
        assert flag in text
    assert "one of 8, 16, 32" in text
    assert "one of auto, fp32, fp16, bf16" in text


def test_file_then_options_then_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"ade": "/d"}, "iters": 7, "lr": "1e-3",
                                    "head": {"type": "flat", "hidden": 32, "norm": "group"}}))
    config, demo = resolve_config(path, {"iters": 9, "head.type": "dsspn"},
                                  ["head.hidden=64", "weights.ade=2", "scale=[0.75, 1.5]"])
    assert demo == {}
    assert config.iters == 9 and config.lr == 0.001          # YAML's '1e-3' is a number
    assert config.head == DSSPNSettings(hidden=64, norm="group")
    assert config.weights == {"ade": 2.0} and config.scale == (0.75, 1.5)
    # What a run saves reads back to the same config.
    assert TrainConfig.model_validate(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


def test_sample_data_defaults_fill_only_what_is_not_given():
    config, demo = resolve_config(None, {"iters": 5})
    assert "iters" not in demo and config.iters == 5
    assert config.backbone == SAMPLE_DATA_DEFAULTS["backbone"] == demo["backbone"]
    config, demo = resolve_config(None, {"data": {"ade": "/d"}})
    assert demo == {} and config.backbone == "resnet101"


@pytest.mark.parametrize("where,values,fragments", [
    ("file", {"head": {"norm": "bogus"}}, ["c.yaml: head.norm", "'none', 'batch' or 'group'"]),
    ("file", {"head": {"loss": "focal"}}, ["head.loss", "'bce' or 'softmax'"]),
    ("file", {"backbone_lr": -5}, ["backbone_lr: input should be greater than 0"]),
    ("file", {"iters": True}, ["iters: input should be a valid integer"]),
    ("file", {"precision": "fp8"}, ["precision: input should be 'auto', 'fp32', 'fp16' or "
                                    "'bf16'"]),
    ("file", {"skip_bad": True, "scan": False}, ["skip_bad leaves out the files the scan"]),
    ("file", {"dist_timeout": 0}, ["dist_timeout: input should be greater than 0"]),
    ("file", {"momentum": 1.5}, ["momentum: input should be less than 1"]),
    ("file", {"head": {"combine": "sum", "transition_width": 64}}, ["transition_width must "
                                                                    "equal hidden"]),
    ("file", {"weights": {"coco": 1}}, ["no weight for dataset 'ade'"]),
    ("file", {"batch_size": {"coco": 4}}, ["no batch size for dataset 'ade'"]),
    ("file", {"batch_size": {"ade": 0}}, ["batch_size.ade: input should be greater than 0"]),
    ("file", {"batch_size": "x"}, ["batch_size: input should be a valid integer"]),
    ("file", {"head": {"hiden": 3}}, ["unknown setting 'head.hiden' (did you mean "
                                      "'hidden'?)"]),
    ("set", ["head.transition_rates=[6, 0]"], ["--set head.transition_rates=[6, 0]",
                                               "head.transition_rates.1"]),
    ("set", ["head=3"], ["--set head=3", "head: input should be"]),
    ("set", ["nonsense"], ["--set nonsense: write KEY=VALUE"]),
    ("set", ["iters.x=1"], ["--set iters.x=1: iters: input should be a valid integer"]),
    ("option", {"output_stride": 4}, ["--output-stride 4: output_stride: input should be "
                                      "8, 16 or 32"]),
])
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, where, values, fragments):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"ade": "/d"},
                                    **(values if where == "file" else {})}))
    options = values if where == "option" else {}
    flags = {"output_stride": "--output-stride"}
    if where == "set":
        path.write_text(yaml.safe_dump({"data": {"ade": "/d"}, "iters": 3}))
    with pytest.raises(UserError) as caught:
        resolve_config(path, options, values if where == "set" else [], flags)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_bad_config_stops_before_any_file_is_written(tmp_path, run):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"head": {"norm": "bogus"}}))
    result = run("train", "--config", path, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "head.norm" in result.stderr
    assert not (tmp_path / "run").exists()


def test_replace_checks_the_changes():
    config = TrainConfig(data={"ade": "/d"})
    assert config.replace(iters=3).iters == 3
    with pytest.raises(UserError, match="iters"):
        config.replace(iters=-1)


def test_configs_and_checkpoints_from_before_precision_still_load():
    """'amp: true|false' was the setting before 'precision': it reads as auto or fp32."""
    assert TrainConfig.model_validate({"amp": True}).precision == "auto"
    assert TrainConfig.model_validate({"amp": False}).precision == "fp32"
    assert TrainConfig.model_validate({"amp": False, "precision": "bf16"}).precision == "bf16"
    assert "amp" not in TrainConfig.model_validate({"amp": True}).to_dict()


def test_reading_the_head_settings_imports_no_head_and_no_torch():
    """The settings of the heads are read from their table, not from the heads' classes."""
    code = (
        "import sys\n"
        "from dsspn_cli.engine.config import resolve_config\n"
        "config, _ = resolve_config(None, {'data': {'ade': '/d'}},\n"
        "                           ['head.type=flat', 'head.flat_rates=[6, 12]'])\n"
        "assert type(config.head).__name__ == 'FlatSettings', config.head\n"
        "try:\n"
        "    resolve_config(None, {'data': {'ade': '/d'}}, ['head.flat_rates=[6]'])\n"
        "except Exception as exc:\n"
        "    assert 'a setting of the flat head' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('a flat setting given to the dsspn head was taken')\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "print('no torch')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no torch"


def test_the_settings_table_names_each_heads_own_settings():
    for name in HEADS:
        assert head_settings_class(name) is head_class(name).Settings, name
    assert set(HEAD_SETTINGS) <= set(HEADS)
