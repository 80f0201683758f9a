"""The DSSPN head on the shipped tree and on small trees, with a tiny stand-in backbone."""
import networkx as nx
import pytest
import torch
from torch import nn

from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import ConceptTree, load_tree
from dsspn_cli.model.config import DSSPNSettings, FlatSettings
from dsspn_cli.model.contract import Query
from dsspn_cli.model.descent import FEATURES, descend
from dsspn_cli.model.flat import FlatHead
from dsspn_cli.model.grow import grow_from
from dsspn_cli.model.head import DSSPNHead
from dsspn_cli.model.segmenter import Segmenter
from dsspn_cli.model.syncs import HostSyncCounter, on_host


class TinyBackbone(nn.Module):
    """Stride-8 features, enough to run the head end to end."""
    out_channels = 16

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 8, stride=8)

    def forward(self, x):
        return torch.relu(self.conv(x))


def dsspn(table, **head) -> Segmenter:
    return Segmenter(TinyBackbone(), DSSPNHead(table, 16, DSSPNSettings(**head)))


def flat(table, datasets) -> Segmenter:
    return Segmenter(TinyBackbone(), FlatHead(table, 16, FlatSettings(), datasets))


def random_target(table, dataset, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    labelled = torch.tensor(sorted({c for c in table.dataset(dataset).label_to_concept
                                    if c >= 0}))
    target = labelled[torch.randint(len(labelled), shape, generator=g)]
    target[:, 0, :] = -1                                   # some ignored pixels
    return target


def loss_and_grads(head, features, target, dataset, mode):
    head.zero_grad()
    loss = head(features, target, dataset, mode=mode)
    loss.backward()
    return loss.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                           for p in head.parameters()]


@pytest.mark.parametrize("storage", ["shared", "concat"])
@pytest.mark.parametrize("dataset", ["ade", "cityscapes"])
def test_dynamic_per_image_and_fixed_agree(table, storage, dataset):
    torch.manual_seed(0)
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8, storage=storage))
    features = torch.randn(3, 16, 10, 10)
    target = random_target(table, dataset, (3, 10, 10))
    reference = loss_and_grads(head, features, target, dataset, "dynamic")
    for mode in ("per_image", "fixed"):
        loss, grads = loss_and_grads(head, features, target, dataset, mode)
        assert torch.allclose(loss, reference[0], rtol=1e-5)
        for a, b in zip(grads, reference[1]):
            assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("readout", ["skip", "hidden"])
def test_images_that_activate_different_neurons_train_as_one_at_a_time(table, readout):
    """Images 0 and 1 share their neurons (one run of the stacked skip readout), image 2
    activates a subset of them, image 3 others, image 4 none: each neuron's readout is
    assembled from several runs, in batch order."""
    tree = load_tree()
    torch.manual_seed(0)
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8, readout=readout))
    features = torch.randn(5, 16, 6, 6)
    target = torch.full((5, 6, 6), tree.id("car"))
    target[:2, :3] = tree.id("person")
    target[:2, 3:, :2] = tree.id("road")
    target[3] = tree.id("tree")
    target[3, :2] = tree.id("bicycle")
    target[4] = -1
    d = head.masking.dataset_index("cityscapes")
    active = head.masking.active_neurons(target, d)
    sets = [frozenset(row.nonzero().flatten().tolist()) for row in active]
    assert sets[0] == sets[1] and sets[2] < sets[0] and sets[3] != sets[0] and not sets[4]
    reference = loss_and_grads(head, features, target, "cityscapes", "per_image")
    loss, grads = loss_and_grads(head, features, target, "cityscapes", "dynamic")
    assert torch.allclose(loss, reference[0], rtol=1e-5)
    for a, b in zip(grads, reference[1]):
        assert torch.allclose(a, b, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads)


