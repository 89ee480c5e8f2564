# tumorbench: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the tested package set on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tumorbench-installed
DEMO_DIR ?= runs/demo

.PHONY: install demo data-demo smoke test bench-data clean-demo

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	# pip, not uv: torch and torchvision come from this machine's local wheels through pip.
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PY) experiments/compare.py --out $(DEMO_DIR)/compare

smoke: $(STAMP)
	$(PY) experiments/compare.py --preset smoke --out $(DEMO_DIR)/compare-smoke

data-demo: $(STAMP)
	$(VENV)/bin/tumorbench data synth --task brain-mri --out $(DEMO_DIR)/brain --overwrite
	$(VENV)/bin/tumorbench data check $(DEMO_DIR)/brain
	$(VENV)/bin/tumorbench data preview $(DEMO_DIR)/brain --out $(DEMO_DIR)/brain_preview.png
	$(VENV)/bin/tumorbench data split $(DEMO_DIR)/brain --out $(DEMO_DIR)/brain_splits.json --folds 3
	$(VENV)/bin/tumorbench data synth --task lung-ct --out $(DEMO_DIR)/lung --overwrite
	$(VENV)/bin/tumorbench data check $(DEMO_DIR)/lung
	$(VENV)/bin/tumorbench data preview $(DEMO_DIR)/lung --out $(DEMO_DIR)/lung_preview.png

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

bench-data: $(STAMP)
	$(PY) bench/data_pipeline.py

clean-demo:
	rm -rf $(DEMO_DIR)
