"""Zero-shot evaluation (issue 21): datasets the model never trained on, scored in their own
classes on their untouched ground truth; the report's honesty about classes the model
cannot name or tell apart, the everything-else class, the harmonic mean, and datasets of the
tree scored as before."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, write_yaml
from PIL import Image
from torch import nn

from dsspn_cli.data.dataset import SegmentationDataset
from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.checkpoint import load_model, save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.evaluate import evaluate
from dsspn_cli.engine.metrics import ConfusionMatrix
from dsspn_cli.engine.scoring import evaluate_checkpoint, harmonic_mean
from dsspn_cli.engine.zeroshot import HeldOutClasses, evaluate_zero_shot
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.labelset import load_labelset
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree
from dsspn_cli.model.segmenter import build_model

FAST = ["--device", "cpu", "--workers", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(backbone="resnet18", output_stride=16, head={"hidden": 8})
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model=build_model(MaskingTable.from_tree(tree), config), tree=tree,
                    config=config.to_dict(), step=0, epoch=0)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample data: four training datasets, and the held-out CamVid (test split) and
    Pascal VOC (val) sets, 2 images each."""
    root = tmp_path_factory.mktemp("sample")
    write_sample_data(root, seed=0, images=4, size=(64, 128))
    return root


@pytest.fixture
def honest_set(tmp_path):
    """Sky and road the model names; a word it cannot; two classes on one concept."""
    return write_yaml(tmp_path / "streets.yaml", {
        "name": "streets", "ignore_index": 255,
        "labels": [
            {"id": 0, "name": "sky", "synset": "sky.n.01"},
            {"id": 1, "name": "road", "synset": "road.n.01"},
            {"id": 2, "name": "zzglorp"},
            {"id": 3, "name": "car", "synset": "car.n.01"},
            {"id": 4, "name": "automobile", "synset": "car.n.01"},
            {"id": 5, "name": "void", "ignore": True},
        ],
    })


# ------------------------------------------------------------------------------ the classes


def test_the_everything_else_class_is_not_mapped_and_takes_none_of_them(tree, wn):
    classes = HeldOutClasses(tree, load_labelset("voc"), wn)
    assert classes.names[0] == "background" and classes.other == 0
    assert classes.classes[0].how == "other" and classes.classes[0].concepts == ()
    assert len(classes.query) == 20 and not classes.problems       # background not 'unnamed'
    boat = classes.classes[classes.names.index("boat")]
    assert boat.how == "below" and set(boat.concepts) == {"boat", "ship"}
    # An answer of none of the 20 is background; void (255) is not scored.
    answer = torch.tensor([[-1, 0, 19]])
    assert classes.predicted(answer).tolist() == [[0, 1, 20]]
    assert classes.truth(torch.tensor([[-1, 0, 20]])).tolist() == [[-1, 0, 20]]
    assert classes.label_ids(torch.tensor([[0, 20]])).tolist() == [[0, 20]]


def test_without_an_everything_else_class_none_of_them_is_a_miss(tree, wn):
    classes = HeldOutClasses(tree, load_labelset("camvid"), wn)
    assert classes.other is None and len(classes.query) == 11
    assert classes.predicted(torch.tensor([-1, 3])).tolist() == [-1, 3]
    # CamVid's Unlabelled (11) is its ignore value: read as -1 and never scored.
    assert classes.label_ids(torch.tensor([-1])).tolist() == [11]


