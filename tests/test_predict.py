"""dsspn predict: outputs, label ids, JSON, levels, tiling, errors (small ResNet-18 model)."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dsspn_cli.engine.checkpoint import load_model, save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.predict import SUFFIXES, concept_palette, predict, predict_array, tile_spans
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import load_labelset
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree
from dsspn_cli.model.segmenter import build_model

SMALL = (64, 96)
LARGE = (96, 160)


def _image(path, size, seed):
    rng = np.random.default_rng(seed)
    height, width = size
    # Smooth regions plus noise, so the (untrained) model sees some structure.
    base = np.zeros((height, width, 3), np.uint8)
    base[: height // 2] = (70, 130, 180)
    base[height // 2:, : width // 2] = (128, 64, 128)
    base[height // 2:, width // 2:] = (107, 142, 35)
    noisy = np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noisy).save(path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tree = load_tree()
    table = MaskingTable.from_tree(tree)
    config = TrainConfig(backbone="resnet18", output_stride=8, head={"hidden": 8})
    model = build_model(table, config)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model=model, tree=tree, config=config.to_dict(), step=0, epoch=0)
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint, "cpu")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    _image(folder / "a.png", SMALL, 1)
    _image(folder / "sub" / "b.jpg", SMALL, 2)
    return folder


def _labels(path):
    with Image.open(path) as image:
        return image.mode, np.asarray(image, dtype=np.int64)


def test_cityscapes_outputs_json_and_colours(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    report = predict(checkpoint, [images], dataset="cityscapes", out=out, as_json=True,
                     device="cpu")
    assert report.dataset == "cityscapes" and len(report.images) == 2
    cityscapes = load_labelset("cityscapes")
    ids = {label.id for label in cityscapes.labels}
    colours = {label.id: tuple(label.extra["color"]) for label in cityscapes.labels}
    tree = load_tree()
    for stem in ("a", "sub/b"):                       # the sub-folder is kept
        for suffix in SUFFIXES + (".json",):
            assert (out / f"{stem}{suffix}").is_file(), f"{stem}{suffix}"
        mode, labels = _labels(out / f"{stem}_labels.png")
        assert mode == "L" and labels.shape == SMALL
        assert set(np.unique(labels)) <= ids
        with Image.open(out / f"{stem}_color.png") as image:
            assert image.mode == "RGB" and image.size == SMALL[::-1]
            colour = np.asarray(image)
        for label in np.unique(labels):               # the label set's own colours
            assert {tuple(c) for c in colour[labels == label]} == {colours[int(label)]}
        with Image.open(out / f"{stem}_overlay.png") as image:
            assert image.size == SMALL[::-1]
        with Image.open(out / f"{stem}_legend.png") as image:
            assert image.format == "PNG"
        doc = json.loads((out / f"{stem}.json").read_text())
        assert doc["dataset"] == "cityscapes" and doc["size"] == list(SMALL)
        rows = doc["concepts"]
        assert sum(r["pixels"] for r in rows) == SMALL[0] * SMALL[1]
        assert [r["pixels"] for r in rows] == sorted((r["pixels"] for r in rows), reverse=True)
        per_label = {}
        names = {label.id: label.name for label in cityscapes.labels}
        for row in rows:
            # The dataset's own label names the row; the tree's concept stands beside it.
            (concept,) = row["concepts"]
            assert row["name"] == names[row["label"]]
            assert row["path"][0] == "entity" and row["path"][-1] == concept
            assert row["path"] == tree.ancestors(concept) + [concept]
            assert row["id"] == tree.id(concept)
            assert 0.0 <= row["mean_confidence"] <= 1.0
            per_label[row["label"]] = per_label.get(row["label"], 0) + row["pixels"]
        counts = dict(zip(*np.unique(labels, return_counts=True)))
        assert per_label == {int(k): int(v) for k, v in counts.items()}


def test_concepts_without_dataset_are_16_bit_and_level_cuts(checkpoint, model, images,
                                                           tmp_path):
    net, _, tree, _ = model
    image = images / "a.png"
    out = tmp_path / "out"
    predict(checkpoint, [image], out=out, as_json=True, device="cpu")
    mode, labels = _labels(out / "a_labels.png")
    assert len(tree.names) > 256 and mode.startswith("I")    # 16-bit PNG
    with Image.open(image) as photo:
        expected, _ = predict_array(net, np.asarray(photo.convert("RGB")))
    np.testing.assert_array_equal(labels, expected)
    doc = json.loads((out / "a.json").read_text())
    assert doc["dataset"] is None and all(r["label"] is None for r in doc["concepts"])
    # Colour map: the fixed palette by concept id.
    with Image.open(out / "a_color.png") as image_c:
        palette = concept_palette(len(tree.names))
        np.testing.assert_array_equal(np.asarray(image_c), palette[labels])

    predict(checkpoint, [image], out=tmp_path / "level", level=1, as_json=True, device="cpu")
    _, cut = _labels(tmp_path / "level" / "a_labels.png")
    assert {tree.depth(tree.names[c]) for c in np.unique(cut)} == {1}
    doc = json.loads((tmp_path / "level" / "a.json").read_text())
    assert all(len(r["path"]) == 2 for r in doc["concepts"])


def test_single_tile_equals_the_model(model, tmp_path):
    from dsspn_cli.data.transforms import normalise, to_tensors
    from dsspn_cli.model.contract import Query

    net = model[0]
    image = np.asarray(Image.open(_image(tmp_path / "x.png", SMALL, 3)))
    concepts, confidence = predict_array(net, image, "cityscapes", tile=1024)
    tensor = normalise(to_tensors(image, np.zeros((1, 1), np.int64))[0])[None]
    direct, score = net.predict(tensor, Query("cityscapes"))
    np.testing.assert_array_equal(concepts, direct[0].numpy())
    np.testing.assert_allclose(confidence, score[0].numpy())


class Pointwise(torch.nn.Module):
    """A stand-in whose prediction at a pixel depends on that pixel only: tiling must then
    give exactly the untiled result, whatever the tile layout."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([3.0, 5.0, 7.0]))

    @torch.no_grad()
    def predict(self, images, dataset=None, level=None):
        # Exact integer arithmetic for the concepts (x4 is exact in floating point).
        bins = (images * 4).floor().long() * torch.tensor([1, 13, 169])[None, :, None, None]
        value = (images * self.weight[None, :, None, None]).sum(1)
        return bins.sum(1) % 97, torch.sigmoid(value)


