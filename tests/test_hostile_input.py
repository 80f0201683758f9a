"""Unusual input, as a new user or an attacker gives it, fixed at the mechanism: the one image
reader, the one output writer, the tree readers, the one console, one-line OSErrors, the
checkpoint schema, signals, and output that reads well when it is not a terminal.

Each case builds the real thing (a PNG header claiming 200000x200000 pixels, a FIFO, a
symbolic link, a tree naming /etc/passwd as its label set, a checkpoint with NaN weights, a
second SIGTERM) and runs the real command or reader on it.
"""
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, expect_error, untrained_checkpoint, write_yaml
from PIL import Image

from dsspn_cli.data.common import BadFile, image_size, read_image, read_label_png
from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.checkpoint import VERSION, load_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.errors import UserError
from dsspn_cli.files import atomic_write_bytes, atomic_write_text, check_output

LONG = "n" * 300                                   # one name over the 255-byte limit
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def png_bytes(width: int, height: int, rows: bytes = b"", depth: int = 8, colour: int = 2,
              chunks=()) -> bytes:
    """A PNG written by hand: any header (a 200000x200000 one is a few bytes), extra chunks."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + b"".join(chunk(k, d) for k, d in chunks)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))




@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Sample Cityscapes data, an untrained checkpoint (the model as built, saved like a
    trained one) and images of every odd kind."""
    root = tmp_path_factory.mktemp("hostile")
    write_sample_data(root / "sample", seed=0, images=2, size=(64, 128))
    ckpt = untrained_checkpoint(root / "model.pt")
    photo = root / "photo.png"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(photo)
    bomb = root / "bomb.png"
    bomb.write_bytes(png_bytes(200000, 200000))
    return {"root": root, "city": root / "sample" / "cityscapes", "ckpt": ckpt,
            "photo": photo, "bomb": bomb}


def city_copy(ws, name, damage):
    """A copy of the sample Cityscapes data with ``damage(train_images, train_labels)``."""
    target = ws["root"] / name
    if not target.exists():
        shutil.copytree(ws["city"], target)
        damage(sorted((target / "leftImg8bit" / "train").rglob("*.png")),
               sorted((target / "gtFine" / "train").rglob("*_labelIds.png")))
    return target


# ------------------------------------------------------------------------------ images


def test_a_decompression_bomb_is_a_bad_file_naming_the_file_and_the_limit(ws):
    with pytest.raises(BadFile, match=r"bomb.png: image of 200000x200000 pixels is over the "
                       r"limit of 500,000,000 pixels.*DSSPN_MAX_IMAGE_PIXELS"):
        read_image(ws["bomb"])
    with pytest.raises(BadFile, match="over the limit"):
        read_label_png(ws["bomb"])
    with pytest.raises(BadFile, match="over the limit"):
        image_size(ws["bomb"])


def test_photos_over_pillows_own_limit_are_read(tmp_path):
    """180 MP is over Pillow's 179 MP bomb limit, under ours: the header is read, where
    Pillow alone raises DecompressionBombError (not decoded here: 540 MB of pixels)."""
    path = tmp_path / "pano.png"
    path.write_bytes(png_bytes(15000, 12000))
    assert image_size(path) == (12000, 15000)


