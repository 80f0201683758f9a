"""dsspn predict on videos: the overlay video with its legend, --every, --frames, the same
labels as the frames predicted as images, the encoder fallback, a clean stop, and one line
without PyAV (tiny clips of 64x128, a small ResNet-18 model)."""

import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from dsspn_cli.engine.checkpoint import save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.predict import predict
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree
from dsspn_cli.model.segmenter import build_model

av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'dsspn[video]')")

SIZE = (64, 128)
PANEL = 9 * 17          # the legend of a 64-pixel frame: font 9, 17 of its sizes wide


def _frame(i: int, height: int = SIZE[0], width: int = SIZE[1]) -> np.ndarray:
    """Sky above, road and grass below, their border moving right frame by frame."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[: height // 2] = (70, 130, 180)
    frame[height // 2:, : width // 2 + 4 * i] = (128, 64, 128)
    frame[height // 2:, width // 2 + 4 * i:] = (107, 142, 35)
    return frame


def write_clip(path, count: int = 6, fps: int = 10, size=SIZE, rotation: int = 0):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = size[1], size[0], "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(_frame(i, *size), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_video(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, stream.average_rate, stream.codec_context.name


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tree = load_tree()
    table = MaskingTable.from_tree(tree)
    config = TrainConfig(backbone="resnet18", output_stride=16, head={"hidden": 8})
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model=build_model(table, config), tree=tree, config=config.to_dict(),
                    step=0, epoch=0)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", count=4)


def _labels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _stages_alive() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("dsspn-")]


def test_video_out_with_legend_and_the_labels_of_the_frames_as_images(checkpoint, clip,
                                                                       tmp_path):
    out, frames = tmp_path / "out", tmp_path / "frames"
    report = predict(checkpoint, [clip], dataset="cityscapes", out=out, frames=frames,
                     device="cpu")
    assert not _stages_alive()                      # nothing left running on return
    assert report.images == [] and len(report.videos) == 1
    video = report.videos[0]
    assert video.output == out / "clip_overlay.mp4" and video.frames == video.decoded == 4
    assert video.codec == "libx264" and video.fps > 0
    written, rate, codec = read_video(video.output)
    # The frame, the legend beside it; yuv420p wants even sides (one black column added).
    assert codec == "h264" and rate == 10 and len(written) == 4
    assert written[0].shape == (SIZE[0], SIZE[1] + PANEL + 1, 3)
    assert sorted(p.name for p in out.iterdir()) == ["clip_overlay.mp4"]   # no temporary
    names = sorted(p.name for p in frames.iterdir())
    assert names == [f"clip_{i:06d}_labels.png" for i in range(4)]

    # The same frames as image files, through predict: the same label maps, and the
    # video's left part is their overlay (up to the codec's loss).
    decoded, _, _ = read_video(clip)
    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(decoded):
        Image.fromarray(frame).save(images / f"clip_{i:06d}.png")
    predict(checkpoint, [images], dataset="cityscapes", out=tmp_path / "as-images",
            device="cpu")
    for i in range(4):
        assert np.array_equal(_labels(frames / f"clip_{i:06d}_labels.png"),
                              _labels(tmp_path / "as-images" / f"clip_{i:06d}_labels.png"))
        overlay = _labels(tmp_path / "as-images" / f"clip_{i:06d}_overlay.png")
        difference = np.abs(written[i][:, :SIZE[1]].astype(int) - overlay.astype(int))
        assert difference.mean() < 6, i
        legend = written[i][:, SIZE[1]:]
        assert (legend > 200).mean() > 0.5          # a white panel with rows drawn on it
        assert (legend < 100).any()


def test_every_n_predicts_one_frame_in_n_and_plays_at_fps_over_n(checkpoint, tmp_path):
    clip = write_clip(tmp_path / "seven.mkv", count=7)
    report = predict(checkpoint, [clip], out=tmp_path / "out", every=3,
                     frames=tmp_path / "out", device="cpu")
    video = report.videos[0]
    assert (video.frames, video.decoded, video.every) == (3, 7, 3)
    written, rate, _ = read_video(tmp_path / "out" / "seven_overlay.mp4")
    assert len(written) == 3 and rate == Fraction(10, 3)
    # Named by their frame in the input; concept ids (no --dataset) are 16-bit.
    for i in (0, 3, 6):
        with Image.open(tmp_path / "out" / f"seven_{i:06d}_labels.png") as image:
            assert image.mode.startswith("I") and image.size == SIZE[::-1]
    assert not (tmp_path / "out" / "seven_000001_labels.png").exists()


def test_cli_reports_frames_per_second_and_progress(checkpoint, clip, tmp_path, run,
                                                    monkeypatch):
    monkeypatch.setenv("DSSPN_PROGRESS_SECONDS", "0")
    image = tmp_path / "photo.png"
    Image.fromarray(_frame(0)).save(image)
    result = run("predict", checkpoint, clip, image, "--out", tmp_path / "out", "--classes",
                 "sky,road", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("predicted 1 image (the chosen classes' ids")
    assert lines[1].startswith(f"predicted 4 frames of {clip} (the chosen classes' ids, cpu)")
    assert "frames/s into" in lines[1] and lines[1].endswith("(libx264)")
    assert "predicting clip.mp4: 4/4 (100%)" in result.stderr and "frames/s" in result.stderr
    assert (tmp_path / "out" / "photo_labels.png").is_file()
    assert (tmp_path / "out" / "clip_overlay.mp4").is_file()


def test_mpeg4_when_ffmpeg_has_no_h264_encoder(checkpoint, clip, tmp_path, monkeypatch):
    from dsspn_cli.engine import video

    monkeypatch.setattr(video, "ENCODERS", ("no-such-encoder", "mpeg4"))
    report = predict(checkpoint, [clip], out=tmp_path / "out", level=1, device="cpu")
    assert report.videos[0].codec == "mpeg4"
    written, rate, codec = read_video(report.videos[0].output)
    assert codec == "mpeg4" and rate == 10 and len(written) == 4


def test_a_turned_video_is_predicted_upright(checkpoint, tmp_path):
    clip = write_clip(tmp_path / "phone.mov", count=2, rotation=90)
    report = predict(checkpoint, [clip], out=tmp_path / "out", frames=tmp_path / "f",
                     device="cpu")
    with Image.open(tmp_path / "f" / "phone_000000_labels.png") as image:
        assert image.size == (SIZE[0], SIZE[1])            # width 64, height 128: upright
    written, _, _ = read_video(report.videos[0].output)
    assert written[0].shape[0] == SIZE[1]


def test_without_pyav_one_line_says_what_to_install(checkpoint, clip, tmp_path, run,
                                                    monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)           # import av fails
    result = run("predict", checkpoint, clip, "--out", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 2
    assert result.stderr == ("error: video needs PyAV: pip install 'dsspn[video]' (or pip "
                             "install av)\n")
    assert not (tmp_path / "out").exists()


def test_bad_videos_and_options_are_one_line_before_any_work(checkpoint, clip, tmp_path,
                                                              run):
    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video\n")
    with pytest.raises(UserError, match=r"notes.mp4: cannot be read as a video"):
        predict(checkpoint, [fake], out=tmp_path / "o", device="cpu")
    with pytest.raises(UserError, match="no such video"):
        predict(checkpoint, [tmp_path / "missing.webm"], out=tmp_path / "o", device="cpu")
    other = tmp_path / "other"
    other.mkdir()
    twin = write_clip(other / "clip.avi", count=1)
    with pytest.raises(UserError, match="would both write clip_overlay.mp4"):
        predict(checkpoint, [clip, twin], out=tmp_path / "o", device="cpu")
    image = tmp_path / "photo.png"
    Image.fromarray(_frame(0)).save(image)
    for options in ({"every": 2}, {"frames": tmp_path / "f"}):
        with pytest.raises(UserError, match="applies to videos"):
            predict(checkpoint, [image], out=tmp_path / "o", device="cpu", **options)
    with pytest.raises(UserError, match="--html: the page shows images, and .*clip.* is a "
                                        "video"):
        predict(checkpoint, [clip], out=tmp_path / "o", device="cpu", html=True)
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="afile: exists and is a file, not a folder"):
        predict(checkpoint, [clip], out=tmp_path / "o", frames=tmp_path / "afile",
                device="cpu")
    (tmp_path / "o2").mkdir()
    os.symlink(tmp_path / "elsewhere.mp4", tmp_path / "o2" / "clip_overlay.mp4")
    with pytest.raises(UserError, match="symbolic link"):
        predict(checkpoint, [clip], out=tmp_path / "o2", device="cpu")
    result = run("predict", checkpoint, clip, "--out", tmp_path / "o", "--every", "0")
    assert result.exit_code == 2 and "--every" in result.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "f").exists()


def test_frames_check_covers_this_videos_maps_only_a_stem_of_zeros_too(tmp_path):
    from dsspn_cli.engine.video import prepare_videos

    clip = write_clip(tmp_path / "cam_000000.mp4", count=1)
    frames = tmp_path / "frames"
    frames.mkdir()
    # Another video's map (stem cam_1) is no output of this one, even where this stem
    # holds the six zeros a frame's number has.
    os.symlink(tmp_path / "elsewhere.png", frames / "cam_1_000002_labels.png")
    jobs = prepare_videos([clip], tmp_path / "out", frames=frames)
    assert [job.stem for job in jobs] == ["cam_000000"]
    os.symlink(tmp_path / "elsewhere.png", frames / "cam_000000_000003_labels.png")
    with pytest.raises(UserError, match="cam_000000_000003_labels.png: is a symbolic link"):
        prepare_videos([clip], tmp_path / "out", frames=frames)


def test_no_video_encoder_is_one_line_before_any_work(checkpoint, clip, tmp_path,
                                                      monkeypatch):
    from dsspn_cli.engine import video

    assert [job.codec for job in video.prepare_videos([clip], tmp_path / "o")] == ["libx264"]
    monkeypatch.setattr(video, "ENCODERS", ("no-such-encoder",))
    image = tmp_path / "photo.png"
    Image.fromarray(_frame(0)).save(image)

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the encoder was checked")

    monkeypatch.setattr("dsspn_cli.engine.checkpoint.load_model", no_model)
    with pytest.raises(UserError, match="has none of the video encoders no-such-encoder"):
        predict(checkpoint, [image, clip], out=tmp_path / "out", device="cpu")
    assert not (tmp_path / "out" / "photo_labels.png").exists()


def test_an_error_mid_video_stops_both_stages_and_leaves_no_video(checkpoint, clip, tmp_path,
                                                                  monkeypatch):
    from dsspn_cli.engine.predict import Predictor

    ran = Predictor.run
    calls = []

    def failing(self, image, **options):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return ran(self, image, **options)

    monkeypatch.setattr(Predictor, "run", failing)
    out = tmp_path / "out"
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        predict(checkpoint, [clip], out=out, frames=out, device="cpu")
    assert time.monotonic() - started < 60
    assert not _stages_alive()
    left = sorted(p.name for p in out.iterdir())
    assert left == ["clip_000000_labels.png", "clip_000001_labels.png"] or \
        left == ["clip_000000_labels.png"], left          # whole files, and no video


SLOW = """
import sys, time
from dsspn_cli.engine.predict import Predictor
ran = Predictor.run
def slow(self, image, **options):
    time.sleep(0.3)
    return ran(self, image, **options)
