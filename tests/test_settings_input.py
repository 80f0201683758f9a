"""Settings and user text, as a new user or an attacker gives them: every setting checked
before anything is written, with one YAML reader for config files and --set; COCO geometry
checked before pycocotools rasterises it; user text never parsed by matplotlib; label sets
for --labelset; data-scan.json of any shape; names that print on one line.

Each case runs the real command or reader on the real thing (a polygon point at 1e12 on an
8x8 image, a run folder named '$x^$', a label set coloured [a, b, c]).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO, expect_error, untrained_checkpoint, write_yaml
from PIL import Image

from dsspn_cli.data.common import BadFile
from dsspn_cli.data.formats import get_format
from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.config import TrainConfig, checked, resolve_config
from dsspn_cli.engine.faults import _read_scan_cache
from dsspn_cli.engine.predict import SUFFIXES, legend_png
from dsspn_cli.engine.run import RunFolder
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import load_labelset

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
BAD_MATH = ["$x^$", "a$\\frac{$b", "$$", "\\$x_$"]     # invalid mathtext, every one




@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Sample Cityscapes data (2 training images) and an untrained small checkpoint."""
    root = tmp_path_factory.mktemp("settings")
    write_sample_data(root / "sample", seed=0, images=2, size=(64, 128))
    ckpt = untrained_checkpoint(root / "model.pt")
    photo = root / "photo.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(photo)
    return {"root": root, "city": root / "sample" / "cityscapes", "ckpt": ckpt,
            "photo": photo}


def train_args(ws, out, *extra):
    """A one-step CPU run on the sample Cityscapes data (no loader processes)."""
    return ["train", "--data", f"cityscapes={ws['city']}", "--backbone", "resnet18",
            "--output-stride", "16", "--crop", "64", "--batch-size", "2", "--iters", "1",
            "--workers", "0", "--device", "cpu", "--val-images", "1", "--out", out, *extra]


# ------------------------------------------------------------------- one YAML reader

UNCONVERTIBLE = {                    # values PyYAML parses as YAML but cannot convert
    "!!int abc": "invalid literal for int()",
    "9" * 5000: "Exceeds the limit (4300 digits)",
    "2001-13-45": "month must be in 1..12",
    "!!float x": "could not convert string to float",
    "!!int": "a value cannot be converted",
}


@pytest.mark.parametrize("value", sorted(UNCONVERTIBLE))
def test_a_set_value_yaml_cannot_convert_is_one_line_as_in_a_config_file(ws, run, tmp_path,
                                                                         value):
    out = tmp_path / "run"
    line = expect_error(run(*train_args(ws, out, "--set", f"iters={value}")),
                        "--set iters=", "the value is not valid YAML", UNCONVERTIBLE[value])
    assert len(line) < 400                       # a 5000-digit value is not echoed whole
    assert not out.exists()
    config = tmp_path / "c.yaml"
    config.write_text(f"iters: {value}\n")
    expect_error(run(*train_args(ws, out, "--config", config)), str(config),
                 UNCONVERTIBLE[value])
    assert not out.exists()


@pytest.mark.parametrize("value,fragment", [
    ("[" * 5000, ""),                            # nested deeper than the parser recurses
    ("{a: 1", "expected ',' or '}'"),
    ("'unterminated", "found unexpected end of stream"),
    ("a\0b", "special characters are not allowed"),
    ("*alias", "found undefined alias"),
    ("!!python/object:os.system x", "could not determine a constructor"),
])
def test_set_values_that_are_not_yaml_are_one_line(value, fragment):
    with pytest.raises(UserError) as caught:
        resolve_config(None, {}, [f"tree={value}"])
    message = str(caught.value)
    assert message.startswith("--set tree=") and "not valid YAML" in message
    assert fragment in message and "\n" not in message and "\0" not in message


def test_a_yaml_file_nested_too_deeply_is_one_line_naming_it(tmp_path):
    from dsspn_cli.files import read_yaml
    from dsspn_cli.yamltext import TooDeep, YamlProblem, load

    with pytest.raises(TooDeep) as caught:
        load("[" * 5000)
    assert isinstance(caught.value, YamlProblem) and caught.value.line is None
    path = tmp_path / "c.yaml"
    path.write_text("[" * 5000)
    with pytest.raises(UserError) as caught:
        read_yaml(path, "config")
    assert str(caught.value) == f"{path}: nested too deeply to read; fix the config file"