def test_one_depth_of_neurons_reads_like_each_neuron_on_its_own(table):
    """Inference batches a depth's skip readouts into one convolution and combines the
    ancestors of siblings once: the logits are those of each neuron run alone."""
    torch.manual_seed(1)
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8)).eval()
    features = torch.randn(1, 16, 5, 7)
    depth = [k for k in range(len(head.neurons)) if table.depth[table.neuron_concept[k]] == 2]
    parents = sorted({k for k in range(len(head.neurons)) for child in depth
                      if head.inputs[child][-1] == k})
    assert len(depth) > 3 and parents
    with torch.no_grad():
        root = head.transition(features)
        alone = {-1: root, FEATURES: features}
        together = dict(alone)
        logits: dict = {}
        head._logits([0], together, logits)
        neuron_logits(head, 0, alone)
        head._logits(parents, together, logits)
        for k in parents:
            neuron_logits(head, k, alone)
        head._logits(depth, together, logits)
        for k in depth:
            assert torch.allclose(logits[k], neuron_logits(head, k, alone), atol=1e-5)
            assert torch.allclose(together[k], alone[k], atol=1e-5)


def test_active_neurons_are_the_paths_to_present_concepts(table):
    tree = load_tree()
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8))
    car = tree.id("car")
    target = torch.full((1, 4, 4), car)
    d = head.masking.dataset_index("cityscapes")
    active = head.masking.active_neurons(target, d)[0].nonzero().flatten().tolist()
    names = [table.concepts[table.neuron_concept[k]] for k in active]
    assert names == tree.ancestors("car")
    fixed = head.masking.active_neurons(target, d, fixed=True)[0]
    assert fixed.sum() > len(active)


def test_undefined_children_get_no_gradient(table):
    """Concept masking: on Cityscapes, road's Mapillary-only children are never trained."""
    torch.manual_seed(0)
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8))
    tree = load_tree()
    vehicle = tree.by_synset()["vehicle.n.01"]
    k = table.neuron_concept.index(tree.id(vehicle))
    children = [table.concepts[c] for c in table.neuron_children[k]]
    target = torch.full((2, 6, 6), tree.id("car"))
    target[1] = tree.id("bus")
    head(torch.randn(2, 16, 6, 6), target, "cityscapes").backward()
    grad = head.neurons[k].predict.weight.grad.abs().flatten(1).sum(1)
    d = table.dataset("cityscapes")
    for j, name in enumerate(children):
        assert (grad[j] > 0) == bool(d.child_mask[k][j]), name


def test_exclusive_label_trains_its_neuron_with_negatives(table):
    """ADE20K labels 'chair' and 'armchair': a 'chair' pixel says 'no armchair'."""
    tree = load_tree()
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8))
    chair = tree.id("chair")
    target = torch.full((1, 4, 4), chair)
    d = head.masking.dataset_index("ade")
    k = table.concept_neuron[chair]
    assert head.masking.active_neurons(target, d)[0, k]
    counts, child = head.masking.neuron_targets(target, k, d)
    assert counts.all() and (child == -1).all()
    assert not head.masking.neuron_targets(target, k, d, exclusive_negatives=False)[0].any()
    assert not head.masking.active_neurons(target, d, exclusive_negatives=False)[0, k]


def test_softmax_variant_trains(table):
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8, loss="softmax"))
    loss = head(torch.randn(2, 16, 6, 6), random_target(table, "ade", (2, 6, 6)), "ade")
    loss.backward()
    assert torch.isfinite(loss) and loss > 0


def small_table():
    graph = nx.DiGraph()
    graph.add_node("entity", synset=None, labels={})
    edges = [("entity", "animal", {"a": [1]}), ("entity", "vehicle", {"b": [9]}),
             ("animal", "cat", {"a": [2], "b": [5]}), ("animal", "dog", {"a": [3]}),
             ("vehicle", "car", {"a": [4], "b": [6]}), ("vehicle", "bus", {"b": [7]})]
    for parent, child, labels in edges:
        graph.add_node(child, synset=None, labels=labels)
        graph.add_edge(parent, child)
    return ConceptTree(graph, {"a": {"ignore_index": 255}, "b": {"ignore_index": 0}})


