# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use (pinned torch/torchvision, then the project in editable mode).

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_DIR   ?= demo_out
CORES      ?= 2

.PHONY: venv demo test clean-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; run 'make PYTHON=python3.X ...' with Python >= 3.10" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev,slurm]'
	@touch $(STAMP)

# The workflow on the embedded synthetic world (workflows/configs/demo.yaml).
demo: $(STAMP)
	@# a run killed earlier leaves snakemake's lock behind; clear it, then go on where that run stopped
	@$(VENV)/bin/snakemake --unlock --configfile workflows/configs/demo.yaml --config results=$(DEMO_DIR) >/dev/null 2>&1 || true
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) --rerun-incomplete \
		--configfile workflows/configs/demo.yaml --config results=$(DEMO_DIR)
	@echo "demo outputs: $(abspath $(DEMO_DIR)); synthetic data in $(abspath $(DEMO_DIR))/data," \
		"contact sheet $(abspath $(DEMO_DIR))/data/preview/contact_sheet.png;" \
		"S4Net checkpoint and test mAP in $(abspath $(DEMO_DIR))/s4net/"

test: $(STAMP)
	@$(VENV)/bin/pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests; refusing to pass" >&2; fi; \
	exit $$rc

clean-demo:
	rm -rf $(DEMO_DIR)