@pytest.mark.parametrize("assignment,shown", [
    ("a\x1b[2Jb=1", "unknown setting 'a\\x1b[2Jb'"),
    ("head.x\ny=2", "unknown setting 'head.x\\ny'"),
    ("data.ki\x1btti=/x", "unknown dataset format 'ki\\x1btti'"),
])
def test_keys_are_shown_escaped_never_raw(assignment, shown):
    with pytest.raises(UserError) as caught:
        resolve_config(None, {}, [assignment])
    message = str(caught.value)
    assert shown in message and "\x1b" not in message and "\n" not in message


def test_set_and_config_files_read_values_alike(tmp_path):
    """The same text gives the same value from --set and from a config file."""
    texts = {"lr": "1e-3", "scale": "[0.75, 1.5]", "seed": "0x10", "head.hidden": "020",
             "skip_bad": "yes", "weights.ade": "2"}
    config = tmp_path / "c.yaml"
    config.write_text("data: {ade: /d}\nlr: 1e-3\nscale: [0.75, 1.5]\nseed: 0x10\n"
                      "head: {hidden: 020}\nskip_bad: yes\nweights: {ade: 2}\n")
    from_file, _ = resolve_config(config)
    from_set, _ = resolve_config(None, {"data": {"ade": "/d"}},
                                 [f"{key}={text}" for key, text in texts.items()])
    assert from_file == from_set
    assert from_set.seed == 16 and from_set.head.hidden == 16 and from_set.skip_bad is True


# ------------------------------------------------------------------ ranges that work

OUT_OF_RANGE = [
    ("scale=[1, .inf]", "scale.1: must be a finite number"),
    ("scale=[1, 1e300]", "scale.1: input should be less than or equal to 8"),
    ("scale=[0, 1]", "scale.0: input should be greater than 0"),
    ("scale=[-.inf, 1]", "scale.0: must be a finite number"),
    ("scale=[.nan, 1]", "scale.0: must be a finite number"),
    ("lr=.inf", "lr: must be a finite number"),
    ("lr=.nan", "lr: must be a finite number"),
    ("lr=1e400", "lr: must be a finite number"),
    ("lr=1e300", "lr: input should be less than or equal to 10"),
    ("backbone_lr=.inf", "backbone_lr: must be a finite number"),
    ("momentum=1", "momentum: input should be less than 1"),
    ("momentum=-.inf", "momentum: must be a finite number"),
    ("weight_decay=1e300", "weight_decay: input should be less than or equal to 1"),
    ("weight_decay=-1", "weight_decay: input should be greater than or equal to 0"),
    ("poly_power=.inf", "poly_power: must be a finite number"),
    ("poly_power=1e300", "poly_power: input should be less than or equal to 100"),
    ("dist_timeout=1e300", "dist_timeout: input should be less than or equal to 10080"),
    ("weights.cityscapes=.inf", "weights.cityscapes: must be a finite number"),
    ("weights.cityscapes=1e300", "weights.cityscapes: input should be less than or equal"),
    ("crop=100000", "crop: input should be less than or equal to 8192"),
    ("crop=31", "crop: input should be greater than or equal to 32"),
    ("workers=100000", "workers: input should be less than or equal to 256"),
    ("seed=-1", "seed: input should be greater than or equal to 0"),
    (f"seed={2**64}", "seed: input should be less than or equal to 4294967295"),
    ("iters=1000000000000", "iters: input should be less than or equal to 1000000000"),
    ("finetune=1e3", "finetune: input should be a valid integer"),
    ("lr=true", "lr: expected a number, not true/false"),
]


@pytest.mark.parametrize("assignment,fragment", OUT_OF_RANGE)
def test_numbers_are_finite_and_within_a_working_range(assignment, fragment):
    with pytest.raises(UserError) as caught:
        resolve_config(None, {"data": {"cityscapes": "/d"}}, [assignment])
    message = str(caught.value)
    assert message.startswith(f"--set {assignment.split('=')[0]}="), message
    assert fragment in message and "\n" not in message, message


@pytest.mark.parametrize("option,value,fragment", [
    ("--lr", "inf", "lr: must be a finite number"),
    ("--lr", "nan", "lr: must be a finite number"),
    ("--momentum", "1e300", "momentum: input should be less than 1"),
    ("--dist-timeout", "inf", "dist_timeout: must be a finite number"),
    ("--weight-decay", "nan", "weight_decay: must be a finite number"),
    ("--crop", "1000000", "crop: input should be less than or equal to 8192"),
])
def test_options_are_checked_alike_before_anything_is_written(ws, run, tmp_path, option, value,
                                                             fragment):
    out = tmp_path / "run"
    expect_error(run(*train_args(ws, out, option, value)), f"{option} ", fragment)
    assert not out.exists()


