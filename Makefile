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

# Regenerate the lock after changing dependencies in pyproject.toml: pip resolves the runtime
# and dev dependencies afresh (nothing else that happens to be installed, such as the train
# extra, ends up pinned).
lock: | $(BIN)/python
	$(PIP) install -q --dry-run --ignore-installed --report .lock.json -e ".[dev]"
	$(BIN)/python -c "import json; r = json.load(open('.lock.json')); \
	pins = sorted((i['metadata']['name'], i['metadata']['version']) for i in r['install']); \
	print(''.join(f'{n}=={v}\n' for n, v in pins if n != 'nexus'), end='')" > constraints.txt
	rm -f .lock.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