def test_the_pixel_limit_is_a_setting(ws, monkeypatch):
    monkeypatch.setenv("DSSPN_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(BadFile, match="64x48 pixels is over the limit of 1,000 pixels"):
        read_image(ws["photo"])
    monkeypatch.setenv("DSSPN_MAX_IMAGE_PIXELS", "0")            # no limit
    assert read_image(ws["photo"]).shape == (48, 64, 3)
    monkeypatch.setenv("DSSPN_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(UserError, match="DSSPN_MAX_IMAGE_PIXELS='lots': give a whole number"):
        read_image(ws["photo"])


def test_a_bomb_in_data_check_predict_and_train_skip_bad(ws, run, tmp_path):
    def plant(images, labels):
        images[0].write_bytes(png_bytes(200000, 200000))
    data = city_copy(ws, "bombed", plant)
    result = run("data", "check", data, "--format", "cityscapes")
    assert result.exit_code == 1 and "Traceback" not in result.stderr + result.stdout
    assert "200000x200000 pixels is over the limit" in result.stdout
    result = run("predict", "--model", ws["ckpt"], ws["bomb"], "--out", tmp_path / "p")
    expect_error(result, "bomb.png", "over the limit of 500,000,000 pixels")
    assert not (tmp_path / "p").exists()
    result = run("train", "--data", f"cityscapes={data}", "--out", tmp_path / "run", "--iters",
                 "1", "--batch-size", "1", "--crop", "32", "--backbone", "resnet18",
                 "--output-stride", "16", "--workers", "0", "--set", "head.hidden=8",
                 "--skip-bad", "--val-every", "100")
    assert result.exit_code == 0, result.stderr
    assert "--skip-bad: leaving out 1 of" in result.stderr
    assert "over the limit" in (tmp_path / "run" / "bad-files.txt").read_text()


def exif_jpeg(path, orientation: int, pixels: np.ndarray):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=100, subsampling=0)
    return path


def test_a_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    stored = np.zeros((40, 100, 3), np.uint8)
    stored[:, :50] = 250                                  # the left half of the stored pixels
    path = exif_jpeg(tmp_path / "phone.jpg", 6, stored)  # 6: turn 90 degrees clockwise
    upright = read_image(path)
    assert upright.shape == (100, 40, 3) and image_size(path) == (100, 40)
    assert upright[10, 20, 0] > 200 and upright[90, 20, 0] < 50   # left became top
    assert read_image(exif_jpeg(tmp_path / "mirror.jpg", 2, stored))[20, 90, 0] > 200


def test_a_label_map_is_never_turned(tmp_path):
    values = np.zeros((40, 100), np.uint8)
    values[:, :50] = 7
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "label.png"
    Image.fromarray(values).save(path, exif=exif.tobytes())
    assert Image.open(path).getexif().get(0x0112) == 6
    assert read_label_png(path).shape == (40, 100)


def test_a_label_map_drawn_on_the_stored_pixels_of_a_turned_photo_is_told_so(tmp_path, run):
    root = tmp_path / "mine"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    write_yaml(root / "labels.yaml", {"name": "mine", "labels": [
        {"id": 0, "name": "road", "synset": "road.n.01"},
        {"id": 1, "name": "car", "synset": "car.n.01"}]})
    exif_jpeg(root / "images" / "train" / "a.jpg", 8, np.zeros((40, 100, 3), np.uint8))
    Image.fromarray(np.zeros((40, 100), np.uint8)).save(root / "labels" / "train" / "a.png")
    result = run("data", "check", root, "--format", "folder")
    assert result.exit_code == 1
    assert "size 100x40 differs from its image a.jpg (40x100) as shown upright by its EXIF " \
           "orientation 8; the label map fits the stored pixels" in result.stdout


def test_16_bit_photos_are_scaled_not_clipped_and_16_bit_label_maps_keep_their_values(tmp_path):
    grey = np.array([[0, 1000, 32768, 65535]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert read_image(tmp_path / "grey16.png")[0, :, 0].tolist() == [0, 4, 128, 255]
    rgb = np.array([[[65535, 32768, 1000]]], np.uint16)
    rows = b"\x00" + rgb.astype(">u2").tobytes()
    (tmp_path / "rgb16.png").write_bytes(png_bytes(1, 1, rows, depth=16, colour=2))
    assert read_image(tmp_path / "rgb16.png")[0, 0].tolist() == [255, 128, 3]
    labels = np.array([[0, 300, 1000, 65535]], np.uint16)
    Image.fromarray(labels).save(tmp_path / "labels16.png")
    assert read_label_png(tmp_path / "labels16.png").tolist() == [[0, 300, 1000, 65535]]


@pytest.mark.parametrize("name,content,fragment", [
    ("header-cut.png", lambda full: full[:30], "truncated or damaged PNG"),
    ("data-cut.png", lambda full: full[: len(full) - 40], "truncated or damaged"),
    ("noise.jpg", lambda full: b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
     "truncated or damaged"),
    ("words.png", lambda full: b"hello, this is not a picture\n", "not in an image format"),
    ("empty.png", lambda full: b"", "not in an image format"),
])
def test_broken_images_say_what_is_wrong(tmp_path, name, content, fragment):
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    path = tmp_path / name
    path.write_bytes(content(buffer.getvalue()))
    with pytest.raises(BadFile) as caught:
        read_image(path)
    assert fragment in caught.value.problem and str(path) in str(caught.value)
    if "truncated" in fragment:
        assert "give PNG or JPEG" not in caught.value.problem


def test_os_errors_on_images_are_bad_files(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(BadFile, match="folder.png: cannot read the image: it is a folder"):
        read_image(tmp_path / "folder.png")
    with pytest.raises(BadFile, match="ENAMETOOLONG"):
        read_image(tmp_path / (LONG + ".png"))
    with pytest.raises(BadFile, match="missing"):
        read_label_png(tmp_path / "gone.png")


def test_pillow_warnings_never_reach_stderr(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010E] = "a description " * 10
    path = tmp_path / "damaged-exif.jpg"
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(path, exif=exif.tobytes()[:-60])
    code = ("import sys; from dsspn_cli.data.common import read_image; "
            f"print(read_image({str(path)!r}).shape)")
    raw = subprocess.run([sys.executable, "-W", "always", "-c",
                          "from PIL import Image; Image.open(sys.argv[1]).getexif()".replace(
                              "sys.argv[1]", repr(str(path)))], capture_output=True, text=True)
    assert "UserWarning" in raw.stderr                  # Pillow does warn about this file
    quiet = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                           text=True, cwd=REPO)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "(16, 8, 3)"
    assert "Warning" not in quiet.stderr, quiet.stderr


def test_every_image_is_read_by_the_one_reader():
    """No module but data/common.py opens an image with Pillow."""
    opened = [path for path in (REPO / "dsspn_cli").rglob("*.py")
              if "Image.open(" in path.read_text() and path.name != "common.py"]
    assert opened == []


# ------------------------------------------------------------------------------ outputs


def test_export_refuses_to_overwrite_its_own_checkpoint(ws, run):
    before = ws["ckpt"].read_bytes()
    expect_error(run("export", ws["ckpt"], "-o", ws["ckpt"]), "is also an input", "model.pt")
    link = ws["root"] / "hard-link.pt"
    if not link.exists():
        os.link(ws["ckpt"], link)
    expect_error(run("export", ws["ckpt"], "-o", link), "is also an input")
    assert ws["ckpt"].read_bytes() == before


def test_merge_and_show_refuse_to_overwrite_their_input(tmp_path, run):
    labels = tmp_path / "mine.yaml"
    shutil.copy(REPO / "hierarchies" / "labelsets" / "cityscapes.yaml", labels)
    before = labels.read_bytes()
    expect_error(run("hierarchy", "merge", "coco", labels, "-o", labels), "is also an input")
    assert labels.read_bytes() == before
    tree = tmp_path / "tree.yaml"
    shutil.copy(REPO / "hierarchies" / "dsspn-four-datasets.yaml", tree)
    expect_error(run("hierarchy", "show", tree, "--format", "yaml", "-o", tree),
                 "is also an input")
    (tmp_path / "tables").mkdir()
    os.link(tree, tmp_path / "tables" / "summary.txt")
    expect_error(run("hierarchy", "tables", tree, "-o", tmp_path / "tables"),
                 "summary.txt: is also an input")


def test_a_fifo_a_device_or_a_link_is_never_replaced_nor_written_through(tmp_path, run):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    expect_error(run("hierarchy", "show", "--format", "yaml", "-o", fifo),
                 "is a FIFO (named pipe)")
    with pytest.raises(UserError, match="FIFO"):
        atomic_write_text(fifo, "x")
    with pytest.raises(UserError, match="character device"):
        atomic_write_bytes("/dev/null", b"x")
    real = tmp_path / "real.yaml"
    real.write_text("old")
    for target in (fifo, real, "/proc/self/fd/1", tmp_path / "nowhere"):
        link = tmp_path / f"link-{abs(hash(str(target)))}.yaml"
        link.symlink_to(target)
        expect_error(run("hierarchy", "show", "--format", "yaml", "-o", link),
                     "is a symbolic link")
        with pytest.raises(UserError, match="is a symbolic link"):
            atomic_write_text(link, "x")
        assert link.is_symlink()
    assert fifo.is_fifo() and real.read_text() == "old"
    assert not (tmp_path / "nowhere").exists()


def test_a_link_planted_among_a_commands_outputs_is_refused(ws, run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "photo_labels.png").symlink_to(victim)
    expect_error(run("predict", "--model", ws["ckpt"],
                     ws["photo"], "--out", out), "is a symbolic link")
    assert victim.read_text() == "keep me"


def test_evaluate_checks_its_outputs_before_the_work(ws, run, tmp_path):
    # The data is missing too: the bad output is told first, before any evaluation.
    expect_error(run("evaluate", ws["ckpt"], "--data", f"cityscapes={tmp_path / 'none'}",
                     "--json", tmp_path), "is a folder; give a file name")
    blocker = tmp_path / "file"
    blocker.write_text("")
    expect_error(run("evaluate", ws["ckpt"], "--labels-out", blocker),
                 "exists and is a file, not a folder")
    expect_error(run("evaluate", ws["ckpt"], "--json", blocker / "scores.json"),
                 "is a file, not a folder")


@pytest.mark.parametrize("make_args,fragment", [
    (lambda t, w: ["predict", "--model", w["ckpt"], w["photo"], "--out", t / "file"],
     "exists and is a file, not a folder"),
    (lambda t, w: ["data", "sample", t / "file"], "exists and is a file, not a folder"),
    (lambda t, w: ["hierarchy", "tables", "-o", t / "file"], "exists and is a file"),
    (lambda t, w: ["hierarchy", "merge", "cityscapes", "-o", t / "file" / "x.yaml"],
     "is a file, not a folder"),
    (lambda t, w: ["hierarchy", "show", "--format", "png", "-o", t], "is a folder"),
    (lambda t, w: ["export", w["ckpt"], "-o", t / LONG], "bytes, longer than the file system"),
    (lambda t, w: ["train", "--out", t / "file", "--data", f"cityscapes={w['city']}"],
     "exists and is a file, not a folder"),
    (lambda t, w: ["train", "--out", t / LONG / "run", "--data", f"cityscapes={w['city']}"],
     "longer than the file system allows"),
])
def test_every_command_checks_its_output_before_the_work(ws, run, tmp_path, make_args,
                                                         fragment):
    (tmp_path / "file").write_text("not a folder")
    expect_error(run(*make_args(tmp_path, ws)), fragment)


def test_predict_refuses_an_output_that_would_replace_an_input(ws, run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(ws["photo"], out / "x.png")
    shutil.copy(ws["photo"], out / "x_color.png")        # x.png's colour map would go here
    expect_error(run("predict", "--model", ws["ckpt"],
                     out / "x.png", out / "x_color.png", "--out", out),
                 "x_color.png: is also an input")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_an_unwritable_folder_is_told_before_the_work(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    with pytest.raises(UserError, match="not writable .permission denied, EACCES"):
        check_output(folder / "x.yaml")


def test_write_errors_say_the_real_problem(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(UserError, match="dir.yaml: is a folder") as caught:
        atomic_write_text(tmp_path / "dir.yaml", "x")
    assert "disk has space" not in str(caught.value)
    with pytest.raises(UserError, match="f.yaml is a file, not a folder"):
        atomic_write_text(write_yaml(tmp_path / "f.yaml", {}) / "x.yaml", "x")
    with pytest.raises(UserError, match="ENAMETOOLONG|longer than the file system"):
        atomic_write_text(tmp_path / LONG, "x")
    code = ("import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (10, 10)); "
            "from dsspn_cli.files import atomic_write_bytes; "
            f"atomic_write_bytes({str(tmp_path / 'big.bin')!r}, bytes(1000))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "EFBIG" in proc.stderr and "file-size limit" in proc.stderr, proc.stderr
    assert not list(tmp_path.glob(".big.bin.*"))


# ------------------------------------------------------------------------------ trees


def tree_doc(children, datasets=None):
    return {"format": "dsspn-concept-tree", "version": 1, "max_depth": 5,
            "datasets": datasets or {}, "tree": {"name": "entity", "children": children}}


def node_link(nodes, edges, datasets=None):
    return {"directed": True, "multigraph": False,
            "graph": {"format": "dsspn-concept-tree", "version": 1, "datasets": datasets or {}},
            "nodes": nodes, "edges": edges}


TREES = {
    "two siblings of one name": (
        "yaml", tree_doc([{"name": "a"}, {"name": "a"}, {"name": "b"}]),
        "unique names", "concept 'entity' has 2 children named 'a'"),
    "one name under two parents": (
        "yaml", tree_doc([{"name": "a", "children": [{"name": "x"}, {"name": "y"}]},
                          {"name": "b", "children": [{"name": "x"}, {"name": "z"}]}]),
        "one parent", "concept 'x' has several parents"),
    "two nodes of one id": (
        "json", node_link([{"id": 0, "name": "r"}, {"id": 1, "name": "a"},
                           {"id": 1, "name": "b"}, {"id": 2, "name": "c"}],
                          [{"source": 0, "target": 1}, {"source": 0, "target": 2}]),
        "unique ids", "nodes[1] and nodes[2] have the same id 1"),
    "an edge to no node": (
        "json", node_link([{"id": 0, "name": "r"}, {"id": 1, "name": "a"},
                           {"id": 2, "name": "b"}],
                          [{"source": 0, "target": 1}, {"source": 0, "target": 2},
                           {"source": 2, "target": 7}]),
        "defined nodes", "edges[2]: target 7 is not the id of a node"),
    "an edge from no node": (
        "json", node_link([{"id": 0, "name": "r"}, {"id": 1, "name": "a"},
                           {"id": 2, "name": "b"}],
                          [{"source": 0, "target": 1}, {"source": 0, "target": 2},
                           {"source": "ghost", "target": 1}]),
        "defined nodes", "edges[2]: source 'ghost' is not the id of a node"),
}


@pytest.mark.parametrize("case", sorted(TREES))
def test_tree_problems_are_a_table_in_check_and_refused_on_load(tmp_path, run, case):
    kind, doc, rule, message = TREES[case]
    path = tmp_path / f"tree.{kind}"
    path.write_text(json.dumps(doc) if kind == "json" else yaml.safe_dump(doc))
    result = run("hierarchy", "check", path)
    assert result.exit_code == 1 and rule in result.stdout, result.stdout
    expect_error(run("hierarchy", "show", path), message)
    expect_error(run("hierarchy", "tables", path, "-o", tmp_path / "t"), message)


@pytest.mark.parametrize("reference", ["/etc/passwd", "/etc/hostname", "secrets.cfg",
                                       "config.yaml", "/etc"])
def test_a_label_set_reference_that_is_not_a_label_set_is_never_read(tmp_path, run,
                                                                     reference):
    (tmp_path / "secrets.cfg").write_text("password: hunter2\n")
    write_yaml(tmp_path / "config.yaml", {"password": "hunter2", "labels": "none"})
    tree = tmp_path / "tree.yaml"
    write_yaml(tree, tree_doc([{"name": "a", "labels": {"x": [0]}},
                               {"name": "b", "labels": {"x": [1]}}],
                              {"x": {"labelset": reference}}))
    result = run("hierarchy", "check", tree)
    assert result.exit_code == 1 and "datasets.x.labelset" in result.stdout
    assert "root:" not in result.stdout and "hunter2" not in result.stdout
    assert run("hierarchy", "tables", tree, "-o", tmp_path / "t").exit_code == 0
    written = (tmp_path / "t" / "tables.json").read_text()
    assert "root:" not in written and "hunter2" not in written


# ------------------------------------------------------------------------------ console


def test_names_are_printed_literally_never_as_markup_or_emoji(tmp_path, run):
    names = ["a[/]", "[red]b", ":x: c", "[bold]", "d[/red]"]
    tree = write_yaml(tmp_path / "tree.yaml", tree_doc(    # single-child chains: a table
        [{"name": n, "children": [{"name": f"{n}-child", "labels": {"x": [i]}}]}
         for i, n in enumerate(names)], {"x": {"labelset": "x.yaml"}}))
    write_yaml(tmp_path / "x.yaml", {"name": "x", "labels": [
        {"id": i, "name": f"l{i}", "synset": "car.n.01" if i == 0 else None}
        for i in range(len(names))]})
    for args in (["hierarchy", "check", tree], ["hierarchy", "show", tree]):
        result = run(*args)
        assert "Traceback" not in result.stderr and "MarkupError" not in result.stderr
        for name in names:
            assert name in result.stdout, (name, result.stdout)
        assert "\u274c" not in result.stdout                    # :x: is not an emoji


def test_file_names_are_printed_literally_and_whole(ws, tmp_path, run):
    data = tmp_path / "city"
    shutil.copytree(ws["city"], data)
    first = sorted((data / "leftImg8bit" / "train").rglob("*.png"))[0]
    odd = first.with_name("[red]" + "x" * 150 + "_leftImg8bit.png")
    first.rename(odd)
    result = run("data", "check", data, "--format", "cityscapes")
    assert result.exit_code == 1
    lines = [line for line in result.stdout.splitlines() if str(odd) in line]
    assert lines, result.stdout                            # one line, grep finds it whole


def test_messages_and_paths_are_never_wrapped(tmp_path, run):
    deep = tmp_path / ("folder-" * 20) / "tree.yaml"
    deep.parent.mkdir(parents=True)
    shutil.copy(REPO / "hierarchies" / "dsspn-four-datasets.yaml", deep)
    result = run("hierarchy", "check", deep)
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 1 and str(deep) in result.stdout


def test_show_drops_no_concept_at_any_depth(tmp_path, run):
    """A chain 60 deep (a sibling at each level): rich's Tree would stop near depth 18."""
    nodes = [{"id": 0, "name": "root"}]
    edges = []
    for depth in range(1, 61):
        for side in ("deep", "leaf"):
            nodes.append({"id": len(nodes), "name": f"{side}-{depth}"})
            edges.append({"source": 0 if depth == 1 else 2 * depth - 3, "target": len(nodes) - 1})
    path = tmp_path / "deep.json"
    path.write_text(json.dumps(node_link(nodes, edges)))
    result = run("hierarchy", "show", path)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.splitlines()) == len(nodes)
    assert "deep-60" in result.stdout and "leaf-60" in result.stdout
    assert run("hierarchy", "show", path, "-o", tmp_path / "deep.txt").exit_code == 0
    assert "leaf-60" in (tmp_path / "deep.txt").read_text()


def test_progress_is_plain_lines_with_step_rate_and_eta_when_not_a_terminal(ws, run,
                                                                            monkeypatch):
    monkeypatch.setenv("DSSPN_PROGRESS_SECONDS", "0")
    result = run("data", "check", ws["city"], "--format", "cityscapes")
    assert result.exit_code == 0
    lines = [l for l in result.stderr.splitlines() if l.startswith("checking: ")]
    assert len(lines) >= 3, result.stderr
    assert "images/s, ETA 0:00:" in lines[0] and "(100%)" in lines[-1]
    assert "took 0:00:" in lines[-1]
    assert "\x1b" not in result.stderr                   # no terminal control codes


@pytest.fixture(scope="module")
def trained(ws, tmp_path_factory):
    """A 3-step run whose console is a file (not a terminal), progress lines at every step:
    (run folder, what the console printed)."""
    from dsspn_cli.console import console
    from dsspn_cli.engine.train import train

    out = tmp_path_factory.mktemp("trained") / "run"
    printed = io.StringIO()
    before = os.environ.get("DSSPN_PROGRESS_SECONDS")
    os.environ["DSSPN_PROGRESS_SECONDS"] = "0"
    try:
        train(TrainConfig(data={"cityscapes": str(ws["city"])}, out=str(out), iters=3,
                          batch_size=1, crop=32, backbone="resnet18", output_stride=16,
                          workers=0, val_every=100, head={"hidden": 8}),
              console=console(file=printed))
    finally:
        os.environ.pop("DSSPN_PROGRESS_SECONDS")
        if before is not None:
            os.environ["DSSPN_PROGRESS_SECONDS"] = before
    return out, printed.getvalue()


def test_training_progress_when_not_a_terminal(trained):
    _, printed = trained
    steps = [l for l in printed.splitlines() if l.startswith("training: ")]
    assert [l.split()[1] for l in steps][:3] == ["1/3", "2/3", "3/3"], printed
    assert "loss " in steps[0] and "steps/s, ETA" in steps[0] and "took" in steps[-1]
    assert any(l.startswith("reading the data once: ") for l in printed.splitlines())
    assert "\x1b" not in printed


def test_progress_is_quiet_for_quick_work(ws, run):
    result = run("data", "check", ws["city"], "--format", "cityscapes")
    assert result.exit_code == 0 and result.stderr == ""


# ------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("make_args", [
    lambda w: ["hierarchy", "check", LONG + ".yaml"],
    lambda w: ["hierarchy", "show", LONG + ".json"],
    lambda w: ["hierarchy", "merge", LONG + ".yaml"],
    lambda w: ["hierarchy", "merge", "cityscapes", "-o", w["root"] / LONG / "t.yaml"],
    lambda w: ["data", "check", LONG, "--format", "cityscapes"],
    lambda w: ["data", "stats", w["root"] / LONG, "--format", "ade"],
    lambda w: ["predict", "--model", w["ckpt"],
               w["root"] / (LONG + ".png"), "--out", w["root"] / "p"],
    lambda w: ["predict", "--model", w["ckpt"], w["photo"], "--out", w["root"] / LONG],
    lambda w: ["evaluate", w["root"] / (LONG + ".pt")],
    lambda w: ["train", "--config", LONG + ".yaml"],
    lambda w: ["data", "sample", w["root"] / LONG],
])
def test_a_name_over_255_bytes_is_one_line(ws, run, make_args):
    line = expect_error(run(*make_args(ws)))
    assert "ENAMETOOLONG" in line or "longer than the file system allows" in line, line


# ------------------------------------------------------------------------------ checkpoints


def write_payload(path, edit):
    payload = torch.load(path.parent / "model.pt", weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


CHECKPOINTS = {
    "only the marker": (lambda p: p.clear() or p.update({"format": "dsspn-checkpoint"}),
                        "the checkpoint has no 'version' field"),
    "no weights": (lambda p: p.pop("model"), "the checkpoint has no 'model' field"),
    "no tree": (lambda p: p.pop("tree"), "the checkpoint has no 'tree' field"),
    "step as text": (lambda p: p.update(step="12"), "the checkpoint's 'step' has type str, "
                     "expected int"),
    "config as a list": (lambda p: p.update(config=[1]), "'config' has type list, expected "
                         "dict"),
    "a weight that is not a tensor": (lambda p: p["model"].update(extra=[1.0]),
                                      "weight 'extra' is not a tensor"),
    "a newer version": (lambda p: p.update(version=VERSION + 1),
                        f"a checkpoint of version {VERSION + 1}"),
    "an older version": (lambda p: p.update(version=VERSION - 1),
                         f"a checkpoint of version {VERSION - 1}"),
    "NaN weights": (lambda p: next(v for v in p["model"].values()
                                   if v.is_floating_point()).view(-1)[:1].fill_(float("nan")),
                    "hold NaN or infinite values"),
    "infinite weights": (lambda p: next(v for v in reversed(p["model"].values())
                                        if v.is_floating_point()).fill_(float("inf")),
                         "hold NaN or infinite values"),
    "a cycle in its tree": (lambda p: p["tree"]["edges"].append(
        {"source": p["tree"]["edges"][-1]["target"], "target": p["tree"]["edges"][-1]["source"]}),
        "the concept tree in this checkpoint is not a tree (cycle"),
    "a tree that is not node-link": (lambda p: p.update(tree={"nodes": "x"}),
                                     "the concept tree in this checkpoint is damaged"),
}


@pytest.mark.parametrize("case", sorted(CHECKPOINTS))
def test_a_checkpoint_is_checked_on_load(ws, run, case):
    edit, fragment = CHECKPOINTS[case]
    path = write_payload(ws["root"] / f"edited-{case.replace(' ', '-')}.pt", edit)
    for args in (["evaluate", path], ["predict", "--model", path, ws["photo"], "--out",
                                      ws["root"] / "p-ckpt"], ["export", path]):
        line = expect_error(run(*args), path.name, fragment)
        assert "hierarchy check" not in line


@pytest.mark.parametrize("content,fragment", [
    (lambda: os.urandom(4096), "damaged, or not a PyTorch file"),
    (lambda: b"", "damaged, or not a PyTorch file"),
    (lambda: (REPO / "README.md").read_bytes()[:3000], "damaged, or not a PyTorch file"),
])
def test_damaged_bytes_are_not_called_code(tmp_path, content, fragment):
    path = tmp_path / "x.pt"
    path.write_bytes(content())
    with pytest.raises(UserError, match=fragment) as caught:
        load_checkpoint(path)
    assert "carries code" not in str(caught.value)


def test_a_checkpoint_cut_short_or_with_a_damaged_member_is_damaged(ws, tmp_path):
    import zipfile

    data = ws["ckpt"].read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with zipfile.ZipFile(ws["ckpt"]) as good, zipfile.ZipFile(tmp_path / "member.pt", "w") as bad:
        for name in good.namelist():
            part = good.read(name)
            bad.writestr(name, part[:8] if "/data/" in name else part)
    for name in ("cut.pt", "member.pt"):
        with pytest.raises(UserError, match="damaged, or not a PyTorch file") as caught:
            load_checkpoint(tmp_path / name)
        assert "carries code" not in str(caught.value)


def test_resuming_needs_the_optimiser_state(ws):
    assert load_checkpoint(ws["ckpt"])["step"] == 0     # saved without an optimiser
    with pytest.raises(UserError, match="no 'optimizer' field"):
        load_checkpoint(ws["ckpt"], resume=True)


# ------------------------------------------------------------------------------ signals


def wait_for_handler(proc, signum, timeout=60):
    """Until the process catches ``signum`` (Linux: the SigCgt mask of /proc/PID/status), so
    that a signal sent next meets dsspn's handler, not the default one of a process still
    importing."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        status = open(f"/proc/{proc.pid}/status").read()
        caught = int(status.split("SigCgt:")[1].split()[0], 16)
        if caught & (1 << (signum - 1)):
            return
        time.sleep(0.01)


def test_sigterm_and_sigint_stop_any_command_with_one_line(tmp_path):
    for signum in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([sys.executable, "-m", "dsspn_cli", "hierarchy", "merge",
                                 "coco", "ade", "cityscapes", "mapillary", "-o",
                                 str(tmp_path / "t.yaml")], cwd=REPO, env=ENV, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_handler(proc, signal.SIGTERM)     # inside the command (it takes about 4 s)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        name = signal.Signals(signum).name
        assert proc.returncode == 128 + signum, err
        assert err.strip().splitlines()[-1] == f"stopped: interrupted by {name}", err
        assert not (tmp_path / "t.yaml").exists() and not list(tmp_path.glob(".t.yaml.*"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_stops_training_at_once(ws, tmp_path, signum):
    config = tmp_path / "train.yaml"
    write_yaml(config, {"data": {"cityscapes": str(ws["city"])}, "iters": 1000,
                        "batch_size": 2, "crop": 160, "backbone": "resnet18",
                        "output_stride": 8, "workers": 0, "checkpoint_every": 1000,
                        "val_every": 1000, "log_every": 1, "head": {"hidden": 8},
                        "device": "cpu"})
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dsspn_cli", "train", "--config",
                             str(config), "--out", str(out)], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signum)
    time.sleep(0.1)                          # within the step the first signal lets finish
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"stopped: {name} again: stopped at once") and "--resume" in last
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ commands


@pytest.mark.parametrize("device", ["meta", "mps", "xla", "cuda:7", "cpu:3", "gpu"])
def test_devices_dsspn_cannot_use_are_one_line(ws, run, device):
    line = expect_error(run("predict", "--model", ws["ckpt"],
                            ws["photo"], "--device", device, "--out",
                            ws["root"] / "p-dev"), f"--device {device}")
    assert "cpu" in line


def test_sample_size_bounds_are_one_and_checked_before_writing(tmp_path, run):
    for size, fragment in (("40000x40000", "too large"), ("31x64", "at least 32x32"),
                           ("16x16", "at least 32x32"), ("0x0", "at least 32x32")):
        out = tmp_path / size
        expect_error(run("data", "sample", out, "--size", size), fragment)
        assert not out.exists()
    assert run("data", "sample", tmp_path / "ok", "--size", "32x32", "--images",
               "1").exit_code == 0


@pytest.mark.parametrize("command", ["check", "stats"])
def test_an_unknown_split_is_a_usage_error_naming_the_splits(ws, run, command):
    expect_error(run("data", command, ws["city"], "--format", "cityscapes", "--split", "nope"),
                 "--split nope: cityscapes has splits train, val, test")


def test_a_file_name_that_is_not_utf8_is_shown_escaped(ws, tmp_path, run):
    data = tmp_path / "city"
    shutil.copytree(ws["city"], data)
    first = sorted((data / "leftImg8bit" / "train").rglob("*.png"))[0]
    odd = os.fsencode(first.parent) + b"/\xff\xfe_leftImg8bit.png"
    os.rename(os.fsencode(first), odd)
    result = run("data", "check", data, "--format", "cityscapes")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "\\xff\\xfe_leftImg8bit.png" in result.stdout


def test_a_line_break_in_a_name_stays_on_its_row(tmp_path, run):
    tree = write_yaml(tmp_path / "tree.yaml", tree_doc([{"name": "two\nlines", "children": [
        {"name": "only-child"}]}]))
    result = run("hierarchy", "check", tree)
    assert result.exit_code == 1
    assert any("two\\nlines" in line and "no single-child chain" in line
               for line in result.stdout.splitlines()), result.stdout


def test_export_sizes_are_bounded(ws, run):
    expect_error(run("export", ws["ckpt"], "--size", "100000x100000"), "at most 16,777,216")
    expect_error(run("export", ws["ckpt"], "--size", "8x8"), "at least 16x16")


def test_a_checkpoint_that_is_a_folder_or_a_fifo_says_so(tmp_path, run):
    (tmp_path / "dir.pt").mkdir()
    expect_error(run("evaluate", tmp_path / "dir.pt"), "dir.pt: is a folder")
    os.mkfifo(tmp_path / "pipe.pt")
    expect_error(run("evaluate", tmp_path / "pipe.pt"), "pipe.pt: is a FIFO")


def test_a_label_set_reference_to_a_fifo_is_not_read(tmp_path, run):
    os.mkfifo(tmp_path / "labels.txt")
    tree = write_yaml(tmp_path / "tree.yaml", tree_doc(
        [{"name": "a", "labels": {"x": [0]}}, {"name": "b", "labels": {"x": [1]}}],
        {"x": {"labelset": "labels.txt"}}))
    result = run("hierarchy", "check", tree)                # would block reading the FIFO
    assert result.exit_code == 1 and "is not a regular file" in result.stdout


def test_resuming_from_a_checkpoint_with_a_damaged_optimiser_state_is_one_line(trained,
                                                                                tmp_path, run):
    shutil.copytree(trained[0], tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    payload["optimizer"] = {"state": {}, "param_groups": []}
    last.unlink()                                    # a hard link: leave the step file be
    torch.save(payload, last)
    expect_error(run("train", "--out", tmp_path / "run", "--resume", "--iters", "4"),
                 "last.pt: its optimiser, schedule or random states do not fit")


def test_predicting_a_device_file_says_what_it_is(ws, run, tmp_path):
    expect_error(run("predict", "--model", ws["ckpt"], "/dev/null", "--out", tmp_path / "p"),
                 "/dev/null: is a character device, not an image or a folder")
