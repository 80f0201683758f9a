"""What happens around the training steps, one hook per job (detectron2's HookBase): the
metrics log, the progress display, validation with the best model kept (and a few of its
images in TensorBoard), checkpoints, and the curves. The loop (``loop.Trainer``) calls every
hook after every step, in order; each one decides from ``trainer.step`` whether it has
work."""

from __future__ import annotations

import time

import numpy as np

from dsspn_cli.engine.run import RunFolder


class Hook:
    def before_train(self, trainer) -> None:
        pass

    def after_step(self, trainer) -> None:
        pass

    def after_train(self, trainer) -> None:
        pass


def due(trainer, every: int) -> bool:
    """Every ``every`` steps, and at the last one."""
    return trainer.step % every == 0 or trainer.step == trainer.total


class MetricsLog(Hook):
    """A metrics.jsonl line (and TensorBoard scalars) every ``every`` steps."""

    def __init__(self, run: RunFolder, every: int):
        self.run, self.every = run, every

    def after_step(self, trainer) -> None:
        # No record: no step was taken (--iters 0 writes its start).
        if trainer.world.main and trainer.record and due(trainer, self.every):
            self.run.log(trainer.record)

    def after_train(self, trainer) -> None:
        if trainer.world.main:
            self.run.close_board()


class Checkpointer(Hook):
    """A checkpoint every ``every`` steps, at the end, and when the run is asked to stop; the
    newest is also last.pt, and only the last ``keep`` step files stay."""

    def __init__(self, run: RunFolder, save, every: int, keep: int):
        self.run, self.save_to, self.every, self.keep = run, save, every, keep
        self.saved_at = -1
        self.best = -1.0

    def save(self, trainer) -> None:
        if not trainer.world.main or self.saved_at == trainer.step:    # once per step
            return
        self.saved_at = trainer.step
        named = self.run.step_checkpoint(trainer.step)
        self.save_to(named, trainer.step, {**trainer.record, "best_mIoU": self.best})
        self.run.link(named, self.run.last)
        self.run.keep_last(self.keep)

    def after_step(self, trainer) -> None:
        if due(trainer, self.every) or trainer.stopping:
            self.save(trainer)


class Validation(Hook):
    """Validation every ``every`` steps and at the end (not when stopping on a signal), on
    every rank (each scores its share; the scores are the same everywhere, so every rank
    agrees on the best): the scores, the IoU per tree level and the seconds it took go to
    metrics.jsonl (and TensorBoard), and a better mean mIoU is checkpointed as best.pt.
    ``pictures()``: a few validation images with their overlays for TensorBoard
    (``validation_pictures``), drawn by rank 0."""

    def __init__(self, run: RunFolder, validate, every: int, checkpointer: Checkpointer,
                 pictures=None):
        self.run, self.validate, self.every = run, validate, every
        self.checkpointer, self.pictures = checkpointer, pictures

    def after_step(self, trainer) -> None:
        if trainer.signum or not due(trainer, self.every):
            return
        started = time.perf_counter()
        scores = self.validate()
        if not scores:
            return
        mean = sum(s["mIoU"] or 0 for s in scores.values()) / len(scores)
        if trainer.world.main:
            self.run.log({"step": trainer.step, "val_mIoU": mean,
                          "val_seconds": round(time.perf_counter() - started, 3), "val": {
                              name: {m: s[m] for m in ("mIoU", "pixel_acc", "mean_acc",
                                                       "images", "iou_per_level") if m in s}
                              for name, s in scores.items()}})
            if self.pictures is not None:
                self.run.log_images(trainer.step, self.pictures())
        if mean > self.checkpointer.best:
            self.checkpointer.best = mean
            self.checkpointer.save(trainer)
            if trainer.world.main:
                self.run.link(self.run.last, self.run.best)


# ------------------------------------------------------------------ validation pictures

PICTURES = 4            # validation images in TensorBoard, the same ones at every validation
PICTURE_WIDTH = 1536    # pixels at most, the three panels together


def validation_pictures(model, tree, datasets, precision: str = "fp32",
                        count: int = PICTURES) -> list[tuple[str, np.ndarray]]:
    """``count`` fixed validation images, shared out over the datasets and spread evenly
    over each (``train.spread``), each drawn as photo | prediction overlay | ground-truth
    overlay side by side (in the dataset's label colours, through predict's inference and
    colours; unlabelled pixels show the photo), scaled down to ``PICTURE_WIDTH``.
    Returns (``val_images/<dataset>/<image key>``, H x W x 3 uint8) pairs."""
    from PIL import Image

    from dsspn_cli.engine.predict import Predictor, blend
    from dsspn_cli.engine.train import spread

    core = getattr(model, "module", model)
    was_training = core.training
    core.eval()                         # batch norm's running statistics, as validation
    pictures = []
    try:
        for k, dataset in enumerate(datasets):
            share = count // len(datasets) + (k < count % len(datasets))
            if not share:
                continue
            predictor = Predictor(core, tree, dataset.name, precision=precision)
            for index in spread(len(dataset), share):
                image, concepts = dataset.load(index)
                image = np.array(image)         # Pillow's arrays are read-only; torch warns
                values, _ = predictor.run(image)
                truth = np.where(concepts[..., None] >= 0,
                                 predictor.colours[concepts.clip(min=0)], image)
                picture = np.concatenate([image, blend(image, predictor.colours[values]),
                                          blend(image, truth)], axis=1)
                if picture.shape[1] > PICTURE_WIDTH:
                    height = max(1, round(picture.shape[0] * PICTURE_WIDTH / picture.shape[1]))
                    picture = np.asarray(Image.fromarray(picture).resize(
                        (PICTURE_WIDTH, height), Image.BILINEAR))
                pictures.append((f"val_images/{dataset.name}/{dataset.samples[index].key}",
                                 picture))
    finally:
        core.train(was_training)
    return pictures


class Progress(Hook):
    """Progress on the console (rank 0): step, loss, learning rate, images/s, ETA; a live bar
    on a terminal, a plain line every few seconds elsewhere (``console.Progress``)."""

    def __init__(self, console, enabled: bool):
        self.console, self.enabled = console, enabled
        self.bar = None

    def before_train(self, trainer) -> None:
        from dsspn_cli.console import Progress as Display

        if self.enabled:
            self.bar = Display("training", trainer.total, self.console, done=trainer.step,
                               unit="steps", keep=True)

    def after_step(self, trainer) -> None:
        if self.bar is not None and trainer.record:      # none: no step taken (--iters 0)
            record = trainer.record
            self.bar.update(trainer.step, f"loss {record['loss']:.4f}, lr {record['lr']:.2e}, "
                            f"{record['images_per_s']:.1f} img/s")

    def after_train(self, trainer) -> None:
        if self.bar is not None:
            self.bar.close(finished=not trainer.failed)
            self.bar = None


class Curves(Hook):
    """curves.png when the run ends or stops."""

    def __init__(self, run: RunFolder):
        self.run = run

    def after_train(self, trainer) -> None:
        if trainer.world.main and not trainer.failed:
            self.run.plot_curves()


__all__ = ["Hook", "MetricsLog", "Checkpointer", "Validation", "Progress", "Curves", "due",
           "validation_pictures", "PICTURES"]
