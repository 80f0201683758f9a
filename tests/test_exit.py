"""Every command exits when its work ends, whatever the garbage collector does.

Loader workers ignore SIGINT and SIGTERM (so that a Ctrl-C cannot kill them mid-batch); a
worker nobody shut down would keep multiprocessing's exit handler joining it for ever. The
worst case is forced here: every loader iterator is kept alive until the interpreter exits
(a reference in a global, the garbage collector off), in real ``dsspn`` processes with
workers; each must still exit. Errors in workers are one line naming the file; a signal
stops the reading before step 1 at once.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.errors import UserError

HANG = 180          # seconds: far beyond what these commands take, far below for ever
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
TRAIN = ["--backbone", "resnet18", "--output-stride", "16", "--batch-size", "2", "--crop",
         "64", "--device", "cpu", "--set", "head.hidden=8"]

# Runs the CLI with every DataLoader iterator kept alive to the end (``PATCH``: more set-up).
RUNNER = """
import gc, sys
import torch.utils.data as data

kept = []
opened = data.DataLoader.__iter__

def keep(self):
    iterator = opened(self)
    kept.append(iterator)
    return iterator

data.DataLoader.__iter__ = keep
gc.disable()
{patch}
from dsspn_cli.cli.main import main
main(sys.argv[1:])
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_sample_data(root, seed=0, images=4, size=(64, 128))
    return root / "cityscapes"


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    from dsspn_cli.engine.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run") / "run"
    train(TrainConfig(data={"cityscapes": str(data)}, out=str(out), iters=1, batch_size=2,
                      crop=64, backbone="resnet18", output_stride=16, workers=0,
                      head={"hidden": 8}, device="cpu", val_images=1))
    return out / "checkpoints" / "last.pt"


def start(args, patch: str = "", env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUNNER.format(patch=patch),
                             *map(str, args)], cwd=REPO, env={**ENV, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = HANG) -> tuple[int, str]:
    """The exit code and stderr; a failure if the process (or a worker) is still running
    after ``timeout`` seconds."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"still running {timeout} s on; its last words: {err[-400:]}")
    return proc.returncode, err


def one_line(code: int, err: str, expected: int = 2) -> str:
    assert code == expected, err
    assert "Traceback" not in err and "Original" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(("error:", "stopped:"))]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------ exits with workers alive


@pytest.mark.parametrize("extra", [["--iters", "2"], ["--iters", "1", "--skip-bad"]],
                         ids=["two-steps", "one-step-skip-bad"])
def test_train_exits_with_its_loader_iterators_kept_alive(data, tmp_path, extra):
    """The issue's commands: finished, checkpoints written, and never exited."""
    out = tmp_path / "run"
    code, err = finish(start(["train", "--data", f"cityscapes={data}", "--out", out,
                              "--workers", "2", *TRAIN, *extra]))
    assert code == 0, err
    assert (out / "checkpoints" / "last.pt").is_file()


def test_evaluate_and_predict_exit_with_their_loader_iterators_kept_alive(data, checkpoint,
                                                                          tmp_path):
    """Done, and stopped by a bad image before the loop's end (the iterator not used up)."""
    code, err = finish(start(["evaluate", checkpoint, "--data", f"cityscapes={data}",
                              "--workers", "2", "--json", tmp_path / "scores.json"]))
    assert code == 0, err
    assert (tmp_path / "scores.json").is_file()
    code, err = finish(start(["predict", data / "leftImg8bit" / "val", "--model", checkpoint,
                              "--out", tmp_path / "pred", "--workers", "2", "--device",
                              "cpu"]))
    assert code == 0, err
    assert len(list((tmp_path / "pred").rglob("*_labels.png"))) == 2

    broken = tmp_path / "broken"
    shutil.copytree(data, broken)
    first = sorted((broken / "leftImg8bit" / "val").rglob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:100])       # the header reads, the pixels do not
    code, err = finish(start(["evaluate", checkpoint, "--data", f"cityscapes={broken}",
                              "--workers", "2"]))
    assert first.name in one_line(code, err)
    code, err = finish(start(["predict", broken / "leftImg8bit" / "val", "--model",
                              checkpoint, "--out", tmp_path / "pred2", "--workers", "2",
                              "--device", "cpu"]))
    assert first.name in one_line(code, err)


