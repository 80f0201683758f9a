"""The head contract (``model/contract.py``): a third head plugs in by one file and one line of
``HEADS``; every head honours each query setting or refuses it in one line; each head's
settings are its own, and configs and checkpoints saved before that still load."""
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
import yaml
from pydantic import Field
from torch import nn

from dsspn_cli.engine.checkpoint import load_model, save_checkpoint
from dsspn_cli.engine.config import TrainConfig, resolve_config
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.tables import IGNORE
from dsspn_cli.model.config import HEADS, DSSPNSettings, FlatSettings, HeadSettings
from dsspn_cli.model.contract import Head, Query
from dsspn_cli.model.flat import FlatHead
from dsspn_cli.model.grid import FeatureGrid
from dsspn_cli.model.head import DSSPNHead
from dsspn_cli.model.segmenter import Segmenter, build_model

# ------------------------------------------------------------------ a third head, in one file

class ToySettings(HeadSettings):
    type: Literal["toy"] = "toy"
    kernel: Literal[1, 3] = Field(1, description="kernel of its one convolution")


class ToyHead(Head):
    """One logit per concept of the tree, a softmax over them."""

    Settings = ToySettings

    def __init__(self, table, in_channels, settings=None, datasets=None):
        super().__init__(table, in_channels, settings, datasets)
        self.classify = nn.Conv2d(in_channels, len(table.concepts), self.settings.kernel,
                                  padding=self.settings.kernel // 2)

    def forward(self, features, target, dataset):
        return F.cross_entropy(self.classify(features), target, ignore_index=IGNORE)

    @torch.no_grad()
    def predict(self, features, query=Query()):
        for setting in ("dataset", "level", "threshold"):
            if getattr(query, setting) is not None:
                self.refuse(setting, getattr(query, setting), "answers in every concept")
        logits = self.classify(features).float()
        grid = FeatureGrid(logits.shape[-2:], query.size or logits.shape[-2:], query.stride)
        confidence, concepts = grid.upsample(logits).softmax(1).max(1)
        return concepts, confidence


@pytest.fixture
def toy(monkeypatch):
    """The one table line that registers the toy head."""
    monkeypatch.setitem(HEADS, "toy", f"{__name__}:ToyHead")


def test_a_third_head_plugs_in_by_one_table_line(toy, table, tree, tmp_path):
    config, _ = resolve_config(None, {"data": {"cityscapes": "/d"}},
                               ["head.type=toy", "head.kernel=3"])
    assert config.head == ToySettings(kernel=3)
    torch.manual_seed(0)
    model = build_model(table, config, ["cityscapes"], pretrained=False)
    assert type(model.head) is ToyHead
    images = torch.randn(2, 3, 64, 64)
    target = torch.full((2, 64, 64), tree.id("car"))
    model(images, target, "cityscapes").backward()
    assert model.head.classify.weight.grad.abs().sum() > 0
    concepts, confidence = model.eval().predict(images)
    assert concepts.shape == confidence.shape == (2, 64, 64)
    classes, _ = model.predict(images, Query(classes=[tree.id("car")]))
    assert torch.equal(classes, model.masking.vocabulary([tree.id("car")])[concepts])
    with pytest.raises(UserError, match="^dataset cityscapes: the toy head answers"):
        model.predict(images, Query("cityscapes"))
    # Saved and loaded as any model: the checkpoint's config names the head.
    path = save_checkpoint(tmp_path / "toy.pt", model=model, tree=tree, step=0, epoch=0,
                           config=config.to_dict(), datasets=["cityscapes"])
    loaded, *_, saved = load_model(path)
    assert saved.head == ToySettings(kernel=3) and type(loaded.head) is ToyHead
    assert torch.equal(loaded.predict(images)[0], concepts)


def test_a_head_takes_its_own_settings_only(table):
    with pytest.raises(TypeError, match="FlatHead takes FlatSettings, not DSSPNSettings"):
        FlatHead(table, 16, DSSPNSettings())
    assert DSSPNHead(table, 16).settings == DSSPNSettings()


# --------------------------------------------------------------------- honour or refuse

class Tiny(nn.Module):
    out_channels, output_stride = 16, 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 8, stride=8)

    def forward(self, x):
        return torch.relu(self.conv(x))


