from pathlib import Path

import pytest
import yaml

from dsspn_cli.cli.main import main
from dsspn_cli.hierarchy.tables import MaskingTable
from dsspn_cli.hierarchy.tree import load_tree

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference" / "labelsets"


class Result:
    def __init__(self, code, out, err):
        self.exit_code, self.stdout, self.stderr = code, out, err


@pytest.fixture
def run(capsys):
    """Run the dsspn CLI in-process: run('hierarchy', 'check', path) -> Result."""
    def _run(*args):
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)
    return _run


@pytest.fixture(scope="session")
def tree():
    """The shipped concept tree, shared: a test that changes a tree builds its own."""
    return load_tree()


@pytest.fixture(scope="session")
def table(tree):
    """The shipped tree's masking tables, shared."""
    return MaskingTable.from_tree(tree)


@pytest.fixture(scope="session")
def wn():
    from dsspn_cli.hierarchy.wordnet import wordnet
    return wordnet()


def expect_error(result, *fragments, code=2, stopped=False):
    """One line starting 'error:' (or 'stopped:', where ``stopped``), the given exit code, no
    traceback, holding every fragment; returns that line."""
    prefixes = ("error: ", "stopped: ") if stopped else ("error: ",)
    assert result.exit_code == code, (result.exit_code, result.stderr, result.stdout)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(prefixes), result.stderr
    assert len([line for line in lines if line.startswith(prefixes)]) == 1
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def untrained_checkpoint(path: Path) -> Path:
    """A small untrained model (ResNet-18, stride 16, 8 hidden channels) on the shipped tree,
    saved as training saves one."""
    import torch

    from dsspn_cli.engine.checkpoint import save_checkpoint
    from dsspn_cli.engine.config import TrainConfig
    from dsspn_cli.model.segmenter import build_model

    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(backbone="resnet18", output_stride=16, head={"hidden": 8})
    model = build_model(MaskingTable.from_tree(tree), config)
    save_checkpoint(path, model=model, tree=tree, config=config.to_dict(), step=0, epoch=0)
    return path


def write_yaml(path: Path, doc) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def base_set(tmp_path):
    """A small skeleton label set with its own groups, in the shape of COCO-Stuff's."""
    return write_yaml(tmp_path / "base.yaml", {
        "name": "base", "ignore_index": 255,
        "groups": [
            {"name": "things"},
            {"name": "animal-things", "parent": "things", "synset": "animal.n.01"},
            {"name": "furniture-things", "parent": "things", "synset": "furniture.n.01"},
            {"name": "textile-stuff", "parent": "things"},
        ],
        "labels": [
            {"id": 0, "name": "cat", "parent": "animal-things", "synset": "cat.n.01"},
            {"id": 1, "name": "dog", "parent": "animal-things", "synset": "dog.n.01"},
            {"id": 2, "name": "bird", "parent": "animal-things", "synset": "bird.n.01"},
            {"id": 3, "name": "chair", "parent": "furniture-things", "synset": "chair.n.01"},
            {"id": 4, "name": "bed", "parent": "furniture-things", "synset": "bed.n.01"},
            {"id": 5, "name": "pillow", "parent": "textile-stuff", "synset": "pillow.n.01"},
            {"id": 6, "name": "towel", "parent": "textile-stuff", "synset": "towel.n.01"},
            {"id": 7, "name": "mystery", "parent": "things", "used": False},
        ],
    })


@pytest.fixture
def fine_set(tmp_path):
    """A second dataset labelling at other granularities."""
    return write_yaml(tmp_path / "fine.yaml", {
        "name": "fine", "ignore_index": 0,
        "labels": [
            {"id": 1, "name": "armchair", "synset": "armchair.n.01"},
            {"id": 2, "name": "swivel chair", "synset": "swivel_chair.n.01"},
            {"id": 3, "name": "animal", "synset": "animal.n.01"},
            {"id": 4, "name": "cushion", "synset": "cushion.n.03"},
            {"id": 5, "name": "kitty", "synset": "cat.n.01"},
            {"id": 6, "name": "void", "ignore": True},
        ],
    })
