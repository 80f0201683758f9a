"""The training loop the tree drives, on one process or many (``torchrun``).

The recipe defaults are the paper's (section 4.1): SGD with momentum 0.9 and weight decay
1e-4, the poly schedule (power 0.9), learning rate 0.003 for the new layers and 0.00003 for
a pretrained backbone, random flip, crop and rescale 0.5-2. Several datasets train jointly,
every batch from one dataset (the universal model).

A run folder holds ``config.yaml`` (the resolved config), ``checkpoints/last.pt``,
``checkpoints/best.pt`` and the last K ``step-*.pt``, ``metrics.jsonl`` and ``curves.png``.
``resume`` continues exactly where ``last.pt`` stopped: weights, optimiser, schedule, step,
random states, and the position in the epoch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dsspn_cli.errors import UserError

SAMPLE_FORMATS = {"cityscapes": "cityscapes", "ade": "ade20k", "coco": "coco-stuff",
                  "mapillary": "mapillary"}


@dataclass
class TrainConfig:
    data: dict = field(default_factory=dict)      # format -> dataset root
    out: str = "runs/train"
    tree: str | None = None                       # None: the shipped four-dataset tree
    iters: int | None = None
    epochs: int | None = None
    batch_size: int = 8
    crop: int = 513
    scale: tuple = (0.5, 2.0)
    backbone: str = "resnet101"
    backbone_weights: str | None = None
    output_stride: int = 8
    lr: float = 0.003
    backbone_lr: float | None = None              # None: lr/100 if pretrained, else lr
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    weights: dict | None = None                   # dataset -> sampling weight
    workers: int = 2
    device: str = "auto"
    seed: int = 0
    amp: bool = True                              # on CUDA only
    log_every: int = 10
    checkpoint_every: int = 100
    keep: int = 3
    val_every: int = 0                            # 0: at each checkpoint and at the end
    val_images: int | None = None                 # cap per dataset for periodic validation
    head: dict = field(default_factory=dict)      # HeadConfig overrides
    init_from: str | None = None                  # start from this checkpoint's weights
    finetune: int = 0                             # universal schedule: iterations per
                                                  # dataset after joint training, LR / 10
    skip_bad: bool = False                        # leave out unusable samples (else stop)

    @property
    def norm(self) -> str:
        return "frozen" if self.backbone_weights else "batch"

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["scale"] = list(self.scale)
        data["norm"] = self.norm
        return data


def config_from(file: Path | None, overrides: dict) -> TrainConfig:
    """The config file (YAML), then the command line's options over it."""
    from dsspn_cli.io import read_yaml

    values: dict = {}
    if file is not None:
        loaded = read_yaml(file, "training config")
        if not isinstance(loaded, dict):
            raise UserError(f"{file}: a training config is a YAML mapping of options "
                            "(data:, iters:, batch_size: ...)")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known - {"norm"})
    if unknown:
        raise UserError(f"{file or 'options'}: unknown setting '{unknown[0]}'; known: "
                        + ", ".join(sorted(known)))
    values.pop("norm", None)
    try:
        config = TrainConfig(**values)
    except TypeError as exc:
        raise UserError(f"{file or 'options'}: {exc}") from None
    _validate(config, file or "options")
    return config


