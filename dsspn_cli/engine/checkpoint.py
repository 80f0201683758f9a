"""Checkpoints: everything needed to resume a run or use its model, in one file.

A checkpoint holds the model's weights, the optimiser and scheduler states, the step, the
random states, the concept tree (node-link data) and the run's config, as plain tensors,
numbers, strings, lists and dicts only, so it loads with ``torch.load(weights_only=True)``:
a file that carries code is refused, never run. Files are written to a temporary name in the
same folder and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import io
import random
import stat
import warnings
from pathlib import Path

import numpy as np
import torch

from dsspn_cli.errors import UserError, one_line, shown
from dsspn_cli.files import atomic_write_bytes

FORMAT = "dsspn-checkpoint"
VERSION = 2          # 2: the skip readout and the training of the '-other' concepts


def rng_states() -> dict:
    state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": state[0], "keys": torch.from_numpy(state[1].astype(np.int64)),
                  "pos": int(state[2]), "has_gauss": int(state[3]),
                  "cached": float(state[4])},
        "python": _python_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
    }


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: str | Path, *, model, tree, config: dict, step: int, epoch: int,
                    optimizer=None, scheduler=None, metrics: dict | None = None,
                    scaler=None, datasets: list[str] | None = None, within=None) -> Path:
    """Write a checkpoint atomically; ``model`` may be wrapped in DistributedDataParallel.
    ``datasets``: the datasets the model trains on (the flat head's classes are theirs).
    ``within``: the run folder, below which no part of ``path`` is followed if a link."""
    model = getattr(model, "module", model)
    payload = {
        "format": FORMAT, "version": VERSION,
        "model": model.state_dict(),
        "tree": tree.to_node_link(),
        "config": config,
        "datasets": list(datasets or []),
        "step": step, "epoch": epoch,
        "metrics": metrics or {},
        "rng": rng_states(),
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        payload["scaler"] = scaler.state_dict()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue(), within=within)


# The payload's schema: field -> (type, whether every checkpoint has it); RESUME_FIELDS are
# needed to continue training only.
FIELDS = {"format": (str, True), "version": (int, True), "model": (dict, True),
          "tree": (dict, True), "config": (dict, True), "step": (int, True),
          "epoch": (int, True), "datasets": (list, False), "metrics": (dict, False),
          "rng": (dict, False), "optimizer": (dict, False), "scheduler": (dict, False),
          "scaler": (dict, False)}
RESUME_FIELDS = ("optimizer", "scheduler", "rng")


def load_checkpoint(path: str | Path, map_location="cpu", resume: bool = False) -> dict:
    """The checkpoint's content, its schema checked (``resume``: with what continuing
    training needs) and its weights finite; a one-line error for anything else."""
    from dsspn_cli.files import kind_of, stat_path

    path = Path(path)
    st = stat_path(path, "read the checkpoint")
    if st is None or not stat.S_ISREG(st.st_mode):
        what = "no such checkpoint" if st is None else f"is {kind_of(st.st_mode)}"
        raise UserError(f"{path}: {what}; give a file written by 'dsspn train' "
                        "(RUN/checkpoints/last.pt or best.pt)")
    try:
        with warnings.catch_warnings():     # torch's notes on odd pickles: the file is judged
            warnings.simplefilter("ignore")  # below, in one line
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:      # weights_only refuses code; torch raises many kinds here
        what = ("it carries code, which is not loaded" if carries_code(path) else
                f"damaged, or not a PyTorch file: {exc.__class__.__name__}")
        raise UserError(f"{path}: not a dsspn checkpoint ({what}); give a file written by "
                        "'dsspn train'") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a dsspn checkpoint (no '{FORMAT}' marker); give a file "
                        "written by 'dsspn train'")
    check_payload(payload, path, resume)
    return payload


def check_payload(payload: dict, path, resume: bool = False) -> None:
    """Every field a checkpoint needs, of its type; weights that are tensors and finite."""
    damaged = "; the file is damaged or was not written by 'dsspn train'"
    for key, (kind, required) in FIELDS.items():
        if key not in payload:
            if required or (resume and key in RESUME_FIELDS):
                raise UserError(f"{path}: the checkpoint has no '{key}' field{damaged}")
            continue
        value = payload[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"{path}: the checkpoint's '{key}' has type "
                            f"{type(value).__name__}, expected {kind.__name__}{damaged}")
    if payload["version"] != VERSION:
        raise UserError(f"{path}: a checkpoint of version {shown(payload['version'])}; this "
                        f"dsspn reads version {VERSION}: use the dsspn that wrote it")
    for name, value in payload["model"].items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: the checkpoint's weight {shown(name)} is not a tensor"
                            f"{damaged}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise UserError(f"{path}: the weights '{name}' hold NaN or infinite values; the "
                            "run diverged or the file is damaged: use an earlier checkpoint")


def carries_code(path: Path) -> bool:
    """Whether a file ``weights_only`` refused is a well-formed pickle (or a PyTorch zip
    holding one) that names Python objects ``weights_only`` does not allow: code, which is
    not loaded; rather than random bytes or a file cut short, which are merely damaged. The
    pickle is read as opcodes, never run."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                data = archive.read(names[0]) if names else b""
        else:
            with open(path, "rb") as handle:
                data = handle.read(64 * 2**20)
        stream, named, strings = io.BytesIO(data), [], []
        while stream.tell() < len(data):      # torch's legacy format: pickles in a row
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name == "GLOBAL" or opcode.name == "INST":
                    named.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL":
                    named.append(".".join(strings[-2:]))
                elif opcode.name == "OBJ":
                    named.append("?")
                elif isinstance(arg, str) and "UNICODE" in opcode.name:
                    strings.append(arg)
    except Exception:                         # not a pickle through to its end: damaged
        return False
    return any(name not in _allowed_globals() for name in named)


