"""Faults during training: kills, signals, full disks, unusable files, lost ranks.

The runs are real ``dsspn train`` processes on tiny sample data (CPU, deterministic), killed
and signalled from outside the way a cluster or a user would.
"""
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from dsspn_cli.data.sample import write_sample_data
from dsspn_cli.engine.checkpoint import load_checkpoint
from dsspn_cli.engine.train import TrainConfig, train
from dsspn_cli.errors import UserError

ITERS = 8
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_sample_data(root, seed=0, images=4, size=(64, 128))
    return {"cityscapes": str(root / "cityscapes"), "ade": str(root / "ade20k")}


def settings(data, **overrides) -> dict:
    values = dict(data=data, iters=ITERS, batch_size=2, crop=64, backbone="resnet18",
                  output_stride=16, workers=0, checkpoint_every=1, keep=2, val_every=100,
                  val_images=1, log_every=1, head={"hidden": 8}, lr=0.01, device="cpu")
    values.update(overrides)
    return values


def config_file(tmp_path: Path, data, **overrides) -> Path:
    path = tmp_path / f"train-{len(list(tmp_path.glob('train-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(settings(data, **overrides)))
    return path


def start(config: Path, out: Path, *extra, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "dsspn_cli", "train", "--config", str(config), "--out",
               str(out), *extra]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout=300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def logged_step(out: Path) -> int:
    """The last training step metrics.jsonl records (0 before the first)."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [0]
    for line in lines:
        try:
            steps.append(json.loads(line).get("step", 0))
        except ValueError:
            pass
    return max(steps)


def wait_for(condition, proc, timeout=120, poll=0.005):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended early ({proc.returncode}): {proc.stderr.read()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)


def weights(out: Path) -> dict:
    return load_checkpoint(out / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def assert_clean_error(code: int, err: str, expected_code: int = 2) -> str:
    assert code == expected_code, err
    assert "Traceback" not in err, err
    lines = [l for l in err.splitlines() if l.startswith(("error:", "stopped:"))]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run's final weights."""
    folder = tmp_path_factory.mktemp("reference")
    code, err = finish(start(config_file(folder, data), folder / "run"))
    assert code == 0, err
    return weights(folder / "run")


def all_checkpoints_load(out: Path) -> int:
    """Every checkpoint on disk loads (weights_only); the step of last.pt (0: none yet)."""
    for path in (out / "checkpoints").glob("*.pt") if (out / "checkpoints").is_dir() else []:
        payload = load_checkpoint(path)
        assert payload["step"] >= 1, path
    last = out / "checkpoints" / "last.pt"
    return load_checkpoint(last)["step"] if last.is_file() else 0


def test_sigkill_at_random_points_then_resume_ends_with_the_same_weights(data, tmp_path,
                                                                         reference):
    """SIGKILL three times: at random moments, and once while a checkpoint is being written.
    No checkpoint on disk is ever damaged, and resuming ends with the uninterrupted weights."""
    rng = random.Random(6)
    config, out = config_file(tmp_path, data), tmp_path / "run"
    checkpoints = out / "checkpoints"
    saved, kills = 0, 0
    for how in ("random", "while-writing", "random", None):
        # A run that logged a step is continued (before its first checkpoint: started over).
        proc = start(config, out, *(["--resume"] if logged_step(out) else []))
        if how is None:
            break
        if how == "random":
            floor = logged_step(out)
            wait_for(lambda: logged_step(out) > floor, proc)
            time.sleep(rng.uniform(0.0, 1.0))
        else:
            wait_for(lambda: checkpoints.is_dir() and any(checkpoints.glob(".*.tmp")), proc)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate()
        now = all_checkpoints_load(out)
        assert now >= saved
        saved = now
    code, err = finish(proc)
    assert code == 0, err
    assert kills >= 2 and saved < ITERS
    assert all_checkpoints_load(out) == ITERS
    assert not list(checkpoints.glob(".*.tmp")), "temporary files left behind"
    assert_same_weights(weights(out), reference)
    steps = [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if "loss" in r]
    assert steps == list(range(1, ITERS + 1)), "metrics logged twice or lost"