@pytest.mark.parametrize("size", [LARGE, (200, 131), (64, 300)])
def test_tiles_stitch_exactly(size):
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    whole, whole_conf = predict_array(Pointwise(), image, tile=1024)
    tiled, tiled_conf = predict_array(Pointwise(), image, tile=64)
    np.testing.assert_array_equal(whole, tiled)
    np.testing.assert_allclose(whole_conf, tiled_conf, rtol=1e-6, atol=0)


@pytest.mark.parametrize("length,tile", [(96, 64), (160, 64), (65, 64), (1000, 256),
                                         (64, 64), (50, 64), (2049, 1024)])
def test_tile_spans_cover_once_with_central_parts(length, tile):
    spans = tile_spans(length, tile)
    assert spans[0][2] == 0 and spans[-1][3] == length
    for (start, end, keep_start, keep_end), nxt in zip(spans, spans[1:] + [None]):
        assert 0 <= start <= keep_start < keep_end <= end <= length
        assert end - start <= tile
        if nxt is not None:
            assert keep_end == nxt[2]                       # no gap, no double cover
            assert end - nxt[0] >= tile // 4                # the overlap
            assert end - keep_end >= tile // 8 and keep_end - nxt[0] >= tile // 8


def test_cli_command_tiled_with_alias(checkpoint, tmp_path):
    import typer
    from typer.testing import CliRunner

    from dsspn_cli.cli.predict import predict_command

    app = typer.Typer()
    app.command("predict")(predict_command)

    @app.callback()
    def _root():
        """test app"""

    image = _image(tmp_path / "big.png", LARGE, 4)
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["predict", "--model", str(checkpoint),
                                      str(image), "--dataset",
                                      "vistas", "--out", str(out), "--tile", "64",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "predicted 1 image" in result.output and "mapillary" in result.output
    mode, labels = _labels(out / "big_labels.png")
    assert mode == "L" and labels.shape == LARGE
    mapillary = {label.id for label in load_labelset("mapillary").labels}
    assert set(np.unique(labels)) <= mapillary
    for suffix in SUFFIXES:
        assert (out / f"big{suffix}").is_file()
    assert not (out / "big.json").exists()


def test_errors(checkpoint, images, tmp_path):
    with pytest.raises(UserError, match=r"--dataset nope: .*coco.*cityscapes"):
        predict(checkpoint, [images], dataset="nope", out=tmp_path / "o", device="cpu")
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    with pytest.raises(UserError, match="notes.txt"):
        predict(checkpoint, [images, text], out=tmp_path / "o", device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no images"):
        predict(checkpoint, [empty], out=tmp_path / "o", device="cpu")
    with pytest.raises(UserError, match="--tile 32"):
        predict(checkpoint, [images], tile=32, out=tmp_path / "o", device="cpu")
    with pytest.raises(UserError, match="no such image"):
        predict(checkpoint, [tmp_path / "missing.png"], out=tmp_path / "o", device="cpu")
    with pytest.raises(UserError, match="no such checkpoint"):
        predict(tmp_path / "none.pt", [images], out=tmp_path / "o", device="cpu")
    assert not (tmp_path / "o").exists()                   # nothing written on bad input


def test_palette_is_fixed_and_legend_caps_rows():
    from dsspn_cli.engine.predict import LEGEND_ROWS, legend_png

    np.testing.assert_array_equal(concept_palette(10), concept_palette(400)[:10])
    assert len({tuple(c) for c in concept_palette(400)}) > 300
    rows = [{"id": i, "name": f"c{i}", "label": None, "share": 0.01} for i in range(60)]
    data = legend_png(rows, concept_palette(60), "x.png")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.height < 0.3 * 100 * (LEGEND_ROWS + 4)     # capped, not 60 rows


def test_label_names_come_from_a_label_set_file_beside_the_tree_file(tmp_path, monkeypatch):
    """Predict and export name a dataset's labels from the label-set file the tree names,
    found beside the tree's file (or checkpoint) wherever dsspn runs, as 'hierarchy show'."""
    from dsspn_cli.engine.predict import label_colours
    from dsspn_cli.hierarchy.tree import ConceptTree

    (tmp_path / "mine.yaml").write_text(
        "name: mine\nignore_index: 255\nlabels:\n"
        "- {id: 0, name: car, synset: car.n.01, readable: Car, color: [1, 2, 3]}\n"
        "- {id: 1, name: sky, synset: sky.n.01}\n")
    (tmp_path / "tree.yaml").write_text(
        "format: dsspn-concept-tree\nversion: 1\nmax_depth: 5\n"
        "datasets:\n  mine: {labelset: mine.yaml, ignore_index: 255}\n"
        "tree:\n  name: entity\n  synset: entity.n.01\n  children:\n"
        "  - {name: car, synset: car.n.01, labels: {mine: [0]}}\n"
        "  - {name: sky, synset: sky.n.01, labels: {mine: [1]}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    tree = load_tree(tmp_path / "tree.yaml")
    expected = ({0: "Car", 1: "sky"}, {0: (1, 2, 3)})
    assert label_colours(tree, "mine") == expected
    # A checkpoint's tree has the checkpoint as its source.
    beside = ConceptTree(tree.graph, tree.datasets, tree.max_depth, str(tmp_path / "m.pt"))
    assert label_colours(beside, "mine") == expected
    assert label_colours(ConceptTree(tree.graph, tree.datasets, tree.max_depth), "mine") == (
        {}, {})


def test_evaluate_and_predict_give_the_same_labels(checkpoint, model, tmp_path, run):
    """One inference path: the labels 'dsspn evaluate --labels-out' scores are the ones
    'dsspn predict' writes, for images larger than the tile (so both tile them)."""
    from dsspn_cli.data.sample import write_sample_data

    write_sample_data(tmp_path / "data", images=4, size=(64, 128))
    root = tmp_path / "data" / "cityscapes"
    images = sorted((root / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))
    assert len(images) >= 2
    scored, predicted = tmp_path / "scored", tmp_path / "predicted"
    result = run("evaluate", checkpoint, "--data", f"cityscapes={root}", "--labels-out",
                 scored, "--tile", "64", "--device", "cpu", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    result = run("predict", "--model", checkpoint, *images, "--dataset", "cityscapes", "--out",
                 predicted, "--tile", "64", "--device", "cpu", "--workers", "1")
    assert result.exit_code == 0, result.stderr
    tiled_somewhere = False
    for image in images:
        key = image.name[:-len("_leftImg8bit.png")]
        _, from_evaluate = _labels(scored / "cityscapes" / f"{key}_labelIds.png")
        _, from_predict = _labels(predicted / f"{image.stem}_labels.png")
        assert from_evaluate.shape == (64, 128)
        np.testing.assert_array_equal(from_evaluate, from_predict)
        # Whole, the model sees other context: the labels differ, so the tiles were used.
        whole, _ = predict_array(model[0], np.asarray(Image.open(image).convert("RGB")),
                                 "cityscapes")
        labels = model[0].concepts_to_labels(torch.from_numpy(whole), "cityscapes").numpy()
        tiled_somewhere |= not np.array_equal(labels, from_predict)
    assert tiled_somewhere


def test_precision_choices(checkpoint, images, tmp_path):
    with pytest.raises(UserError, match="--precision fp16: float16 autocast needs a CUDA"):
        predict(checkpoint, [images], out=tmp_path / "o", device="cpu", precision="fp16")
    with pytest.raises(UserError, match="--precision fp8: use one of"):
        predict(checkpoint, [images], out=tmp_path / "o", device="cpu", precision="fp8")
    assert not (tmp_path / "o").exists()
    report = predict(checkpoint, [images / "a.png"], out=tmp_path / "bf16", device="cpu",
                     precision="bf16", dataset="cityscapes")
    assert report.images and (tmp_path / "bf16" / "a_labels.png").is_file()


def test_classes_write_their_own_vocabulary(checkpoint, model, images, tmp_path, run):
    """--classes person,vehicle,sky: ids 0, 1, 2 for them, 255 for everything else, the
    same pixels as the whole prediction read in those classes."""
    net, _, tree, _ = model
    out = tmp_path / "classes"
    result = run("predict", images, "--model", checkpoint, "--classes",
                 "person, vehicle,sky", "--out", out, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    _, labels = _labels(out / "a_labels.png")
    assert set(np.unique(labels)) <= {0, 1, 2, 255}
    whole, _ = predict_array(net, np.asarray(Image.open(images / "a.png").convert("RGB")))
    chosen = (tree.id("person"), tree.id(tree.find("vehicle")), tree.id(tree.find("sky")))
    lut = net.masking.vocabulary(chosen).numpy()
    expected = np.where(lut[whole] < 0, 255, lut[whole])
    assert np.array_equal(labels, expected)
    doc = json.loads((out / "a.json").read_text())
    names = {row["name"]: row["label"] for row in doc["concepts"]}
    assert set(names) <= {"person", "vehicle", "sky", "other"}
    assert all(names[n] == i for i, n in enumerate(("person", "vehicle", "sky")) if n in names)
    assert sum(r["pixels"] for r in doc["concepts"]) == labels.size


def test_a_label_set_chooses_the_classes_and_their_ids(checkpoint, images, tmp_path, run):
    chosen = tmp_path / "mine.yaml"
    chosen.write_text("name: mine\nignore_index: 0\nlabels:\n"
                      "- {id: 7, name: road, synset: road.n.01, color: [1, 2, 3]}\n"
                      "- {id: 9, name: vegetation}\n")
    out = tmp_path / "mine"
    result = run("predict", images, "--model", checkpoint, "--labelset", chosen, "--out", out,
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    _, labels = _labels(out / "a_labels.png")
    assert set(np.unique(labels)) <= {0, 7, 9}
    with Image.open(out / "a_color.png") as image:
        colour = np.asarray(image)
    assert (colour[labels == 7] == (1, 2, 3)).all()


def test_an_unknown_class_is_one_line_with_near_names(checkpoint, images, tmp_path, run):
    result = run("predict", images, "--model", checkpoint, "--classes", "persn,sky",
                 "--out", tmp_path / "o")
    assert result.exit_code == 2
    assert "no concept 'persn'" in result.stderr and "'person'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_model_defaults_to_the_newest_best_checkpoint_under_runs(checkpoint, images,
                                                                      tmp_path, run,
                                                                      monkeypatch):
    import os
    import shutil

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DSSPN_MODEL", raising=False)
    result = run("predict", images, "--out", tmp_path / "none")
    assert result.exit_code == 2 and "no model given" in result.stderr
    assert "dsspn train" in result.stderr
    for name, age in (("old", 100), ("new", 0)):
        folder = tmp_path / "runs" / name / "checkpoints"
        folder.mkdir(parents=True)
        shutil.copy(checkpoint, folder / "best.pt")
        os.utime(folder / "best.pt", (1e9 - age, 1e9 - age))
    result = run("predict", images, "--out", tmp_path / "p", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "model: runs/new/checkpoints/best.pt" in result.stderr
    monkeypatch.setenv("DSSPN_MODEL", str(tmp_path / "runs" / "old" / "checkpoints" /
                                          "best.pt"))
    result = run("export", "--format", "torchscript", "--size", "64x64", "-o",
                 tmp_path / "m.ts")
    assert result.exit_code == 0, result.stderr
    assert "from $DSSPN_MODEL" in result.stderr
    # predict takes the model as evaluate and export do: first, or as --model, not both.
    result = run("predict", checkpoint, images / "a.png", "--out", tmp_path / "q",
                 "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    assert "from $DSSPN_MODEL" not in result.stderr and (tmp_path / "q" / "a_labels.png").is_file()
    result = run("predict", images / "a.png", checkpoint, "--out", tmp_path / "r")
    assert result.exit_code == 2 and "give the model first" in result.stderr
    other = tmp_path / "other.pt"
    shutil.copy(checkpoint, other)
    for command in (("predict", checkpoint, images), ("evaluate", checkpoint),
                    ("export", checkpoint)):
        result = run(*command, "--model", other)
        assert result.exit_code == 2, command
        assert "give the checkpoint once" in result.stderr and len(
            result.stderr.splitlines()) == 1


def test_a_level_that_leaves_pixels_without_a_dataset_id_is_refused(checkpoint, images,
                                                                   tmp_path, tree):
    """--level 2 --dataset cityscapes stops every pixel above Cityscapes' labels: refused in
    one line naming the depth that works, never an all-'unlabelled' map; a level deep enough
    for every label writes the same map as no level at all."""
    with pytest.raises(UserError, match=r"--level 2 with --dataset cityscapes: 19 of its "
                                        r"labels .* give --level 5 or deeper"):
        predict(checkpoint, [images], dataset="cityscapes", level=2, out=tmp_path / "o",
                device="cpu")
    assert not (tmp_path / "o").exists()
    from dsspn_cli.engine.export import export

    with pytest.raises(UserError, match="--level 3 with --dataset ade"):
        export(checkpoint, tmp_path / "m.pt", "torchscript", "ade", 3, (64, 64))
    assert not (tmp_path / "m.pt").exists()
    # Every concept called unwritable has none of the dataset's labels on its path down to
    # the cut (the rule, checked on the whole shipped tree).
    for dataset in tree.datasets:
        for level in range(tree.height + 1):
            for name in tree.unwritable_at(dataset, level):
                path = tree.ancestors(name)[:level + 1]
                assert not any(dataset in tree.labels(a) for a in path)
    deep = max(tree.depth(n) for n in tree.concepts_of("cityscapes"))
    predict(checkpoint, [images / "a.png"], dataset="cityscapes", level=deep,
            out=tmp_path / "deep", device="cpu")
    predict(checkpoint, [images / "a.png"], dataset="cityscapes", out=tmp_path / "all",
            device="cpu")
    assert np.array_equal(_labels(tmp_path / "deep" / "a_labels.png")[1],
                          _labels(tmp_path / "all" / "a_labels.png")[1])
