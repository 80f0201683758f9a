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
from pathlib import Path

import numpy as np
import torch

from dsspn_cli.errors import UserError
from dsspn_cli.files import atomic_write_bytes

FORMAT = "dsspn-checkpoint"
VERSION = 1


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
                    scaler=None, datasets: list[str] | None = None) -> Path:
    """Write a checkpoint atomically; ``model`` may be wrapped in DistributedDataParallel.
    ``datasets``: the datasets the model trains on (the flat head's classes are theirs)."""
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
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """The checkpoint's content; a one-line error for anything that is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint; give a file written by 'dsspn train' "
                        "(RUN/checkpoints/last.pt or best.pt)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:      # weights_only refuses code; torch raises many kinds here
        what = ("it carries code, which is not loaded" if "weights_only" in str(exc)
                or "Unsupported global" in str(exc) else exc.__class__.__name__)
        raise UserError(f"{path}: not a dsspn checkpoint ({what}); give a file written by "
                        "'dsspn train'") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path}: not a dsspn checkpoint (no '{FORMAT}' marker); give a file "
                        "written by 'dsspn train'")
    return payload


def tree_of(payload: dict, source: str = "checkpoint"):
    from dsspn_cli.hierarchy.tree import ConceptTree, graph_from_node_link

    graph, datasets, max_depth = graph_from_node_link(payload["tree"], source)
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