def _validate(config: TrainConfig, where) -> None:
    checks = [
        (isinstance(config.data, dict) and all(isinstance(k, str) and isinstance(v, str)
                                               for k, v in config.data.items()),
         "data must map formats to folders (cityscapes: PATH)"),
        (config.iters is None or (isinstance(config.iters, int) and config.iters > 0),
         "iters must be a positive integer"),
        (config.epochs is None or (isinstance(config.epochs, int) and config.epochs > 0),
         "epochs must be a positive integer"),
        (isinstance(config.batch_size, int) and config.batch_size > 0,
         "batch_size must be a positive integer"),
        (isinstance(config.crop, int) and config.crop >= 32, "crop must be an integer >= 32"),
        (isinstance(config.lr, (int, float)) and config.lr > 0, "lr must be positive"),
        (config.output_stride in (8, 16), "output_stride must be 8 or 16"),
        (config.backbone in ("resnet18", "resnet50", "resnet101"),
         "backbone must be resnet18, resnet50 or resnet101"),
        (isinstance(config.workers, int) and config.workers >= 0, "workers must be >= 0"),
        (isinstance(config.checkpoint_every, int) and config.checkpoint_every > 0,
         "checkpoint_every must be a positive integer"),
        (isinstance(config.keep, int) and config.keep >= 1, "keep must be 1 or more"),
        (isinstance(config.finetune, int) and config.finetune >= 0,
         "finetune must be a non-negative integer (iterations per dataset)"),
        (isinstance(config.skip_bad, bool), "skip_bad must be true or false"),
        (isinstance(config.amp, bool), "amp must be true or false"),
        (isinstance(config.seed, int), "seed must be an integer"),
        (isinstance(config.log_every, int) and config.log_every > 0,
         "log_every must be a positive integer"),
        (isinstance(config.val_every, int) and config.val_every >= 0,
         "val_every must be a non-negative integer (0: at each checkpoint)"),
        (config.val_images is None or (isinstance(config.val_images, int)
                                       and config.val_images > 0),
         "val_images must be a positive integer"),
        (isinstance(config.scale, (list, tuple)) and len(config.scale) == 2
         and all(isinstance(v, (int, float)) and v > 0 for v in config.scale),
         "scale must be two positive numbers [low, high]"),
        (isinstance(config.out, str) and config.out != "", "out must be a folder path"),
        (config.tree is None or isinstance(config.tree, str), "tree must be a file path"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"{where}: {message}")
    from dsspn_cli.model.neuron import HeadConfig

    known = {f.name for f in dataclasses.fields(HeadConfig)}
    if not isinstance(config.head, dict) or set(config.head) - known:
        raise UserError(f"{where}: head settings must be among {', '.join(sorted(known))}")


# ------------------------------------------------------------------------------ distributed


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here; use cpu or auto")
    return device


def setup_world(device: str) -> World:
    """Single process, or the process group torchrun describes (gloo on CPU, NCCL on GPU)."""
    chosen = resolve_device(device)
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(device=chosen)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":       # each rank takes the GPU of its local rank
        torch.cuda.set_device(local)
        torch_device = torch.device("cuda", local)
    else:
        torch_device = torch.device("cpu")
    if not dist.is_initialized():
        from dsspn_cli.engine.faults import restart_count

        # torchrun keeps one key-value store across its restarts (--max-restarts): without a
        # prefix per attempt, a restarted rank can read a dead rank's address and fail to
        # connect, or wait on it.
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=size))
        store = dist.PrefixStore(f"dsspn-attempt-{restart_count()}", store)
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo",
                                store=store, rank=rank, world_size=size)
    return World(rank, size, local, torch_device)


