"""Exporting inference as one static graph (ONNX or TorchScript).

``StaticPredictor`` is the model's own ``predict`` for a dataset, level and vocabulary fixed
at export time, run with ``static=True``: the same descent steps, without data-dependent
control flow (every neuron of the plan runs, where eager prediction skips those no pixel
reaches; the result is the same). Input: a float image batch, N x 3 x H x W RGB, normalised
like training (``pixel / 255``, then ImageNet mean and std per channel); any batch and size.
Outputs: label map (the classes' ids with a vocabulary, the dataset's ids with a dataset,
concept ids otherwise) and confidence; with a hedging threshold fixed at export
(``--hedge-threshold``, ``model/hedging.py``) a third, ``concepts``: the concept each pixel
stopped at, which the labels cannot always name ('vehicle' where a dataset labels only its
kinds).

The file carries what a user needs to run it without dsspn (``metadata``): the
normalisation, the input layout, the outputs, and the id and name of every label it writes;
in ONNX's ``metadata_props`` (one string each, JSON where structured), in TorchScript as the
extra file ``metadata.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from dsspn_cli.engine.options import check_options
from dsspn_cli.errors import UserError
from dsspn_cli.model.contract import Query
from dsspn_cli.model.hedging import check_threshold, hedge

METADATA_FILE = "metadata.json"       # TorchScript's extra file
AXES = {"image": {0: "batch", 2: "height", 3: "width"},
        "labels": {0: "batch", 1: "height", 2: "width"},
        "confidence": {0: "batch", 1: "height", 2: "width"},
        "concepts": {0: "batch", 1: "height", 2: "width"}}      # hedged exports only


class StaticPredictor(nn.Module):
    """``choice``: a vocabulary (``engine.predict.ClassChoice``); the labels are then its
    classes' ids, and its 'other' id where none of them."""

    def __init__(self, model, dataset: str | None = None, level: int | None = None,
                 choice=None, hedge: float | None = None):
        super().__init__()
        self.model = model.eval()
        self.dataset, self.level, self.hedge = dataset, level, hedge
        self.classes = choice.sets if choice is not None else None
        # The tables ``Predictor.labels`` reads: ``ClassChoice.value_ids`` and
        # ``predict.dataset_labels``.
        if choice is not None:
            # Class index k -> its id; the last entry, for index -1, is 'other'. Hedged, a
            # pixel above some classes is 'other' in the labels (its concept is an output).
            ids = choice.value_ids(len(model.masking.table.concepts) if hedge is not None
                                   else 0)
            self.register_buffer("to_label", torch.tensor(ids, dtype=torch.long), False)
        elif dataset is not None:
            from dsspn_cli.engine.predict import dataset_labels

            lut = torch.from_numpy(dataset_labels(model, dataset))
            self.register_buffer("to_label", lut.to(model.masking.concept_label.device), False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor):
        query = Query(self.dataset, self.level, self.classes, static=True)
        if self.hedge is None:
            values, confidence = self.model.predict(images, query)
            return self._labels(values), confidence
        # Hedged, the concept each pixel stopped at is an output of its own: the labels
        # have no id for 'vehicle' where the dataset or the classes name only its kinds.
        concepts, confidence = hedge(*self.model.levels(images, query), self.hedge)
        values = concepts
        if self.classes is not None:
            values = self.model.masking.hedged_vocabulary(self.classes)[concepts]
        return self._labels(values), confidence, concepts

    def _labels(self, values: torch.Tensor) -> torch.Tensor:
        if self.classes is not None:
            other = torch.full_like(values, len(self.classes))
            return self.to_label[torch.where(values < 0, other, values)]
        return self.to_label[values] if self.dataset is not None else values