def test_the_same_range_in_a_config_file_names_the_file(tmp_path):
    config = write_yaml(tmp_path / "c.yaml", {"data": {"ade": "/d"}, "scale": [0.5, 1e300]})
    with pytest.raises(UserError, match=r"c.yaml: scale.1: input should be less than or "
                                        r"equal to 8 \(got 1e\+300\)"):
        resolve_config(config)


def test_the_defaults_and_the_papers_settings_are_within_the_ranges():
    TrainConfig()
    TrainConfig(data={"coco": "/c", "ade": "/a"}, lr=0.003, momentum=0.9, weight_decay=1e-4,
                poly_power=0.9, crop=513, scale=(0.5, 2.0), batch_size={"coco": 4, "ade": 4},
                weights={"coco": 1, "ade": 0}, seed=2**32 - 1, workers=0)


# ------------------------------------------------------------------ data: in a file

@pytest.mark.parametrize("data,fragments", [
    ({"nuscenes": "/x"}, ["data: unknown dataset format 'nuscenes'", "use one of cityscapes"]),
    ({"Kitti\nx": "/x"}, ["unknown dataset format 'Kitti\\nx'"]),
    ({"cityscapes": ""}, ["data: cityscapes: the root folder is empty"]),
    ({"cityscapes": "a\0b"}, ["data: a path cannot hold a NUL byte"]),
    ({"cityscapes": 5}, ["data.cityscapes: input should be a valid string"]),
])
def test_data_in_a_config_file_names_the_field_not_an_option(ws, run, tmp_path, data,
                                                            fragments):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data": data}))
    out = tmp_path / "run"
    line = expect_error(run("train", "--config", config, "--out", out), str(config),
                        *fragments)
    assert "--format" not in line
    assert not out.exists()


def test_aliases_of_formats_are_known_in_a_config_file():
    assert TrainConfig(data={"ade20k": "/a", "Vistas": "/v"}).data


@pytest.mark.parametrize("key", ["weights", "batch_size"])
def test_a_per_dataset_value_for_no_dataset_is_named(tmp_path, key):
    config = write_yaml(tmp_path / "c.yaml", {"data": {"ade": "/a"}, key: {"ade": 1,
                                                                            "kitti": 2}})
    with pytest.raises(UserError, match=f"c.yaml: {key}: a .* for 'kitti', which is not "
                                        r"among the datasets \(ade\)"):
        resolve_config(config)
    with pytest.raises(UserError, match=f"^--set {key}.kitti=2: {key}: a "):
        resolve_config(None, {"data": {"ade": "/a"}}, [f"{key}.ade=1", f"{key}.kitti=2"])
    # Only for the settings a run starts with: a checkpoint's config that has one loads.
    checked({"data": {"ade": "/a"}, key: {"ade": 1, "kitti": 2}}, "model.pt (its config)")


@pytest.mark.parametrize("key", ["tree", "backbone_weights", "init_from", "grow_from", "out"])
def test_a_nul_byte_in_a_path_setting_is_named(tmp_path, key):
    config = write_yaml(tmp_path / "c.yaml", {"data": {"ade": "/a"}, key: "x\0y"})
    with pytest.raises(UserError, match=f"{key}: a path cannot hold a NUL byte"):
        resolve_config(config)


# --------------------------------------------------------- every check before a write

def test_every_check_comes_before_the_run_folders_first_file(ws, run, tmp_path):
    city = str(ws["city"])
    cases = [
        (["--data", f"cityscapes={tmp_path / 'nowhere'}"], "no such folder"),
        (["--data", f"ade={city}"], "not a ade layout"),
        (["--data", f"cityscapes={city}", "--batch-size", "100"], "fewer than the batch size"),
        (["--data", f"cityscapes={city}", "--set", "batch_size={cityscapes: 3}"],
         "fewer than the batch size 3"),
        (["--data", f"cityscapes={city}", "--precision", "fp16"], "--precision fp16"),
        (["--data", f"cityscapes={city}", "--backbone-weights", tmp_path / "none.pth"],
         "none.pth"),
        (["--data", f"cityscapes={city}", "--backbone-weights", ws["photo"]], "photo.png"),
        (["--data", f"cityscapes={city}", "--backbone-weights", ws["ckpt"]], "model.pt"),
        (["--data", f"cityscapes={city}", "--tree", tmp_path / "none.yaml"], "none.yaml"),
        (["--data", f"cityscapes={city}", "--init-from", tmp_path / "none.pt"], "none.pt"),
    ]
    for i, (args, fragment) in enumerate(cases):
        out = tmp_path / f"run{i}"
        if "--batch-size" not in args and "--set" not in args:
            args = [*args, "--batch-size", "2"]          # the sample has 2 training images
        result = run("train", *args, "--backbone", "resnet18", "--output-stride", "16",
                     "--device", "cpu", "--workers", "0", "--iters", "1", "--out", out)
        expect_error(result, fragment)
        assert not out.exists(), (args, sorted(p.name for p in out.iterdir()))


