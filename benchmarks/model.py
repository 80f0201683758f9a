"""DSSPN model benchmark: parameters, training-step time and memory per execution mode,
inference time against the flat head, and head memory with shared vs concatenated ancestor
features by tree depth. Prints a table; ``--json FILE`` writes the figures.

    python benchmarks/model.py [--json FILE] [--device cpu|cuda] [--quick]

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

import networkx as nx
import torch

from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import ConceptTree, load_tree
from dsspn_cli.model.config import HeadConfig, ModelConfig
from dsspn_cli.model.head import DSSPNHead
from dsspn_cli.model.segmenter import Segmenter, build_model

DSSPN_R101 = ModelConfig(backbone="resnet101", output_stride=8)
FLAT_R101 = ModelConfig(backbone="resnet101", output_stride=8, head=HeadConfig(type="flat"))

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


def timed(fn, device, repeat: int) -> float:
    fn()                                    # warm-up
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


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
    """Head forward+backward on fixed backbone features (where the modes differ), per mode,
    averaged over the four datasets at the paper's neuron counts."""
    feature = (crop - 1) // 8 + 1
    head = DSSPNHead(table, 2048, HeadConfig()).to(device)
    features = torch.randn(batch, 2048, feature, feature, device=device, requires_grad=True)
    seconds, memory = {}, {}
    for mode in ("dynamic", "per_image", "fixed"):
        times, peaks = [], []
        for dataset, neurons in PAPER_NEURONS.items():
            target = label_maps(table, dataset, batch, feature, neurons).to(device)

            def step(target=target, dataset=dataset, mode=mode):
                head.zero_grad(set_to_none=True)
                features.grad = None
                head(features, target, dataset, mode=mode).backward()

            times.append(timed(step, device, repeat))
            with saved_bytes(device, [features]) as peak:
                loss = head(features, target, dataset, mode=mode)
            del loss
            peaks.append(peak["bytes"])
        seconds[mode] = sum(times) / len(times)
        memory[mode] = int(sum(peaks) / len(peaks))
    return seconds, memory


def inference(table, device, size, repeat):
    dsspn = build_model(table, DSSPN_R101).to(device).eval()
    backbone = dsspn.backbone
    flat = Segmenter(backbone, build_model(table, FLAT_R101, ["cityscapes"]).head)
    flat = flat.to(device).eval()
    images = torch.randn(1, 3, *size, device=device)
    with torch.no_grad():
        # Same backbone: time it once and each head on its features, plus the whole path.
        features = backbone(images)
        head_dsspn = timed(lambda: dsspn.head.predict(features, size, "cityscapes"), device,
                           repeat)
        head_flat = timed(lambda: flat.head.predict(features, size, "cityscapes"), device,
                          repeat)
        whole_backbone = timed(lambda: backbone(images), device, max(1, repeat // 2))
    return {"dsspn": whole_backbone + head_dsspn, "flat": whole_backbone + head_flat,
            "backbone": whole_backbone, "dsspn_head": head_dsspn, "flat_head": head_flat}


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
            head = DSSPNHead(table, 2048, HeadConfig(storage=storage)).to(device)
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
    step_s, step_bytes = train_steps(table, device, batch, crop, args.repeat)
    infer = inference(table, device, size, args.repeat)
    memory = head_memory(device, batch, (crop - 1) // 8 + 1)

    results = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "host": platform.processor() or platform.machine(), "torch": torch.__version__,
        "settings": {"batch": batch, "crop": crop, "inference_size": list(size),
                     "neurons_per_image": PAPER_NEURONS, "tree_concepts": len(table.concepts),
                     "tree_neurons": len(table.neuron_concept)},
        "params": params,
        "train_step_s": step_s,
        "train_peak_bytes": step_bytes,
        "inference_s": {"dsspn": infer["dsspn"], "flat": infer["flat"]},
        "inference_detail_s": infer,
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
    print(f"{'head training step (fwd+bwd), mean of 4 datasets':<50}{'s':>6}{'MiB':>10}")
    for mode in ("dynamic", "per_image", "fixed"):
        print(f"  {mode:<48}{step_s[mode]:>6.3f}{step_bytes[mode] / mib:>10.1f}")
    print(f"  per_image / dynamic time: {step_s['per_image'] / step_s['dynamic']:.2f}x; "
          f"fixed / dynamic: {step_s['fixed'] / step_s['dynamic']:.2f}x time, "
          f"{step_bytes['fixed'] / max(step_bytes['dynamic'], 1):.2f}x memory")
    print(f"inference at {size[0]}x{size[1]}, ResNet-101 backbone ({infer['backbone']:.3f} s)")
    print(f"  DSSPN {infer['dsspn']:.3f} s (head {infer['dsspn_head']:.3f}), flat "
          f"{infer['flat']:.3f} s (head {infer['flat_head']:.3f}): "
          f"{infer['dsspn'] / infer['flat']:.2f}x")
    print("head memory by depth (MiB): depth, shared, concat, ratio")
    for depth, row in memory.items():
        print(f"  {depth}  {row['shared'] / mib:8.1f}  {row['concat'] / mib:8.1f}  "
              f"{row['shared'] / row['concat']:.2f}")
    if args.json:
        from dsspn_cli.files import atomic_write_text

        atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