def test_loops_shut_their_workers_down_when_they_end(data, checkpoint, tmp_path,
                                                     monkeypatch):
    """Not left to the garbage collector nor to the exit: once evaluation or the training
    loop returns (or fails), no worker of theirs is alive."""
    from dsspn_cli.data.dataset import SegmentationDataset
    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.engine.evaluate import evaluate
    from dsspn_cli.engine.train import TrainConfig, train

    kept = []
    opened = torch.utils.data.DataLoader.__iter__

    def keep(self):
        iterator = opened(self)
        kept.append(iterator)
        return iterator

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", keep)

    def all_ended():
        workers = [w for iterator in kept for w in getattr(iterator, "_workers", [])]
        assert workers and not any(w.is_alive() for w in workers)
        kept.clear()

    model, table, _, _ = load_model(checkpoint, "cpu")
    evaluate(model, SegmentationDataset(data, "cityscapes", "val", table), workers=2)
    all_ended()
    config = TrainConfig(data={"cityscapes": str(data)}, out=str(tmp_path / "run"), iters=1,
                         batch_size=2, crop=64, backbone="resnet18", output_stride=16,
                         workers=2, head={"hidden": 8}, device="cpu", val_images=1)
    train(config)
    all_ended()
    # And when the work fails: a file that breaks in the workers, after the check.
    monkeypatch.setattr(SegmentationDataset, "load", _fails_in_workers(SegmentationDataset.load))
    with pytest.raises(UserError, match="no good"):
        train(config.replace(out=str(tmp_path / "failed")))
    all_ended()
    with pytest.raises(UserError, match="no good"):
        evaluate(model, SegmentationDataset(data, "cityscapes", "val", table), workers=2)
    all_ended()


def _fails_in_workers(load):
    def failing(self, index):
        if torch.utils.data.get_worker_info() is None:
            return load(self, index)
        raise UserError("no good")
    return failing


# ------------------------------------------------------------------------- worker errors


def test_an_error_in_a_worker_is_one_line_and_the_command_exits(data, checkpoint, tmp_path):
    # A UserError raised in a worker (the pixel limit is read there first with --no-scan).
    code, err = finish(start(["train", "--data", f"cityscapes={data}", "--out",
                              tmp_path / "run", "--workers", "2", "--no-scan", "--iters", "2",
                              *TRAIN], env={"DSSPN_MAX_IMAGE_PIXELS": "many"}))
    assert one_line(code, err).startswith("error: DSSPN_MAX_IMAGE_PIXELS='many': give a whole")
    # Anything unforeseen, raised while reading an image: the file is named.
    boom = ("import dsspn_cli.engine.infer as infer\n"
            "def read_image(path):\n"
            "    raise RuntimeError('decoder exploded\\nat line 2')\n"
            "infer.read_image = read_image\n")
    code, err = finish(start(["predict", data / "leftImg8bit" / "val", "--model", checkpoint,
                              "--out", tmp_path / "pred", "--workers", "2", "--device", "cpu"],
                             boom))
    line = one_line(code, err)
    assert "_leftImg8bit.png: reading failed (RuntimeError: decoder exploded" in line, line
    # The same in evaluation, and in training (a file that passed the check before step 1).
    load = ("from dsspn_cli.data.dataset import SegmentationDataset\n"
            "def load(self, index):\n"
            "    raise ValueError('no good')\n"
            "SegmentationDataset.load = load\n")
    code, err = finish(start(["evaluate", checkpoint, "--data", f"cityscapes={data}",
                              "--workers", "2"], load))
    line = one_line(code, err)
    assert "_leftImg8bit.png, " in line and "reading failed (ValueError: no good)" in line, line
    in_workers = ("import torch\n"
                  "from dsspn_cli.data.dataset import SegmentationDataset\n"
                  "original = SegmentationDataset.load\n"
                  "def load(self, index):\n"
                  "    if torch.utils.data.get_worker_info() is None:\n"
                  "        return original(self, index)\n"
                  "    raise ValueError('no good')\n"
                  "SegmentationDataset.load = load\n")
    code, err = finish(start(["train", "--data", f"cityscapes={data}", "--out",
                              tmp_path / "run2", "--workers", "2", "--iters", "2", *TRAIN],
                             in_workers))
    line = one_line(code, err)
    assert "reading failed (ValueError: no good) (read for step 1; it passed the check" in line