def test_a_failed_check_leaves_an_existing_empty_run_folder_empty(ws, run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    expect_error(run(*train_args(ws, out, "--batch-size", "100")), "fewer than the batch size")
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------- COCO geometry

def coco(root, segmentation, height=8, width=8, image=None, **annotation):
    """A COCO JSON dataset: one height x width image, one annotation (id 7, category 3)."""
    images = root / "images" / "val2017"
    images.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(images / "000000000001.jpg")
    (root / "annotations").mkdir(exist_ok=True)
    entry = image or {"id": 1, "file_name": "000000000001.jpg", "height": height,
                      "width": width}
    ann = {"id": 7, "image_id": 1, "category_id": 3, "iscrowd": 0, **annotation}
    if segmentation is not ...:
        ann["segmentation"] = segmentation
    # allow_nan: pycocotools reads NaN and Infinity, as Python's json does.
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(
        {"images": [entry], "categories": [{"id": 3, "name": "car"}], "annotations": [ann]},
        allow_nan=True))
    from dsspn_cli.data import coco_stuff
    coco_stuff._index.cache_clear()
    return root


def read_coco(root):
    fmt = get_format("coco")
    (sample,) = fmt.samples(root, "val")
    return fmt.read_label(sample)


def rle_string(mask):
    from pycocotools import mask as mask_utils
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode()


zigzag = [v for i in range(2000) for v in ((0, 0) if i % 2 else (8, 8))]
BAD_GEOMETRY = {
    "a point at 1e12": ([[0, 0, 1e12, 0, 4, 4]], "has the point (1e+12, 0), far outside"),
    "a point at -1e12": ([[0, 0, 4, -1e12, 4, 4]], "far outside the 8x8 image"),
    "a NaN": ([[0, 0, float("nan"), 0, 4, 4]], "not a finite number"),
    "an infinity": ([[0, 0, float("inf"), 0, 4, 4]], "not a finite number"),
    "a 400-digit integer": ([[0, 0, 10**400, 0, 4, 4]], "not a finite number"),
    "a point just beyond the margin": ([[0, 0, 16.5, 0, 4, 4]], "far outside"),
    "four numbers (read as a box)": ([[0, 0, 4, 4]], "not a list of x, y pairs"),
    "an odd count": ([[0, 0, 4, 0, 4, 4, 1]], "not a list of x, y pairs"),
    "a string coordinate": ([[0, 0, "4", 0, 4, 4]], "holds '4', not a coordinate"),
    "a true coordinate": ([[0, 0, True, 0, 4, 4]], "holds True, not a coordinate"),
    "a nested list": ([[[0, 0], [4, 0], [4, 4]]], "not a list of x, y pairs"),
    "no polygon": ([], "an empty list of polygons"),
    "a long zigzag": ([zigzag], "outlines are 16000 pixels long"),
    "no segmentation": (..., "segmentation is None"),
    "a number": (5, "segmentation is 5"),
    "an RLE of a huge size": ({"size": [100000, 100000], "counts": [0, 10**10]},
                              "segmentation is 100000x100000, the image 8x8"),
    "an RLE without size": ({"counts": [0, 64]}, "RLE 'size' is None"),
    "an RLE of a float size": ({"size": [8.0, 8], "counts": [0, 64]}, "not [height, width]"),
    "run lengths short of the image": ({"size": [8, 8], "counts": [0, 10]},
                                       "add up to 10 pixels, not the 8x8 image's 64"),
    "run lengths past the image": ({"size": [8, 8], "counts": [0, 10**12]},
                                   "add up to 1000000000000 pixels"),
    "a negative run length": ({"size": [8, 8], "counts": [70, -6]}, "not a run length"),
    "a float run length": ({"size": [8, 8], "counts": [0, 64.0]}, "not a run length"),
    "a compressed string cut short": ({"size": [8, 8], "counts": "P"},
                                      "not a COCO compressed RLE string"),
    "a compressed string with a NUL": ({"size": [8, 8], "counts": "0\u0000"},
                                       "not a COCO compressed RLE string"),
    "a compressed string beyond 'o'": ({"size": [8, 8], "counts": "0~"},
                                       "not a COCO compressed RLE string"),
    "a compressed string of a smaller mask": ({"size": [8, 8], "counts": "04"},
                                              "add up to 4 pixels"),
    "counts of another type": ({"size": [8, 8], "counts": {"a": 1}}, "RLE 'counts' is"),
}


