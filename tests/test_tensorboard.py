"""TensorBoard out of the box: a short training run writes events that TensorBoard's own
reader reads back, with the training scalars, each validation's scores and IoU per tree
level, and a few validation images with their overlays; a resumed run's events hold each
step once."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from dsspn_cli.data.dataset import SegmentationDataset
from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.train import TrainConfig, train
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="TensorBoard is not installed (a dependency of dsspn: pip install tensorboard)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_sample_data(root, seed=0, images=4, size=(64, 128))
    return {"cityscapes": str(root / "cityscapes"), "ade": str(root / "ade20k")}


def config(data, out, **overrides):
    values = dict(data=data, out=str(out), iters=4, batch_size=2, crop=64, backbone="resnet18",
                  output_stride=16, workers=0, checkpoint_every=2, val_every=2, keep=2,
                  val_images=2, log_every=1, head={"hidden": 8}, lr=0.01, scan=False)
    values.update(overrides)
    return TrainConfig(**values)


def events(run):
    reader = event_accumulator.EventAccumulator(
        str(run / "tensorboard"), size_guidance={event_accumulator.SCALARS: 0,
                                                 event_accumulator.IMAGES: 0})
    reader.Reload()
    return reader


def test_a_run_logs_scalars_iou_per_level_and_validation_images(data, tmp_path):
    run = tmp_path / "run"
    train(config(data, run))
    reader = events(run)
    scalars = set(reader.Tags()["scalars"])
    assert {"loss", "lr", "images_per_s", "val_mIoU"} <= scalars
    assert [e.step for e in reader.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in reader.Scalars("val_mIoU")] == [2, 4]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val" in r][-1]
    for name in ("cityscapes", "ade"):
        for key in ("mIoU", "pixel_acc", "mean_acc"):
            logged = reader.Scalars(f"val/{name}/{key}")
            assert [e.step for e in logged] == [2, 4]
            assert logged[-1].value == pytest.approx(last["val"][name][key])
        # The IoU per tree level: in metrics.jsonl and in TensorBoard, level by level.
        levels = last["val"][name]["iou_per_level"]
        assert levels and set(levels) <= {str(depth) for depth in range(10)}
        for level, iou in levels.items():
            logged = reader.Scalars(f"iou_per_level/{name}/level_{level}")
            assert [e.step for e in logged] == [2, 4]
            assert logged[-1].value == pytest.approx(iou)

    # Four fixed images, two per dataset, at each validation: photo | prediction | truth.
    images = sorted(reader.Tags()["images"])
    assert len(images) == 4
    assert sorted({tag.split("/")[1] for tag in images}) == ["ade", "cityscapes"]
    table = MaskingTable.from_tree(load_tree())
    for tag in images:
        logged = reader.Images(tag)
        assert [e.step for e in logged] == [2, 4]
        picture = np.asarray(Image.open(io.BytesIO(logged[-1].encoded_image_string)))
        assert picture.shape == (64, 3 * 128, 3)
        _, name, key = tag.split("/", 2)
        fmt = {"cityscapes": "cityscapes", "ade": "ade"}[name]
        dataset = SegmentationDataset(data[name], fmt, "val", table)
        (index,) = [i for i, s in enumerate(dataset.samples) if s.key == key]
        photo, _ = dataset.load(index)
        assert np.array_equal(picture[:, :128], photo)        # the photo, as it is
        assert not np.array_equal(picture[:, 128:256], photo)  # the prediction's colours


def test_a_resumed_run_logs_each_step_once(data, tmp_path):
    run = tmp_path / "run"
    train(config(data, run, val_every=4), stop_at=3)
    # As if killed after logging step 3 and before its checkpoint: resumed from step 2.
    for name in ("last.pt", "step-0000003.pt"):
        (run / "checkpoints" / name).unlink()
    train(config(data, run, val_every=4), resume=True)
    reader = events(run)
    assert [e.step for e in reader.Scalars("loss")] == [1, 2, 3, 4]
    assert [e.step for e in reader.Scalars("val_mIoU")] == [4]


def test_a_record_with_nothing_to_plot_opens_no_board(tmp_path):
    """A record logged after the board was closed (a distributed run's ranks_in_sync, after
    the loop) goes to metrics.jsonl only: no writer is opened, no empty events file left."""
    from dsspn_cli.engine.run import RunFolder

    folder = RunFolder(tmp_path / "run")
    folder.log({"step": 1, "loss": 0.5})
    folder.close_board()
    files = sorted((tmp_path / "run" / "tensorboard").iterdir())
    assert len(files) == 1
    folder.log({"step": 1, "ranks_in_sync": True})
    assert folder._board is None
    assert sorted((tmp_path / "run" / "tensorboard").iterdir()) == files
    assert [r["step"] for r in folder.records()] == [1, 1]
    assert folder.records()[-1]["ranks_in_sync"] is True
    # A record with scalars opens a board again, as before.
    folder.log({"step": 2, "val": {"ade": {"mIoU": 50.0, "iou_per_level": {"1": 60.0}}}})
    assert folder._board is not None
    folder.close_board()
    reader = events(tmp_path / "run")
    assert [e.value for e in reader.Scalars("val/ade/mIoU")] == [50.0]
    assert [e.value for e in reader.Scalars("iou_per_level/ade/level_1")] == [60.0]