def models(table):
    torch.manual_seed(0)
    dsspn = Segmenter(Tiny(), DSSPNHead(table, 16, DSSPNSettings(hidden=8))).eval()
    for neuron in dsspn.head.neurons:               # decisive, varied choices
        neuron.predict.weight.data.mul_(20)
    flat = Segmenter(Tiny(), FlatHead(table, 16, FlatSettings(), ["cityscapes", "ade"]))
    for branch in flat.head.branches:               # peaked probabilities, as trained ones
        branch.weight.data.mul_(20)
    return {"dsspn": dsspn, "flat": flat.eval()}


def _summed(model, images, lut, count):
    """The flat head's answer in classes, MSeg's way: each class's (and 'other''s) summed
    softmax probability, the largest winning; -1 for other."""
    from dsspn_cli.model.grid import FeatureGrid

    logits = model.head.logits(model.backbone(images), None)
    grid = FeatureGrid(logits.shape[-2:], images.shape[-2:], model.stride)
    probabilities = grid.upsample(logits).softmax(1)
    group = lut[model.head.class_concept] % (count + 1)          # -1 (other) -> count
    sums = torch.zeros(probabilities.shape[0], count + 1, *probabilities.shape[2:])
    sums.index_add_(1, group, probabilities)
    winner = sums.argmax(1)
    return torch.where(winner == count, -1, winner)


def test_classes_are_sets_of_concepts():
    query = Query(classes=(3, {4, 5}, [6]))
    assert query.classes == (frozenset({3}), frozenset({4, 5}), frozenset({6}))
    assert hash(query) == hash(Query(classes=[frozenset({3}), (4, 5), 6]))


@pytest.mark.parametrize("head", ["dsspn", "flat"])
def test_every_head_reads_its_answer_in_the_classes(table, tree, head):
    """A class made of several concepts (a union) is the class of each of them; DSSPN's
    answer reads in the classes as its whole answer does, the flat head's sums its
    probabilities into each class (MSeg's way)."""
    model = models(table)[head]
    images = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    whole, _ = model.predict(images)
    seen, counts = whole.unique(return_counts=True)
    c = [tree.names[i] for i in seen[counts.argsort(descending=True)].tolist()]
    assert len(c) >= 4
    classes = ({tree.id(c[0]), tree.id(c[1])}, tree.id(tree.parent(c[2])), tree.id(c[3]))
    restricted, _ = model.predict(images, Query(classes=classes))
    lut = model.masking.vocabulary(classes)
    assert torch.equal(restricted, lut[whole] if head == "dsspn" else
                       _summed(model, images, lut, len(classes)))
    assert lut[tree.id(c[0])] == lut[tree.id(c[1])] == 0 and lut[tree.id(c[2])] == 1
    assert set(restricted.unique().tolist()) >= {0, 1}
    vehicle = tree.id(tree.by_synset()["vehicle.n.01"])
    lut = model.masking.vocabulary(({tree.id("car"), tree.id("bus")}, vehicle))
    assert lut[tree.id("car")] == lut[tree.id("bus")] == 0 and lut[tree.id("truck")] == 1
    assert lut[tree.id("road")] == -1


@pytest.mark.parametrize("head", ["dsspn", "flat"])
def test_every_head_honours_static(table, head):
    model = models(table)[head]
    images = torch.randn(1, 3, 64, 96)
    for dataset, level in ((None, None), ("cityscapes", None), ("ade", 2)):
        eager = model.predict(images, Query(dataset, level))
        static = model.predict(images, Query(dataset, level, static=True))
        assert torch.equal(eager[0], static[0])
        assert torch.allclose(eager[1], static[1], atol=1e-6)