def test_classes_the_model_cannot_name_or_tell_apart_lower_the_headline(tree, wn,
                                                                        honest_set):
    """Every other class predicted perfectly: the named mIoU is 100, the headline counts
    the class that names nothing and both classes on 'car' as 0, even where no pixel of
    them was seen ('zzglorp' has none), and the report lists them."""
    classes = HeldOutClasses(tree, load_labelset(honest_set), wn)
    assert [c.problem for c in classes.classes] == [None, None, "unnamed", "shared", "shared"]
    # 'car' is predicted as the first of the two, 'automobile' never.
    assert [c.concepts for c in classes.classes[3:]] == [("car",), ()]
    assert len(classes.query) == 3
    matrix = ConfusionMatrix(5)
    truth = torch.tensor([0] * 10 + [1] * 10 + [3] * 5 + [4] * 5)
    guess = torch.tensor([0] * 10 + [1] * 10 + [3] * 10)       # automobile seen as car
    matrix.update(guess, truth)
    scores = classes.scores(matrix)
    assert scores["mIoU_named"] == pytest.approx(100.0)
    assert scores["mIoU"] == pytest.approx(100.0 * 2 / 5)
    assert scores["unnamed"] == ["zzglorp"] and scores["shared"] == ["car", "automobile"]
    kinds = sorted(p["kind"] for p in scores["problems"])
    assert kinds == ["shared", "unnamed"]
    assert all(p["message"] for p in scores["problems"])
    car = scores["per_class"]["car"]
    assert car["iou"] == pytest.approx(50.0) and car["problem"] == "shared"   # as measured
    assert scores["per_class"]["zzglorp"]["iou"] is None                      # not seen
    assert scores["pixel_acc"] == pytest.approx(100.0 * 25 / 30)


def test_two_labels_marked_everything_else_are_refused(tree, wn, tmp_path):
    path = write_yaml(tmp_path / "two.yaml", {"name": "two", "labels": [
        {"id": 0, "name": "background", "other": True},
        {"id": 1, "name": "clutter", "other": True},
        {"id": 2, "name": "sky", "synset": "sky.n.01"}]})
    with pytest.raises(UserError, match="'background', 'clutter' are all marked 'other: "
                                        "true'; mark one class"):
        HeldOutClasses(tree, load_labelset(path), wn)


def test_harmonic_mean():
    assert harmonic_mean([50.0, 25.0]) == pytest.approx(100 / 3)
    assert harmonic_mean([40.0]) == pytest.approx(40.0)
    assert harmonic_mean([0.0, 80.0]) == 0.0              # one dataset failed: all of it
    assert harmonic_mean([None, 80.0]) is None and harmonic_mean([]) is None


# ------------------------------------------------------------------------------ scoring


class Pattern(nn.Module):
    """A stand-in model answering a fixed map of concepts, read in the query's classes as
    a Segmenter reads it (a pixel on a concept of class i is i, else -1)."""

    def __init__(self, concepts: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.concepts = concepts

    def predict(self, images, query):
        answer = torch.full(self.concepts.shape, -1, dtype=torch.long)
        for i, members in enumerate(query.classes):
            for concept in members:
                answer[self.concepts == concept] = i
        return answer[None].expand(images.shape[0], -1, -1), torch.ones(images.shape[0],
                                                                          *answer.shape)


def _voc(root, labels: np.ndarray):
    """A Pascal VOC 2012 layout of one image: a palette PNG of class ids, the split list."""
    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(labels.shape + (3,), 90, np.uint8)).save(
        base / "JPEGImages" / "2012_000001.jpg")
    label = Image.fromarray(labels.astype(np.uint8), mode="P")
    label.putpalette([v for label in load_labelset("voc").labels
                      for v in label.extra["color"]] + [0] * 3 * 234)
    label.save(base / "SegmentationClass" / "2012_000001.png")
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2012_000001\n")
    return root


