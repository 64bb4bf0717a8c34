# Two commands on a fresh machine: `make demo` and `make test`.
# Everything installs into .venv in the repository root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Reinstall whenever setup.py changes.
STAMP := $(VENV)/.installed
DATA ?=
WORKDIR ?= demo_workdir
DEMO_FLAGS ?=
# Hide TensorFlow's start-up INFO lines (warnings and errors still show).
export TF_CPP_MIN_LOG_LEVEL ?= 1

.PHONY: install demo test lint bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.run_selectors --model=efficientnet_lite0 \
		--workdir=$(WORKDIR) $(if $(DATA),--data=$(DATA)) $(DEMO_FLAGS)

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m benchmarks.throughput $(if $(DATA),--data=$(DATA))

clean:
	rm -rf $(VENV) $(WORKDIR) *.egg-info
