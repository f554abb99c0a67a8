# The two commands of the README: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install system-deps demo-deps demo test lint typecheck pytest bench clean

# A Debian machine without python3 or its venv module gets them from scripts/system-deps.sh
# first (as root or with sudo); a Python chosen with PYTHON= that can make venvs is used as is.
$(BIN)/sidekick: pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || bash scripts/system-deps.sh python
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		(echo "error: sidekick needs Python 3.11 or newer; set PYTHON=python3.11" >&2; exit 1)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/sidekick  ## create .venv with sidekick and the test tools

system-deps:  ## Debian packages the tests run for real (git, nginx, rsyslog, podman, ...)
	bash scripts/system-deps.sh test

demo-deps:  ## Debian packages the demo runs (nginx, curl)
	bash scripts/system-deps.sh demo

demo: demo-deps install  ## the main job: the demo system, with embedded defaults
	$(BIN)/python -m sidekick.demo

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

pytest: install system-deps
	$(BIN)/pytest -q -ra

test: lint typecheck pytest  ## everything CI runs

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