@pytest.mark.parametrize("case", sorted(BAD_GEOMETRY))
def test_bad_coco_geometry_is_a_bad_annotation_named_by_image_and_id(tmp_path, case):
    segmentation, fragment = BAD_GEOMETRY[case]
    root = coco(tmp_path, segmentation)
    with pytest.raises(BadFile) as caught:
        read_coco(root)
    message = str(caught.value)
    assert "instances_val2017.json: annotation 7 of 000000000001.jpg: " in message
    assert fragment in message, message


@pytest.mark.parametrize("segmentation", [
    [[0, 0, 8, 0, 8, 8, 0, 8]],                             # the whole image
    [[-0.5, -0.5, 8.5, -0.5, 8.5, 8.5]],                    # overshooting a little
    [[-8, -8, 16, -8, 16, 16, -8, 16]],                     # up to the margin
    [[0, 0, 4, 0, 4, 4], [5, 5, 7, 5, 7, 7]],               # two parts
    {"size": [8, 8], "counts": [0, 64]},
    "compressed",
])
def test_good_coco_geometry_still_rasterises(tmp_path, segmentation):
    if segmentation == "compressed":
        mask = np.zeros((8, 8), bool)
        mask[2:6, 1:7] = True
        segmentation = {"size": [8, 8], "counts": rle_string(mask)}
    label = read_coco(coco(tmp_path, segmentation))
    assert label.shape == (8, 8) and (label == 2).any()


def test_compressed_rle_strings_are_read_as_pycocotools_reads_them():
    from pycocotools import mask as mask_utils

    from dsspn_cli.data.coco_stuff import _compressed_runs

    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = rng.integers(1, 50, 2)
        mask = rng.random((height, width)) < rng.random()
        runs = _compressed_runs(rle_string(mask))
        assert runs is not None and runs.sum() == height * width
        decoded = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
        assert np.array_equal(decoded, mask.flatten(order="F"))
        rle = {"size": [int(height), int(width)], "counts": rle_string(mask)}
        assert np.array_equal(mask_utils.decode(rle).astype(bool), mask)


def test_the_memory_bomb_is_reported_quickly_and_in_little_memory(tmp_path):
    """A polygon point at 1e12 on an 8x8 image: 16.8 GB and a file called clean before (or
    SIGSEGV under a memory limit); now a bad annotation, found without rasterising."""
    root = coco(tmp_path / "c", [[0, 0, 1e12, 0, 4, 4]])
    # The command's own peak memory (VmHWM, KiB), measured in its process: an address space
    # limit would also count what a CUDA build of torch maps at import, and ru_maxrss keeps
    # the peak of the process before exec (a copy of a large pytest process).
    code = ("import sys\n"
            "from dsspn_cli.cli.main import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as exc:\n    code = exc.code\n"
            "status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
            "print('peak', status, file=sys.stderr)\n"
            "sys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", code, "data", "check", str(root),
                             "--format", "coco", "--split", "val"], capture_output=True,
                            text=True, timeout=120, env=ENV, cwd=REPO)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "annotation 7 of 000000000001.jpg" in result.stdout
    assert "far outside" in result.stdout and "Traceback" not in result.stderr
    peak_kib = int(result.stderr.split("peak")[-1])
    assert peak_kib < 2 * 2**20, f"{peak_kib / 2**20:.1f} GiB"


@pytest.mark.parametrize("file_name", [["a.jpg"], {"a": 1}, 5, None, True])
def test_an_image_entry_whose_file_name_is_not_a_name_is_one_line(tmp_path, run, file_name):
    root = coco(tmp_path, [[0, 0, 4, 0, 4, 4]], image={"id": 1, "file_name": file_name,
                                                      "height": 8, "width": 8})
    message = "instances_val2017.json: image 1: field 'file_name' is"
    with pytest.raises(UserError, match=message) as caught:
        get_format("coco").samples(root, "val")
    assert "\n" not in str(caught.value)
    result = run("data", "check", root, "--format", "coco", "--split", "val")
    assert result.exit_code == 1 and "Traceback" not in result.stderr    # a file problem
    assert message in " ".join(result.stdout.split()), result.stdout


@pytest.mark.parametrize("scan", ["--scan", "--no-scan"])
def test_a_bad_annotation_stops_training_in_one_line_naming_it(ws, run, tmp_path, scan):
    root = tmp_path / "coco"
    coco(root, [[0, 0, 1e12, 0, 4, 4]], height=64, width=64)
    (root / "images" / "val2017").rename(root / "images" / "train2017")
    (root / "annotations" / "instances_val2017.json").rename(
        root / "annotations" / "instances_train2017.json")
    out = tmp_path / "run"
    result = run("train", "--data", f"coco={root}", "--backbone", "resnet18", "--output-stride",
                 "16", "--crop", "64", "--batch-size", "1", "--iters", "1", "--workers", "0",
                 "--device", "cpu", "--out", out, scan)
    expect_error(result, "instances_train2017.json")
    # The scan lists each bad sample above its error line; without it, the error line is it.
    assert "annotation 7 of 000000000001.jpg: polygon 0 has the point" in result.stderr


