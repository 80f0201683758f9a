"""The two pages (issue 23): the concept tree (hierarchy show --format html) and the page of
a folder of predictions (predict --html). Their data and files are checked here always;
the pages themselves in a real browser (Debian's headless Chromium, driven by selenium
through chromedriver), skipped with one line where it is not installed (.ci/run installs
it)."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from dsspn_cli.engine.checkpoint import save_checkpoint
from dsspn_cli.engine.config import TrainConfig
from dsspn_cli.engine.predict import predict
from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import ConceptTree, load_tree
from dsspn_cli.model.segmenter import build_model
from dsspn_cli.pages import build, data_json
from dsspn_cli.pages.predictions import PredictionPages, block_percent, page_nodes
from dsspn_cli.pages.tree import tree_data, tree_page

HOSTILE = "</script><b>bold</b>"
HOSTILE_LABEL = "</script><script>alert(1)</script>"


# ------------------------------------------------------------------------------- helpers


def page_data(html: str) -> dict:
    """The JSON a page carries, read back as the page's script reads it."""
    found = re.search(r'<script type="application/json" id="dsspn-data">(.*?)</script>', html,
                      re.S)
    assert found, "no data element"
    return json.loads(found.group(1))


def image_data(script: str) -> tuple[str, dict]:
    """The key and data of a NAME_page.js."""
    found = re.fullmatch(r"dsspnImage\((\".*?\"), (\{.*\})\);\n", script, re.S)
    assert found, script[:200]
    return json.loads(found.group(1)), json.loads(found.group(2))


