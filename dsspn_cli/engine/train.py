"""``train(config)``: build a run from its config and drive the loop, on one process or many
(``torchrun``). Each builder is a short function; the loop and its hooks live in ``loop.py``
and ``hooks.py``, the config in ``config.py``, the run folder in ``run.py``.

Several datasets train jointly, every batch from one dataset (the universal model); with
``finetune`` the paper's second stage follows, a run per dataset at a tenth of the learning
rates from the joint model. ``resume`` continues exactly where ``last.pt`` stopped: weights,
optimiser, schedule, step, random states, and the position in the epoch.
"""

from __future__ import annotations

import signal

import torch

from dsspn_cli.engine.config import ARCHITECTURE, TrainConfig
from dsspn_cli.engine.run import RunFolder, earlier_run
from dsspn_cli.engine.world import (
    World,
    ranks_in_sync,
    resolve_precision,
    setup_world,
    teardown_world,
)
from dsspn_cli.errors import UserError


def train(config: TrainConfig, resume: bool = False, console=None,
          stop_at: int | None = None) -> dict:
    """Run (or continue) training; returns the final metrics. ``stop_at`` ends the run after
    that step's checkpoint, as an interruption would (resume continues it)."""
    from dsspn_cli.engine.faults import StopRequest

    world = setup_world(config.device, config.dist_timeout)
    try:
        with StopRequest(config.out) as stop:
            return _train(config, resume, world, console, stop_at, stop)
    finally:
        teardown_world(world)


# ------------------------------------------------------------------------------ builders


def build_datasets(config: TrainConfig, table) -> tuple[list, list]:
    """The training and validation datasets: their roots, formats and splits checked, their
    files listed (nothing read yet)."""
    from dsspn_cli.data.dataset import SegmentationDataset
    from dsspn_cli.data.transforms import TrainTransform

    transform = TrainTransform(crop=(config.crop, config.crop), scale=tuple(config.scale))
    datasets = [SegmentationDataset(root, fmt, "train", table, transform=transform,
                                    seed=config.seed) for fmt, root in config.data.items()]
    return datasets, validation_sets(config, table)


def batch_sampler(config: TrainConfig, datasets: list, world: World):
    """The batch sampler over ``datasets``: every batch from one of them, drawn by their
    ``weights``, shared among the ranks. It checks each batch size against its dataset's
    size."""
    from dsspn_cli.data.sampler import DatasetBatchSampler

    weights = [config.weights[fmt] for fmt in config.data] if config.weights else None
    return DatasetBatchSampler([len(d) for d in datasets], config.batch_sizes(), weights,
                               config.seed, world.rank, world.size,
                               names=[d.name for d in datasets])


def build_data(config: TrainConfig, world: World, run: RunFolder, console,
               sets: tuple[list, list], stop=None):
    """The training and validation datasets (``sets``, from ``build_datasets``) with their
    unusable samples found first, unless a signal to ``stop`` comes first; the batch sampler
    and the loader."""
    from dsspn_cli.data.dataset import JointDataset, collate
    from dsspn_cli.engine.faults import handle_bad_samples, ignore_stop_signals, scan

    datasets, val_sets = sets
    if config.scan:
        parts = [(d, "train", range(len(d))) for d in datasets] + [
            (d, "val", range(len(d))) for d in val_sets]
        bad = scan(parts, run.root, world, console, workers=max(2, config.workers), stop=stop)
        handle_bad_samples(parts, bad, run.root, world, console, config.skip_bad)
    joint = JointDataset(datasets)
    sampler = batch_sampler(config, datasets, world)      # again: --skip-bad may drop files
    loader = torch.utils.data.DataLoader(
        joint, batch_sampler=sampler, num_workers=config.workers, collate_fn=collate,
        persistent_workers=config.workers > 0, pin_memory=world.device.type == "cuda",
        worker_init_fn=ignore_stop_signals if config.workers > 0 else None)
    return datasets, val_sets, sampler, loader


def validation_sets(config: TrainConfig, table) -> list:
    """Each dataset's validation split, cut to ``val_images`` spread evenly over it (the same
    images at every validation, so that scores compare and the best model is the best)."""
    from dsspn_cli.data.common import MissingSplit
    from dsspn_cli.data.dataset import SegmentationDataset

    found = []
    for fmt, root in config.data.items():
        try:
            dataset = SegmentationDataset(root, fmt, "val", table)
        except MissingSplit:
            continue
        kept = set(spread(len(dataset), config.val_images or len(dataset)))
        dataset.drop(i for i in range(len(dataset)) if i not in kept)
        found.append(dataset)
    return found