def _allowed_globals() -> set[str]:
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return set(_get_allowed_globals())
    except (ImportError, AttributeError):     # another torch: every named object counts
        return set()


def tree_of(payload: dict, source: str = "checkpoint"):
    """The concept tree a checkpoint holds; a damaged one is named as the checkpoint's
    (there is no tree file to fix, and 'hierarchy check' reads tree files only)."""
    from dsspn_cli.hierarchy.tree import ConceptTree, graph_from_node_link, structural_problems

    damaged = "the file is damaged or was not written by 'dsspn train'"
    try:
        graph, datasets, max_depth = graph_from_node_link(payload["tree"], source)
    except UserError as exc:
        detail = str(exc).removeprefix(f"{source}: ").split("; ")[0]
        raise UserError(one_line(f"{source}: the concept tree in this checkpoint is damaged "
                                 f"({detail}); {damaged}")) from None
    problems = structural_problems(graph)
    if problems:
        raise UserError(one_line(f"{source}: the concept tree in this checkpoint is not a "
                                 f"tree ({problems[0]}); {damaged}"))
    return ConceptTree(graph, datasets, max_depth, source=source)


def model_config_of(payload: dict, path):
    """The checkpoint's config, checked like any config."""
    from dsspn_cli.engine.config import checked

    config = payload.get("config")
    if not isinstance(config, dict):
        raise UserError(f"{path}: the checkpoint holds no config; the file is damaged")
    return checked(config, f"{path} (its config)")


def load_model(path: str | Path, device="cpu"):
    """(model in eval mode on ``device``, its MaskingTable, its ConceptTree, its TrainConfig)
    from a checkpoint, built exactly as it was trained."""
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.model.segmenter import build_model

    payload = load_checkpoint(path)
    tree = tree_of(payload, str(path))
    table = MaskingTable.from_tree(tree)
    config = model_config_of(payload, path)
    model = build_model(table, config, payload.get("datasets") or None, pretrained=False)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160]
        raise UserError(f"{path}: its weights do not fit the model its own config describes "
                        f"({first}); the file is damaged") from None
    return model.to(device).eval(), table, tree, config


MODEL_ENV = "DSSPN_MODEL"


def find_model(given: str | Path | None = None, here: str | Path = ".") -> tuple[Path, str]:
    """The checkpoint a command uses, and how it was chosen: ``given`` (--model), else
    ``$DSSPN_MODEL``, else the newest ``runs/**/checkpoints/best.pt`` below ``here``."""
    import os

    if given is not None:
        return Path(given), ""
    if os.environ.get(MODEL_ENV):
        path = Path(os.environ[MODEL_ENV])
        return path, f"model: {path} (from ${MODEL_ENV})"
    runs = Path(here) / "runs"
    found = []
    if runs.is_dir():
        for path in runs.glob("**/checkpoints/best.pt"):
            try:
                found.append((path.stat().st_mtime, str(path), path))
            except OSError:            # a run being cleaned away
                continue
    if not found:
        raise UserError(f"no model given, ${MODEL_ENV} is not set and there is no "
                        "runs/*/checkpoints/best.pt below this folder; train one with "
                        "'dsspn train' (or 'make demo'), or give --model CKPT")
    path = max(found)[2]
    return path, (f"model: {path} (the newest best.pt under runs/; choose another with "
                  f"--model or ${MODEL_ENV})")
