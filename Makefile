# The two commands a fresh machine needs: `make demo` and `make test`.
# Both create .venv when it is missing and (re)install when the dependency files change.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The infra checker's own venv: checkov pins dependencies that would clash with the app's.
INFRA_VENV  := .venv-infra
INFRA_PY    := $(INFRA_VENV)/bin/python
INFRA_STAMP := $(INFRA_VENV)/.installed

.PHONY: install test lint typecheck check-infra unit demo bench clean browser

$(STAMP): pyproject.toml requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -e '.[dev]'
	@touch $(STAMP)

$(INFRA_STAMP): infra/requirements.txt
	@test -x $(INFRA_PY) || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_PY) -m pip install --quiet --disable-pip-version-check -r infra/requirements.txt
	@touch $(INFRA_STAMP)

# Three workers, a test file each at a time (module fixtures stay whole): the end-to-end
# files spend most of their time waiting on queues and delays, not on the two cores.
# .venv with the app and its tools, and Azurite from npm (what `exporter up` needs).
install: $(STAMP)
	$(PY) -c "from pathlib import Path; from exporter.local.azurite import ensure_installed; ensure_installed(Path('.').resolve())"

test: $(STAMP) lint typecheck check-infra browser
	$(PY) -m pytest -q -n 4 --dist loadfile

# The browser tests (tests/browser) drive Debian's Chromium with Playwright (never a browser
# download): installed here when missing, which needs root (as CI runs). The fallback font
# draws the sample segments' names in every script in the screenshots (docs/screenshots).
BROWSER_PACKAGES := chromium fonts-droid-fallback
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! test -d /usr/share/fonts/truetype/droid; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
	      --no-install-recommends $(BROWSER_PACKAGES); \
	  elif ! command -v chromium >/dev/null 2>&1; then \
	    echo "make browser: Chromium is missing; install Debian's packages as root:" \
	      "sudo apt-get install --no-install-recommends $(BROWSER_PACKAGES)" >&2; exit 1; \
	  else \
	    echo "make browser: no fonts-droid-fallback: screenshots show boxes for some names" >&2; \
	  fi; \
	fi

# ruff, and the import rules of docs/architecture.md (import-linter: contracts in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy exporter

# The Bicep templates, offline: every file parses and passes checkov (see infra/check.py).
check-infra: $(INFRA_STAMP)
	$(INFRA_PY) infra/check.py

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
	rm -rf $(VENV) $(INFRA_VENV) .demo .mypy_cache .ruff_cache .pytest_cache .hypothesis