# ------------------------------------------------------------ matplotlib never parses

@pytest.mark.parametrize("text", BAD_MATH)
def test_the_legend_draws_names_and_file_names_as_written(text):
    rows = [{"id": 0, "name": text + "label", "label": 3, "concepts": [text], "share": 0.5},
            {"id": 1, "name": "road", "label": None, "share": 0.5}]
    colours = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)
    png = legend_png(rows, colours, f"{text}.png")
    assert png.startswith(b"\x89PNG")


def test_a_users_matplotlibrc_cannot_turn_text_into_tex():
    import matplotlib

    with matplotlib.rc_context({"text.usetex": True, "text.parse_math": True}):
        png = legend_png([{"id": 0, "name": "$x^$", "label": None, "share": 1.0}],
                         np.zeros((1, 3), np.uint8), "$\\frac{$")
    assert png.startswith(b"\x89PNG")


def test_predict_writes_every_output_for_an_image_named_like_math(ws, run, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    for i, name in enumerate(BAD_MATH):
        (images / f"{name.replace('/', '_')}{i}.png").write_bytes(ws["photo"].read_bytes())
    labels = write_yaml(tmp_path / "mine.yaml", {"name": "mine", "labels": [
        {"id": 1, "name": "$x^$ road", "synset": "road.n.01"},
        {"id": 2, "name": "a$\\frac{$b", "synset": "sky.n.01"}]})
    out = tmp_path / "out"
    result = run("predict", images, "--model", ws["ckpt"], "--out", out, "--device", "cpu",
                 "--workers", "0", "--labelset", labels)
    assert result.exit_code == 0, result.stderr
    for i, name in enumerate(BAD_MATH):
        for suffix in SUFFIXES:
            assert (out / f"{name.replace('/', '_')}{i}{suffix}").is_file(), (name, suffix)


def test_drawing_a_tree_png_imports_no_torch(tmp_path):
    code = ("import sys\nfrom dsspn_cli.cli.main import main\n"
            f"try:\n    main(['hierarchy', 'show', '--format', 'png', '-o', "
            f"{str(tmp_path / 't.png')!r}])\nexcept SystemExit as exc:\n    assert not exc.code\n"
            "assert 'torch' not in sys.modules\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env=ENV, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t.png").is_file()


def test_the_tree_png_draws_concept_and_dataset_names_as_written(run, tmp_path):
    tree = write_yaml(tmp_path / "tree.yaml", {
        "format": "dsspn-concept-tree", "version": 1, "max_depth": 5, "datasets": {},
        "tree": {"name": "entity", "children": [
            {"name": name, "children": [{"name": f"{name}-a"}, {"name": f"{name}-b"}]}
            for name in BAD_MATH]}})
    result = run("hierarchy", "show", tree, "--format", "png", "-o", tmp_path / "t.png")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "t.png").read_bytes().startswith(b"\x89PNG")


def test_curves_draw_a_run_folder_named_like_math(tmp_path):
    folder = RunFolder(tmp_path / "$x^$")
    folder.root.mkdir(exist_ok=True)
    folder.log({"step": 1, "loss": 2.0})
    folder.log({"step": 2, "loss": 1.0, "val_mIoU": 3.0})
    folder.plot_curves()
    assert folder.curves.read_bytes().startswith(b"\x89PNG")


def test_a_run_named_like_math_with_a_damaged_scan_cache_trains_and_draws_curves(ws, run,
                                                                                 tmp_path):
    """The run folder's name is the title of curves.png; a data-scan.json of another shape
    (planted, or from another version) is no cache: the data is scanned again."""
    out = tmp_path / "$x^$"
    out.mkdir()
    (out / "data-scan.json").write_text(json.dumps({"cityscapes/train": 5}))
    result = run(*train_args(ws, out))
    assert result.exit_code == 0, result.stderr
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    scan = json.loads((out / "data-scan.json").read_text())
    assert isinstance(scan["cityscapes/train"], dict)


# ----------------------------------------------------------------- data-scan.json shape

