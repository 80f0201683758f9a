"""Where the shipped data (``hierarchies/``) lives, in a source checkout and in an installed
wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent

# The wheel carries hierarchies/ inside the package (pyproject: force-include), a source checkout
# or an editable install has it beside the package.
_CANDIDATES = (_PACKAGE / "_hierarchies", _PACKAGE.parent / "hierarchies")

DEFAULT_TREE_NAME = "dsspn-four-datasets.yaml"


def hierarchies_dir() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "labelsets").is_dir():
            return candidate
    raise FileNotFoundError(
        "dsspn's data folder 'hierarchies' is missing from the installation; reinstall dsspn"
    )


def labelsets_dir() -> Path:
    return hierarchies_dir() / "labelsets"


def default_tree_path() -> Path:
    """The tree merged from the four built-in label sets: the default wherever a tree is needed."""
    return hierarchies_dir() / DEFAULT_TREE_NAME