@pytest.mark.parametrize("signum,workers", [(signal.SIGINT, 1), (signal.SIGTERM, 0)])
def test_sigint_and_sigterm_write_a_final_checkpoint_and_exit_cleanly(data, tmp_path,
                                                                      reference, signum,
                                                                      workers):
    """SIGINT goes to the whole process group (as Ctrl-C does, loader workers included);
    SIGTERM to the training process only (as a scheduler does)."""
    config = config_file(tmp_path, data, workers=workers, checkpoint_every=100)
    out = tmp_path / "run"
    proc = start(config, out, start_new_session=True)
    wait_for(lambda: logged_step(out) >= 2, proc)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    code, err = finish(proc)
    line = assert_clean_error(code, err, 128 + signum)
    name = signal.Signals(signum).name
    assert line.startswith(f"stopped: {name} at step ") and "--resume" in line, line
    step = int(line.split(" at step ")[1].split()[0])
    assert 2 <= step < ITERS
    assert all_checkpoints_load(out) == step       # checkpoint_every is 100: written on stop
    code, err = finish(start(config, out, "--resume"))
    assert code == 0, err
    assert_same_weights(weights(out), reference)


def test_disk_full_stops_with_a_clear_error_and_keeps_the_previous_checkpoint(data, tmp_path):
    """A file size limit (RLIMIT_FSIZE) makes the kernel refuse the next checkpoint's bytes,
    as a full disk would; the error names the file and the checkpoint that is left."""
    config, out = config_file(tmp_path, data, iters=2), tmp_path / "run"
    code, err = finish(start(config, out))
    assert code == 0, err
    size = (out / "checkpoints" / "last.pt").stat().st_size
    limit = size // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code, err = finish(start(config, out, "--resume", "--iters", "4", preexec_fn=small_files))
    line = assert_clean_error(code, err)
    assert "cannot write" in line and "step-0000003.pt" in line, line
    assert "last good checkpoint" in line and "(step 2)" in line, line
    assert all_checkpoints_load(out) == 2
    assert not list((out / "checkpoints").glob(".*.tmp"))


def test_unwritable_run_folder_is_a_clear_error_before_any_work(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write"):
        train(TrainConfig(**settings(data, out=str(blocker / "run"))))
    if os.geteuid() != 0:                       # root writes through permissions
        folder = tmp_path / "locked"
        folder.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot write"):
            train(TrainConfig(**settings(data, out=str(folder / "run"))))


# ------------------------------------------------------------------------- unusable files


@pytest.fixture
def damaged(tmp_path):
    """Sample Cityscapes data with four kinds of unusable samples among the training ones."""
    import numpy as np
    from PIL import Image

    write_sample_data(tmp_path / "d", seed=1, images=8, size=(64, 128))
    root = tmp_path / "d" / "cityscapes"
    images = sorted((root / "leftImg8bit" / "train").rglob("*.png"))
    labels = sorted((root / "gtFine" / "train").rglob("*_labelIds.png"))
    assert len(images) >= 6
    images[0].write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))           # corrupt image
    labels[1].write_bytes(labels[1].read_bytes()[:60])                     # truncated PNG
    value = np.array(Image.open(labels[2]))
    value[0, 0] = 77                                                       # not a label id
    Image.fromarray(value).save(labels[2])
    Image.fromarray(np.array(Image.open(labels[3]))[:32]).save(labels[3])  # size mismatch
    return root, [images[0].name, labels[1].name, labels[2].name, labels[3].name]


def test_unusable_files_stop_the_run_before_the_first_step_with_the_full_list(damaged,
                                                                              tmp_path, run):
    root, names = damaged
    result = run("train", "--data", f"cityscapes={root}", "--out", tmp_path / "run",
                 "--iters", "2", "--batch-size", "2", "--crop", "64", "--backbone",
                 "resnet18", "--output-stride", "16", "--workers", "0")
    line = assert_clean_error(result.exit_code, result.stderr)
    assert line.startswith("error: 4 of ") and "--skip-bad" in line, line
    for name in names:                         # the full list, above the error line
        assert name in result.stderr, name
    assert "not in the" in result.stderr and "differs from its image" in result.stderr
    listing = (tmp_path / "run" / "bad-files.txt").read_text().splitlines()
    assert len(listing) == 4
    assert not (tmp_path / "run" / "checkpoints").exists()      # stopped before step 1


