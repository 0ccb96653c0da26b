# NEXUS developer commands. Quickstart: `make demo`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
SRC := src tests benchmarks

.PHONY: demo serve test lint bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Reinstall only when the declared or locked dependencies change.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt -e . 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import nexus.cli.main"
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install -q -c constraints.txt -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import nexus.cli.main, pytest, schemathesis, playwright"
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/nexus demo

serve: $(VENV)/.installed
	$(BIN)/nexus serve

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy
	$(BIN)/lint-imports

# pytest exits non-zero when it collects no test, so an empty run fails here too.
test: lint
	scripts/with-postgres $(BIN)/pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks

# Regenerate the lock after changing dependencies in pyproject.toml.
lock: | $(BIN)/python
	$(PIP) install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) freeze --exclude-editable | grep -v "^nexus" > constraints.txt

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
