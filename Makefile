# Two commands on a fresh machine: `make demo` and `make test`. Both run `setup` first.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export QUANT_HOME ?= $(CURDIR)/.quant

.PHONY: setup demo dev test bench lint format schemas clean

setup: $(STAMP)

# Idempotent: re-installs only when the dependency pins or the project metadata change.
# setup.py and the C sources of quant_core/native: a changed one is rebuilt by the editable install.
$(STAMP): pyproject.toml constraints.txt setup.py $(wildcard quant_core/native/*.c quant_core/native/*.h)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python >= 3.11 is required (found $$($(PYTHON) --version))"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@scripts/build-tools $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "pip>=24"
	@# PYTHONWARNINGS reaches the build backend: it hides setuptools' notice on editable installs.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(BIN)/python -m quant_cli.demo

dev: setup
	scripts/dev

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

schemas: setup
	$(BIN)/quant schemas export schemas/v1
	$(BIN)/quant schemas openapi schemas/openapi/quant-api.v1.json

# pytest's exit code 5 (no tests collected) fails the target like any other non-zero code.
test: lint
	scripts/test-services run -- $(BIN)/python -m pytest -n 2 --dist loadgroup

bench: setup
	$(BIN)/python -m benchmarks $(SUITES)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