@pytest.mark.parametrize("content,kept", [
    ('{"cityscapes/train": 5}', {}),
    ('{"cityscapes/train": {"fingerprint": 5, "bad": []}}', {}),
    ('{"cityscapes/train": {"fingerprint": "f", "bad": 5}}', {}),
    ('{"cityscapes/train": {"fingerprint": "f", "bad": [5]}}', {}),
    ('{"cityscapes/train": {"fingerprint": "f", "bad": [["a", "b"]]}}', {}),
    ('{"cityscapes/train": {"fingerprint": "f", "bad": [[1, 2]]}}', {}),
    ('{"cityscapes/train": {"fingerprint": "f", "bad": [[-1, "m"]]}}', {}),
    ('{"cityscapes/train": {"fingerprint": "f", "bad": [[true, "m"]]}}', {}),
    ('{"cityscapes/train": {"fingerprint": "f", "bad": [[1, "m", 3]]}}', {}),
    ('{"cityscapes/train": {"bad": []}}', {}),
    ('[1, 2]', {}),
    ('"text"', {}),
    ("[" * 100000, {}),
    ("not json", {}),
    ('{"a": {"fingerprint": "f", "bad": [[1, "m"]]}, "b": 3}',
     {"a": {"fingerprint": "f", "bad": [[1, "m"]]}}),
])
def test_a_scan_cache_of_another_shape_is_no_cache(tmp_path, content, kept):
    path = tmp_path / "data-scan.json"
    path.write_text(content)
    assert _read_scan_cache(path) == kept


# --------------------------------------------------------------------- --labelset

def labelset(tmp_path, *labels, ignore_index=255):
    return write_yaml(tmp_path / "mine.yaml", {"name": "mine", "ignore_index": ignore_index,
                                               "labels": list(labels)})


@pytest.mark.parametrize("colour", [["a", "b", "c"], [300, 0, 0], [-1, 0, 0], [1, 2],
                                    [1, 2, 3, 4], "red", [True, 0, 0], [1.5, 0, 0],
                                    {"r": 1}, [[1], 2, 3]])
def test_a_label_sets_colours_are_checked_naming_the_file_and_label(ws, run, tmp_path,
                                                                     colour):
    chosen = labelset(tmp_path, {"id": 1, "name": "road", "synset": "road.n.01",
                                 "color": colour})
    expect_error(run("predict", ws["photo"], "--model", ws["ckpt"], "--labelset", chosen,
                     "--out", tmp_path / "out", "--device", "cpu"),
                 "mine.yaml: labels[0] (id 1): field 'color' is", "[red, green, blue]")
    assert not (tmp_path / "out").exists()


def test_a_negative_label_id_is_refused_not_written_as_other(ws, run, tmp_path):
    chosen = labelset(tmp_path, {"id": -1, "name": "road", "synset": "road.n.01"},
                      {"id": 2, "name": "sky", "synset": "sky.n.01"})
    expect_error(run("predict", ws["photo"], "--model", ws["ckpt"], "--labelset", chosen,
                     "--out", tmp_path / "out", "--device", "cpu"),
                 "mine.yaml: label 'road' (id -1): a negative id cannot be written",
                 "ignore_index (255")
    assert not (tmp_path / "out").exists()


def test_a_label_with_the_id_of_other_is_refused(ws, run, tmp_path):
    chosen = labelset(tmp_path, {"id": 0, "name": "road", "synset": "road.n.01"},
                      {"id": 2, "name": "sky", "synset": "sky.n.01"}, ignore_index=0)
    expect_error(run("predict", ws["photo"], "--model", ws["ckpt"], "--labelset", chosen,
                     "--out", tmp_path / "out", "--device", "cpu"),
                 "label 'road' (id 0): has the id of ignore_index (0)")


def test_an_unmapped_label_with_id_minus_one_is_allowed(ws, run, tmp_path):
    """Cityscapes' licence plate: id -1, never in a label map, ignored."""
    chosen = labelset(tmp_path, {"id": -1, "name": "plate", "ignore": True},
                      {"id": 2, "name": "sky", "synset": "sky.n.01"})
    result = run("predict", ws["photo"], "--model", ws["ckpt"], "--labelset", chosen,
                 "--out", tmp_path / "out", "--device", "cpu", "--workers", "0")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("second", [
    {"id": 4, "name": "street", "synset": "road.n.01"},      # one synset twice
    {"id": 4, "name": "Road"},                               # a name that finds the same
])
def test_two_labels_on_one_concept_name_the_file_and_both_labels(ws, run, tmp_path, second):
    chosen = labelset(tmp_path, {"id": 1, "name": "road", "synset": "road.n.01"}, second,
                      {"id": 5, "name": "carriageway", "synset": "road.n.01"})
    line = expect_error(run("predict", ws["photo"], "--model", ws["ckpt"], "--labelset",
                            chosen, "--out", tmp_path / "out", "--device", "cpu"),
                        f"mine.yaml: labels 'road' (id 1), '{second['name']}' (id 4)",
                        "cannot tell them apart")
    assert "--classes" not in line