def decoded_map(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, confidence in percent) of an image's page data, decoded as the page does: the
    confidence of each block of pixels given to every pixel of the block."""
    found = []
    for field, mode in (("nodes", "RGB"), ("confidence", "L")):
        assert data[field].startswith("data:image/png;base64,")
        raw = base64.b64decode(data[field].split(",", 1)[1])
        with Image.open(io.BytesIO(raw)) as image:
            assert image.mode == mode
            found.append(np.asarray(image).astype(np.int64))
    pixels, blocks = found
    assert not pixels[..., 2].any()
    block = data["confidenceBlock"]
    assert blocks.shape == (-(-data["height"] // block), -(-data["width"] // block))
    confidence = blocks.repeat(block, 0).repeat(block, 1)[:data["height"], :data["width"]]
    return pixels[..., 0] * 256 + pixels[..., 1], confidence


def hostile_tree(folder):
    """A tree whose concept and label names are HTML, and which ends scripts."""
    (folder / "mine.yaml").write_text(
        "name: mine\nignore_index: 255\nlabels:\n"
        "- {id: 0, name: '<b>vehicle</b>', synset: vehicle.n.01}\n"
        f"- {{id: 1, name: '{HOSTILE_LABEL}', synset: car.n.01}}\n"
        "- {id: 2, name: 'a & b', synset: thing.n.12}\n"
        "- {id: 3, name: sky, synset: sky.n.01}\n")
    path = folder / "tree.yaml"
    path.write_text(
        "format: dsspn-concept-tree\nversion: 1\nmax_depth: 5\n"
        "datasets:\n  mine: {labelset: mine.yaml, ignore_index: 255}\n"
        "tree:\n  name: entity\n  synset: entity.n.01\n  children:\n"
        f"  - name: '{HOSTILE}'\n    synset: vehicle.n.01\n    labels: {{mine: [0]}}\n"
        "    children:\n"
        "    - {name: car, synset: car.n.01, labels: {mine: [1]}}\n"
        "    - {name: 'a & b <!-- c', labels: {mine: [2]}}\n"
        "  - {name: sky, synset: sky.n.01, labels: {mine: [3]}}\n")
    return path


def big_tree(count=2000, fanout=6) -> ConceptTree:
    """A tree of ``count`` concepts, ``fanout`` children each, some labelled."""
    graph = nx.DiGraph()
    graph.add_node("c0", synset="entity.n.01", labels={}, kind="concept")
    for i in range(1, count):
        graph.add_node(f"c{i}", synset=None, kind="concept",
                       labels={"synthetic": [i]} if i % 3 == 0 else {})
        graph.add_edge(f"c{(i - 1) // fanout}", f"c{i}")
    return ConceptTree(graph, {"synthetic": {"labelset": "synthetic.yaml",
                                             "ignore_index": 255}})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(backbone="resnet18", output_stride=8, head={"hidden": 8})
    model = build_model(MaskingTable.from_tree(tree), config)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, model=model, tree=tree, config=config.to_dict(), step=0, epoch=0)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two small images, one in a sub-folder under a name a URL must escape."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, (height, width) in (("a.png", (64, 96)), ("sub/b #1%.jpg", (80, 120))):
        base = np.zeros((height, width, 3), np.uint8)
        base[: height // 2] = (70, 130, 180)
        base[height // 2:, : width // 2] = (128, 64, 128)
        base[height // 2:, width // 2:] = (107, 142, 35)
        pixels = np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)
    return folder


def predicted(checkpoint, images, out, **options):
    predict(checkpoint, [images], out=out, html=True, workers=0, **options)
    return page_data((out / "index.html").read_text())


def labels_png(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.int64)


# ------------------------------------------------------------------------------- tree page


def test_tree_page_is_one_file_with_every_concept_and_no_network(tmp_path, run, tree):
    result = run("hierarchy", "show", "--format", "html", "-o", tmp_path / "tree.html")
    assert result.exit_code == 0, result.stderr
    html = (tmp_path / "tree.html").read_text()
    # Nothing fetched: no address, no file beside it, no external stylesheet or script.
    assert not re.search(r"\b(src|href)\s*=|https?:|url\(|@import", html)
    assert "<link" not in html and "default-src 'none'" in html
    data = page_data(html)
    assert [c["name"] for c in data["concepts"]] == tree.names
    assert [c["id"] for c in data["concepts"]] == list(range(len(tree)))
    car = next(c for c in data["concepts"] if c["name"] == "car")
    assert car["synset"] == "car.n.01" and "motor vehicle" in car["definition"]
    assert car["labels"]["coco"] == [[2, "car"]] and car["neuron"] is None
    assert car["labels"]["cityscapes"] == [[26, "car"]]
    plant = next(c for c in data["concepts"] if c["name"] == "plant-stuff")
    assert plant["labels"]["cityscapes"] == [[21, "vegetation"]]
    assert plant["neuron"] == tree.neurons.index("plant-stuff")
    assert data["wordnet"] and data["fold"] == 3
    assert [d["name"] for d in data["datasets"]] == list(tree.datasets)
    # A dataset's part keeps the tree's ids; --depth is where the page opens.
    run("hierarchy", "show", "--format", "html", "--dataset", "cityscapes", "--depth", "1",
        "-o", tmp_path / "city.html")
    data = page_data((tmp_path / "city.html").read_text())
    assert data["fold"] == 1 and len(data["concepts"]) < len(tree)
    assert all(c["id"] == tree.id(c["name"]) for c in data["concepts"])
    parents = [data["concepts"][c["parent"]]["name"] if c["parent"] is not None else None
               for c in data["concepts"]]
    assert parents == [tree.parent(c["name"]) for c in data["concepts"]]


def test_tree_page_needs_an_output_and_writes_atomically(tmp_path, run):
    result = run("hierarchy", "show", "--format", "html")
    assert result.exit_code == 2 and "--format html needs -o FILE.html" in result.stderr
    (tmp_path / "link.html").symlink_to(tmp_path / "elsewhere.html")
    result = run("hierarchy", "show", "--format", "html", "-o", tmp_path / "link.html")
    assert result.exit_code == 2 and not (tmp_path / "elsewhere.html").exists()


def test_names_are_escaped_everywhere(tmp_path, run):
    path = hostile_tree(tmp_path)
    assert run("hierarchy", "show", path, "--format", "html", "-o", tmp_path / "t.html"
               ).exit_code == 0
    html = (tmp_path / "t.html").read_text()
    assert HOSTILE not in html and "<b>" not in html and "<!-- c" not in html
    assert html.count("</script>") == 3          # the data and the two inlined scripts
    data = page_data(html)
    names = [c["name"] for c in data["concepts"]]
    assert HOSTILE in names and "a & b <!-- c" in names
    car = next(c for c in data["concepts"] if c["name"] == "car")
    assert car["labels"]["mine"] == [[1, HOSTILE_LABEL]]
    # JSON for a script, in a page or a JS file: no character that ends or breaks one.
    text = data_json({"x": "</script>\u2028<!--&"})
    assert not set(text) & set("<>&\u2028") and json.loads(text)["x"] == "</script>\u2028<!--&"


def test_tree_page_labels_carry_each_ids_readable_name(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nignore_index: 255\nlabels:\n"
        "- {id: 0, name: car, synset: car.n.01, readable: Car}\n"
        "- {id: 1, name: sky, synset: sky.n.01}\n"
        "- {id: 3, name: cloud, synset: cloud.n.02, readable: Clouds}\n")
    (tmp_path / "tree.yaml").write_text(
        "format: dsspn-concept-tree\nversion: 1\nmax_depth: 5\n"
        "datasets:\n  mine: {labelset: mine.yaml, ignore_index: 255}\n"
        "tree:\n  name: entity\n  synset: entity.n.01\n  children:\n"
        "  - {name: car, synset: car.n.01, labels: {mine: [0]}}\n"
        "  - {name: sky, synset: sky.n.01, labels: {mine: [3, 1, 2]}}\n")
    monkeypatch.chdir(tmp_path.parent)               # the label set is found beside the tree
    data = tree_data(load_tree(tmp_path / "tree.yaml"), wordnet_dir=tmp_path)
    labels = {c["name"]: c["labels"] for c in data["concepts"]}
    assert labels["car"] == {"mine": [[0, "Car"]]}
    assert labels["sky"] == {"mine": [[3, "Clouds"], [1, "sky"], [2, "label 2"]]}


def test_without_wordnet_the_page_says_so(tmp_path, monkeypatch):
    from dsspn_cli.hierarchy import wordnet

    def missing(user_dir=None):
        raise UserError("WordNet 3.0 not found; install it")
    monkeypatch.setattr(wordnet, "wordnet", missing)
    data = page_data(tree_page(load_tree(hostile_tree(tmp_path))))
    assert data["wordnet"] is False and "not found" in data["wordnetProblem"]
    assert all(c["definition"] is None for c in data["concepts"])


def test_the_tree_page_does_not_import_torch(tmp_path):
    code = ("import sys\nfrom dsspn_cli.cli.main import main\n"
            f"try:\n    main(['hierarchy', 'show', '--format', 'html', '-o', "
            f"{str(tmp_path / 't.html')!r}])\nexcept SystemExit as e:\n    assert not e.code\n"
            "print([m for m in ('torch', 'pydantic') if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("[]")


def test_a_template_cannot_end_its_element_early(monkeypatch):
    import dsspn_cli.pages as pages

    real = pages.template
    monkeypatch.setattr(pages, "template", lambda name: "x = '</script>';" if name.endswith(
        ".js") else real(name))
    with pytest.raises(RuntimeError, match="would end the inlined element"):
        build("tree.html", {})


def test_the_wheel_carries_the_templates(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True)
    (wheel,) = wheels.glob("dsspn-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (REPO / "dsspn_cli" / "pages").iterdir()
                     if p.suffix in (".html", ".css", ".js"))
    assert len(shipped) == 8
    for name in shipped:
        assert f"dsspn_cli/pages/{name}" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                    str(site), str(wheel)], check=True)
    proc = subprocess.run([sys.executable, "-m", "dsspn_cli", "hierarchy", "show", "--format",
                           "html", "-o", str(tmp_path / "t.html")], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(site)), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(page_data((tmp_path / "t.html").read_text())["concepts"]) == 345


# ------------------------------------------------------------------------------- predict page


def test_predict_html_writes_compact_data_that_matches_the_labels(checkpoint, images,
                                                                  tmp_path):
    out = tmp_path / "out"
    data = predicted(checkpoint, images, out, as_json=True)
    tree = load_tree()
    assert data["mode"] == "concepts" and data["model"] == "model.pt"
    assert [n["name"] for n in data["nodes"]] == tree.names
    assert [img["key"] for img in data["images"]] == ["a", "sub/b #1%"]
    for image in data["images"]:
        key, doc = image_data((out / image["data"]).read_text())
        assert key == image["key"] and set(doc) == {"width", "height", "nodes",
                                                              "confidence", "confidenceBlock"}
        with Image.open(out / image["photo"]) as photo:
            assert photo.format == "JPEG" and photo.size == (image["width"], image["height"])
        nodes, confidence = decoded_map(doc)
        # Without a dataset the page's nodes are the concept ids NAME_labels.png holds.
        assert np.array_equal(nodes, labels_png(out / f"{image['key']}_labels.png"))
        assert nodes.shape == (doc["height"], doc["width"]) == (image["height"],
                                                                image["width"])
        # Confidence in percent, per block of 2 x 2 pixels: its mean is the mean of the
        # concepts' means NAME.json gives (each rounded to a percent).
        rows = json.loads((out / f"{image['key']}.json").read_text())["concepts"]
        mean = sum(r["mean_confidence"] * r["pixels"] for r in rows) / nodes.size
        assert abs(confidence.mean() / 100 - mean) <= 0.0051
        with Image.open(out / image["thumb"]) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 320
        shares = dict((n, s) for n, s in image["top"])
        top = int(np.bincount(nodes.ravel()).argmax())
        assert abs(shares[top] - (nodes == top).mean()) < 1e-3
    # Written in the run's order; nothing else than the declared files.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["index.html", "sub"] + [f"a{s}" for s in (".json", "_labels.png", "_color.png",
                                                   "_overlay.png",
                                                   "_legend.png", "_page.js", "_thumb.jpg",
                                                   "_photo.jpg")])


def test_predict_html_with_a_dataset_classes_and_a_level(checkpoint, images, tmp_path):
    tree = load_tree()
    data = predicted(checkpoint, images, tmp_path / "city", dataset="cityscapes")
    nodes_ = data["nodes"]
    assert nodes_[tree.id("plant-stuff")]["label"] == "vegetation"
    assert nodes_[tree.id("plant-stuff")]["labelId"] == 21
    for image in data["images"]:
        nodes, _ = decoded_map(image_data((tmp_path / "city" / image["data"]).read_text())[1])
        labels = labels_png(tmp_path / "city" / f"{image['key']}_labels.png")
        written = np.vectorize(lambda n: nodes_[n]["labelId"])(nodes)
        assert np.array_equal(written, labels)     # each pixel's node names its label

    out = tmp_path / "classes"
    data = predicted(checkpoint, images, out, classes="motor vehicle,car,sky,road")
    nodes_ = data["nodes"]
    union = next(n for n in nodes_ if n.get("kind") == "union")
    assert union["label"] == "motor vehicle" and union["labelId"] == 0
    assert "car" not in union["concepts"] and {"motorcycle", "truck"} <= set(union["concepts"])
    # Under the concept where the union's paths part, which is above all its concepts.
    assert all(tree.id(nodes_[union["parent"]]["name"]) in
               [tree.id(a) for a in tree.ancestors(c)] for c in union["concepts"])
    other = next(i for i, n in enumerate(nodes_) if n.get("kind") == "other")
    assert nodes_[other]["parent"] == tree.id(tree.root) and nodes_[other]["labelId"] == 255
    assert nodes_[tree.id("car")]["label"] == "car" and nodes_[tree.id("car")]["labelId"] == 1
    for image in data["images"]:
        nodes, _ = decoded_map(image_data((out / image["data"]).read_text())[1])
        labels = labels_png(out / f"{image['key']}_labels.png")
        assert np.array_equal(np.vectorize(lambda n: nodes_[n]["labelId"])(nodes), labels)

    data = predicted(checkpoint, images, tmp_path / "level", level=2)
    assert data["level"] == 2
    for image in data["images"]:
        nodes, _ = decoded_map(image_data((tmp_path / "level" / image["data"]).read_text())[1])
        assert max(tree.depth(tree.names[n]) for n in np.unique(nodes)) <= 2


@pytest.mark.parametrize("options", [{}, {"dataset": "cityscapes"},
                                     {"classes": "motor vehicle,car,sky,road,vegetation"},
                                     {"level": 3}])
def test_predict_html_with_hedged_answers(checkpoint, images, tmp_path, options):
    """Hedged pixels stop at inner concepts: the page's map names them as the labels do, and
    a pixel never goes below what --dataset, --classes or --level allow."""
    tree = load_tree()
    out = tmp_path / "hedged"
    data = predicted(checkpoint, images, out, hedge_threshold=0.2, as_json=True, **options)
    nodes_ = data["nodes"]
    stopped_inner = 0
    for image in data["images"]:
        nodes, _ = decoded_map(image_data((out / image["data"]).read_text())[1])
        labels = labels_png(out / f"{image['key']}_labels.png")
        if not {"dataset", "classes"} & set(options):
            assert np.array_equal(nodes, labels)          # concept ids
        else:
            written = np.vectorize(lambda n: nodes_[n].get("labelId", -1))(nodes)
            inner = written == -1
            # Inner concepts with no label of their own: the ignore value, or 'other'.
            unnamed = next((n["labelId"] for n in nodes_ if n.get("kind") == "other"), 255)
            assert np.all(labels[inner] == unnamed)
            assert np.array_equal(written[~inner], labels[~inner])
        for n in np.unique(nodes):
            node = nodes_[n]
            if node.get("kind") is None and tree.children(node["name"]):
                stopped_inner += 1
            if "level" in options and node.get("kind") is None:
                assert tree.depth(node["name"]) <= options["level"]
        doc = json.loads((out / f"{image['key']}.json").read_text())
        assert doc["hedge"]["threshold"] == 0.2
        assert sum(doc["stopped_at_depth"].values()) == nodes.size
    assert stopped_inner > 0        # an untrained model is unsure: some pixels stop above


def test_predict_html_checks_its_files_before_any_work(checkpoint, images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_page.js").symlink_to(tmp_path / "elsewhere.js")
    with pytest.raises(UserError, match="a_page.js"):
        predict(checkpoint, [images], out=out, html=True, workers=0)
    (out / "a_page.js").unlink()
    (out / "index.html").mkdir()
    with pytest.raises(UserError, match="index.html"):
        predict(checkpoint, [images], out=out, html=True, workers=0)
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    assert not (tmp_path / "elsewhere.js").exists()


def test_confidence_is_the_mean_of_each_block_in_percent():
    confidence = np.array([[0.1, 0.3, 0.5], [0.5, 0.7, 0.9], [1.0, 0.0, 0.255]])
    assert block_percent(confidence).tolist() == [[40, 70], [50, 26]]
    assert block_percent(np.ones((1, 1))).tolist() == [[100]]


def test_a_cityscapes_size_image_is_a_few_hundred_kilobytes(tmp_path, tree):
    """One 1024 x 2048 map of smooth regions (as a model's answer is) with its confidence:
    the page data stays small."""
    palette = np.zeros((len(tree), 3), np.uint8)
    nodes, value_nodes = page_nodes(tree, palette, palette, tree.names,
                                    np.full(len(tree), -1))
    pages = PredictionPages(tmp_path, nodes, value_nodes, {"mode": "concepts"})
    y, x = np.mgrid[0:1024, 0:2048]
    values = ((x // 97 + y // 61 * 3) % 40 + 300).astype(np.int64)
    confidence = (0.6 + 0.3 * np.sin(x / 40.0) * np.cos(y / 33.0)).astype(np.float32)
    photo = np.stack([(x // 8) % 256, (y // 4) % 256, (x + y) // 16 % 256], -1).astype(np.uint8)
    pages.add(Path("frame"), tmp_path / "frame.png", photo, values, confidence, photo)
    script = (tmp_path / "frame_page.js").read_text()
    _, doc = image_data(script)
    decoded, conf = decoded_map(doc)
    assert np.array_equal(decoded, values)
    assert np.array_equal(conf[::2, ::2], block_percent(confidence))
    assert np.abs(conf - confidence * 100).max() <= 2       # a smooth map, in blocks of 2
    assert len(script) < 400_000, len(script)


# ------------------------------------------------------------------------------- in a browser


def _chromium():
    """Chromium and chromedriver from the system's packages, and selenium; or the reason
    the browser tests cannot run."""
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser")
                    if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        return None, ("no Chromium: install Debian's chromium and chromium-driver "
                      "(.ci/run does) to run the browser tests")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, "selenium is not installed: pip install -e '.[test]'"
    return (browser, driver), None


@pytest.fixture(scope="module")
def browser():
    found, reason = _chromium()
    if found is None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    profile = tempfile.mkdtemp(prefix="dsspn-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def opened(browser, path, fragment=""):
    """Open a page from disk; the console emptied first, so errors are this page's."""
    browser.get_log("browser")
    browser.get(path.as_uri() + fragment)
    return browser


def console_errors(browser) -> list:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(browser, condition, what, timeout=20):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda d: condition(d), what)