def test_a_threshold_is_honoured_by_bce_and_refused_by_a_softmax(table):
    model = models(table)
    images = torch.randn(1, 3, 64, 96)
    low = model["dsspn"].predict(images, Query("ade", threshold=0.0))[0]
    high = model["dsspn"].predict(images, Query("ade", threshold=1.0))[0]
    assert torch.equal(low, model["dsspn"].predict(images, Query("ade", threshold=0.0))[0])
    assert not torch.equal(low, high)              # 'none of them' stops pixels earlier
    refusals = [(model["flat"], "the flat head has no 'none of them'")]
    softmax = DSSPNHead(table, 16, DSSPNSettings(hidden=8, loss="softmax"))
    refusals.append((Segmenter(Tiny(), softmax).eval(), "the dsspn head with loss softmax"))
    for refusing, says in refusals:
        with pytest.raises(UserError) as caught:
            refusing.predict(images, Query(threshold=0.7))
        assert str(caught.value).startswith(f"threshold 0.7: {says}")
        assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------- settings of its own

ONE_FOR_BOTH = {**DSSPNSettings().model_dump(mode="json"), "flat_rates": [6, 12, 18, 24]}


def test_configs_saved_before_each_head_had_its_own_settings_still_load():
    """Then one HeadConfig held the settings of both heads, every one saved."""
    dsspn = TrainConfig.model_validate({"head": {**ONE_FOR_BOTH, "hidden": 8,
                                                 "flat_rates": [3]}})
    assert dsspn.head == DSSPNSettings(hidden=8)
    flat = TrainConfig.model_validate({"head": {**ONE_FOR_BOTH, "type": "flat", "hidden": 8,
                                                "flat_rates": [3, 6]}})
    assert flat.head == FlatSettings(flat_rates=(3, 6))
    assert flat.to_dict()["head"] == {"type": "flat", "flat_rates": [3, 6]}
    assert set(dsspn.to_dict()["head"]) == set(DSSPNSettings.model_fields)
    assert TrainConfig.model_validate(yaml.safe_load(yaml.safe_dump(flat.to_dict()))) == flat


def test_checkpoints_saved_before_each_head_had_its_own_settings_still_load(table, tree,
                                                                           tmp_path):
    torch.manual_seed(0)
    for head in ({"type": "dsspn", "hidden": 8}, {"type": "flat", "flat_rates": [6, 12]}):
        config = TrainConfig(backbone="resnet18", output_stride=16, head=head)
        model = build_model(table, config, pretrained=False)
        before = {**config.to_dict(), "head": {**ONE_FOR_BOTH, "hidden": 8, **head}}
        path = save_checkpoint(tmp_path / f"{head['type']}.pt", model=model, tree=tree,
                               config=before, step=0, epoch=0)
        loaded, *_, saved = load_model(path)
        assert saved == config and type(loaded.head) is type(model.head)
        for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(a, b), name


def test_set_reaches_the_heads_settings():
    config, _ = resolve_config(None, {}, ["head.hidden=64"])
    assert config.head == DSSPNSettings(hidden=64)
    config, _ = resolve_config(None, {"head.type": "flat"}, ["head.flat_rates=[6, 12]"])
    assert config.head == FlatSettings(flat_rates=(6, 12))
    # Another head's setting at its default changes nothing: a config file written for
    # DSSPN trains the flat baseline with everything else equal.
    config, _ = resolve_config(None, {"head.type": "flat"}, ["head.hidden=48"])
    assert config.head == FlatSettings()


@pytest.mark.parametrize("options,sets,says", [
    ({}, ["head.flat_rates=[6]"], "--set head.flat_rates=[6]: head.flat_rates: a setting of "
     "the flat head (--head flat), not of the dsspn head (got [6])"),
    ({"head.type": "flat"}, ["head.hidden=64"], "--set head.hidden=64: head.hidden: a setting "
     "of the dsspn head (--head dsspn), not of the flat head (got 64)"),
    ({"head.type": "flat"}, ["head.flat_rate=[6]"], "unknown setting 'head.flat_rate' (did "
     "you mean 'flat_rates'?); known: flat_rates, type"),
    ({}, ["head.type=nope"], "head.type: input should be 'dsspn' or 'flat'"),
])
def test_a_setting_no_chosen_head_has_is_refused_in_one_line(options, sets, says):
    with pytest.raises(UserError) as caught:
        resolve_config(None, options, sets, {"head.type": "--head"})
    assert says in str(caught.value) and "\n" not in str(caught.value)
