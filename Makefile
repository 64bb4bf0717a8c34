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
# e.g. BENCH_FLAGS="--num_images=100 --memory=false" for a quicker bench.
BENCH_FLAGS ?=
# The scripts hide TensorFlow's native log noise themselves (oneDNN notices,
# libpng warnings; experiments/__init__.py). Setting TF_CPP_MIN_LOG_LEVEL, or
# DEMO_FLAGS=--verbose, shows it all (benchmarks: the variable only).

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
	$(PY) -m pytest -q -n auto tests

bench: $(STAMP)
	$(PY) -m benchmarks.throughput $(if $(DATA),--data=$(DATA)) $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) $(WORKDIR) *.egg-info