def test_pixels_of_none_of_the_classes_score_as_the_everything_else_class(tree, wn,
                                                                          tmp_path):
    """Ground truth: background on the left half, dog on the right, a void border. The
    model answers sky (no VOC class) on the first quarter, cat on the second, dog on the
    right: sky is background, right; cat is a false positive and a missed background."""
    height, width = 16, 32
    labels = np.zeros((height, width), np.int64)
    labels[:, width // 2:] = 12                                  # dog
    labels[0] = 255                                              # void, not scored
    concepts = torch.full((height, width), tree.id("dog"))
    concepts[:, : width // 4] = tree.id("sky-other")
    concepts[:, width // 4: width // 2] = tree.id("cat")
    root = _voc(tmp_path / "voc", labels)
    dataset = SegmentationDataset(root, "voc", "val", None)
    scores = evaluate_zero_shot(Pattern(concepts), dataset,
                                HeldOutClasses(tree, dataset.labelset, wn),
                                labels_out=tmp_path / "labels")
    per_class = scores["per_class"]
    assert per_class["background"]["iou"] == pytest.approx(50.0)
    assert per_class["dog"]["iou"] == pytest.approx(100.0)
    assert per_class["cat"]["iou"] == pytest.approx(0.0)
    assert per_class["background"]["pixels"] == (height - 1) * width // 2
    assert scores["mIoU"] == scores["mIoU_named"] == pytest.approx(50.0)
    assert scores["pixel_acc"] == pytest.approx(75.0)
    assert scores["everything_else"] == "background" and scores["images"] == 1
    # --labels-out writes the dataset's own ids: sky as background (0), cat 8, dog 12.
    written = np.asarray(Image.open(tmp_path / "labels" / "voc" / "2012_000001_labelIds.png"))
    assert written[5, 0] == 0 and written[5, width // 4] == 8 and written[5, -1] == 12


def test_a_dataset_of_the_tree_is_scored_as_before_beside_a_held_out_one(checkpoint, sample):
    report = evaluate_checkpoint(checkpoint, {"cityscapes": str(sample / "cityscapes"),
                                              "camvid": str(sample / "held-out" / "camvid")},
                                 device="cpu", workers=0)
    model, table, _, _ = load_model(checkpoint)
    before = evaluate(model, SegmentationDataset(sample / "cityscapes", "cityscapes", "val",
                                                 table))
    assert report.results["cityscapes"] == {**before, "split": "val"}
    assert "zero_shot" not in report.results["cityscapes"]
    camvid = report.results["camvid"]
    assert camvid["zero_shot"] and camvid["split"] == "test" and camvid["images"] == 2
    assert len(camvid["per_class"]) == 11 and camvid["iou_per_level"] == {}
    assert report.splits == {"cityscapes": "val", "camvid": "test"}
    summary = report.summary()
    assert summary["mIoU"] == pytest.approx(harmonic_mean(
        [report.results["cityscapes"]["mIoU"], camvid["mIoU"]]))
    # A split given is every dataset's.
    with pytest.raises(UserError, match="--split trainval: camvid has splits"):
        evaluate_checkpoint(checkpoint, {"camvid": str(sample / "held-out" / "camvid")},
                            "trainval", device="cpu", workers=0)


# ------------------------------------------------------------------------------ the command


def test_the_command_scores_the_held_out_samples_with_a_summary_row(checkpoint, sample,
                                                                    tmp_path, run):
    out = tmp_path / "zeroshot.json"
    result = run("evaluate", checkpoint, "--data", f"camvid={sample / 'held-out' / 'camvid'}",
                 "--data", f"voc={sample / 'held-out' / 'voc'}", "--json", out,
                 "--per-class", *FAST)
    assert result.exit_code == 0, result.stderr
    assert f"{checkpoint} on camvid test, voc val" in result.stdout
    for text in ("named mIoU", "cannot name", "harmonic mean", "zero-shot",
                 "voc: 'background' is everything else", "Pedestrian", "pottedplant"):
        assert text in result.stdout, text
    assert f"wrote {out}" in result.stdout
    doc = json.loads(out.read_text())
    assert list(doc) == ["camvid", "voc", "harmonic_mean"]
    voc = doc["voc"]
    assert voc["zero_shot"] and voc["everything_else"] == "background"
    assert len(voc["per_class"]) == 21 and voc["per_class"]["boat"]["how"] == "below"
    assert voc["unnamed"] == voc["shared"] == [] and voc["mIoU"] == voc["mIoU_named"]
    summary = doc["harmonic_mean"]
    assert summary["datasets"] == ["camvid", "voc"]
    assert summary["mIoU"] == pytest.approx(harmonic_mean([doc["camvid"]["mIoU"],
                                                           voc["mIoU"]]))
    row = next(line for line in result.stdout.splitlines() if "harmonic mean" in line)
    assert f"{summary['mIoU']:.2f}" in row


def _folder(root, values: np.ndarray):
    """A 'folder' dataset without its own label set: images/val, labels/val."""
    for sub in ("images/val", "labels/val"):
        (root / sub).mkdir(parents=True)
    Image.fromarray(np.full(values.shape + (3,), 120, np.uint8)).save(
        root / "images" / "val" / "a.png")
    Image.fromarray(values.astype(np.uint8)).save(root / "labels" / "val" / "a.png")
    return root


def test_labelset_reads_any_layout_and_the_report_names_what_it_cannot(checkpoint, tmp_path,
                                                                       run, honest_set):
    values = np.zeros((32, 48), np.int64)
    values[16:] = 2                                     # zzglorp: never predicted
    values[:, :4] = 5                                   # void
    root = _folder(tmp_path / "mine", values)
    out = tmp_path / "scores.json"
    result = run("evaluate", checkpoint, "--data", f"folder={root}", "--labelset", honest_set,
                 "--json", out, *FAST)
    assert result.exit_code == 0, result.stderr
    assert "1 unnamed, 2 shared" in result.stdout
    assert "mIoU counts the 3 classes the model cannot name or tell apart as 0" in result.stdout
    assert "no concept 'zzglorp' in this tree" in result.stdout
    assert "'car' (id 3), 'automobile' (id 4): both name car" in result.stdout
    scores = json.loads(out.read_text())["streets"]
    assert scores["labelset"] == str(honest_set) and scores["split"] == "val"
    assert scores["per_class"]["zzglorp"]["pixels"] == 16 * 44
    assert scores["per_class"]["zzglorp"]["iou"] == 0.0
    assert scores["mIoU"] < scores["mIoU_named"] or scores["mIoU_named"] == 0.0
    # A folder's own label set, outside the model's tree, is scored the same way.
    (root / "labels.yaml").write_text(honest_set.read_text())
    own = tmp_path / "own.json"
    result = run("evaluate", checkpoint, "--data", f"folder={root}", "--json", own, *FAST)
    assert result.exit_code == 0, result.stderr
    mine = json.loads(own.read_text())["streets"]
    assert mine["labelset"] == str(root / "labels.yaml")
    assert "labels.yaml: label 'zzglorp'" in mine["problems"][0]["message"]
    where = {"labelset": None, "problems": None}            # messages name the file
    assert {**mine, **where} == {**scores, **where}
    # FORMAT=FILE names the dataset it belongs to; with several --data it must.
    voc = tmp_path / "voc"
    _voc(voc, np.zeros((8, 8), np.int64))
    both = ["--data", f"folder={root}", "--data", f"voc={voc}"]
    result = run("evaluate", checkpoint, *both, "--labelset", f"folder={honest_set}", *FAST)
    assert result.exit_code == 0, result.stderr
    assert "streets" in result.stdout and "harmonic mean" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["--labelset", "x.yaml", "--data", "camvid=/a", "--data", "voc=/b"],
     "with several --data, say whose label set it is: --labelset FORMAT=FILE"),
    (["--labelset", "voc=x.yaml", "--data", "camvid=/a"], "no --data voc=ROOT"),
    (["--labelset", "x.yaml"], "--labelset x.yaml: reads the label maps of a --data; give "
     "the dataset it labels: --data FORMAT=ROOT"),
    (["--labelset", "x.yaml", "--labelset", "y.yaml", "--data", "camvid=/a"],
     "camvid has a label set already"),
])
def test_labelset_option_errors(checkpoint, run, args, message):
    result = run("evaluate", checkpoint, *args)
    assert result.exit_code == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_zero_shot_under_torchrun_equals_one_process(checkpoint, sample, tmp_path):
    """Two ranks score 1 image each of each held-out set; the counts are summed exactly."""
    torchrun = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone",
                "--nproc_per_node", "2", "-m", "dsspn_cli"]
    args = ["evaluate", str(checkpoint), "--data", f"camvid={sample / 'held-out' / 'camvid'}",
            "--data", f"voc={sample / 'held-out' / 'voc'}", *FAST]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for name, launch in (("one", [sys.executable, "-m", "dsspn_cli"]), ("two", torchrun)):
        proc = subprocess.run(launch + args + ["--json", str(tmp_path / f"{name}.json")],
                              capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    assert json.loads((tmp_path / "two.json").read_text()) == one
    assert one["camvid"]["images"] == one["voc"]["images"] == 2
