# `make test` builds the environment from nothing and runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= cpu,service,dicom,training,test

.PHONY: venv test lint typecheck unit bench run clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU wheel of torch first: the `training` extra pins the same version,
	# so pip is satisfied and never reaches for the CUDA build.
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(PY) -m ruff check app training bench tests
	$(PY) -m ruff format --check app training bench tests

typecheck: venv
	$(PY) -m mypy app

unit: venv
	$(PY) -m pytest

test: lint typecheck unit

bench: venv
	$(PY) -m bench.inference

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
