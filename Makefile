# kimen — developer entry points. Every target sets up what it needs itself.
#   make demo   set up .venv and run a narrated end-to-end demo on a throwaway vault
#   make test   set up .venv (and the `age` CLI when possible) and run the whole suite
#   make lint   ruff + import-linter architecture contracts
#   make bench  benchmarks (figures printed, never asserted)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kimen-installed
PYTEST_ARGS ?=

.PHONY: all venv demo test test-fast lint bench age hooks clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kimen needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	# pip >= 25 writes a `kimen` launcher without `import re` (a quarter of kimen's start-up)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade 'pip>=25.0'
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

venv: $(STAMP)

# The real `age` CLI is used by the bundle interop tests. Install it when we can (root with
# apt-get); otherwise those tests skip with a reason.
age:
	@if command -v age >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing the age CLI (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null; \
	else echo "note: the age CLI is not installed; bundle interop tests will skip"; fi

test: $(STAMP) age
	$(BIN)/python -m pytest -n auto -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto -q -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	@PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check kimen tests bench scripts
	$(BIN)/lint-imports

bench: $(STAMP)
	@# dotenvx is the comparison SPEC §12 names for `run`; installed beside the benches when npm exists
	@if command -v npm >/dev/null 2>&1 && [ ! -x bench/node_modules/.bin/dotenvx ]; then \
		npm install --silent --no-audit --no-fund --prefix bench @dotenvx/dotenvx || true; fi
	$(BIN)/python bench/run.py

hooks:
	git config core.hooksPath .githooks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
