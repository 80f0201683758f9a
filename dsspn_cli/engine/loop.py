"""The training loop: take a batch, compute the loss, step the optimiser and the schedule.
Everything else (logging, validation, checkpoints, progress) is a hook (``hooks.py``)."""

from __future__ import annotations

import time

import torch

from dsspn_cli.data.loading import open_iterator, shut_down, worker_errors
from dsspn_cli.engine.world import World, agree
from dsspn_cli.errors import UserError


class NonFiniteLoss(Exception):
    def __init__(self, step: int, dataset: str):
        super().__init__(f"non-finite loss at step {step} (dataset {dataset})")
        self.step, self.dataset = step, dataset


class BadSample(Exception):
    """A sample that passed the check before step 1 could not be read later."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class Trainer:
    def __init__(self, model, loader, sampler, optimizer, scheduler, scaler, world: World, *,
                 total: int, step: int = 0, dtype: torch.dtype | None = None, stop=None,
                 stop_at: int | None = None, hooks=(), save_start: bool = False):
        """``dtype``: autocast's (float16, bfloat16), or None for float32. ``save_start``: a
        new run of no steps (--iters 0), whose starting weights the hooks validate and
        checkpoint as they would a last step's."""
        self.model, self.loader, self.sampler = model, loader, sampler
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.world, self.total, self.step, self.dtype = world, total, step, dtype
        self.stop, self.stop_at, self.hooks = stop, stop_at, list(hooks)
        self.save_start = save_start
        self.signum = 0           # a stop signal, agreed by every rank at the same step
        self.record: dict = {}    # the last step's metrics
        self.failed = False
        self._seen, self._started = 0, time.perf_counter()
        self._iterator = None     # the loader's, while the loop runs

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[-1]["lr"]

    @property
    def stopping(self) -> bool:
        """A signal or ``stop_at`` ends the run after this step."""
        return bool(self.signum) or self.step == self.stop_at

    @property
    def done(self) -> bool:
        return self.step >= self.total or self.stopping

    def train(self) -> None:
        for hook in self.hooks:
            hook.before_train(self)
        try:
            if self.save_start:
                # No step to take: the start is validated and written as a last step's
                # would be, to see that a grown model lost nothing before it trains. (Not
                # when resumed: its start is written already.)
                self.after_step()
            elif not self.done:
                for batch in self.batches():
                    self.run_step(batch)
                    self.after_step()
                    if self.done:
                        break
        except BaseException:
            self.failed = True
            raise
        finally:
            # Now, not whenever the garbage collector gets to the iterator: its workers
            # could otherwise keep the process from exiting (``loading``).
            shut_down(self._iterator, self.loader)
            self._iterator = None
            for hook in self.hooks:
                hook.after_train(self)

    def after_step(self) -> None:
        for hook in self.hooks:
            hook.after_step(self)

    def batches(self):
        """Batches from where the run stands, epoch after epoch (a resumed run skips the
        batches of its epoch already done)."""
        per_epoch = len(self.sampler)
        while True:
            epoch, within = divmod(self.step, per_epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.skip = within
            self._iterator = open_iterator(self.loader)
            with worker_errors():
                yield from self._iterator

    def run_step(self, batch: dict) -> None:
        if "error" in batch:
            raise UserError(batch["error"][0])
        if "bad" in batch:
            raise BadSample(batch["bad"][0], self.step + 1)
        device = self.world.device
        images = batch["image"].to(device, non_blocking=True)
        target = batch["target"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            loss = self.model(images, target, batch["dataset"])
        non_finite, self.signum = agree(loss, self.stop.signum if self.stop else 0, self.world)
        if non_finite:
            raise NonFiniteLoss(self.step + 1, batch["dataset"])
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self._seen += images.shape[0] * self.world.size
        self.record = {"step": self.step, "epoch": (self.step - 1) // len(self.sampler),
                       "loss": loss.item(), "lr": self.lr,
                       "images_per_s": self._seen / (time.perf_counter() - self._started),
                       "dataset": batch["dataset"]}


__all__ = ["Trainer", "NonFiniteLoss", "BadSample"]
