"""DSSPN model benchmark: parameters, training-step time and memory per execution mode,
inference time against the flat head (the demo model at full Cityscapes resolution and
ResNet-101), host syncs per predicted image and per training step, and head memory with
shared vs concatenated ancestor features by tree depth. Prints a table; ``--json FILE``
writes the figures.

    python benchmarks/model.py [--json FILE] [--device cpu|cuda] [--quick]
                               [--checkpoint RUN/checkpoints/best.pt]

Host syncs are the operations that make the host wait for the device (a size, a scalar, a
copy to the host), counted with a dispatch mode (``dsspn_cli.model.syncs``); it works on the
CPU too.
Inference runs on random weights and noise unless ``--checkpoint`` gives a trained model,
which reads a street scene of the sample data rendered at full size (random prediction
weights are scaled up so that the maps are as varied as a trained model's).

Memory: on CUDA, the peak of torch.cuda.max_memory_allocated over the step; on CPU (where
torch keeps no allocator statistics) the bytes of tensors autograd saves for backward,
counted once per storage: the activation memory a step holds at its peak.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import networkx as nx
import torch

from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import ConceptTree, load_tree
from dsspn_cli.model.config import DSSPNSettings, FlatSettings, ModelConfig
from dsspn_cli.model.contract import Query
from dsspn_cli.model.head import DSSPNHead
from dsspn_cli.model.segmenter import Segmenter, build_model
from dsspn_cli.model.syncs import HostSyncCounter

DSSPN_R101 = ModelConfig(backbone="resnet101", output_stride=8)
FLAT_R101 = ModelConfig(backbone="resnet101", output_stride=8, head=FlatSettings())
DEMO = ModelConfig(backbone="resnet18", output_stride=16)      # what `make demo` trains
FLAT_DEMO = ModelConfig(backbone="resnet18", output_stride=16, head=FlatSettings())


# Average neurons an image activates in the paper (section 4.5).
PAPER_NEURONS = {"coco": 6, "ade": 5, "cityscapes": 10, "mapillary": 8}


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@contextmanager
def saved_bytes(device, inputs=()):
    """Yields a dict whose 'bytes' is the peak memory measure of the block; the storage of
    ``inputs`` (backbone features that exist whatever the head does) is not counted."""
    result = {"bytes": 0}
    skip = {t.untyped_storage().data_ptr() for t in inputs}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()     # the inputs are allocated already
        yield result
        torch.cuda.synchronize()
        result["bytes"] = torch.cuda.max_memory_allocated() - base
        return
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield result
    result["bytes"] = sum(n for ptr, n in storages.items() if ptr not in skip)


def timed(fn, device, repeat: int, warm: bool = True) -> float:
    if warm:
        fn()                                # warm-up
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return _median(times)


def label_maps(table, dataset: str, batch: int, size: int, neurons: int, seed: int = 0):
    """Label maps whose images activate about ``neurons`` neurons each (the paper's counts):
    concepts the dataset labels are added, as vertical bands, while the count allows."""
    rng = torch.Generator().manual_seed(seed)
    labelled = sorted({c for c in table.dataset(dataset).label_to_concept if c >= 0})
    paths = {c: {n for n, _ in table.concept_path[c]} for c in labelled}
    maps = []
    for _ in range(batch):
        chosen, active = [], set()
        for i in torch.randperm(len(labelled), generator=rng).tolist():
            concept = labelled[i]
            grown = active | paths[concept]
            if len(grown) <= neurons:
                chosen.append(concept)
                active = grown
            if len(active) == neurons:
                break
        bands = torch.tensor(chosen)[torch.arange(size) * len(chosen) // size]
        maps.append(bands[None, :].expand(size, size))
    return torch.stack(maps)


def train_steps(table, device, batch, crop, repeat):
    """Head forward+backward on fixed backbone features, per mode, averaged over the four
    datasets at the paper's neuron counts: the whole head, and its neurons alone from the
    root features (where the modes differ: the transition to the root features is the same
    computation in all three). The modes take turns in every round, so that a slow spell
    of a shared machine does not fall on one mode; each figure is the median of its rounds."""
    feature = (crop - 1) // 8 + 1
    head = DSSPNHead(table, 2048, DSSPNSettings()).to(device)
    features = torch.randn(batch, 2048, feature, feature, device=device, requires_grad=True)
    with torch.no_grad():
        root = head.transition(features)
    root.requires_grad_()
    modes = ("dynamic", "per_image", "fixed")
    seconds = {part: {mode: [] for mode in modes} for part in ("head", "neurons")}
    memory = {mode: [] for mode in modes}
    for dataset, neurons in PAPER_NEURONS.items():
        target = label_maps(table, dataset, batch, feature, neurons).to(device)

        def whole(mode, target=target, dataset=dataset):
            head(features, target, dataset, mode=mode).backward()

        def alone(mode, target=target, dataset=dataset):
            head.neuron_losses(features, root, target, dataset, mode).backward()

        for part, step in (("head", whole), ("neurons", alone)):
            rounds = {mode: [] for mode in modes}
            for _ in range(repeat + 1):                # round 0 warms up
                for mode in modes:
                    head.zero_grad(set_to_none=True)
                    features.grad = root.grad = None
                    rounds[mode].append(timed(partial(step, mode), device, 1, warm=False))
            for mode in modes:
                seconds[part][mode].append(_median(rounds[mode][1:]))
        for mode in modes:
            with saved_bytes(device, [features]) as peak:
                loss = head(features, target, dataset, mode=mode)
            del loss
            memory[mode].append(peak["bytes"])
    mean = {part: {mode: sum(v) / len(v) for mode, v in by_mode.items()}
            for part, by_mode in seconds.items()}
    return mean["head"], mean["neurons"], {m: int(sum(v) / len(v)) for m, v in memory.items()}


def _median(values):
    return sorted(values)[len(values) // 2]


def varied(model):
    """Random prediction weights scaled up, so that neighbouring cells choose differently."""
    for neuron in getattr(model.head, "neurons", []):
        neuron.predict.weight.data.mul_(20)
    return model


def street_scene(size) -> torch.Tensor:
    """A Cityscapes validation image of the built-in sample data rendered at ``size``,
    normalised: a trained model sees regions in it, as in a photo (on noise its predictions
    fragment into far more region borders than any photo has)."""
    import tempfile

    from dsspn_cli.data.common import read_image
    from dsspn_cli.data.sample import write_sample_data
    from dsspn_cli.engine.infer import normalised

    with tempfile.TemporaryDirectory() as folder:
        write_sample_data(folder, images=1, size=tuple(size))
        path = sorted(Path(folder).glob("cityscapes/leftImg8bit/val/*/*.png"))[0]
        pixels = torch.from_numpy(read_image(path).copy())
    return normalised(pixels)


def inference(table, dsspn_config, flat_config, device, size, repeat, trained=None):
    """Seconds per image: the shared backbone, each head on its features, and the sum. A
    trained model reads a rendered street scene; random weights read noise."""
    torch.manual_seed(0)
    dsspn = trained or varied(build_model(table, dsspn_config))
    dsspn = dsspn.to(device).eval()
    backbone = dsspn.backbone
    flat = Segmenter(backbone, build_model(table, flat_config, ["cityscapes"]).head)
    flat = flat.to(device).eval()
    if trained is not None:
        images = street_scene(size).to(device)
    else:
        images = torch.randn(1, 3, *size, device=device)
    stride = backbone.output_stride
    with torch.no_grad():
        features = backbone(images)
        query = Query("cityscapes", size=size, stride=stride)
        head_dsspn = timed(lambda: dsspn.head.predict(features, query), device, repeat)
        head_flat = timed(lambda: flat.head.predict(features, query), device, repeat)
        whole_backbone = timed(lambda: backbone(images), device, max(1, repeat // 2))
    return {"dsspn": whole_backbone + head_dsspn, "flat": whole_backbone + head_flat,
            "backbone": whole_backbone, "dsspn_head": head_dsspn, "flat_head": head_flat}


def host_syncs(table, device, size, trained=None) -> dict:
    """Waits on the device per predicted image (demo model, Cityscapes) and per head training
    step (each dataset at the paper's neuron counts)."""
    torch.manual_seed(0)
    model = (trained or varied(build_model(table, DEMO))).to(device).eval()
    if trained is not None:
        images = street_scene(size).to(device)
    else:
        images = torch.randn(1, 3, *size, device=device)
    with torch.no_grad():
        features = model.backbone(images)
        with HostSyncCounter() as counter:
            model.head.predict(features, Query("cityscapes", size=size,
                                               stride=model.backbone.output_stride))
    result = {"predict_image": counter.count, "train_step": {}}
    head = DSSPNHead(table, 2048, DSSPNSettings()).to(device)
    for dataset, neurons in PAPER_NEURONS.items():
        target = label_maps(table, dataset, 4, 17, neurons).to(device)
        features = torch.randn(4, 2048, 17, 17, device=device)
        with HostSyncCounter() as counter:
            head(features, target, dataset).backward()
        result["train_step"][dataset] = counter.count
    return result


def chain_tree(depth: int) -> ConceptTree:
    """A tree of the given depth with a neuron on every level above the leaves:
    n0 > {n1, leaf1}, n1 > {n2, leaf2}, ..., n(depth-1) > {last, leaf(depth)}."""
    graph = nx.DiGraph()
    graph.add_node("n0", synset=None, labels={})
    for level in range(1, depth + 1):
        inner = f"n{level}" if level < depth else "last"
        for name in (inner, f"leaf{level}"):
            graph.add_node(name, synset=None, labels={"x": [len(graph)]})
            graph.add_edge(f"n{level - 1}", name)
    return ConceptTree(graph, {"x": {"ignore_index": 255}}, max_depth=depth)


def head_memory(device, batch, feature, depths=(1, 2, 3, 4, 5)):
    out = {}
    for depth in depths:
        tree = chain_tree(depth)
        table = MaskingTable.from_tree(tree)
        target = torch.full((batch, feature, feature), tree.id("last"), device=device)
        target[:, :, : feature // 2] = tree.id(f"leaf{depth}")
        features = torch.randn(batch, 2048, feature, feature, device=device)
        row = {}
        for storage in ("shared", "concat"):
            torch.manual_seed(0)
            head = DSSPNHead(table, 2048, DSSPNSettings(storage=storage)).to(device)
            with saved_bytes(device, [features]) as peak:
                loss = head(features, target, "x")
            loss.backward()
            row[storage] = peak["bytes"]
        out[depth] = row
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkpoint", help="a trained model for the demo-model figures")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    table = MaskingTable.from_tree(load_tree())
    batch, crop = (2, 129) if args.quick else (8, 513)
    size = (128, 256) if args.quick else ((1024, 2048) if device.type == "cuda" else (512, 1024))

    dsspn = build_model(table, DSSPN_R101)
    flat = build_model(table, FLAT_R101, ["cityscapes"])
    params = {"dsspn_r101": count(dsspn), "flat_r101": count(flat),
              "dsspn_head": count(dsspn.head), "backbone_r101": count(dsspn.backbone)}
    del dsspn, flat
    trained = None
    if args.checkpoint:
        from dsspn_cli.engine.checkpoint import load_model

        trained, table, _, _ = load_model(args.checkpoint)
    full = (256, 512) if args.quick else (1024, 2048)
    step_s, neuron_s, step_bytes = train_steps(table, device, batch, crop, args.repeat)
    demo = inference(table, DEMO, FLAT_DEMO,
                     device, full, args.repeat, trained)
    infer = inference(table, DSSPN_R101, FLAT_R101, device, size, args.repeat)
    syncs = host_syncs(table, device, full, trained)
    memory = head_memory(device, batch, (crop - 1) // 8 + 1)

    results = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "host": platform.processor() or platform.machine(), "torch": torch.__version__,
        "settings": {"batch": batch, "crop": crop, "inference_size": list(size),
                     "neurons_per_image": PAPER_NEURONS, "tree_concepts": len(table.concepts),
                     "tree_neurons": len(table.neuron_concept)},
        "params": params,
        "train_step_s": step_s,
        "train_neurons_s": neuron_s,
        "train_peak_bytes": step_bytes,
        "inference_s": {"dsspn": infer["dsspn"], "flat": infer["flat"]},
        "inference_detail_s": infer,
        "demo_inference_size": list(full),
        "demo_inference_s": demo,
        "demo_model": "trained: " + args.checkpoint if args.checkpoint else "random weights",
        "host_syncs": syncs,
        "head_peak_bytes": {"shared": memory[5]["shared"], "concat": memory[5]["concat"],
                            "by_depth": memory},
    }
    mib = 2 ** 20
    print(f"device {results['device']}, tree {len(table.concepts)} concepts / "
          f"{len(table.neuron_concept)} neurons, batch {batch}, crop {crop}")
    print(f"{'parameters':<44}{'':>14}")
    print(f"  {'DSSPN-ResNet-101 (paper 217.3M)':<42}{params['dsspn_r101'] / 1e6:>12.1f}M")
    print(f"  {'flat ASPP ResNet-101, 19 classes':<42}{params['flat_r101'] / 1e6:>12.1f}M")
    print(f"  {'  of which the DSSPN head':<42}{params['dsspn_head'] / 1e6:>12.2f}M")
    print(f"{'head training step (fwd+bwd), mean of 4 datasets':<44}{'head s':>8}"
          f"{'neurons s':>11}{'MiB':>8}")
    for mode in ("dynamic", "per_image", "fixed"):
        print(f"  {mode:<42}{step_s[mode]:>8.3f}{neuron_s[mode]:>11.3f}"
              f"{step_bytes[mode] / mib:>8.1f}")
    print(f"  per_image / dynamic time: {step_s['per_image'] / step_s['dynamic']:.2f}x head, "
          f"{neuron_s['per_image'] / neuron_s['dynamic']:.2f}x neurons; fixed / dynamic: "
          f"{step_s['fixed'] / step_s['dynamic']:.2f}x time, "
          f"{step_bytes['fixed'] / max(step_bytes['dynamic'], 1):.2f}x memory")
    print(f"inference at {size[0]}x{size[1]}, ResNet-101 backbone ({infer['backbone']:.3f} s)")
    print(f"  DSSPN {infer['dsspn']:.3f} s (head {infer['dsspn_head']:.3f}), flat "
          f"{infer['flat']:.3f} s (head {infer['flat_head']:.3f}): "
          f"{infer['dsspn'] / infer['flat']:.2f}x")
    print(f"inference at {full[0]}x{full[1]}, demo model (ResNet-18, stride 16, "
          f"{results['demo_model']}; backbone {demo['backbone']:.3f} s)")
    print(f"  DSSPN head {demo['dsspn_head']:.3f} s, flat head {demo['flat_head']:.3f} s: "
          f"{demo['dsspn_head'] / demo['flat_head']:.2f}x; whole model "
          f"{demo['dsspn'] / demo['flat']:.2f}x")
    print(f"host syncs: {syncs['predict_image']} per predicted image, per training step "
          + ", ".join(f"{k} {v}" for k, v in syncs["train_step"].items()))
    print("head memory by depth (MiB): depth, shared, concat, ratio")
    for depth, row in memory.items():
        print(f"  {depth}  {row['shared'] / mib:8.1f}  {row['concat'] / mib:8.1f}  "
              f"{row['shared'] / row['concat']:.2f}")
    if args.json:
        from dsspn_cli.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