def rows(browser, css=".tree .row"):
    """The rows shown (a folded concept's rows stay in the document, hidden)."""
    return browser.execute_script("return [...document.querySelectorAll(arguments[0])]"
                                  ".filter((e) => e.offsetParent !== null)", css)


def test_tree_page_in_a_browser(browser, tmp_path, run, tree):
    run("hierarchy", "show", "--format", "html", "-o", tmp_path / "tree.html")
    opened(browser, tmp_path / "tree.html")
    folded = rows(browser)
    # Folded at depth 3: the root, things and stuff, the four indoor/outdoor groups, and
    # their children (COCO's super-categories).
    assert len(folded) == sum(1 for n in tree.names if tree.depth(n) <= 3)
    kitchen = next(r for r in folded if r.find_element("css selector", ".name").text ==
                   "kitchen-things")
    assert kitchen.get_attribute("aria-expanded") == "false"
    kitchen.click()                                   # unfolds it, and shows its details
    assert len(rows(browser)) == len(folded) + len(tree.children("kitchen-things"))
    assert kitchen.get_attribute("aria-expanded") == "true"
    details = browser.find_element("id", "details").text
    assert "kitchen-things" in details and "semantic neuron" in details
    kitchen.click()                                   # and folds it again
    assert len(rows(browser)) == len(folded)
    # Search by a dataset's label: Cityscapes' vegetation is the concept plant-stuff.
    search = browser.find_element("id", "search")
    search.send_keys("vegetation")
    wait_for(browser, lambda d: "1 match" in d.find_element("id", "matches").text, "a match")
    search.send_keys("\n")
    details = browser.find_element("id", "details").text
    assert "plant-stuff" in details and "plant.n.02" in details and "organism" in details
    assert "vegetation" in details and "21" in details
    marked = [r.find_element("css selector", ".name").text for r in rows(browser, ".row.match")]
    assert marked == ["plant-stuff"]
    # By synset, and the depth slider unfolds everything.
    search.clear()
    search.send_keys("wineglass.n.01\n")
    wait_for(browser, lambda d: "wine glass" in d.find_element("id", "details").text, "synset")
    browser.find_element("id", "unfold-all").click()
    assert len(rows(browser)) == len(tree)
    assert console_errors(browser) == []