def metadata(model, tree, dataset: str | None, level: int | None, choice=None,
             head: str | None = None, backbone: str | None = None,
             hedge: float | None = None) -> dict:
    """What a user of the exported file needs, as JSON-ready values: the input's layout and
    normalisation, the outputs, the labels written (id, name, the tree's concepts) and
    where they come from."""
    from dsspn_cli import __version__
    from dsspn_cli.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    names = tree.names
    if choice is not None:
        labels = [{"id": int(i), "name": name, "concepts": [names[c] for c in sorted(s)]}
                  for i, name, s in zip(choice.ids, choice.names, choice.sets)]
        labels_are, none = "the chosen classes' ids", {"id": int(choice.other),
                                                        "name": "other"}
    elif dataset is not None:
        from dsspn_cli.engine.predict import label_colours

        readable, _ = label_colours(tree, dataset)
        table = model.masking.table.datasets[dataset]
        labels = [{"id": i, "name": readable.get(i, names[c]), "concepts": [names[c]]}
                  for i, c in enumerate(table.label_to_concept) if c >= 0]
        labels_are, none = f"{dataset} label ids", {"id": int(table.ignore_index),
                                                     "name": "ignore"}
    else:
        labels = [{"id": i, "name": n, "concepts": [n]} for i, n in enumerate(names)]
        labels_are, none = "concept ids of the model's tree", None
    outputs = (f"labels: int64 N x H x W, {labels_are}; confidence: float32 N x H x W "
               "in [0, 1]")
    hedged = {}
    if hedge is not None:
        outputs += ("; concepts: int64 N x H x W, the concept of the tree each pixel stopped "
                    f"at (the deepest on its path whose confidence exceeds {hedge:g}; its "
                    "label where the labels have one, else the 'none' id)")
        hedged = {"hedge_threshold": hedge,
                  "concepts": [{"id": i, "name": n, "depth": len(tree.ancestors(n))}
                               for i, n in enumerate(names)]}
    return {
        "dsspn_version": __version__,
        "input": "image: float32 N x 3 x H x W (NCHW), RGB, any batch and size; each "
                 "pixel scaled to 0-1 (value / 255), then (x - mean) / std per channel",
        "input_layout": "NCHW",
        "input_channels": "RGB",
        "input_scale": 1 / 255,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "outputs": outputs,
        "labels": labels,
        "none": none,           # the id written where no label applies (None: never)
        "dataset": dataset,
        "level": level,
        "head": head,
        "backbone": backbone,
        **hedged,
    }


def export(checkpoint, output, fmt: str = "onnx", dataset: str | None = None,
           level: int | None = None, size: tuple[int, int] = (512, 1024),
           classes: str | None = None, labelset: str | Path | None = None,
           hedge: float | None = None) -> Path:
    """Write the checkpoint's hierarchical inference as ONNX or TorchScript, for any batch
    and image size (``size``: the example it is traced with), with its ``metadata``;
    ``classes``/``labelset``: in that vocabulary (``predict.choose_classes``); ``hedge``: a
    fixed hedging threshold, with the concept each pixel stopped at as a third output.
    Returns the path."""
    import io

    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.engine.predict import choose_classes
    from dsspn_cli.files import atomic_write_bytes

    if fmt not in ("onnx", "torchscript"):
        raise UserError(f"--format {fmt}: use onnx or torchscript")
    check_options(level=level)
    hedge = check_threshold(hedge)
    model, _, tree, config = load_model(checkpoint, "cpu")
    if dataset is not None:
        dataset = tree.dataset_name(dataset)
        tree.check_level(dataset, level)
    choice = choose_classes(tree, classes, labelset)
    predictor = StaticPredictor(model, dataset, level, choice, hedge).eval()
    info = metadata(model, tree, dataset, level, choice, config.head.type, config.backbone,
                    hedge)
    example = torch.zeros(1, 3, *size)
    buffer = io.BytesIO()
    with torch.no_grad():
        # One small run first builds the tables a query needs (plans, vocabularies, the flat
        # head's partitions), so that the trace holds them as constants.
        predictor(torch.zeros(1, 3, 32, 32))
        if fmt == "torchscript":
            import warnings

            with warnings.catch_warnings():     # TorchScript is deprecated, and asked for
                warnings.simplefilter("ignore", DeprecationWarning)
                traced = torch.jit.trace(predictor, example, check_trace=False)
                torch.jit.save(traced, buffer, _extra_files={
                    METADATA_FILE: json.dumps(info, indent=1)})
            data = buffer.getvalue()
        else:
            try:
                import onnx
            except ImportError:
                raise UserError("--format onnx needs the onnx package: pip install onnx "
                                "onnxscript (onnxruntime to run the file)") from None
            outputs = ["labels", "confidence"] + (["concepts"] if hedge is not None else [])
            torch.onnx.export(predictor, (example,), buffer, input_names=["image"],
                              output_names=outputs, opset_version=17,
                              dynamic_axes={k: AXES[k] for k in ["image", *outputs]},
                              dynamo=False)
            graph = onnx.load_from_string(buffer.getvalue())
            onnx.helper.set_model_props(graph, onnx_metadata(info))
            data = graph.SerializeToString()
    return atomic_write_bytes(output, data)


def onnx_metadata(info: dict) -> dict[str, str]:
    """ONNX metadata holds strings: text as it is, anything else as JSON."""
    return {key: value if isinstance(value, str) else json.dumps(value)
            for key, value in info.items()}


__all__ = ["StaticPredictor", "export", "metadata", "onnx_metadata", "METADATA_FILE"]
