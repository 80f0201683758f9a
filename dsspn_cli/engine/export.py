"""Exporting hierarchical inference as one static graph (ONNX or TorchScript).

``StaticPredictor`` computes what ``DSSPNHead.predict`` computes, for a dataset and level
fixed at export time, without data-dependent control flow: every neuron runs on every image,
and each pixel's descent is a chain of ``where`` over the concept map. (``predict`` skips the
neurons no pixel reaches; skipping changes nothing in the result, only the cost.)
Input: a float image batch normalised like training (ImageNet statistics); outputs: label map
(the dataset's ids; concept ids without a dataset) and confidence.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dsspn_cli.errors import UserError


class StaticPredictor(nn.Module):
    def __init__(self, model, dataset: str | None = None, level: int | None = None,
                 threshold: float = 0.5):
        super().__init__()
        self.model = model.eval()
        head = model.head
        tree = head.tree
        self.d = None if dataset is None else tree.dataset_index(dataset)
        self.root_concept = int(tree.neuron_concept[0])
        self.dataset = dataset
        self.threshold = threshold
        # Static per-neuron decisions, resolved now: which neurons can move pixels, which
        # children are allowed, whether a pixel may stop at the neuron's concept.
        self.plan = []
        for k in range(len(head.neurons)):
            if level is not None and int(tree.neuron_depth[k]) >= level:
                continue
            count = head.neurons[k].predict.out_channels
            allowed = (tree.child_mask[self.d, k, :count] if self.d is not None
                       else torch.ones(count, dtype=torch.bool))
            if not bool(allowed.any()):
                continue
            concept = int(tree.neuron_concept[k])
            stoppable = (bool(tree.exclusive[self.d, concept]) if self.d is not None
                         else bool(tree.labelled_any[concept])) and head.config.loss == "bce"
            self.plan.append((k, concept, stoppable))
            self.register_buffer(f"allowed_{k}", allowed.clone(), False)
            self.register_buffer(f"children_{k}", tree.neuron_children[k, :count].clone(), False)
        if self.d is not None:
            ignore = tree.table.datasets[dataset].ignore_index
            lut = torch.where(tree.concept_label_up[self.d] >= 0, tree.concept_label_up[self.d],
                              torch.full_like(tree.concept_label_up[self.d], ignore))
            self.register_buffer("to_label", lut, False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor):
        model = self.model
        head = model.head
        size = images.shape[-2:]
        features = model.backbone(images)
        root = head.transition(features)
        current = torch.full((images.shape[0], size[0], size[1]), self.root_concept,
                             dtype=torch.long, device=images.device)
        confidence = torch.ones(current.shape, dtype=images.dtype, device=images.device)
        hidden = {}
        wanted = {k for k, _, _ in self.plan}
        for k, neuron in enumerate(head.neurons):
            needed = k in wanted or any(k in head.ancestors[j] for j in wanted)
            if not needed:
                continue
            inputs = [root] + [hidden[a] for a in head.ancestors[k]]
            hidden[k] = neuron.hidden(neuron.bottleneck(torch.cat(inputs, 1)))
        for k, concept, stoppable in self.plan:
            neuron = head.neurons[k]
            logits = F.interpolate(neuron.predict(hidden[k]), size=size, mode="bilinear",
                                   align_corners=False)
            scores = torch.sigmoid(logits) if head.config.loss == "bce" else logits.softmax(1)
            allowed = getattr(self, f"allowed_{k}")
            scores = torch.where(allowed[None, :, None, None], scores,
                                 torch.full_like(scores, -1.0))
            best, index = scores.max(1)
            move = current == concept
            if stoppable:
                move = move & (best >= self.threshold)
            children = getattr(self, f"children_{k}")
            current = torch.where(move, children[index], current)
            confidence = torch.where(move, confidence * best, confidence)
        labels = self.to_label[current] if self.d is not None else current
        return labels, confidence


def export(checkpoint, output, fmt: str = "onnx", dataset: str | None = None,
           level: int | None = None, size: tuple[int, int] = (512, 1024)) -> Path:
    """Write the checkpoint's hierarchical inference as ONNX or TorchScript; returns the path."""
    import io

    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.io import atomic_write_bytes

    model, _, tree, _ = load_model(checkpoint, "cpu")
    if dataset is not None:
        dataset = tree.dataset_name(dataset)
    predictor = StaticPredictor(model, dataset, level).eval()
    example = torch.zeros(1, 3, *size)
    buffer = io.BytesIO()
    with torch.no_grad():
        if fmt == "torchscript":
            import warnings

            with warnings.catch_warnings():     # TorchScript is deprecated, and asked for
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = torch.jit.trace(predictor, example, check_trace=False)
                torch.jit.save(traced, buffer)
        elif fmt == "onnx":
            try:
                import onnx  # noqa: F401  (the exporter needs it)
            except ImportError:
                raise UserError("--format onnx needs the onnx package: pip install onnx "
                                "onnxscript (onnxruntime to run the file)") from None
            torch.onnx.export(predictor, (example,), buffer, input_names=["image"],
                              output_names=["labels", "confidence"], opset_version=17,
                              dynamo=False)
        else:
            raise UserError(f"--format {fmt}: use onnx or torchscript")
    return atomic_write_bytes(output, buffer.getvalue())