def forced_head(tree, scores):
    """A head whose neurons output fixed child logits: scores[concept] = [logit per child]."""
    table = MaskingTable.from_tree(tree)
    head = DSSPNHead(table, 4, DSSPNSettings(hidden=4))
    for k, concept in enumerate(table.neuron_concept):
        layer = head.neurons[k].predict
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(head.neurons[k].direct.weight)
        with torch.no_grad():
            layer.bias.copy_(torch.tensor(scores[table.concepts[concept]], dtype=torch.float))
    return head, table


def test_hierarchical_prediction_follows_best_children():
    tree = small_table()
    head, table = forced_head(tree, {"entity": [2.0, -1.0], "animal": [-3.0, 1.0],
                                     "vehicle": [0.0, 3.0]})
    features = torch.randn(1, 4, 3, 3)
    concepts, confidence = head.predict(features, Query(size=(6, 6)))
    assert (concepts == tree.id("dog")).all()
    expected = torch.sigmoid(torch.tensor(2.0)) * torch.sigmoid(torch.tensor(1.0))
    assert torch.allclose(confidence, expected.expand_as(confidence))
    concepts, _ = head.predict(features, Query(level=1))
    assert (concepts == tree.id("animal")).all()
    # Dataset 'b' does not define dog: the best defined child of animal is cat.
    concepts, _ = head.predict(features, Query("b"))
    assert (concepts == tree.id("cat")).all()
    labels = head.masking.concepts_to_labels(concepts, "b")
    assert (labels == 5).all()


def test_prediction_stops_at_a_labelled_concept_when_no_child_is_likely():
    tree = small_table()
    head, _ = forced_head(tree, {"entity": [2.0, -1.0], "animal": [-3.0, -2.0],
                                 "vehicle": [0.0, 0.0]})
    concepts, _ = head.predict(torch.randn(1, 4, 2, 2), Query("a"))
    assert (concepts == tree.id("animal")).all()      # 'a' labels animal, cat and dog


def test_grow_keeps_unchanged_neurons():
    tree = small_table()
    table = MaskingTable.from_tree(tree)
    small = dsspn(table, hidden=4)
    bigger_graph = tree.graph.copy()
    bigger_graph.add_node("truck", synset=None, labels={"b": [8]})
    bigger_graph.add_edge("vehicle", "truck")
    bigger = MaskingTable.from_tree(ConceptTree(bigger_graph, tree.datasets))
    grown = dsspn(bigger, hidden=4)
    report = grow_from(grown, small.state_dict(), table)
    # entity and animal keep their children; vehicle gained a truck.
    assert sorted(report.kept) == ["animal", "entity"] and report.extended == ["vehicle"]
    assert report.new == []
    for concept in ("animal", "vehicle"):
        k_old = table.neuron_concept.index(tree.id(concept))
        k_new = bigger.neuron_concept.index(bigger.concepts.index(concept))
        assert torch.equal(grown.head.neurons[k_new].reduce.weight,
                           small.head.neurons[k_old].reduce.weight)
    k_old = table.neuron_concept.index(tree.id("vehicle"))
    k_new = bigger.neuron_concept.index(bigger.concepts.index("vehicle"))
    old_rows = small.head.neurons[k_old].predict.weight
    new_rows = grown.head.neurons[k_new].predict.weight        # car, bus kept; truck fresh
    assert torch.equal(new_rows[:2], old_rows) and not torch.equal(new_rows[2], old_rows[0])
    old_direct = small.head.neurons[k_old].direct.weight     # the skip readout's rows too
    assert torch.equal(grown.head.neurons[k_new].direct.weight[:2], old_direct)
    assert torch.equal(grown.backbone.conv.weight, small.backbone.conv.weight)


