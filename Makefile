# Two commands do all set-up: `make screen` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
QECAT := $(VENV)/bin/qecat
STAMP := $(VENV)/.qecat-installed
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: setup screen test clean-venv serve serve-stop

setup: $(STAMP)

# torch first, from the CPU wheel on disk (a resolver left alone would fetch a CUDA build);
# then the exact, locked set; then the package itself without touching dependencies.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

# The Prefect flow `screen` (flows/screen.py) in an ephemeral Prefect (no server), local executor,
# the shipped checkpoint models/qecat-emt-v1; the same steps as `qecat screen` (docs/screening.md).
screen: setup
	$(PY) -m flows.screen

test: setup
	$(PY) -m pytest

# A local, offline Prefect server + process worker with the deployments of prefect.yaml
# (screen/bimetallics, nightly); state and logs in .prefect/ (QECAT_PREFECT_HOME, QECAT_PREFECT_PORT).
# Both idempotent; a second `make serve` re-deploys. See docs/screening.md, "Nightly schedule".
serve: setup
	$(PY) -m flows.serve start

serve-stop:
	@if test -x $(PY); then $(PY) -m flows.serve stop; else echo "serve: nothing to stop (no $(VENV))"; fi

clean-venv:
	rm -rf $(VENV)