def test_tree_page_shows_names_literally_and_works_without_wordnet(browser, tmp_path,
                                                                   monkeypatch):
    from dsspn_cli.hierarchy import wordnet

    def missing(user_dir=None):
        raise UserError("WordNet 3.0 not found; install it")
    monkeypatch.setattr(wordnet, "wordnet", missing)
    path = tmp_path / "t.html"
    path.write_text(tree_page(load_tree(hostile_tree(tmp_path))))
    opened(browser, path)
    names = [r.find_element("css selector", ".name").text for r in rows(browser)]
    assert names[:2] == ["entity", HOSTILE]
    # Shown as text: no element came from a name.
    assert browser.execute_script("return document.querySelectorAll('b, img').length") == 0
    assert browser.execute_script("return document.scripts.length") == 3
    assert "WordNet was not found" in browser.find_element("id", "notice").text
    rows(browser)[2].click()                    # car: its label's name, shown as written
    details = browser.find_element("id", "details").text
    assert HOSTILE_LABEL in details and "no definition" in details
    assert console_errors(browser) == []


def test_tree_page_at_2000_concepts(browser, tmp_path):
    tree = big_tree()
    path = tmp_path / "big.html"
    path.write_text(tree_page(tree, fold=2))
    opened(browser, path)
    assert len(rows(browser)) == 1 + 6 + 36
    start = time.monotonic()
    browser.find_element("id", "unfold-all").click()
    assert len(rows(browser)) == 2000
    assert time.monotonic() - start < 5
    search = browser.find_element("id", "search")
    search.send_keys("c1999\n")
    wait_for(browser, lambda d: "c1999" in d.find_element("id", "details").text, "found")
    assert console_errors(browser) == []