def test_a_worker_that_dies_is_one_line(data, checkpoint, tmp_path):
    """Killed (the kernel's out-of-memory killer, say): torch notices; one line says so."""
    die = ("import os, dsspn_cli.engine.infer as infer\n"
           "infer.read_image = lambda path: os._exit(3)\n")
    code, err = finish(start(["predict", data / "leftImg8bit" / "val", "--model", checkpoint,
                              "--out", tmp_path / "pred", "--workers", "2", "--device", "cpu"],
                             die))
    assert "a loader process ended unexpectedly" in one_line(code, err)


def test_errors_raised_on_a_workers_behalf_are_one_line():
    """Raised outside the datasets' own items (a collate function, a dataset of someone
    else), torch re-raises them with the worker's traceback as the message."""
    from dsspn_cli.data.loading import reading

    class Raising(torch.utils.data.Dataset):
        def __init__(self, error):
            self.error = error

        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise self.error

    for error, expected in [(UserError("x.png: too dull"), "x.png: too dull"),
                            (KeyError("k"), "reading the data failed in a loader process "
                             "(KeyError: 'k'); run with --workers 0 to see where")]:
        loader = torch.utils.data.DataLoader(Raising(error), num_workers=1)
        with pytest.raises(UserError) as caught:
            with reading(loader) as items:
                iterator = items
                next(items)
        assert str(caught.value) == expected
        assert not any(w.is_alive() for w in iterator._workers)


# ------------------------------------------------------------------- a signal while reading


SLOW = """
import sys, time
from dsspn_cli.data import audit
from dsspn_cli.data.dataset import SegmentationDataset

def slow(read):
    def reading(*args):
        with open({marks!r}, "a") as marks:
            marks.write("x")
        time.sleep(0.5)
        return read(*args)
    return reading

SegmentationDataset.problem = slow(SegmentationDataset.problem)
audit._check_one = slow(audit._check_one)
"""


def signalled_while_reading(args, marks: Path, signum, group: bool) -> tuple[int, str, int]:
    """Run with a slow reader, signal once reading has begun; (exit code, stderr, reads that
    began after the signal)."""
    proc = start(args, SLOW.format(marks=str(marks)))
    deadline = time.monotonic() + HANG
    while not marks.exists() or not marks.read_text():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "reading never began"
        time.sleep(0.02)
    (os.killpg if group else os.kill)(proc.pid, signum)
    before = len(marks.read_text())
    code, err = finish(proc)
    return code, err, len(marks.read_text()) - before


@pytest.mark.parametrize("signum,group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signal_stops_the_reading_before_step_1_at_once(tmp_path, signum, group):
    """20 samples, half a second each, two threads: without a stop, 5 s of reading, the
    model built and a step. With it, at most the reads in flight finish; nothing is
    written but the run's config."""
    write_sample_data(tmp_path / "d", seed=0, images=16, size=(32, 64))
    out, marks = tmp_path / "run", tmp_path / "marks"
    code, err, later = signalled_while_reading(
        ["train", "--data", f"cityscapes={tmp_path / 'd' / 'cityscapes'}", "--out", out,
         "--workers", "0", "--iters", "2", *TRAIN], marks, signum, group)
    line = one_line(code, err, 128 + signum)
    name = signal.Signals(signum).name
    assert line.startswith(f"stopped: {name} while reading the data before step 1"), line
    assert later <= 6, f"{later} samples read after the signal"     # not all 20
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_data_check_stops_reading_at_ctrl_c(tmp_path):
    write_sample_data(tmp_path / "d", seed=0, images=16, size=(32, 64))
    code, err, later = signalled_while_reading(
        ["data", "check", tmp_path / "d" / "cityscapes", "--format", "cityscapes"],
        tmp_path / "marks", signal.SIGINT, True)
    assert one_line(code, err, 130) == "stopped: interrupted by SIGINT"
    assert later <= 8, f"{later} files read after the signal"       # not all 20
