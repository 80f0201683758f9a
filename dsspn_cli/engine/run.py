"""The run folder and its files.

    RUN/config.yaml                 the resolved config
    RUN/checkpoints/step-*.pt       the last K step checkpoints
    RUN/checkpoints/last.pt         the newest of them (a hard link, or a copy)
    RUN/checkpoints/best.pt         the one with the best mean validation mIoU
    RUN/metrics.jsonl               one JSON record per logged step or validation
    RUN/curves.png                  training loss and validation mIoU against the step
    RUN/tensorboard/                the same scalars, when TensorBoard is installed

Only rank 0 writes here. Every file is written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from dsspn_cli.errors import UserError, os_problem
from dsspn_cli.files import atomic_write_bytes, atomic_write_text

SCALARS = ("loss", "lr", "images_per_s", "val_mIoU")


class RunFolder:
    def __init__(self, out: str | Path):
        from dsspn_cli.files import check_output

        self.root = check_output(out, folder=True)     # a bad place is told before any work
        self.config = self.root / "config.yaml"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.metrics = self.root / "metrics.jsonl"
        self.curves = self.root / "curves.png"
        self._board = None

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:07d}.pt"

    def write_config(self, config: dict) -> None:
        import yaml

        atomic_write_text(self.config, yaml.safe_dump(config, sort_keys=False))

    # ------------------------------------------------------------------------------ metrics

    def log(self, record: dict) -> None:
        """A line of metrics.jsonl, and TensorBoard scalars when TensorBoard is installed."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.metrics, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise UserError(f"{self.metrics}: cannot write: {os_problem(exc)}") from None
        board = self.board()
        if board is not None:
            for key in SCALARS:
                if isinstance(record.get(key), (int, float)):
                    board.add_scalar(key, record[key], record["step"])
            board.flush()

    def board(self):
        if self._board is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:          # TensorBoard is optional
                self._board = False
            else:
                self._board = SummaryWriter(str(self.root / "tensorboard"))
        return self._board or None

    def records(self) -> list[dict]:
        """metrics.jsonl's records; a line cut short by a kill is passed over."""
        if not self.metrics.is_file():
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
        if step is not None and self.metrics.is_file():
            kept = [r for r in self.records() if r["step"] <= step]
            atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def keep_last(self, keep: int) -> None:
        for old in sorted(self.checkpoints.glob("step-*.pt"))[:-keep]:
            old.unlink(missing_ok=True)

    def link(self, source: Path, target: Path) -> None:
        """Give a finished checkpoint another name (last.pt, best.pt) without a moment of half
        a file there: a hard link where the file system has them (no space, no time; files are
        never written in place, so sharing one is safe), else a copy; then a rename."""
        temporary = target.with_name(f".{target.name}.tmp")
        try:
            temporary.unlink(missing_ok=True)
            try:
                os.link(source, temporary)
            except OSError:
                shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise UserError(f"{target}: cannot write: {os_problem(exc)}") from None

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
        atomic_write_bytes(self.curves, png_bytes(figure, dpi=120))


__all__ = ["RunFolder"]
