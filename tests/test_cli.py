"""The hierarchy commands end to end, as a user runs them."""
import json
import os
import subprocess
import sys

import pytest
import typer
import yaml
from conftest import REPO, write_yaml

from dsspn_cli.resources import default_tree_path

FOUR = ["coco", "ade", "cityscapes", "mapillary"]


@pytest.fixture(scope="module")
def merged_four(tmp_path_factory):
    """The four built-in label sets merged with real WordNet, through the CLI."""
    out = tmp_path_factory.mktemp("merge") / "tree.yaml"
    proc = subprocess.run([sys.executable, "-m", "dsspn_cli", "hierarchy", "merge", *FOUR,
                           "-o", str(out)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def test_merge_of_the_four_datasets(merged_four):
    from dsspn_cli.hierarchy.tree import load_tree

    path, summary = merged_four
    tree = load_tree(path)
    assert 250 <= len(tree) <= 450           # the paper's tree had 359 concepts
    assert tree.height <= 5
    assert "semantic neurons" in summary and "labels placed per dataset" in summary
    # One concept 'car', labelled by all four datasets.
    assert set(tree.labels("car")) == set(FOUR)
    # ADE20K's armchair under COCO's chair.
    assert tree.parent("armchair") == "chair"
    # A coarse label of one dataset is the parent of another's finer labels.
    animal = tree.by_synset()["animal.n.01"]
    assert "ade" in tree.labels(animal)
    assert any("coco" in tree.labels(n) for n in tree.descendants(animal))
    # Every mapped label of every dataset is on exactly one concept.
    from dsspn_cli.hierarchy.labelset import load_labelset
    for name in FOUR:
        mapped = sorted(l.id for l in load_labelset(name).mapped_labels)
        assert sorted(tree.label_map(name)) == mapped


def test_merge_is_byte_identical_and_equals_the_shipped_tree(merged_four, tmp_path, run):
    path, _ = merged_four
    again = tmp_path / "again.yaml"
    assert run("hierarchy", "merge", *FOUR, "-o", again).exit_code == 0
    assert again.read_bytes() == path.read_bytes()
    assert default_tree_path().read_bytes() == path.read_bytes(), \
        "the shipped tree is stale: re-run 'make tree'"


def test_check_shipped_tree_is_clean(run):
    result = run("hierarchy", "check")
    assert result.exit_code == 0, result.stdout
    assert "clean" in result.stdout


def test_check_reports_every_violation_and_exits_1(tmp_path, run):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "max_depth: 5\ndatasets: {}\ntree:\n  name: r\n  children:\n"
        "  - name: a\n    children:\n    - {name: b}\n  - name: c\n    children:\n"
        "    - {name: a}\n    - {name: d}\n")
    result = run("hierarchy", "check", path, "--max-depth", "1", "--max-fanout", "1")
    assert result.exit_code == 1
    for rule in ("one parent", "no single-child chain", "depth", "fan-out"):
        assert rule in result.stdout


def test_check_reads_node_link_json_from_show(tmp_path, run):
    out = tmp_path / "tree.json"
    assert run("hierarchy", "show", "--format", "json", "-o", out).exit_code == 0
    doc = json.loads(out.read_text())
    node = next(n for n in doc["nodes"] if n["name"] == "car")
    assert {"id", "name", "synset", "labels"} <= set(node) and node["synset"] == "car.n.01"
    result = run("hierarchy", "check", out)
    assert result.exit_code == 0, result.stdout


def test_show_tree_with_dataset_and_depth(run):
    result = run("hierarchy", "show", "--dataset", "cityscapes", "--depth", "3")
    assert result.exit_code == 0
    assert "entity" in result.stdout and "cityscapes:" in result.stdout
    assert "armchair" not in result.stdout
    assert run("hierarchy", "show", "--dataset", "ade20k").exit_code == 0   # an alias


def test_show_yaml_round_trips(tmp_path, run):
    result = run("hierarchy", "show", "--format", "yaml")
    assert result.exit_code == 0
    doc = yaml.safe_load(result.stdout)
    assert doc["tree"]["name"] == "entity"


def test_show_png(tmp_path, run):
    out = tmp_path / "tree.png"
    result = run("hierarchy", "show", "--format", "png", "-o", out, "--dataset", "cityscapes")
    assert result.exit_code == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tables_written_and_readable(tmp_path, run):
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import load_tree

    result = run("hierarchy", "tables", "-o", tmp_path / "tables")
    assert result.exit_code == 0, result.stderr
    table = MaskingTable.load(tmp_path / "tables")
    tree = load_tree()
    assert len(table.neuron_concept) == len(tree.neurons)
    city = table.dataset("cityscapes")
    assert table.concepts[city.concept(26)] == "car"          # label id 26 = car
    assert city.concept(0) == -1                              # unlabeled
    path = table.concept_path[tree.id("car")]
    assert [table.concepts[table.neuron_concept[n]] for n, _ in path] == tree.ancestors("car")
    assert "semantic neurons" in (tmp_path / "tables" / "summary.txt").read_text()


@pytest.mark.parametrize("args,message", [
    (["hierarchy", "merge", "coco", "nuscenes"], "unknown dataset 'nuscenes'"),
    (["hierarchy", "merge", "coco", "missing/labels.yaml"], "no such label-set file"),
    (["hierarchy", "show", "nowhere.yaml"], "no such concept tree file"),
    (["hierarchy", "show", "--dataset", "kitti"], "--dataset kitti: not in this concept tree"),
    (["hierarchy", "show", "--format", "png"], "--format png needs -o"),
    (["hierarchy", "check", "nowhere.json"], "no such tree file"),
    (["hierarchy", "tables", "nowhere.yaml", "-o", "out"], "no such concept tree file"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, run, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []          # nothing written


@pytest.mark.parametrize("doc,message", [
    ({"name": "u", "labels": [{"id": 0, "name": "car", "synset": "carr.n.01"}]},
     "unknown WordNet 3.0 noun synset 'carr.n.01'"),
    ({"name": "u", "labels": [{"id": 0, "name": "a"}, {"id": 1, "name": "a"}]},
     "duplicate name"),
])
def test_bad_labelset_in_merge_writes_nothing(tmp_path, run, doc, message):
    path = write_yaml(tmp_path / "u.yaml", doc)
    out = tmp_path / "out.yaml"
    result = run("hierarchy", "merge", "coco", path, "-o", out)
    assert result.exit_code == 2 and message in result.stderr
    assert not out.exists()


def test_cycle_in_tree_file_is_exit_2_for_use(tmp_path, run):
    from test_tree import write_cycle_json

    path = write_cycle_json(tmp_path / "cycle.json")
    result = run("hierarchy", "tables", path, "-o", tmp_path / "t")
    assert result.exit_code == 2
    assert "cycle" in result.stderr or "several parents" in result.stderr
    assert not (tmp_path / "t").exists()
    assert run("hierarchy", "check", path).exit_code == 1


def test_user_text_labelset_merges_and_reports_ambiguity(tmp_path, run):
    path = tmp_path / "mine.txt"
    path.write_text("car\nbank\nzebra\n")
    result = run("hierarchy", "merge", "coco", path, "-o", tmp_path / "t.yaml")
    assert result.exit_code == 0, result.stderr
    assert "'bank': took" in result.stdout


def test_help_hierarchy_commands_and_completion_import_neither_torch_nor_pydantic(tmp_path):
    code = (
        "import sys\n"
        "from dsspn_cli.cli.main import main\n"
        "for args in (['--help'], ['hierarchy', 'show', '--depth', '1'], ['hierarchy', 'check'],"
        f" ['hierarchy', 'tables', '-o', {str(tmp_path / 't')!r}],"
        f" ['hierarchy', 'merge', 'coco', '-o', {str(tmp_path / 'm.yaml')!r}]):\n"
        "    try:\n        main(args)\n    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "for heavy in ('torch', 'pydantic'):\n"
        "    assert heavy not in sys.modules, heavy + ' was imported'\n"
        "print('neither')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("neither")
    # Tab completion of the command names: the model commands are listed, not imported.
    env = {**os.environ, "_DSSPN_COMPLETE": "complete_bash", "COMP_WORDS": "dsspn ",
           "COMP_CWORD": "1"}
    code = ("import sys\nfrom dsspn_cli.cli.main import main\n"
            "try:\n    main([])\nexcept SystemExit:\n    pass\n"
            "print('heavy:', [m for m in ('torch', 'pydantic') if m in sys.modules])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=env)
    assert proc.stdout.split() == ["train", "evaluate", "predict", "export", "hierarchy",
                                   "data", "heavy:", "[]"], proc.stdout + proc.stderr


def test_model_commands_are_listed_with_their_own_help_and_run_as_themselves(run):
    """The stand-ins 'dsspn --help' lists carry the real commands' help; their own --help
    and options are the real ones (train still lists every setting)."""
    from dsspn_cli.cli.main import LAZY, app

    group = typer.main.get_command(app)
    for name in LAZY:
        stand_in = group.commands[name]
        assert stand_in.help and stand_in.help == stand_in.real().help
    listing = run("--help").stdout
    assert all(name in listing for name in LAZY)
    page = run("train", "--help").stdout
    from dsspn_cli.cli.options import setting_options
    from dsspn_cli.engine.config import TrainConfig

    for _, (_, _, option) in setting_options(TrainConfig).items():
        assert option.param_decls[0].split("/")[0] in page
    assert "--set" in page
    bad = run("train", "--no-such-option")
    assert bad.exit_code == 2 and "dsspn train: no such option" in bad.stderr


def test_console_script_and_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "dsspn_cli", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "hierarchy" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "dsspn_cli", "hierarchy", "merge"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_data_and_labelset_formats_resolve_case_and_aliases():
    from dsspn_cli.cli.evaluate import parse_labelsets
    from dsspn_cli.cli.options import parse_data
    from dsspn_cli.errors import UserError

    data = parse_data(["ADE20K=/a", "City=/c"])
    assert data == {"ade": "/a", "cityscapes": "/c"}
    with pytest.raises(UserError, match="--data NuScenes=/x: unknown format 'nuscenes'"):
        parse_data(["NuScenes=/x"])
    assert parse_labelsets(["Ade20k=l.yaml"], data) == {"ade": "l.yaml"}
    with pytest.raises(UserError, match="--labelset PC60=l.yaml: no --data pascal-context-60="):
        parse_labelsets(["PC60=l.yaml"], data)
    with pytest.raises(UserError, match="with several --data, say whose"):
        parse_labelsets(["nuscenes=l.yaml"], data)
