"""The run folder and its files.

    RUN/config.yaml                 the resolved config
    RUN/checkpoints/step-*.pt       the last K step checkpoints
    RUN/checkpoints/last.pt         the newest of them (a hard link, or a copy)
    RUN/checkpoints/best.pt         the one with the best mean validation mIoU
    RUN/metrics.jsonl               one JSON record per logged step or validation
    RUN/curves.png                  training loss and validation mIoU against the step
    RUN/tensorboard/                TensorBoard's events: the same scalars, each
                                    validation's scores per dataset and IoU per tree level,
                                    and a few validation images with their overlays
                                    (``tensorboard --logdir runs``)

Only rank 0 writes here. Every file is written atomically (a temporary file, then a rename),
and every path below the run folder is checked for links and special files before the work
and opened without following a link (``files``).
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from dsspn_cli.engine.faults import BAD_FILES, SCAN_FILE
from dsspn_cli.files import (
    append_text,
    atomic_write_bytes,
    atomic_write_text,
    check_output,
    link_into_place,
    make_folder,
)

SCALARS = ("loss", "lr", "images_per_s", "val_mIoU")
VAL_SCALARS = ("mIoU", "pixel_acc", "mean_acc")        # per dataset, at each validation

# Every path a run writes in its folder, for the check before the work (check_output's
# 'writes'); 'finetune-*/' are the universal schedule's stages, run folders themselves.
FILES = ("config.yaml", "metrics.jsonl", "curves.png", SCAN_FILE, BAD_FILES, "checkpoints/",
         "checkpoints/last.pt", "checkpoints/best.pt", "checkpoints/step-*.pt", "tensorboard/")
WRITES = FILES + ("finetune-*/",) + tuple(f"finetune-*/{name}" for name in FILES)
STEP_FILE = re.compile(r"step-(\d+)\.pt")


def earlier_run(root: str | Path) -> list[str]:
    """What of an earlier run a folder holds (paths relative to it): checkpoints, or a
    metrics log with lines. A new run there would overwrite the ones and add a second
    history to the other."""
    root = Path(root)
    found = [name for name in ("checkpoints/last.pt", "checkpoints/best.pt")
             if (root / name).is_file()]
    found += [f"checkpoints/{path.name}" for path in step_files(root / "checkpoints")]
    metrics = root / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append("metrics.jsonl")
    return found


def step_files(folder: Path) -> list[Path]:
    """The step checkpoints in ``folder``, oldest first (by step, whatever the digits)."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in folder.iterdir()
             if (m := STEP_FILE.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


class RunFolder:
    def __init__(self, out: str | Path, inputs=()):
        """``inputs``: every path the run reads (data roots, tree, checkpoints it starts
        from); the run folder may be none of them, lie inside none, hold none."""
        # A bad place, a link or a FIFO among the files to write, is told before any work.
        self.root = check_output(out, folder=True, inputs=inputs, writes=WRITES)
        self.config = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.metrics = self.root / "metrics.jsonl"
        self.curves = self.root / "curves.png"
        self._board = None
        self._purge_step = None     # resuming: TensorBoard drops what was logged from here

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}.pt"

    def write_config(self, config: dict) -> None:
        import yaml

        atomic_write_text(self.config, yaml.safe_dump(config, sort_keys=False), within=self.root)

    # ------------------------------------------------------------------------------ metrics

    def log(self, record: dict) -> None:
        """A line of metrics.jsonl, and its numbers as TensorBoard scalars: ``SCALARS``, and
        of a validation (``record["val"]``) each dataset's scores as ``val/<dataset>/mIoU``
        and its IoU per tree level as ``iou_per_level/<dataset>/level_<depth>``."""
        append_text(self.metrics, json.dumps(record) + "\n", within=self.root)
        scalars = _scalars(record)
        if not scalars:         # nothing to plot (a record after the board was closed, as
            return              # the ranks' check): no writer opened, no empty events file
        board = self.board()
        if board is None:
            return
        for tag, value in scalars:
            board.add_scalar(tag, value, record["step"])
        board.flush()

    def log_images(self, step: int, pictures) -> None:
        """Pictures (tag, H x W x 3 uint8) as TensorBoard images at ``step``."""
        board = self.board()
        if board is None:
            return
        for tag, picture in pictures:
            board.add_image(tag, picture, step, dataformats="HWC")
        board.flush()

    def board(self):
        """The run's TensorBoard writer (a dependency; a broken install is said once, and
        the run goes on with metrics.jsonl alone)."""
        if self._board is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                warnings.warn(f"TensorBoard cannot be imported ({exc}): this run logs to "
                              "metrics.jsonl only; pip install tensorboard", stacklevel=2)
                self._board = False
            else:
                folder = make_folder(self.root / "tensorboard", within=self.root)
                self._board = SummaryWriter(str(folder), purge_step=self._purge_step)
        return self._board or None

    def close_board(self) -> None:
        """Write out and close the TensorBoard events (its writer thread ends). A later log
        opens a new events file, which must not drop this session's events again."""
        if self._board:
            self._board.close()
        self._board, self._purge_step = None, None

    def records(self) -> list[dict]:
        """metrics.jsonl's records; a line cut short by a kill is passed over."""
        if not self.metrics.is_file() or self.metrics.is_symlink():    # nor read through one
            return []
        records = []
        for line in self.metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    # ------------------------------------------------------------------------------ upkeep

    def tidy(self, step: int | None = None) -> None:
        """Before (re)starting: remove temporary files a killed process left, and, resuming
        from ``step``, the metrics logged after that step (they will be logged again)."""
        for folder in (self.root, self.checkpoints):
            for stale in folder.glob(".*.tmp") if folder.is_dir() else []:
                stale.unlink(missing_ok=True)
        if step is not None:
            # TensorBoard's events are appended files: its writer marks the step from which
            # the earlier ones are to be dropped (a resume from -1 drops them all).
            self._purge_step = step + 1
        if step is not None and self.metrics.is_file():
            kept = [r for r in self.records() if r["step"] <= step]
            atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept),
                              within=self.root)

    def keep_last(self, keep: int) -> None:
        for old in step_files(self.checkpoints)[:-keep]:
            old.unlink(missing_ok=True)

    def step_files(self) -> list[Path]:
        return step_files(self.checkpoints)

    def earlier_run(self) -> list[str]:
        return earlier_run(self.root)

    def link(self, source: Path, target: Path) -> None:
        """Give a finished checkpoint another name (last.pt, best.pt)."""
        link_into_place(source, target, within=self.root)

    def plot_curves(self) -> None:
        """curves.png: training loss and validation mIoU against the step."""
        records = self.records()
        if not records:
            return
        from dsspn_cli.figures import new_figure, png_bytes

        losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
        scores = [(r["step"], r["val_mIoU"]) for r in records if "val_mIoU" in r]
        figure = new_figure(8, 4.5)     # the title is the run folder's name, drawn as written
        left = figure.add_subplot()
        if losses:
            left.plot(*zip(*losses), color="#0072B2", label="training loss")
        left.set_xlabel("step")
        left.set_ylabel("loss", color="#0072B2")
        if scores:
            right = left.twinx()
            right.plot(*zip(*scores), "o-", color="#D55E00", label="validation mIoU")
            right.set_ylabel("mIoU (%)", color="#D55E00")
        left.set_title(f"{self.root.name}: training")
        figure.tight_layout()
        atomic_write_bytes(self.curves, png_bytes(figure, dpi=120), within=self.root)


def _scalars(record: dict) -> list[tuple[str, float]]:
    """The TensorBoard scalars of a metrics record, (tag, value): see ``RunFolder.log``."""
    scalars = [(key, record[key]) for key in SCALARS if _number(record.get(key))]
    for name, scores in (record.get("val") or {}).items():
        scalars += [(f"val/{name}/{key}", scores[key]) for key in VAL_SCALARS
                    if _number(scores.get(key))]
        scalars += [(f"iou_per_level/{name}/level_{level}", iou)
                    for level, iou in (scores.get("iou_per_level") or {}).items()
                    if _number(iou)]
    return scalars


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


__all__ = ["RunFolder", "FILES", "WRITES", "earlier_run", "step_files"]
