# kimen — developer entry points. Every target sets up what it needs itself.
#   make demo   set up .venv and run a narrated end-to-end demo on a throwaway vault
#   make test   set up .venv (and the Debian packages it drives when possible) and run the whole suite
#   make lint   ruff, import-linter architecture contracts, mypy
#   make bench  benchmarks (figures printed, never asserted)
#   make dist   wheel and sdist into dist/ (the version lives in kimen/__init__.py)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kimen-installed
PYTEST_ARGS ?=

.PHONY: all venv demo test test-fast lint bench tools dist hooks clean

all: test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kimen needs Python 3.11 or newer (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	# pip >= 25 writes a `kimen` launcher without `import re` (a quarter of kimen's start-up)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade 'pip>=25.0'
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

venv: $(STAMP)

# Debian packages the tests drive for real: the `age` CLI (bundle interop), git (repositories in
# tests), shellcheck (actionlint checks `run:` scripts with it), the shells whose completion scripts
# the tests run, xclip and an X server (Xvfb) for the clipboard tests. `package:command` where the
# command it provides has another name. Installed when missing and we can
# (root with apt-get, Linux only: macOS CI installs them with Homebrew first); otherwise the tests
# that need them skip with a reason.
DEB_PACKAGES := age git shellcheck zsh fish elvish xclip xvfb:Xvfb
tools:
	@missing=""; for spec in $(DEB_PACKAGES); do p=$${spec%%:*}; c=$${spec#*:}; \
		command -v $$c >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(uname -s)" = Linux ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages:$$missing (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else echo "note: not installed:$$missing; the tests that need them will skip"; fi

test: $(STAMP) tools
	$(BIN)/python -m pytest -n auto -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n auto -q -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	@PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check kimen tests bench scripts
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: $(STAMP)
	@# dotenvx is the comparison bench/bench_run.py measures `run` against; installed beside the benches when npm exists
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