def test_model_end_to_end_and_flat_baseline(table):
    torch.manual_seed(0)
    model = dsspn(table, hidden=8)
    images = torch.randn(2, 3, 64, 64)
    target = random_target(table, "cityscapes", (2, 64, 64))
    loss = model(images, target, "cityscapes")
    loss.backward()
    concepts, confidence = model.predict(images, Query("cityscapes"))
    assert concepts.shape == (2, 64, 64) and confidence.shape == (2, 64, 64)
    labels = model.concepts_to_labels(concepts, "cityscapes")
    city = table.dataset("cityscapes")
    assert set(labels.unique().tolist()) <= {i for i, c in enumerate(city.label_to_concept)
                                             if c >= 0} | {255}
    baseline = flat(table, ["cityscapes"])
    assert baseline.head.class_concept.numel() == 19       # the 19 train classes
    baseline(images, target, "cityscapes").backward()
    concepts, confidence = baseline.predict(images, Query("cityscapes"))
    assert concepts.shape == (2, 64, 64) and confidence.shape == (2, 64, 64)
    assert set(concepts.unique().tolist()) <= set(city.concept_label)


def test_batch_without_labelled_pixels_still_backpropagates(table):
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8))
    loss = head(torch.randn(2, 16, 6, 6), torch.full((2, 6, 6), -1), "ade")
    loss.backward()
    assert loss.item() == 0
    loss = flat(table, ["ade"])(torch.randn(1, 3, 64, 64), torch.full((1, 64, 64), -1), "ade")
    assert loss.item() == 0


def test_labels_are_taken_where_the_features_sit():
    from dsspn_cli.model.segmenter import subsample_target

    target = torch.arange(513)[None, None, :].expand(1, 513, 513)
    picked = subsample_target(target, (65, 65))
    assert picked[0, 0].tolist() == list(range(0, 513, 8))


def test_cut_predictions_map_to_the_nearest_labelled_ancestor():
    tree = small_table()
    head, _ = forced_head(tree, {"entity": [2.0, -1.0], "animal": [-3.0, 1.0],
                                 "vehicle": [0.0, 3.0]})
    concepts = torch.tensor([[tree.id("dog"), tree.id("entity")]])
    # 'a' labels dog (3) but not entity (its ignore value 255); 'b' labels neither dog nor
    # any of its ancestors, so dog is b's ignore value 0.
    assert head.masking.concepts_to_labels(concepts, "a").tolist() == [[3, 255]]
    assert head.masking.concepts_to_labels(torch.tensor([[tree.id("dog")]]),
                                           "b").tolist() == [[0]]


def neuron_logits(head, k, hidden):
    """Neuron k on its own: its block on its ancestors' features, its readout."""
    neuron = head.neurons[k]
    hidden[k] = neuron(torch.cat([hidden[s] for s in head.inputs[k]], 1))
    return neuron.read(hidden[k], neuron.direct(hidden[FEATURES]))


def reference_descent(head, features, size, dataset, level):
    """Yesterday's descent: each reached neuron on its own, its child maps upsampled with
    F.interpolate, every pixel on its own."""
    import torch.nn.functional as F

    masking = head.masking
    root = head.transition(features)
    d = None if dataset is None else masking.dataset_index(dataset)
    current = torch.full((root.shape[0], *size), masking.table.neuron_concept[0])
    confidence = torch.ones(current.shape)
    hidden = {-1: root, FEATURES: features}
    for step in masking.descent(dataset, level, False):
        if not (current == step.concept).any():
            continue
        logits = F.interpolate(neuron_logits(head, step.neuron, hidden), size=size,
                               mode="bilinear", align_corners=False)
        scores = head._scores(logits, step, d)
        current, confidence = descend(current, confidence, scores, step.concept,
                                      masking.neuron_children[step.neuron, :step.children],
                                      step.can_stop, 0.5)
    return current, confidence


@pytest.mark.parametrize("dataset,level", [(None, None), ("cityscapes", None), ("ade", 2),
                                           ("mapillary", None), ("coco", 3)])