def _open_first_image(browser, out):
    opened(browser, out / "index.html")
    thumbs = browser.find_elements("css selector", ".thumb")
    thumbs[0].click()
    wait_for(browser, lambda d: d.find_elements("css selector", "#predicted .row"),
             "the image's tree")


def _canvas_digest(browser) -> str:
    return browser.execute_script(
        "const c = document.getElementById('labels');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let h = 0; for (let i = 0; i < d.length; i++) h = (h * 31 + d[i]) >>> 0;"
        "return c.width + 'x' + c.height + ':' + h;")


def _hover(browser, fx, fy):
    """Move the mouse to a point of the overlay (fractions of its size); the hover panel's
    text."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = browser.find_element("id", "labels")
    size = canvas.size
    ActionChains(browser).move_to_element_with_offset(
        canvas, int((fx - 0.5) * size["width"]), int((fy - 0.5) * size["height"])).perform()
    return browser.find_element("id", "hover").text


@pytest.mark.parametrize("mode", ["concepts", "dataset", "classes", "level", "hedged"])
def test_predict_page_in_a_browser(browser, checkpoint, images, tmp_path, mode):
    options = {"concepts": {}, "dataset": {"dataset": "cityscapes"},
               "classes": {"classes": "motor vehicle,car,sky,road,vegetation"},
               "level": {"level": 2},
               "hedged": {"classes": "motor vehicle,car,sky,road,vegetation",
                          "hedge_threshold": 0.2}}[mode]
    out = tmp_path / "out"
    data = predicted(checkpoint, images, out, **options)
    opened(browser, out / "index.html")
    thumbs = browser.find_elements("css selector", ".thumb")
    assert len(thumbs) == 2 and "sub/b #1%" in thumbs[1].text
    thumbs[1].click()               # a name that must be escaped in the address
    wait_for(browser, lambda d: d.find_elements("css selector", "#predicted .row"), "tree")
    assert "sub/b #1%" in browser.find_element("id", "image-name").text
    image = data["images"][1]
    nodes, confidence = decoded_map(image_data((out / image["data"]).read_text())[1])
    names = [n["name"] for n in data["nodes"]]

    # Hovering a pixel: its path from the root, as the map holds it, and its confidence.
    text = _hover(browser, 0.3, 0.7)
    x, y = (int(v) for v in re.search(r"pixel \((\d+), (\d+)\)", text).groups())
    node = int(nodes[y, x])
    path = []
    n = node
    while n is not None:
        path.insert(0, n)
        n = data["nodes"][n]["parent"]
    shown = [step.strip() for step in text.split("\n")[0].split("›")]
    assert [s.split(" [")[0] for s in shown][-1] in (names[node], data["nodes"][node].get(
        "label"))
    assert len(shown) == len(path)
    assert f"confidence {confidence[y, x]}%" in text      # its block's

    # The slider cuts the picture at depth 1; a click unfolds a concept into its children.
    full = _canvas_digest(browser)
    cut = browser.find_element("id", "cut")
    browser.execute_script("arguments[0].value = 1;"
                           "arguments[0].dispatchEvent(new Event('input'))", cut)
    at_one = _canvas_digest(browser)
    assert at_one != full
    tree_rows = rows(browser, "#predicted .row")
    assert all(int(r.get_attribute("style").split(":")[1].split("px")[0]) <= 14
               for r in tree_rows)
    folded = [r for r in tree_rows if r.get_attribute("aria-expanded") == "false"]
    before = len(tree_rows)
    folded[0].find_element("css selector", ".toggle").click()
    assert len(rows(browser, "#predicted .row")) > before
    assert _canvas_digest(browser) != at_one
    # Clicking a concept shows its pixels alone (the rest darkened), again: all of them.
    def part():
        return next(r for r in reversed(rows(browser, "#predicted .row:not(.itself)"))
                    if r.find_element("css selector", ".share").text != "100.0%")
    part().find_element("css selector", ".name").click()
    assert "showing" in browser.find_element("id", "selection").text
    chosen = _canvas_digest(browser)
    rows(browser, "#predicted .row.selected")[0].find_element("css selector", ".name").click()
    assert "showing" not in browser.find_element("id", "selection").text
    assert _canvas_digest(browser) != chosen
    assert console_errors(browser) == []


def test_predict_page_shows_inner_concepts_as_stopping_there(browser, tmp_path, tree):
    """The hook for hedged answers: a map may hold inner concepts, which the page shows as
    where the pixel stopped."""
    palette = np.full((len(tree), 3), 90, np.uint8)
    nodes, value_nodes = page_nodes(tree, palette, palette, tree.names,
                                    np.full(len(tree), -1))
    pages = PredictionPages(tmp_path, nodes, value_nodes, {"mode": "concepts", "level": None})
    values = np.full((40, 60), tree.id("car"), np.int64)
    values[:, 30:] = tree.id("vehicle-things")             # inner: stopped above its leaves
    photo = np.full((40, 60, 3), 128, np.uint8)
    pages.add(Path("hedged"), tmp_path / "hedged.png", photo, values,
              np.full((40, 60), 0.5, np.float32), photo)
    pages.finish()
    opened(browser, tmp_path / "index.html", "#image=hedged")
    wait_for(browser, lambda d: d.find_elements("css selector", "#predicted .row"), "tree")
    text = browser.find_element("id", "predicted").text
    assert "vehicle-things itself" in text and "50.0%" in text
    assert "stops at this inner concept" in _hover(browser, 0.8, 0.5)
    assert "stops at this inner concept" not in _hover(browser, 0.2, 0.5)
    assert console_errors(browser) == []


def test_a_folder_of_500_images_stays_usable(browser, tmp_path, tree):
    """index.html stays small, only the thumbnails in view load, and an image's data is read
    only when it is opened."""
    palette = np.full((len(tree), 3), 90, np.uint8)
    nodes, value_nodes = page_nodes(tree, palette, palette, tree.names,
                                    np.full(len(tree), -1))
    pages = PredictionPages(tmp_path, nodes, value_nodes, {"mode": "concepts", "level": None})
    photo = np.full((24, 32, 3), 128, np.uint8)
    for i in range(500):
        values = np.full((24, 32), tree.id("car"), np.int64)
        values[:, i % 32:] = tree.id("road") if "road" in tree else 0
        (tmp_path / f"city{i % 5}").mkdir(exist_ok=True)
        pages.add(Path(f"city{i % 5}/img-{i:04d}"), tmp_path / f"img-{i:04d}.png", photo,
                  values, np.full((24, 32), 0.9, np.float32), photo)
    index = pages.finish()
    assert index.stat().st_size < 250_000, index.stat().st_size
    opened(browser, index)
    assert len(rows(browser, ".thumb")) == 500
    def thumbnails_loaded(d):
        return d.execute_script("return [...document.querySelectorAll('.thumb img')]"
                                ".filter((i) => i.complete && i.naturalWidth > 0).length")
    wait_for(browser, thumbnails_loaded, "the thumbnails in view")
    time.sleep(0.5)
    assert thumbnails_loaded(browser) < 200
    # No image's data is read for the gallery; each call of dsspnImage is one file read.
    assert browser.execute_script("return document.querySelectorAll('script[src]').length") == 0
    browser.execute_script("const real = window.dsspnImage; window.read = [];"
                           "window.dsspnImage = (key, data) => { read.push(key); "
                           "real(key, data); };")
    search = browser.find_element("id", "filter")
    search.send_keys("img-0499")
    assert len(rows(browser, ".thumb")) == 1
    rows(browser, ".thumb")[0].click()
    wait_for(browser, lambda d: d.find_elements("css selector", "#predicted .row"), "tree")
    assert browser.execute_script("return window.read") == ["city4/img-0499"]
    assert console_errors(browser) == []
