# The two commands of the README: `make test` and `make lab`. Both set up .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: test lab lint bench bench-widgets chromium js js-dev js-test

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

# The widgets' front ends: js/ (sources, package-lock.json) bundled by esbuild into xai_widgets/static/
# (a build output, gitignored; wheels and sdists carry it). `npm ci` runs on a fresh clone and whenever the
# lock file changes; `make js-dev` rebuilds on every save (with ANYWIDGET_HMR=1 open views reload).
NPM ?= npm
JS_DEPS := js/node_modules/.package-lock.json

$(JS_DEPS): js/package.json js/package-lock.json
	cd js && $(NPM) ci --no-audit --no-fund
	touch $@

js: $(JS_DEPS)
	cd js && $(NPM) run build

js-dev: $(JS_DEPS)
	cd js && $(NPM) run dev

# Biome (lint + format check) and the vitest unit tests of the pure helpers in js/lib/.
js-test: $(JS_DEPS)
	cd js && npx biome ci .
	cd js && npx vitest run

test: $(STAMP) chromium js js-test
	$(PY) -m pytest

lab: $(STAMP) js
	$(VENV)/bin/jupyter lab notebooks/tour.ipynb

lint: $(STAMP) $(JS_DEPS)
	$(VENV)/bin/ruff check xai_widgets xai_widgets_launch.py tests benchmarks hatch_build.py
	$(VENV)/bin/ruff format --check xai_widgets xai_widgets_launch.py tests benchmarks hatch_build.py
	cd js && npx biome ci .

bench: $(STAMP)
	$(PY) -m pip install -c constraints.txt -e ".[bench]"
	$(PY) benchmarks/attribution.py

bench-widgets: $(STAMP) chromium js
	$(PY) benchmarks/widget_latency.py
