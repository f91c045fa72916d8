# xafsflow: `make demo` and `make test` do everything on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.xafsflow-installed
PROFILE ?= profiles/local
CAMPAIGN_DIR := results/demo

export NUMBA_CACHE_DIR := $(CURDIR)/.numba_cache
export MPLBACKEND := Agg

.PHONY: demo test test-slow lint dry-run install lock clean help

help:
	@echo "make demo       install into $(VENV) and run the demo campaign"
	@echo "make test       install with test extras and run the test suite (what CI runs)"
	@echo "make test-slow  the slow statistical studies"
	@echo "make lock       refresh requirements.lock from the ranges in pyproject.toml"

# Install exact pins from the lock, then the package itself (editable, no re-resolution).
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/snakemake --profile $(PROFILE)
	@echo
	@echo "Demo campaign done."
	@echo "  scan stores:  $(CAMPAIGN_DIR)/scans/<scan_id>.zarr (+ .png)"
	@echo "  products:     $(CAMPAIGN_DIR)/<product>/"
	@echo "  summary:      $(CAMPAIGN_DIR)/summary.tsv"
	@echo "  report:       $(CAMPAIGN_DIR)/report.html"
	@echo "  provenance:   $(VENV)/bin/xafsflow provenance $(CAMPAIGN_DIR)/scans/xanes_01.zarr"

dry-run: $(STAMP)
	$(VENV)/bin/snakemake -n --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest

test-slow: $(STAMP)
	$(PY) -m pytest -m slow

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint

# Resolve the pyproject ranges afresh in a scratch venv and pin the result.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install --quiet ".[test]"
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^xafsflow' > requirements.lock
	rm -rf .venv-lock
	@echo "requirements.lock refreshed; run make test, then commit it"

clean:
	rm -rf results .snakemake .numba_cache