def spread(total: int, count: int) -> list[int]:
    """``count`` of ``range(total)``, evenly spaced from the first (all when count >= total):
    a cut of a validation split that still covers all its cities, scenes or sources."""
    if count >= total:
        return list(range(total))
    return [i * total // count for i in range(count)]


def build_optimizer(model, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD over two groups: the backbone (at ``backbone_learning_rate``) and the head."""
    groups = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad],
         "lr": config.backbone_learning_rate, "name": "backbone"},
        {"params": list(model.head.parameters()), "lr": config.lr, "name": "head"},
    ]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def poly_schedule(optimizer, total: int, power: float):
    """The poly schedule: the learning rates fall as (1 - step / total) ** power. (A run of
    no steps, --iters 0, keeps its rates: resumed with more, it has a schedule of its own.)"""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / max(total, 1)) ** power)


# ------------------------------------------------------------------------------ the run


def _train(config: TrainConfig, resume: bool, world: World, console, stop_at, stop) -> dict:
    """One run, phase by phase (each a method of ``TrainingRun``)."""
    run = TrainingRun(config, world, console, stop)
    run.find_start(resume)          # the run folder; the checkpoint it resumes or starts from
    # Every check before the run folder's first file: a mistake in the data roots, formats,
    # batch sizes, precision or backbone weights leaves no half-made run behind.
    run.check()
    run.write_config()              # the run folder's first file
    run.build_data()                # every sample checked, the sampler and the loader
    run.build_optimisation()        # optimiser, schedule, loss scaling; the start restored
    trainer = run.train(stop_at)
    return run.finish(trainer, stop_at)


class TrainingRun:
    """The phases of one run, in the order ``_train`` calls them; each keeps what it builds
    for the next: the run folder (``folder``), the checkpoint to resume (``payload``, read
    from ``source``) or to start from (``start``), the tree, datasets, model, loader,
    optimiser, schedule and loss scaler, the step and best score it continues from."""

    def __init__(self, config: TrainConfig, world: World, console, stop):
        self.config, self.world, self.console, self.stop = config, world, console, stop

    def find_start(self, resume: bool) -> None:
        """The run folder, and the checkpoint to resume or start from, checked against the
        settings before anything is written: a failed resume leaves the run as it was. A new
        run takes the architecture it is not given from the checkpoint it starts from."""
        from dsspn_cli.engine.checkpoint import load_checkpoint
        from dsspn_cli.engine.faults import restart_count
        from dsspn_cli.hierarchy.tree import load_tree

        config, world = self.config, self.world
        self.folder = run = RunFolder(config.out, inputs=read_paths(config))
        earlier = run.earlier_run()
        if restart_count() and earlier and not resume:
            resume = True       # torchrun --max-restarts started the job again: continue it
            _say(self.console, world, f"restart {restart_count()} by torchrun: resuming from "
                                      f"the run in {run.root}")
        if not resume and earlier:
            # Starting afresh would overwrite its checkpoints and add a second history to its
            # metrics.jsonl.
            raise UserError(f"{run.root}: already holds a run; use --resume to continue it or "
                            f"another --out (it holds {', '.join(earlier[:3])})")
        self.resume = resume
        self.tree = load_tree(config.tree)
        self.payload, self.source = (_resume_from(run, self.console, world) if resume else
                                     (None, None))
        if self.payload is not None:
            _check_start(self.payload, config, self.tree, self.source, "resume")
        self.start = None                   # the checkpoint a new run starts from, if any
        if self.payload is None and (config.init_from or config.grow_from):
            path = config.init_from or config.grow_from
            how = "init" if config.init_from else "grow"
            self.start = load_checkpoint(path)
            self.config, taken = _as_trained(self.start, config, path)
            _check_start(self.start, self.config, self.tree, path, how)
            if taken:
                _say(self.console, world, f"taken from {path}, as it was trained: "
                                          f"{', '.join(taken)}")

    def check(self) -> None:
        """The data roots, formats and batch sizes, the precision, and the model (it reads
        --backbone-weights); the sample data made when no data is given."""
        from dsspn_cli.data.sample import ensure_sample_data
        from dsspn_cli.hierarchy.tables import MaskingTable
        from dsspn_cli.model.segmenter import build_model

        world = self.world
        if not self.config.data:
            if world.main:
                ensure_sample_data()
            world.barrier()
            self.config = self.config.replace(data=ensure_sample_data())
        config = self.config
        self.dtype = resolve_precision(config.precision, world.device)
        self.table = MaskingTable.from_tree(self.tree)
        self.sets = build_datasets(config, self.table)
        # Each batch size against its dataset's size, before anything is written (the
        # sampler build_data makes checks again once --skip-bad has left files out).
        batch_sampler(config, self.sets[0], world)
        self.names = [d.name for d in self.sets[0]]
        torch.manual_seed(config.seed)      # the same initial weights on every rank
        self.model = build_model(self.table, config, self.names).to(world.device)

    def write_config(self) -> None:
        """config.yaml, and the run folder tidied for a resumed run."""
        if self.world.main:
            self.folder.write_config(self.config.to_dict())
            # Resuming drops what was logged after the checkpoint (it is logged again); a run
            # resumed before its first checkpoint starts over: all its metrics go (step -1).
            self.folder.tidy(int(self.payload["step"]) if self.payload is not None else
                             -1 if self.resume else None)

    def build_data(self) -> None:
        self.datasets, self.val_sets, self.sampler, self.loader = build_data(
            self.config, self.world, self.folder, self.console, self.sets, self.stop)

    def build_optimisation(self) -> None:
        """The optimiser, the schedule and the loss scaler; the weights of the checkpoint
        started from, or everything of the one resumed."""
        config, model = self.config, self.model
        self.optimizer = build_optimizer(model, config)
        self.total = (config.iters if config.iters is not None else
                      (1 if config.epochs is None else config.epochs) * len(self.sampler))
        self.scheduler = poly_schedule(self.optimizer, self.total, config.poly_power)
        # float16 needs loss scaling (its range is small); bfloat16 has float32's range.
        self.scaler = torch.amp.GradScaler(self.world.device.type,
                                           enabled=self.dtype == torch.float16)
        if self.start is not None and config.init_from:
            _load_weights(model, self.start, config.init_from)
        elif self.start is not None:
            _grow(model, self.start, config.grow_from, self.folder, self.world, self.console)
        self.step, self.best = _restore(self.payload, self.source, model, self.optimizer,
                                        self.scheduler, self.scaler)

    def train(self, stop_at):
        """The loop and its hooks, from the step the run stands at; the loop when it ends."""
        from dsspn_cli.engine.loop import Trainer

        config = self.config
        self.checkpointer, hooks = build_hooks(config, self.folder, self.world, self.console,
                                               self.save, self.validate, self.best,
                                               self.pictures)
        self.model.train()
        trainer = Trainer(_distributed(self.model, self.world), self.loader, self.sampler,
                          self.optimizer, self.scheduler, self.scaler, self.world,
                          total=self.total, step=self.step, dtype=self.dtype, stop=self.stop,
                          stop_at=stop_at, hooks=hooks,
                          save_start=self.total == 0 and self.payload is None)
        _run_loop(trainer, self.folder, self.world, config.scan)
        return trainer

    def save(self, path, step: int, metrics: dict) -> None:
        """A checkpoint of the run at ``step`` (the Checkpointer's hook calls this)."""
        from dsspn_cli.engine.checkpoint import save_checkpoint

        try:
            save_checkpoint(path, model=self.model, tree=self.tree,
                            config=self.config.to_dict(), step=step,
                            epoch=step // len(self.sampler), optimizer=self.optimizer,
                            scheduler=self.scheduler, metrics=metrics,
                            scaler=self.scaler if self.scaler.is_enabled() else None,
                            datasets=self.names, within=self.folder.root)
        except UserError as exc:     # disk full, folder gone read-only: say what is left
            raise UserError(f"{exc}; training stopped at step {step}, "
                            f"{last_good(self.folder)}") from None

    def validate(self) -> dict:
        """Each validation set's scores (the Validation hook calls this)."""
        from dsspn_cli.engine.evaluate import evaluate

        # Every rank scores its share of each validation set and the counts are summed: the
        # same collectives on every rank, none waiting for another's whole validation.
        share_running_stats(self.model, self.world)
        return {d.name: evaluate(self.model, d, self.world, precision=self.config.precision,
                                 workers=self.config.workers) for d in self.val_sets}

    def pictures(self):
        """A few fixed validation images with their predictions, for TensorBoard."""
        from dsspn_cli.engine.hooks import validation_pictures

        return validation_pictures(self.model, self.tree, self.val_sets, self.config.precision)

    def finish(self, trainer, stop_at) -> dict:
        """A stop by a signal told; the ranks checked to hold the same weights; the
        fine-tuning stages run. The final metrics."""
        from dsspn_cli.engine.faults import Interrupted

        config, run, world, total = self.config, self.folder, self.world, self.total
        if trainer.signum and trainer.step < total:
            name = signal.Signals(trainer.signum).name
            raise Interrupted(f"{name} at step {trainer.step} of {total}: checkpoint "
                              f"{run.last} written; continue with 'dsspn train --out "
                              f"{run.root} --resume'", trainer.signum)
        if trainer.record or trainer.save_start:
            last = {"step": trainer.step, **trainer.record}
        else:           # a resumed run that had already finished (its record is the checkpoint's)
            last = {"step": trainer.step, "already_finished": True}
        if world.distributed:
            share_running_stats(self.model, world)
            last["ranks_in_sync"] = ranks_in_sync(self.model)
            if world.main:
                run.log({"step": trainer.step, "ranks_in_sync": last["ranks_in_sync"]})
            if not last["ranks_in_sync"]:
                raise UserError("the ranks' weights differ after training; report this as a "
                                "bug")
        result = {**last, "best_mIoU": self.checkpointer.best, "run": str(run.root),
                  "rank": world.rank}
        if config.finetune and (stop_at is None or trainer.step >= total):
            result["finetuned"] = _finetune(config, run, world, self.console, self.stop)
        return result


def build_hooks(config: TrainConfig, run: RunFolder, world: World, console, save, validate,
                best: float, pictures=None):
    """The loop's hooks, in the order they act after a step: metrics, validation (best.pt;
    ``pictures`` for TensorBoard), checkpoints, progress; curves at the end."""
    from dsspn_cli.engine.hooks import Checkpointer, Curves, MetricsLog, Progress, Validation

    checkpointer = Checkpointer(run, save, config.checkpoint_every, config.keep)
    checkpointer.best = best
    validation = Validation(run, validate, config.val_every or config.checkpoint_every,
                            checkpointer, pictures)
    progress = Progress(console, world.main and console is not None)
    return checkpointer, [MetricsLog(run, config.log_every), validation, checkpointer,
                          progress, Curves(run)]


def _distributed(model, world: World):
    if not world.distributed:
        return model
    # Each rank activates other neurons: unused parameters must be expected. Buffers are
    # broadcast from rank 0 before each step only when training changes some (the running
    # statistics of batch norm trained from scratch): then every rank validates and saves
    # rank 0's statistics. Frozen batch norm and the tree's look-up tables never change.
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[world.local_rank] if world.device.type == "cuda" else None,
        find_unused_parameters=True, broadcast_buffers=has_running_stats(model))


def running_stats(model) -> list[torch.Tensor]:
    """The buffers training updates (batch norm's running statistics); none when frozen."""
    return [buffer for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            for buffer in (m.running_mean, m.running_var, m.num_batches_tracked)
            if buffer is not None]


def has_running_stats(model) -> bool:
    return bool(running_stats(model))


def share_running_stats(model, world: World) -> None:
    """Rank 0's batch-norm statistics on every rank. DDP broadcasts them before each step's
    forward, which then updates each rank's own: before validating (every rank scores with
    the model rank 0 saves) and at the end, they are made equal again."""
    if world.distributed:
        for buffer in running_stats(model):
            torch.distributed.broadcast(buffer, 0)


def read_paths(config: TrainConfig) -> list[str]:
    """Every path a run reads, which its run folder may not be, lie inside or hold: the data
    roots (the sample data's when none is given), the tree, the checkpoints or weights it
    starts from. (A resumed run's own checkpoint and config.yaml are its to replace.)"""
    from dsspn_cli.data.sample import sample_datasets

    roots = list(config.data.values()) or list(sample_datasets().values())
    return roots + [config.tree, config.init_from, config.grow_from, config.backbone_weights]


def _resume_from(run: RunFolder, console, world: World):
    """(checkpoint payload, its path) to resume from: last.pt, else the newest step file that
    loads; those that do not are passed over, said in one line. (None, None) for a run
    stopped before its first checkpoint: it starts over."""
    from dsspn_cli.engine.checkpoint import load_checkpoint

    passed = []
    for path in ([run.last] if run.last.is_file() else []) + run.step_files()[::-1]:
        try:
            payload = load_checkpoint(path, resume=True)
        except UserError as exc:
            passed.append(f"{path.name}: {str(exc).removeprefix(f'{path}: ').split(';')[0]}")
            continue
        if path != run.last or passed:
            why = "; ".join(passed) if passed else "last.pt: missing"
            _say(console, world, f"resuming from {path} (passed over {why})")
        return payload, path
    if passed:
        raise UserError(f"{run.checkpoints}: no checkpoint here loads ({'; '.join(passed)}); "
                        "nothing to resume: move them out of the folder to start the run over "
                        "with --resume, or start a new run with another --out")
    if run.earlier_run():            # metrics logged, no checkpoint written yet
        _say(console, world, f"{run.root}: no checkpoint written yet: the run starts over "
                             "from step 1 (its metrics.jsonl is cleared)")
        return None, None
    raise UserError(f"{run.last}: nothing to resume; start without --resume")


def _restore(payload, source, model, optimizer, scheduler, scaler) -> tuple[int, float]:
    """Resuming: the checkpoint's weights and states; (step, best validation mIoU)."""
    from dsspn_cli.engine.checkpoint import restore_rng_states

    if payload is None:
        return 0, -1.0
    _load_weights(model, payload, source)
    try:
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if "scaler" in payload:
            scaler.load_state_dict(payload["scaler"])
        restore_rng_states(payload["rng"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
        raise UserError(f"{source}: its optimiser, schedule or random states do not fit this "
                        f"run ({type(exc).__name__}); the file is damaged: move it out of the "
                        "folder (--resume then takes the newest step-*.pt that loads), or start "
                        "a new run with another --out") from None
    return int(payload["step"]), float(payload.get("metrics", {}).get("best_mIoU", -1.0))


def _run_loop(trainer, run: RunFolder, world: World, scanned: bool = True) -> None:
    """The loop, its failures told in one line with the checkpoint to go on from."""
    from dsspn_cli.engine.faults import lost_peer
    from dsspn_cli.engine.loop import BadSample, NonFiniteLoss

    try:
        trainer.train()
    except NonFiniteLoss as exc:
        where = run.last if run.last.is_file() else "none yet"
        raise UserError(f"{exc}; training stopped, last good checkpoint: {where}; lower --lr "
                        "or check the data") from None
    except BadSample as exc:
        if scanned:
            raise UserError(f"{exc} (read for step {exc.step}; it passed the check before "
                            f"step 1); training stopped, {last_good(run)}, after fixing the "
                            "file or with --skip-bad to leave it out") from None
        raise UserError(f"{exc} (read for step {exc.step}; --no-scan: the files were not "
                        f"checked before step 1); training stopped, {last_good(run)}, after "
                        "fixing the file, or without --no-scan to find every such file "
                        "first") from None
    except RuntimeError as exc:
        if world.distributed and lost_peer(exc):
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no detail"
            raise UserError(f"rank {world.rank}: lost another process of the job during step "
                            f"{trainer.step + 1} ({first}); the job stops, {last_good(run)}, "
                            "or run under 'torchrun --max-restarts N' to restart on its own"
                            ) from None
        raise


def last_good(run: RunFolder) -> str:
    from dsspn_cli.engine.checkpoint import load_checkpoint

    if not run.last.is_file():
        steps = run.step_files()        # resumed from one, last.pt not written again yet
        return (f"the newest checkpoint is {steps[-1]}; resume with --resume" if steps else
                "no checkpoint written yet")
    return (f"the last good checkpoint is {run.last} (step "
            f"{load_checkpoint(run.last)['step']}); resume with --resume")


def _check_start(payload: dict, config: TrainConfig, tree, path, how: str) -> None:
    """A checkpoint to resume, initialise or grow from must have been trained with the
    settings its weights depend on, and (but for growing) on this tree."""
    from dsspn_cli.engine.checkpoint import model_config_of

    fix = ("resume with the run's own settings, or start a new run (--out)" if how == "resume"
           else "leave {key} out to take the checkpoint's")
    same_tree = payload["tree"] == tree.to_node_link()
    if how != "grow" and not same_tree:
        raise UserError(f"{path}: was trained on another concept tree; " + (
            "resume with the same --tree, or start a new run (--out)" if how == "resume" else
            "to start from it on this tree use --grow-from (a tree merged onto its own with "
            "'dsspn hierarchy merge --onto' keeps every neuron)"))
    before = model_config_of(payload, path)
    if how == "grow" and before.head.type != "dsspn":
        raise UserError(f"{path}: is a {before.head.type} model; --grow-from grows the "
                        "semantic neurons of a DSSPN")
    differ = _first_difference(before.to_dict(), config.to_dict())
    if differ:
        key, then, now = differ
        raise UserError(f"{path}: was trained with {key} {then}, not {now}; "
                        + fix.format(key=key))


def _first_difference(before: dict, now: dict):
    """(key, before, now) of the first architecture setting that differs, a head's named by
    its own setting ('head.hidden'); None if they agree."""
    for key in ARCHITECTURE:
        if key != "head" and before[key] != now[key]:
            return key, before[key], now[key]
    then, head = before["head"], now["head"]
    for key in ["type", *then]:         # the type first: the other settings are the type's
        if then.get(key) != head.get(key):
            return f"head.{key}", then.get(key), head.get(key)
    return None


def _as_trained(payload: dict, config: TrainConfig, path) -> tuple[TrainConfig, list[str]]:
    """``config`` with the architecture it was not given taken from the checkpoint a new run
    starts from (backbone, output stride, the head's settings), and what that changed, as
    'key value'. Given means set by the config file, an option or --set: the config's
    ``model_fields_set``, which ``resolve_config`` keeps to those; given and different from
    the checkpoint's, ``_check_start`` refuses it."""
    from dsspn_cli.engine.checkpoint import model_config_of

    trained = model_config_of(payload, path).to_dict()
    before, given = config.to_dict(), config.model_fields_set
    changes = {key: trained[key] for key in ("backbone", "output_stride") if key not in given}
    head_given = config.head.model_fields_set if "head" in given else set()
    # The given head settings go over the checkpoint's head only where that head has them:
    # given for another head, the check says which head the checkpoint holds.
    head = trained["head"]
    if head_given <= head.keys() and (
            "type" not in head_given or before["head"]["type"] == head["type"]):
        changes["head"] = {**head, **{key: before["head"][key] for key in head_given}}
    if not changes:
        return config, []
    config = config.replace(**changes)
    after = config.to_dict()
    taken = [f"{key} {after[key]}" for key in ("backbone", "output_stride")
             if after[key] != before[key]]
    taken += [f"head.{key} {value}" for key, value in after["head"].items()
              if before["head"].get(key) != value]
    return config, taken


def _grow(model, payload: dict, path, run: RunFolder, world: World, console) -> None:
    """The checkpoint's backbone, transition and every neuron that survives on this tree
    (same concept and ancestors: its block; its prediction rows for the children it kept)."""
    from dsspn_cli.engine.checkpoint import tree_of
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.model.grow import grow_from

    old = MaskingTable.from_tree(tree_of(payload, str(path)))
    try:
        report = grow_from(model, payload["model"], old)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"{path}: its weights do not fit this model ({exc}); grow with the "
                        "settings it was trained with") from None
    gone = len(old.neuron_concept) - len(report.kept) - len(report.extended)
    _say(console, world, f"grown from {path}: {len(report.kept)} neurons kept, "
                         f"{len(report.extended)} extended (new children start fresh), "
                         f"{len(report.new)} new, {gone} of the old tree not here")
    if world.main:
        run.log({"step": 0, "grown_from": str(path), "neurons_kept": report.kept,
                 "neurons_extended": report.extended, "neurons_new": report.new})


def _load_weights(model, payload: dict, path) -> None:
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160]
        raise UserError(f"{path}: its weights do not fit this model ({first}); use the "
                        "settings it was trained with") from None


def _finetune(config: TrainConfig, run: RunFolder, world: World, console, stop) -> dict:
    """The universal schedule's second stage (paper 4.5): from the jointly trained model, a
    run per dataset at a tenth of the learning rates, in RUN/finetune-<dataset>/."""
    results = {}
    for fmt, root in config.data.items():
        folder = run.root / f"finetune-{fmt}"
        stage = config.replace(
            data={fmt: root}, out=str(folder), iters=config.finetune, epochs=None,
            batch_size=config.batch_sizes()[list(config.data).index(fmt)],
            lr=config.lr / 10, backbone_lr=config.backbone_learning_rate / 10, finetune=0,
            weights=None, init_from=str(run.last))
        _say(console, world, f"fine-tuning on {fmt}: {config.finetune} iterations at lr "
                             f"{stage.lr:g}")
        again = bool(earlier_run(folder))
        results[fmt] = _train(stage, again, world, console, None, stop)["run"]
    return results


def _say(console, world: World, text: str) -> None:
    if world.main and console is not None:
        console.print(text, markup=False, highlight=False)


__all__ = ["train", "build_data", "build_optimizer", "poly_schedule", "validation_sets",
           "spread", "has_running_stats", "share_running_stats"]