Predictor.run = slow
from dsspn_cli.cli.main import main
main(sys.argv[1:])
"""


def test_ctrl_c_stops_within_seconds_without_a_half_written_video(checkpoint, tmp_path):
    clip = write_clip(tmp_path / "long.mp4", count=40)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW, "predict", str(checkpoint), str(clip), "--out", str(out),
         "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", DSSPN_PROGRESS_SECONDS="0",
                 OMP_NUM_THREADS="1"))
    try:
        seen = []
        while not any("predicting long.mp4: 3/" in line for line in seen):
            line = proc.stderr.readline()
            assert line, "".join(seen)
            seen.append(line)
        os.killpg(proc.pid, signal.SIGINT)
        signalled = time.monotonic()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - signalled < 10
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "stopped: interrupted by SIGINT"
    assert not out.exists() or not list(out.iterdir())     # no video, no temporary file


def test_legend_keeps_rows_in_order_of_appearance_and_counts_the_rest():
    from types import SimpleNamespace

    from dsspn_cli.engine.video import LegendPanel

    names = [f"class {i}" for i in range(30)]
    predictor = SimpleNamespace(
        value_names=names, value_concepts=[[n] for n in names], dataset=None, classes=None,
        value_label=np.full(30, -1), colours=np.full((30, 3), 128, np.uint8))
    panel = LegendPanel(predictor, 64)                # room for 4 rows
    first = np.array([[2, 5, 5, 5]])
    assert panel.draw(first).shape == (64, panel.width, 3)
    assert panel.shown() == ([5, 2], 0)
    panel.draw(np.array([[9, 9, 9, 9]]))
    assert panel.shown() == ([5, 2, 9], 0)            # 9 came last, stays last
    panel.draw(np.array([[7, 7, 7, 7, 7, 7, 7, 7, 7]]))
    assert panel.shown() == ([5, 2, 9, 7], 0)         # four rows, four classes
    panel.draw(np.array([[11]]))
    # Five seen, three rows for classes: the most pixels so far (7, 9, 5), in order of
    # appearance, and a row for the two left out.
    assert panel.shown() == ([5, 9, 7], 2)