def teardown_world(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------------------------------------ the run


def sample_data_root() -> Path:
    """The built-in sample data, written once into dsspn's cache."""
    from dsspn_cli.hierarchy.wordnet import cache_dir

    return cache_dir() / "sample-data"


def ensure_sample_data(world: World) -> dict:
    root = sample_data_root()
    if world.main and not (root / "README.txt").is_file():
        from dsspn_cli.data.sample import write_sample_data

        write_sample_data(root)
    if world.size > 1:
        torch.distributed.barrier()
    return {fmt: str(root / folder) for fmt, folder in SAMPLE_FORMATS.items()}


class Run:
    """The files of a run folder."""

    def __init__(self, out: str | Path):
        self.root = Path(out)
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.metrics = self.root / "metrics.jsonl"
        self._board = None

    def log(self, record: dict) -> None:
        """A line of metrics.jsonl, and TensorBoard scalars when TensorBoard is installed."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.metrics, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise UserError(f"{self.metrics}: cannot write ({exc.strerror or exc}); check "
                            "that the folder is writable and the disk has space") from None
        board = self.board()
        if board is not None:
            for key in ("loss", "lr", "images_per_s", "val_mIoU"):
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

    def keep_last(self, keep: int) -> None:
        steps = sorted(self.checkpoints.glob("step-*.pt"))
        for old in steps[:-keep]:
            old.unlink(missing_ok=True)

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

    def tidy(self, step: int | None = None) -> None:
        """Before (re)starting: remove temporary files a killed process left, and, resuming
        from ``step``, the metrics logged after that step (they will be logged again)."""
        from dsspn_cli.io import atomic_write_text

        for folder in (self.root, self.checkpoints):
            for stale in folder.glob(".*.tmp") if folder.is_dir() else []:
                stale.unlink(missing_ok=True)
        if step is not None and self.metrics.is_file():
            kept = [r for r in self.records() if r["step"] <= step]
            atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))


def build(config: TrainConfig, world: World, run: Run, console=None):
    """Tree, datasets (their unusable samples found), loader, model and optimiser of a run."""
    from dsspn_cli.data.dataset import JointDataset, SegmentationDataset, collate
    from dsspn_cli.data.sampler import DatasetBatchSampler
    from dsspn_cli.data.transforms import TrainTransform
    from dsspn_cli.engine.faults import handle_bad_samples, ignore_stop_signals, scan
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import load_tree
    from dsspn_cli.model.dsspn import build_dsspn
    from dsspn_cli.model.neuron import HeadConfig

    tree = load_tree(config.tree)
    table = MaskingTable.from_tree(tree)
    transform = TrainTransform(crop=(config.crop, config.crop), scale=tuple(config.scale))
    datasets = [SegmentationDataset(root, fmt, "train", table, transform=transform,
                                    seed=config.seed) for fmt, root in config.data.items()]
    val_sets = validation_sets(config, table)
    parts = [(d, "train", range(len(d))) for d in datasets] + [
        (d, "val", range(len(d))) for d in val_sets]
    bad = scan(parts, run.root, world, console, workers=max(2, config.workers))
    handle_bad_samples(parts, bad, run.root, world, console, config.skip_bad)
    joint = JointDataset(datasets)
    weights = None
    if config.weights:
        missing = [d.name for d in datasets if d.name not in config.weights]
        if missing:
            raise UserError(f"weights: no weight for dataset '{missing[0]}'")
        weights = [float(config.weights[d.name]) for d in datasets]
    sampler = DatasetBatchSampler(joint.sizes, config.batch_size, weights, config.seed,
                                  world.rank, world.size, names=[d.name for d in datasets])
    loader = torch.utils.data.DataLoader(
        joint, batch_sampler=sampler, num_workers=config.workers, collate_fn=collate,
        persistent_workers=config.workers > 0, pin_memory=world.device.type == "cuda",
        worker_init_fn=ignore_stop_signals if config.workers > 0 else None)
    head = HeadConfig(**{k: tuple(v) if isinstance(v, list) else v
                         for k, v in config.head.items()})
    torch.manual_seed(config.seed)      # the same initial weights on every rank
    model = build_dsspn(table, config.backbone, config.output_stride, config.backbone_weights,
                        head).to(world.device)
    backbone_lr = config.backbone_lr if config.backbone_lr is not None else (
        config.lr / 100 if config.backbone_weights else config.lr)
    groups = [
        {"params": [p for p in model.backbone.parameters() if p.requires_grad],
         "lr": backbone_lr, "name": "backbone"},
        {"params": list(model.head.parameters()), "lr": config.lr, "name": "head"},
    ]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    return tree, table, datasets, val_sets, sampler, loader, model, optimizer


def validation_sets(config: TrainConfig, table):
    from dsspn_cli.data.common import MissingSplit
    from dsspn_cli.data.dataset import SegmentationDataset

    found = []
    for fmt, root in config.data.items():
        try:
            found.append(SegmentationDataset(root, fmt, "val", table))
        except MissingSplit:
            continue
    return found


def train(config: TrainConfig, resume: bool = False, console=None,
          stop_at: int | None = None) -> dict:
    """Run (or continue) training; returns the final metrics. ``stop_at`` ends the run after
    that step's checkpoint, as an interruption would (resume continues it)."""
    from dsspn_cli.engine.faults import StopRequest

    world = setup_world(config.device)
    try:
        with StopRequest() as stop:
            return _train(config, resume, world, console, stop_at, stop)
    finally:
        teardown_world(world)


def _train(config: TrainConfig, resume: bool, world: World, console, stop_at, stop) -> dict:
    from dsspn_cli.engine.checkpoint import load_checkpoint, restore_rng_states, save_checkpoint
    from dsspn_cli.engine.evaluate import evaluate
    from dsspn_cli.io import atomic_write_text

    import yaml

    from dsspn_cli.engine.faults import Interrupted, lost_peer, restart_count

    run = Run(config.out)
    if restart_count() and run.last.is_file() and not resume:
        resume = True           # torchrun --max-restarts started the job again: continue it
        if world.main and console is not None:
            console.print(f"restart {restart_count()} by torchrun: resuming from {run.last}")
    if resume and not run.last.is_file():
        raise UserError(f"{run.last}: nothing to resume; start without --resume")
    if not resume and run.last.is_file():
        raise UserError(f"{run.root}: already holds a run; use --resume to continue it or "
                        "another --out")
    if not config.data:
        config.data = ensure_sample_data(world)
    if world.main:              # first, so that an unwritable run folder fails at once
        atomic_write_text(run.root / "config.yaml",
                          yaml.safe_dump(config.to_dict(), sort_keys=False))
        run.tidy()
    tree, table, datasets, val_sets, sampler, loader, model, optimizer = build(
        config, world, run, console)
    steps_per_epoch = len(sampler)
    total = config.iters or (config.epochs or 1) * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / total) ** config.poly_power)
    use_amp = config.amp and world.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    step, best = 0, -1.0
    if config.init_from and not resume:
        initial = load_checkpoint(config.init_from)
        if initial["tree"] != tree.to_node_link():
            raise UserError(f"{config.init_from}: was trained on another concept tree; "
                            "grow it onto this tree first")
        model.load_state_dict(initial["model"])
    if resume:
        payload = load_checkpoint(run.last)
        if payload["tree"] != tree.to_node_link():
            raise UserError(f"{run.last}: was trained on another concept tree; resume with "
                            "the same --tree, or start a new run (--out)")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if "scaler" in payload:
            scaler.load_state_dict(payload["scaler"])
        step = int(payload["step"])
        best = float(payload.get("metrics", {}).get("best_mIoU", -1.0))
        restore_rng_states(payload["rng"])
        if world.main:
            run.tidy(step)
    ddp = model
    if world.size > 1:
        # Each rank activates other neurons: unused parameters must be expected.
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if world.device.type == "cuda" else None,
            find_unused_parameters=True)
    val_sets = val_sets if world.main else []
    val_every = config.val_every or config.checkpoint_every

    saved_at = [-1]

    def checkpoint(metrics: dict) -> None:
        if not world.main or saved_at[0] == step:      # at most once per step
            return
        saved_at[0] = step
        named = run.checkpoints / f"step-{step:07d}.pt"
        try:
            save_checkpoint(named, model=model, tree=tree, config=config.to_dict(), step=step,
                            epoch=step // steps_per_epoch, optimizer=optimizer,
                            scheduler=scheduler, metrics=metrics,
                            scaler=scaler if use_amp else None)
            _copy_atomic(named, run.last)
        except UserError as exc:     # disk full, folder gone read-only: say what is left
            raise UserError(f"{exc}; training stopped at step {step}, {last_good()}") from None
        run.keep_last(config.keep)

    def last_good() -> str:
        if not run.last.is_file():
            return "no checkpoint written yet"
        return (f"the last good checkpoint is {run.last} (step "
                f"{load_checkpoint(run.last)['step']}); resume with --resume")

    def validate() -> dict:
        scores = {}
        for dataset in val_sets:
            # Only rank 0 validates (val_sets is empty elsewhere): no collective here.
            scores[dataset.name] = evaluate(model, dataset, world.device,
                                            max_images=config.val_images, reduce=False)
        return scores

    progress = _progress(console, world, total, step)
    model.train()
    seen, started, last = 0, time.perf_counter(), {}
    signum = 0                  # a stop signal, agreed by every rank at the same step
    try:
        with progress:
            task = progress.add_task("training", total=total, completed=step, loss=float("nan"),
                                     lr=optimizer.param_groups[1]["lr"], ips=0.0)
            while step < total and not signum and step != stop_at:
                epoch, within = divmod(step, steps_per_epoch)
                sampler.set_epoch(epoch)
                sampler.skip = within
                for batch in loader:
                    if "bad" in batch:
                        raise UserError(f"{batch['bad'][0]} (read for step {step + 1}; it "
                                        f"passed the check before step 1); training stopped, "
                                        f"{last_good()}, after fixing the file or with "
                                        "--skip-bad to leave it out")
                    images = batch["image"].to(world.device, non_blocking=True)
                    target = batch["target"].to(world.device, non_blocking=True)
                    with torch.autocast(world.device.type, enabled=use_amp):
                        loss = ddp(images, target, batch["dataset"])
                    non_finite, signum = _agree(loss, stop.signum, world)
                    if non_finite:
                        where = run.last if run.last.is_file() else "none yet"
                        raise UserError(f"non-finite loss at step {step + 1} (dataset "
                                        f"{batch['dataset']}); training stopped, last good "
                                        f"checkpoint: {where}; lower --lr or check the data")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    step += 1
                    seen += images.shape[0] * world.size
                    ips = seen / (time.perf_counter() - started)
                    last = {"step": step, "epoch": epoch, "loss": loss.item(),
                            "lr": optimizer.param_groups[1]["lr"], "images_per_s": ips,
                            "dataset": batch["dataset"]}
                    progress.update(task, completed=step, loss=last["loss"],
                                    lr=last["lr"], ips=ips)
                    if world.main and (step % config.log_every == 0 or step == total):
                        run.log(last)
                    if (step % val_every == 0 or step == total) and not signum:
                        best = _validate_and_keep_best(validate, run, world, step, best,
                                                       lambda b: checkpoint({**last,
                                                                             "best_mIoU": b}))
                    if (step % config.checkpoint_every == 0 or step == total or step == stop_at
                            or signum):
                        checkpoint({**last, "best_mIoU": best})
                    if step >= total or step == stop_at or signum:
                        break
    except RuntimeError as exc:
        if world.size > 1 and lost_peer(exc):
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no detail"
            raise UserError(f"rank {world.rank}: lost another process of the job during step "
                            f"{step + 1} ({first}); the job stops, {last_good()}, or run under "
                            "'torchrun --max-restarts N' to restart on its own") from None
        raise
    if signum and step < total:
        if world.main:
            _plot(run)
        name = signal.Signals(signum).name
        raise Interrupted(f"{name} at step {step} of {total}: checkpoint {run.last} written; "
                          f"continue with 'dsspn train --out {run.root} --resume'", signum)
    if world.size > 1:
        last["ranks_in_sync"] = _ranks_in_sync(model)
        if world.main:
            run.log({"step": step, "ranks_in_sync": last["ranks_in_sync"]})
        if not last["ranks_in_sync"]:
            raise UserError("the ranks' weights differ after training; report this as a bug")
    if world.main:
        _plot(run)
    result = {**last, "best_mIoU": best, "run": str(run.root), "rank": world.rank}
    if config.finetune and (stop_at is None or step >= total):
        result["finetuned"] = _finetune(config, run, world, console, stop)
    return result


