# The two commands of the README: `make test` and `make lab`. Both set up .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: test lab lint bench bench-widgets chromium

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -c constraints.txt -e ".[test]"
	touch $(STAMP)

# Debian's chromium for the browser tests (Playwright never downloads a browser here).
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	  else sudo apt-get update && sudo apt-get install -y chromium; fi; }

test: $(STAMP) chromium
	$(PY) -m pytest

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/tour.ipynb

lint: $(STAMP)
	$(VENV)/bin/ruff check xai_widgets tests benchmarks
	$(VENV)/bin/ruff format --check xai_widgets tests benchmarks

bench: $(STAMP)
	$(PY) -m pip install -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/attribution.py

bench-widgets: $(STAMP) chromium
	$(PY) benchmarks/widget_latency.py