def test_classes_named_twice_still_blame_classes(ws, run, tmp_path):
    expect_error(run("predict", ws["photo"], "--model", ws["ckpt"], "--classes", "sky,sky",
                     "--out", tmp_path / "out", "--device", "cpu"),
                 "--classes sky,sky: ", "is named twice")


# ------------------------------------------------------------ names on one line

UNPRINTABLE = ["two\nlines", "tab\there", "esc\x1b[31mred", "bell\x07", "cr\rx",
               "sep\u2028x", "rtl\u202eevil", "nul\x00x", "del\x7fx", "c1\x85x", " "]


@pytest.mark.parametrize("name", UNPRINTABLE)
def test_a_concept_name_that_does_not_print_on_one_line_is_reported_and_refused(run,
                                                                              tmp_path, name):
    doc = {"format": "dsspn-concept-tree", "version": 1, "datasets": {},
           "tree": {"name": "entity", "children": [{"name": name}, {"name": "plain"}]}}
    path = write_yaml(tmp_path / "tree.yaml", doc)
    result = run("hierarchy", "check", path)
    assert result.exit_code == 1, result.stdout
    rows = [line for line in result.stdout.splitlines() if "printable names" in line]
    assert len(rows) == 1 and ("is empty" in rows[0] or "holds the character" in rows[0])
    assert not any(c in result.stdout for c in "\x1b\x07\r\u2028\u202e\x00\x7f\x85\t")
    for args in (["show", path], ["show", path, "--format", "png", "-o", tmp_path / "t.png"],
                 ["tables", path, "-o", tmp_path / "t"]):
        line = expect_error(run("hierarchy", *args), "names must be one printable line")
        assert not any(c in line for c in "\x1b\x07\r\u2028\u202e\x00\x7f\x85\t")
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "t").exists()


def test_node_link_trees_are_held_to_the_same_names(run, tmp_path):
    doc = {"directed": True, "multigraph": False,
           "graph": {"format": "dsspn-concept-tree", "version": 1, "datasets": {}},
           "nodes": [{"id": 0, "name": "r"}, {"id": 1, "name": "a\nb"}, {"id": 2, "name": "c"}],
           "edges": [{"source": 0, "target": 1}, {"source": 0, "target": 2}]}
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(doc))
    assert run("hierarchy", "check", path).exit_code == 1
    expect_error(run("hierarchy", "show", path), "concept 'a\\nb': the name holds the "
                                                 "character \\n")


def test_a_dataset_name_that_does_not_print_is_refused(run, tmp_path):
    doc = {"format": "dsspn-concept-tree", "version": 1,
           "datasets": {"city\nscapes": {"labelset": "cityscapes"}},
           "tree": {"name": "entity", "children": [{"name": "a"}, {"name": "b"}]}}
    path = write_yaml(tmp_path / "tree.yaml", doc)
    for command in ("check", "show"):
        expect_error(run("hierarchy", command, path),
                     "datasets: the name 'city\\nscapes' holds the character \\n")


def test_printable_names_in_any_script_are_fine(run, tmp_path):
    names = ["Straße", "自行车", "дорога", "car (parked)", "a$b", "ok\u200dzwj"]
    doc = {"format": "dsspn-concept-tree", "version": 1, "datasets": {},
           "tree": {"name": "entity", "children": [{"name": n} for n in names]}}
    path = write_yaml(tmp_path / "tree.yaml", doc)
    assert run("hierarchy", "check", path).exit_code == 0
    result = run("hierarchy", "show", path)
    assert result.exit_code == 0 and all(n in result.stdout for n in names)


@pytest.mark.parametrize("name", ["two\nlines", "esc\x1b[2J", "rtl\u202e"])
def test_label_and_group_names_that_do_not_print_are_refused_on_load(tmp_path, name):
    path = write_yaml(tmp_path / "x.yaml", {"name": "x", "labels": [
        {"id": 0, "name": name, "synset": "car.n.01"}]})
    with pytest.raises(UserError, match="the name holds the character") as caught:
        load_labelset(str(path))
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)
    path = write_yaml(tmp_path / "y.yaml", {"name": "y", "groups": [{"name": name}],
                                            "labels": [{"id": 0, "name": "car",
                                                        "synset": "car.n.01"}]})
    with pytest.raises(UserError, match="group '.*': the name holds the character"):
        load_labelset(str(path))
    text = tmp_path / "z.txt"
    text.write_text("car\n" + name.replace("\n", "\t") + "\n")
    with pytest.raises(UserError, match="the name holds the character"):
        load_labelset(str(text))