def _finetune(config: TrainConfig, run: Run, world: World, console, stop) -> dict:
    """The universal schedule's second stage (paper 4.5): from the jointly trained model, a
    run per dataset at a tenth of the learning rates, in RUN/finetune-<dataset>/."""
    backbone_lr = config.backbone_lr if config.backbone_lr is not None else (
        config.lr / 100 if config.backbone_weights else config.lr)
    results = {}
    for fmt, root in config.data.items():
        folder = run.root / f"finetune-{fmt}"
        stage = dataclasses.replace(
            config, data={fmt: root}, out=str(folder), iters=config.finetune, epochs=None,
            lr=config.lr / 10, backbone_lr=backbone_lr / 10, finetune=0, weights=None,
            init_from=str(run.last))
        if world.main and console is not None:
            console.print(f"fine-tuning on {fmt}: {config.finetune} iterations at lr "
                          f"{stage.lr:g}")
        again = (folder / "checkpoints" / "last.pt").is_file()
        results[fmt] = _train(stage, again, world, console, None, stop)["run"]
    return results


def _ranks_in_sync(model) -> bool:
    """Whether every rank holds bit-identical weights (DDP must keep them so, also for the
    neurons some ranks did not use)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().flatten().double() for p in model.parameters()])
    digest = torch.stack([flat.sum(), (flat * flat).sum(),
                          (flat * torch.arange(flat.numel(), dtype=flat.dtype,
                                               device=flat.device)).sum()])
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _copy_atomic(source: Path, target: Path) -> None:
    """Give a finished checkpoint another name (last.pt, best.pt) without a moment of half a
    file there: a hard link where the file system has them (no space, no time; files are never
    written in place, so sharing one is safe), else a copy; then a rename."""
    import shutil

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
        raise UserError(f"{target}: cannot write ({exc.strerror or exc}); check that the "
                        "folder is writable and the disk has space") from None


def _agree(loss: torch.Tensor, signum: int, world: World) -> tuple[bool, int]:
    """(whether any rank's loss is non-finite, a stop signal any rank received), the same on
    every rank: one small all-reduce a step, so all ranks stop at the same step."""
    flags = torch.tensor([0.0 if torch.isfinite(loss.detach()) else 1.0, float(signum)],
                         device=loss.device)
    if world.size > 1:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    return bool(flags[0].item()), int(flags[1].item())


def _validate_and_keep_best(validate, run: Run, world: World, step: int, best: float,
                            save) -> float:
    """Validate (rank 0), log the scores, and keep the best model as best.pt."""
    scores = validate()
    if not scores:
        return best
    mean = sum(s["mIoU"] or 0 for s in scores.values()) / len(scores)
    if world.main:
        run.log({"step": step, "val": {k: {m: v[m] for m in ("mIoU", "pixel_acc", "mean_acc")}
                                       for k, v in scores.items()}, "val_mIoU": mean})
    if mean > best:
        best = mean
        save(best)
        if world.main:
            _copy_atomic(run.last, run.best)
    return best


def _progress(console, world: World, total: int, done: int):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeRemainingColumn)

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("lr {task.fields[lr]:.2e}"),
               TextColumn("{task.fields[ips]:.1f} img/s"), TimeRemainingColumn()]
    return Progress(*columns, console=console, disable=not world.main, transient=False)


def _plot(run: Run) -> None:
    """curves.png: training loss and validation mIoU against the step."""
    if not run.metrics.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from dsspn_cli.io import atomic_write_bytes

    records = run.records()
    losses = [(r["step"], r["loss"]) for r in records if "loss" in r]
    vals = [(r["step"], r["val_mIoU"]) for r in records if "val_mIoU" in r]
    fig, left = plt.subplots(figsize=(8, 4.5))
    if losses:
        left.plot(*zip(*losses), color="#0072B2", label="training loss")
    left.set_xlabel("step")
    left.set_ylabel("loss", color="#0072B2")
    if vals:
        right = left.twinx()
        right.plot(*zip(*vals), "o-", color="#D55E00", label="validation mIoU")
        right.set_ylabel("mIoU (%)", color="#D55E00")
    left.set_title(f"{run.root.name}: training")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(run.root / "curves.png", buffer.getvalue())


__all__ = ["TrainConfig", "config_from", "train"]
