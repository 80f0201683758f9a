"""Exporting inference as one static graph (ONNX or TorchScript).

``StaticPredictor`` is the model's own ``predict`` for a dataset and level fixed at export
time, run with ``static=True``: the same descent steps, without data-dependent control flow
(every neuron of the plan runs, where eager prediction skips those no pixel reaches; the
result is the same). Input: a float image batch normalised like training (ImageNet
statistics); outputs: label map (the dataset's ids; concept ids without a dataset) and
confidence.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dsspn_cli.engine.options import check_options
from dsspn_cli.errors import UserError
from dsspn_cli.model.contract import Query


class StaticPredictor(nn.Module):
    def __init__(self, model, dataset: str | None = None, level: int | None = None):
        super().__init__()
        self.model = model.eval()
        self.dataset, self.level = dataset, level
        if dataset is not None:
            masking = model.masking
            lut = model.concepts_to_labels(torch.arange(len(masking.table.concepts),
                                                        device=masking.concept_label.device),
                                           dataset)
            self.register_buffer("to_label", lut, False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor):
        concepts, confidence = self.model.predict(images, Query(self.dataset, self.level,
                                                                static=True))
        labels = self.to_label[concepts] if self.dataset is not None else concepts
        return labels, confidence


def export(checkpoint, output, fmt: str = "onnx", dataset: str | None = None,
           level: int | None = None, size: tuple[int, int] = (512, 1024)) -> Path:
    """Write the checkpoint's hierarchical inference as ONNX or TorchScript; returns the path."""
    import io

    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.files import atomic_write_bytes

    check_options(level=level)
    model, _, tree, _ = load_model(checkpoint, "cpu")
    if dataset is not None:
        dataset = tree.dataset_name(dataset)
        tree.check_level(dataset, level)
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
