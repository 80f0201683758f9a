# dsspn: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
# Both work on a fresh machine: the first target that needs it creates .venv and installs
# everything (torch pinned to the local CPU build, dsspn with its test extras, WordNet).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
DEMO ?= runs/demo

.PHONY: setup demo test tree bench clean

setup: $(VENV)/.dsspn-installed

$(VENV)/.dsspn-installed: pyproject.toml scripts/install-wordnet.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	bash scripts/install-wordnet.sh $(BIN)/python
	touch $@

demo: setup
	$(BIN)/dsspn hierarchy merge coco ade cityscapes mapillary -o $(DEMO)/concept-tree.yaml
	$(BIN)/dsspn hierarchy check $(DEMO)/concept-tree.yaml
	$(BIN)/dsspn hierarchy tables $(DEMO)/concept-tree.yaml -o $(DEMO)/tables
	$(BIN)/dsspn hierarchy show $(DEMO)/concept-tree.yaml --format png -o $(DEMO)/concept-tree.png
	$(BIN)/dsspn data sample $(DEMO)/data
	$(BIN)/dsspn data check $(DEMO)/data/cityscapes --format cityscapes
	$(BIN)/dsspn data stats $(DEMO)/data/ade20k --format ade --tree $(DEMO)/concept-tree.yaml --top 8
	@echo "results: $(DEMO)/concept-tree.yaml, $(DEMO)/concept-tree.png, $(DEMO)/tables/, $(DEMO)/data/"

test: setup
	$(BIN)/python -m pytest -q

# Re-merge the shipped four-dataset tree after editing a built-in label set.
tree: setup
	$(BIN)/dsspn hierarchy merge coco ade cityscapes mapillary -o hierarchies/dsspn-four-datasets.yaml

bench: setup
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf $(VENV) runs build dist
