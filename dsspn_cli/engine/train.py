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

from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.run import RunFolder, earlier_run
from dsspn_cli.engine.world import (
    World,
    ranks_in_sync,
    resolve_precision,
    setup_world,
    teardown_world,
)
from dsspn_cli.errors import UserError

# What a resumed run must share with its checkpoint: the settings its weights depend on.
MODEL_SETTINGS = ("backbone", "output_stride", "head", "tree")


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


def check_batch_sizes(config: TrainConfig, datasets: list, world: World) -> None:
    """Each batch size against its dataset's size, before anything is written (the sampler
    checks again once --skip-bad has left files out)."""
    from dsspn_cli.data.sampler import DatasetBatchSampler

    weights = [config.weights[fmt] for fmt in config.data] if config.weights else None
    DatasetBatchSampler([len(d) for d in datasets], config.batch_sizes(), weights, config.seed,
                        world.rank, world.size, names=[d.name for d in datasets])


def build_data(config: TrainConfig, table, world: World, run: RunFolder, console,
               sets: tuple[list, list] | None = None, stop=None):
    """Training and validation datasets (``sets`` from ``build_datasets``, or built here;
    their unusable samples found first, unless a signal to ``stop`` comes first), the batch
    sampler and the loader."""
    from dsspn_cli.data.dataset import JointDataset, collate
    from dsspn_cli.data.sampler import DatasetBatchSampler
    from dsspn_cli.engine.faults import handle_bad_samples, ignore_stop_signals, scan

    datasets, val_sets = sets or build_datasets(config, table)
    if config.scan:
        parts = [(d, "train", range(len(d))) for d in datasets] + [
            (d, "val", range(len(d))) for d in val_sets]
        bad = scan(parts, run.root, world, console, workers=max(2, config.workers), stop=stop)
        handle_bad_samples(parts, bad, run.root, world, console, config.skip_bad)
    weights = [config.weights[fmt] for fmt in config.data] if config.weights else None
    joint = JointDataset(datasets)
    sampler = DatasetBatchSampler(joint.sizes, config.batch_sizes(), weights, config.seed,
                                  world.rank, world.size, names=[d.name for d in datasets])
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
    """The poly schedule: the learning rates fall as (1 - step / total) ** power."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / total) ** power)


# ------------------------------------------------------------------------------ the run


def _train(config: TrainConfig, resume: bool, world: World, console, stop_at, stop) -> dict:
    from dsspn_cli.data.sample import ensure_sample_data
    from dsspn_cli.engine.checkpoint import load_checkpoint, save_checkpoint
    from dsspn_cli.engine.evaluate import evaluate
    from dsspn_cli.engine.faults import Interrupted, restart_count
    from dsspn_cli.engine.hooks import validation_pictures
    from dsspn_cli.engine.loop import Trainer
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import load_tree
    from dsspn_cli.model.segmenter import build_model

    run = RunFolder(config.out, inputs=read_paths(config))
    earlier = run.earlier_run()
    if restart_count() and earlier and not resume:
        resume = True           # torchrun --max-restarts started the job again: continue it
        _say(console, world, f"restart {restart_count()} by torchrun: resuming from the run in "
                             f"{run.root}")
    if not resume and earlier:
        # Starting afresh would overwrite its checkpoints and add a second history to its
        # metrics.jsonl.
        raise UserError(f"{run.root}: already holds a run; use --resume to continue it or "
                        f"another --out (it holds {', '.join(earlier[:3])})")
    tree = load_tree(config.tree)
    # Checked before anything is written: a failed resume leaves the run as it was.
    payload, source = _resume_from(run, console, world) if resume else (None, None)
    if payload is not None:
        _check_start(payload, config, tree, source, "resume")
    start = None                     # the checkpoint a new run starts from, if any
    if payload is None and (config.init_from or config.grow_from):
        start = load_checkpoint(config.init_from or config.grow_from)
        _check_start(start, config, tree, config.init_from or config.grow_from,
                     "init" if config.init_from else "grow")
    if not config.data:
        if world.main:
            ensure_sample_data()
        world.barrier()
        config = config.replace(data=ensure_sample_data())
    # Every check before the run folder's first file: a mistake in the data roots, formats,
    # batch sizes, precision or backbone weights leaves no half-made run behind.
    dtype = resolve_precision(config.precision, world.device)
    table = MaskingTable.from_tree(tree)
    sets = build_datasets(config, table)
    check_batch_sizes(config, sets[0], world)
    names = [d.name for d in sets[0]]
    torch.manual_seed(config.seed)      # the same initial weights on every rank
    model = build_model(table, config, names).to(world.device)     # reads --backbone-weights
    if world.main:
        run.write_config(config.to_dict())
        # Resuming drops what was logged after the checkpoint (it is logged again); a run
        # resumed before its first checkpoint starts over: all its metrics go (step -1).
        run.tidy(int(payload["step"]) if payload is not None else -1 if resume else None)

    datasets, val_sets, sampler, loader = build_data(config, table, world, run, console, sets,
                                                      stop)
    optimizer = build_optimizer(model, config)
    total = config.iters or (config.epochs or 1) * len(sampler)
    scheduler = poly_schedule(optimizer, total, config.poly_power)
    # float16 needs loss scaling (its range is small); bfloat16 has float32's range.
    scaler = torch.amp.GradScaler(world.device.type, enabled=dtype == torch.float16)
    if start is not None and config.init_from:
        _load_weights(model, start, config.init_from)
    elif start is not None:
        _grow(model, start, config.grow_from, run, world, console)
    step, best = _restore(payload, source, model, optimizer, scheduler, scaler)

    def save(path, step, metrics):
        try:
            save_checkpoint(path, model=model, tree=tree, config=config.to_dict(), step=step,
                            epoch=step // len(sampler), optimizer=optimizer,
                            scheduler=scheduler, metrics=metrics,
                            scaler=scaler if scaler.is_enabled() else None,
                            datasets=names, within=run.root)
        except UserError as exc:     # disk full, folder gone read-only: say what is left
            raise UserError(f"{exc}; training stopped at step {step}, {last_good(run)}"
                            ) from None

    def validate() -> dict:
        # Every rank scores its share of each validation set and the counts are summed: the
        # same collectives on every rank, none waiting for another's whole validation.
        share_running_stats(model, world)
        return {d.name: evaluate(model, d, world, precision=config.precision,
                                 workers=config.workers) for d in val_sets}

    checkpointer, hooks = build_hooks(config, run, world, console, save, validate, best,
                                      lambda: validation_pictures(model, tree, val_sets,
                                                                  config.precision))
    model.train()
    trainer = Trainer(_distributed(model, world), loader, sampler, optimizer, scheduler,
                      scaler, world, total=total, step=step, dtype=dtype, stop=stop,
                      stop_at=stop_at, hooks=hooks)
    _run_loop(trainer, run, world, config.scan)

    if trainer.signum and trainer.step < total:
        name = signal.Signals(trainer.signum).name
        raise Interrupted(f"{name} at step {trainer.step} of {total}: checkpoint {run.last} "
                          f"written; continue with 'dsspn train --out {run.root} --resume'",
                          trainer.signum)
    # No step taken: a resumed run that had already finished (its record is the checkpoint's).
    last = dict(trainer.record) or {"step": trainer.step, "already_finished": True}
    if world.distributed:
        share_running_stats(model, world)
        last["ranks_in_sync"] = ranks_in_sync(model)
        if world.main:
            run.log({"step": trainer.step, "ranks_in_sync": last["ranks_in_sync"]})
        if not last["ranks_in_sync"]:
            raise UserError("the ranks' weights differ after training; report this as a bug")
    result = {**last, "best_mIoU": checkpointer.best, "run": str(run.root), "rank": world.rank}
    if config.finetune and (stop_at is None or trainer.step >= total):
        result["finetuned"] = _finetune(config, run, world, console, stop)
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

    fix = {"resume": "resume with the run's own settings, or start a new run (--out)",
           "init": "start with the settings it was trained with",
           "grow": "grow with the settings it was trained with"}[how]
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
    before, now = before.to_dict(), config.to_dict()
    for key in MODEL_SETTINGS:
        if key != "tree" and before.get(key) != now.get(key):
            raise UserError(f"{path}: was trained with {key} {before.get(key)}, not "
                            f"{now.get(key)}; {fix}")


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
