# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv when it is missing and (re)install when the dependency files change.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test lint typecheck unit demo bench clean

$(STAMP): pyproject.toml requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e '.[dev]'
	@touch $(STAMP)

test: $(STAMP) lint typecheck
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy exporter

# The fast tests only, for the edit-run loop.
unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

# Starts Azurite (installed with npm on first use), the SendGrid sandbox and the Functions host,
# exports a generated 50k-profile segment, prints the run and the list count, stops everything.
demo: $(STAMP)
	$(PY) -m exporter demo --dir .demo

bench: $(STAMP)
	$(PY) bench/plan.py

clean:
	rm -rf $(VENV) .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis
