"""GPU benchmark, one script for one GPU (under 8 minutes): full-resolution inference images/s
of DSSPN-ResNet-101 and the flat baseline in fp32 and bf16, training images/s at the paper's
crop and batch, peak memory of each, and the model benchmark (``benchmarks/model.py``).
Prints a table; ``--json FILE`` writes every figure.

    python benchmarks/gpu.py [--json benchmarks/results/gpu.json] [--device cuda]

Inference runs the path ``dsspn evaluate`` and ``dsspn predict`` share (``engine.infer``:
a 1024x2048 frame is one tile) on a random image with randomly initialised weights, so the
DSSPN head reaches most of its neurons: its worst case. Training steps are forward, backward
and SGD on random images with label maps of eight Cityscapes concepts in bands, at crop 513,
batch 8 (batch 4 when 8 does not fit). Each measurement is separate: one that runs out of
memory is recorded as such and the others go on. ``--device cpu --quick`` runs every part
small (ResNet-18) as a smoke test.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from dsspn_cli.engine.infer import Inference
from dsspn_cli.engine.world import resolve_precision
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree
from dsspn_cli.model.config import ModelConfig
from dsspn_cli.model.segmenter import build_model

HERE = Path(__file__).resolve().parent
DATASET = "cityscapes"


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak(device):
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def rate(run, device, count: int, warmup: int, seconds: float) -> tuple[float, int]:
    """(calls per second, calls timed): ``warmup`` calls, then up to ``count`` calls or
    ``seconds``, whichever ends first (at least one)."""
    for _ in range(warmup):
        run()
    sync(device)
    start = time.perf_counter()
    done = 0
    while done < count and (done == 0 or time.perf_counter() - start < seconds):
        run()
        done += 1
    sync(device)
    return done / (time.perf_counter() - start), done


def measured(name: str, results: dict, key: str, function, *args) -> None:
    """``results[key] = function(*args)``, or the error it raised (out of memory, ...)."""
    started = time.perf_counter()
    try:
        results[key] = function(*args)
    except Exception as exc:         # one failure must not lose the other figures
        results[key] = {"error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300]}"
                        if str(exc) else exc.__class__.__name__}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print(f"  {name}: {time.perf_counter() - started:.1f} s", flush=True)


def model_config(head: str, backbone: str, quick: bool) -> ModelConfig:
    small = {"hidden": 8} if quick and head == "dsspn" else {}
    return ModelConfig(backbone=backbone, output_stride=8, head={"type": head, **small})


def inference(table, head: str, precision: str, args, device) -> dict:
    model = build_model(table, model_config(head, args.backbone, args.quick), [DATASET],
                        pretrained=False).to(device).eval()
    infer = Inference(model, DATASET, precision=precision, device=device)
    height, width = args.size
    image = torch.randint(0, 256, (height, width, 3), dtype=torch.uint8).pin_memory() \
        if device.type == "cuda" else torch.randint(0, 256, (height, width, 3),
                                                    dtype=torch.uint8)
    reset_peak(device)
    per_s, timed = rate(lambda: infer(image), device, args.images, args.warmup, args.seconds)
    return {"images_per_s": per_s, "seconds_per_image": 1 / per_s, "images": timed,
            "peak_bytes": peak(device)}


def bands(table, batch: int, size: int, count: int = 8) -> torch.Tensor:
    """Label maps (concept ids) with ``count`` of the dataset's concepts in vertical bands."""
    labelled = sorted({c for c in table.dataset(DATASET).label_to_concept if c >= 0})
    chosen = torch.tensor(labelled[:: max(1, len(labelled) // count)][:count])
    row = chosen[torch.arange(size) * len(chosen) // size]
    return row[None, None, :].expand(batch, size, size).contiguous()


def training(table, head: str, precision: str, args, device) -> dict:
    dtype = resolve_precision(precision, device)
    torch.manual_seed(0)
    model = build_model(table, model_config(head, args.backbone, args.quick), [DATASET],
                        pretrained=False).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9,
                                weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    def step(images, target):
        with torch.autocast(device.type, dtype=dtype or torch.float32,
                            enabled=dtype is not None):
            loss = model(images, target, DATASET)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for batch in args.batches:       # the paper's batch, or the next one down that fits
        try:
            images = torch.randn(batch, 3, args.crop, args.crop, device=device)
            target = bands(table, batch, args.crop).to(device)
            reset_peak(device)
            per_s, timed = rate(functools.partial(step, images, target), device,
                                args.steps, args.warmup, args.seconds)
        except torch.OutOfMemoryError:
            if batch == args.batches[-1]:
                raise
            images = target = None
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            continue
        return {"batch": batch, "crop": args.crop, "images_per_s": per_s * batch,
                "seconds_per_step": 1 / per_s, "steps": timed, "peak_bytes": peak(device)}
    raise RuntimeError("no batch size given")


def model_benchmark(args, device) -> dict:
    """benchmarks/model.py in its own process, its JSON taken in."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.json"
        command = [sys.executable, str(HERE / "model.py"), "--device", str(device), "--json",
                   str(out)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(command, capture_output=True, text=True,
                              timeout=args.model_timeout)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"benchmarks/model.py exited with {proc.returncode}: {tail}")
        return {"figures": json.loads(out.read_text()), "printed": proc.stdout}


def _cell(result: dict, field: str, scale: float = 1.0, digits: int = 2) -> str:
    if "error" in result:
        return "failed"
    value = result.get(field)
    return "-" if value is None else f"{value * scale:.{digits}f}"


def summary(results: dict) -> str:
    gib = 1 / 2**30
    lines = [f"device {results['device']}, torch {results['torch']}, "
             f"{results['settings']['backbone']}",
             f"{'measurement':<34}{'images/s':>10}{'peak GiB':>10}"]
    h, w = results["settings"]["size"]
    for key, result in results["inference"].items():
        lines.append(f"{f'inference {h}x{w} {key}':<34}{_cell(result, 'images_per_s'):>10}"
                     f"{_cell(result, 'peak_bytes', gib):>10}")
    for key, result in results["training"].items():
        label = f"training {key}, batch {result.get('batch', '?')}"
        lines.append(f"{label:<34}{_cell(result, 'images_per_s'):>10}"
                     f"{_cell(result, 'peak_bytes', gib):>10}")
    errors = [f"  {section} {key}: {r['error']}" for section in ("inference", "training")
              for key, r in results[section].items() if "error" in r]
    model = results.get("model_benchmark", {})
    if "error" in model:
        errors.append(f"  model benchmark: {model['error']}")
    elif "printed" in model:
        lines += ["benchmarks/model.py:"] + ["  " + line for line in
                                              model["printed"].splitlines()]
    if errors:
        lines += ["failed:"] + errors
    ratios = []
    for precision in results["settings"]["precisions"]:
        d = results["inference"].get(f"dsspn {precision}", {})
        f = results["inference"].get(f"flat {precision}", {})
        if "images_per_s" in d and "images_per_s" in f:
            ratios.append(f"{precision} {f['images_per_s'] / d['images_per_s']:.2f}x")
    if ratios:
        lines.append("DSSPN time / flat time at inference: " + ", ".join(ratios))
    lines.append(f"total {results['seconds']:.0f} s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="every part small (ResNet-18, "
                        "hidden 8, 128x256, crop 65, batch 2): a smoke test, also on CPU")
    parser.add_argument("--no-model-benchmark", action="store_true")
    parser.add_argument("--model-timeout", type=float, default=200.0, help="seconds for "
                        "benchmarks/model.py")
    args = parser.parse_args()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        print(f"benchmarks/gpu.py: --device {args.device} is not a device", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"benchmarks/gpu.py: no CUDA device here (torch {torch.__version__}, built "
              f"{'with CUDA ' + torch.version.cuda if torch.version.cuda else 'for CPU only'})"
              "; run it on a machine with a GPU (or --device cpu --quick for a smoke test)",
              file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    args.backbone = "resnet18" if args.quick else "resnet101"
    args.size = (128, 256) if args.quick else (1024, 2048)
    args.crop, args.batches = (65, [2]) if args.quick else (513, [8, 4])
    args.images, args.steps = (2, 2) if args.quick else (20, 10)
    args.warmup, args.seconds = (1, 5.0) if args.quick else (3, 15.0)
    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported(including_emulation=False)
    precisions = ["fp32", "bf16"] if bf16 else ["fp32", "fp16"]
    started = time.perf_counter()
    torch.manual_seed(0)
    table = MaskingTable.from_tree(load_tree())
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
               f"cpu ({os.cpu_count()} cores)", "torch": torch.__version__,
               "cuda": torch.version.cuda,
               "settings": {"backbone": args.backbone, "output_stride": 8,
                            "size": list(args.size), "crop": args.crop,
                            "batches": args.batches, "precisions": precisions,
                            "dataset": DATASET},
               "inference": {}, "training": {}}
    print("measuring:", flush=True)
    for precision in precisions:
        for head in ("dsspn", "flat"):
            measured(f"inference {head} {precision}", results["inference"],
                     f"{head} {precision}", inference, table, head, precision, args, device)
    for precision in precisions:
        for head in ("dsspn", "flat"):
            measured(f"training {head} {precision}", results["training"],
                     f"{head} {precision}", training, table, head, precision, args, device)
    if not args.no_model_benchmark:
        measured("benchmarks/model.py", results, "model_benchmark", model_benchmark, args,
                 device)
    results["seconds"] = time.perf_counter() - started
    print(summary(results))
    if args.json:
        from dsspn_cli.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