def test_descent_on_cells_equals_the_descent_of_every_pixel(table, dataset, level):
    torch.manual_seed(3)
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8)).eval()
    for neuron in head.neurons:                 # decisive, spatially varied children
        neuron.predict.weight.data.mul_(20)
    features = torch.randn(2, 16, 9, 13)
    size = (67, 101)
    with torch.no_grad():
        fast = head.predict(features, Query(dataset, level, size=size))
        every = head.predict(features, Query(dataset, level, static=True, size=size))
        old = reference_descent(head, features, size, dataset, level)
    assert torch.equal(fast[0], every[0]) and torch.equal(fast[0], old[0])
    # Confidence to the last bits (a vectorised sigmoid rounds otherwise in its tail).
    assert torch.allclose(fast[1], every[1], atol=1e-6, rtol=0)
    assert torch.allclose(fast[1], old[1], atol=1e-5)
    assert fast[0].unique().numel() > 3                  # the test sees a varied map


def test_prediction_waits_on_the_device_about_once_per_depth(table):
    torch.manual_seed(0)
    head = DSSPNHead(table, 16, DSSPNSettings(hidden=8)).eval()
    features = torch.randn(2, 16, 12, 24)
    with torch.no_grad(), HostSyncCounter() as counter:
        head.predict(features, Query("cityscapes", size=(96, 192)))
    depth = max(table.depth) + 1
    assert counter.count <= 2 * depth + 2, counter.count
    with HostSyncCounter() as counter:
        head(features, random_target(table, "cityscapes", (2, 12, 24)), "cityscapes").backward()
    assert counter.count == 1, counter.count


def test_the_sync_counter_sees_every_way_the_host_reads_the_device():
    x = torch.arange(6.0)
    for read in (lambda: on_host(x), lambda: x.sum().item(), lambda: bool(x.any()),
                 lambda: int(x[2]), lambda: x.nonzero(), lambda: x.to("cpu", copy=True)):
        with HostSyncCounter() as counter:
            read()
        assert counter.count == 1
    with HostSyncCounter() as counter:
        x.long().float().mul(2).reshape(2, 3).tolist()   # no operator reads this CPU tensor
    assert counter.count == 0
    assert on_host(x.reshape(2, 3)) == [[0, 1, 2], [3, 4, 5]]


def test_classes_run_only_the_neurons_above_them_and_read_like_a_full_descent(table):
    """--classes person,vehicle,sky: the same answer as the whole descent read in those
    classes, from the neurons on their paths only."""
    torch.manual_seed(5)
    tree = load_tree()
    model = dsspn(table, hidden=8).eval()
    for neuron in model.head.neurons:
        neuron.predict.weight.data.mul_(20)
    vehicle = tree.by_synset()["vehicle.n.01"]
    classes = tuple(tree.id(n) for n in ("person", vehicle, "sky-other", "car"))
    images = torch.randn(2, 3, 96, 160)
    ran = []
    hooks = [n.register_forward_hook(lambda m, i, o, k=k: ran.append(k))
             for k, n in enumerate(model.head.neurons)]
    with torch.no_grad():
        restricted, _ = model.predict(images, Query(classes=classes))
        chosen = set(ran)
        ran.clear()
        whole, _ = model.predict(images)
    for hook in hooks:
        hook.remove()
    lut = model.masking.vocabulary(classes)
    assert torch.equal(restricted, lut[whole])
    above = {table.concept_neuron[a] for c in classes for a in table.ancestors(c)}
    assert chosen <= above and len(set(ran)) > len(chosen)
    assert set(restricted.unique().tolist()) <= {-1, 0, 1, 2, 3}
    # 'car' is below 'vehicle': a pixel that reaches car says car, not vehicle.
    assert lut[tree.id("car")] == 3 and lut[tree.id("bus")] == 1
    assert lut[tree.id("road")] == -1
