# dsspn: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
# Both work on a fresh machine: the first target that needs it creates .venv and installs
# everything (torch pinned to the local CPU build, dsspn with its test extras, WordNet).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
DEMO ?= runs/demo

.PHONY: setup demo test reliability tree bench clean

setup: $(VENV)/.dsspn-installed

$(VENV)/.dsspn-installed: pyproject.toml scripts/install-wordnet.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	bash scripts/install-wordnet.sh $(BIN)/python
	touch $@

SAMPLE = $(DEMO)/data
SETS = cityscapes=$(SAMPLE)/cityscapes ade=$(SAMPLE)/ade20k coco=$(SAMPLE)/coco-stuff mapillary=$(SAMPLE)/mapillary

# The main job on the built-in sample data: the concept tree, the data, a small model trained
# on all four datasets jointly (CPU settings), its scores, predictions with pictures, and its
# zero-shot scores on the held-out sample sets (CamVid, Pascal VOC), which it never trained on.
demo: setup
	rm -rf $(DEMO)
	$(BIN)/dsspn hierarchy merge coco ade cityscapes mapillary -o $(DEMO)/concept-tree.yaml
	$(BIN)/dsspn hierarchy show $(DEMO)/concept-tree.yaml --format png -o $(DEMO)/concept-tree.png
	$(BIN)/dsspn hierarchy show $(DEMO)/concept-tree.yaml --format html -o $(DEMO)/concept-tree.html
	$(BIN)/dsspn data sample $(SAMPLE)
	$(BIN)/dsspn train $(foreach s,$(SETS),--data $(s)) --out $(DEMO)/run --backbone resnet18 \
		--output-stride 16 --crop 112 --iters 600 --lr 0.01 --checkpoint-every 200 --val-every 200
	$(BIN)/dsspn evaluate $(DEMO)/run/checkpoints/best.pt $(foreach s,$(SETS),--data $(s)) \
		--json $(DEMO)/scores.json
	$(BIN)/dsspn predict $(SAMPLE)/cityscapes/leftImg8bit/val --model $(DEMO)/run/checkpoints/best.pt \
		--dataset cityscapes --out $(DEMO)/predictions --json --html
	$(BIN)/dsspn evaluate $(DEMO)/run/checkpoints/best.pt --data camvid=$(SAMPLE)/held-out/camvid \
		--data voc=$(SAMPLE)/held-out/voc --json $(DEMO)/zeroshot.json
	@echo "results in $(DEMO)/: concept-tree.png and .html, run/ (checkpoints, metrics.jsonl, curves.png), scores.json, predictions/ (open predictions/index.html), zeroshot.json"

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The fault tests alone (kills, signals, full disk, bad files, lost ranks, bad and hostile
# input, fuzzing, inputs and checkpoints never overwritten, links never written through).
reliability: setup
	$(BIN)/python -m pytest -q tests/test_faults.py tests/test_bad_input.py tests/test_hostile_input.py \
		tests/test_fuzz.py tests/test_exit.py tests/test_lose_nothing.py \
		tests/test_settings_input.py

# Re-merge the shipped four-dataset tree after editing a built-in label set.
tree: setup
	$(BIN)/dsspn hierarchy merge coco ade cityscapes mapillary -o hierarchies/dsspn-four-datasets.yaml

bench: setup
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf $(VENV) runs build dist