def test_skip_bad_reports_and_leaves_out_the_unusable_files(damaged, tmp_path, capsys):
    root, names = damaged
    from rich.console import Console

    config = TrainConfig(**settings({"cityscapes": str(root)}, iters=2, checkpoint_every=2,
                                    out=str(tmp_path / "run"), skip_bad=True))
    result = train(config, console=Console(stderr=True, width=400))
    assert result["step"] == 2
    err = capsys.readouterr().err
    assert "--skip-bad: leaving out 4 of" in err and names[0] in err
    scan = json.loads((tmp_path / "run" / "data-scan.json").read_text())
    assert len(scan["cityscapes/train"]["bad"]) == 4
    # Resuming reuses the scan while the files are unchanged, and reads again after a change.
    cache = tmp_path / "run" / "data-scan.json"
    written = cache.stat().st_mtime_ns
    assert train(config.replace(iters=3), resume=True)["step"] == 3
    assert cache.stat().st_mtime_ns == written
    touched = next((root / "leftImg8bit" / "train").rglob("*.png"))
    os.utime(touched, ns=(time.time_ns(), time.time_ns()))
    assert train(config.replace(iters=4), resume=True)["step"] == 4
    assert cache.stat().st_mtime_ns != written


def test_no_scan_reads_nothing_first_and_stops_at_the_first_bad_file(damaged, tmp_path):
    """--no-scan: no reading before step 1 (no data-scan.json); the first unusable file
    read stops the run with its name (an epoch of 4 steps reads all 8 samples)."""
    root, names = damaged
    config = TrainConfig(**settings({"cityscapes": str(root)}, iters=4, checkpoint_every=1,
                                    out=str(tmp_path / "run"), scan=False))
    with pytest.raises(UserError, match=r"--no-scan: the files were not checked") as caught:
        train(config)
    assert any(name in str(caught.value) for name in names), caught.value
    assert not (tmp_path / "run" / "data-scan.json").exists()


def test_a_file_that_goes_bad_during_training_is_named(data, tmp_path, monkeypatch):
    from dsspn_cli.data.dataset import SegmentationDataset

    original = SegmentationDataset.load
    calls = {"n": 0}

    def failing(self, index):
        calls["n"] += 1
        if calls["n"] > 12:                     # after the check before step 1 passed
            from dsspn_cli.data.common import BadFile
            raise BadFile(self.samples[index].image, "unreadable image (OSError: I/O error)")
        return original(self, index)

    monkeypatch.setattr(SegmentationDataset, "load", failing)
    config = TrainConfig(**settings(data, out=str(tmp_path / "run"), iters=6))
    with pytest.raises(UserError, match=r"I/O error\) \(read for step \d; it passed the check"):
        train(config)


# ------------------------------------------------------------------------------- DDP faults


def torchrun(out: Path, config: Path, *extra) -> subprocess.Popen:
    launcher = os.path.join(os.path.dirname(sys.executable), "torchrun")
    command = [launcher, "--standalone", "--nproc_per_node", "2", *extra, "-m", "dsspn_cli",
               "train", "--config", str(config), "--out", str(out)]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank``: a descendant of the launcher whose
    environment says RANK=<rank> (found through /proc, as an operator would)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {launcher.pid}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in family} - family
        family |= more
        grew = bool(more)
    for pid in sorted(family - {launcher.pid}):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and f"LOCAL_RANK={rank}".encode() in environ:
            return pid
    return None


@pytest.mark.parametrize("restarts", [0, 1])
def test_a_dying_rank_stops_the_job_or_torchrun_restarts_it_from_the_checkpoint(
        data, tmp_path, restarts):
    config = config_file(tmp_path, data, iters=6, batch_size=1, checkpoint_every=2)
    out = tmp_path / "run"
    launcher = torchrun(out, config, "--max-restarts", str(restarts), "--monitor-interval",
                        "0.5")
    wait_for(lambda: logged_step(out) >= 3, launcher, timeout=240, poll=0.05)
    victim = rank_pid(launcher, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    try:
        _, err = launcher.communicate(timeout=180)       # a hang fails here
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        raise AssertionError("the job hung after a rank died") from None
    if restarts == 0:
        assert launcher.returncode != 0
        assert "rank 1" in err or "local_rank: 1" in err, err[-2000:]
        assert all_checkpoints_load(out) >= 2
    else:
        assert launcher.returncode == 0, err[-3000:]
        assert "restart 1 by torchrun: resuming from" in err, err[-3000:]
        assert all_checkpoints_load(out) == 6
        records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
        assert {"step": 6, "ranks_in_sync": True} in records
