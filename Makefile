# GeoPlonk: `make demo` and `make test` install what they need (idempotently) and run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

SYSTEM_PYTHON := /usr/bin/python3
SERVER_VENV := .venv/server
QGIS_VENV := .venv/qgis
SERVER_PY := $(SERVER_VENV)/bin/python
QGIS_PY := $(QGIS_VENV)/bin/python
SYSTEM_STAMP := .venv/.system-packages
SERVER_STAMP := $(SERVER_VENV)/.installed
QGIS_STAMP := $(QGIS_VENV)/.installed
export GEOPLONK_SERVER_COMMAND ?= $(CURDIR)/$(SERVER_VENV)/bin/geoplonk serve
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help demo test test-server test-plugin lint plugin default-model clean fuzz bench

help:
	@echo "make demo           install what is missing, geolocate the sample photos, render a map"
	@echo "make test           install what is missing and run the whole test suite"
	@echo "make fuzz           fuzz the protocol and image decoders longer (FUZZ_EXAMPLES=20000 per property)"
	@echo "make bench          every benchmark in one run (13-52 min; BENCH_ARGS=--quick: < 2 min), recorded in benchmarks/results/"
	@echo "make plugin         build dist/geoplonk.zip for QGIS 'Install from ZIP'"
	@echo "make default-model  rebuild the embedded default model from scratch"

$(SYSTEM_STAMP): scripts/install-system.sh
	bash scripts/install-system.sh
	@mkdir -p $(dir $@) && touch $@

# The server's environment: torch (pinned CPU wheel) and the engine's libraries.
$(SERVER_STAMP): pyproject.toml $(SYSTEM_STAMP)
	test -x $(SERVER_PY) || $(SYSTEM_PYTHON) -m venv $(SERVER_VENV)
	$(SERVER_PY) -m pip install -q torch==2.13.0
	$(SERVER_PY) -m pip install -q -e '.[server,scale,dev]'
	$(SERVER_PY) -m pip install -q --no-deps diff-plonk==0.4 && $(SERVER_PY) -m pip install -q einops torchdiffeq geoopt
	touch $@

# The plugin's environment, as users have it: Debian's QGIS Python (numpy 1.24 kept) plus test tools.
$(QGIS_STAMP): $(SYSTEM_STAMP)
	test -x $(QGIS_PY) || $(SYSTEM_PYTHON) -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_PY) -m pip install -q 'pytest>=7' 'pytest-qgis==5.0.2' 'pytest-qt>=4.4' 'pytest-timeout>=2'
	$(QGIS_PY) -c "import numpy, sys; sys.exit(numpy.__version__.startswith('1.') is False)"
	touch $@

install: $(SERVER_STAMP) $(QGIS_STAMP)

lint: $(SERVER_STAMP)
	$(SERVER_VENV)/bin/ruff check model_server qgis_plugin geoplonk_service tests scripts benchmarks

test-server: $(SERVER_STAMP)
	$(SERVER_PY) -m pytest tests/engine tests/server tests/common tests/evaluation tests/scale -p no:cacheprovider

test-plugin: $(SERVER_STAMP) $(QGIS_STAMP) plugin
	QT_QPA_PLATFORM=offscreen $(QGIS_PY) -m pytest tests/plugin -p no:cacheprovider -o qgis_gui_enabled=false

test: lint test-server test-plugin

FUZZ_EXAMPLES ?= 20000
fuzz: $(SERVER_STAMP)
	GEOPLONK_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(SERVER_PY) -m pytest tests/server/test_fuzz.py -p no:cacheprovider -q -s \
		-W ignore::UserWarning

# Every figure of docs/benchmarks.md's `make bench` section in one process; records benchmarks/results/<date>.json and
# regenerates docs/benchmarks.md and README.md's Performance table (BENCH_ARGS=--quick: a smoke run, recorded nowhere).
bench: $(SERVER_STAMP)
	$(SERVER_PY) benchmarks/bench_all.py $(BENCH_ARGS)

plugin: dist/geoplonk.zip

dist/geoplonk.zip: metadata.txt $(shell find qgis_plugin geoplonk_service -name '*.py' -o -name '*.svg' 2>/dev/null)
	$(SYSTEM_PYTHON) scripts/build_plugin_zip.py --out $@

demo: $(SERVER_STAMP) $(QGIS_STAMP)
	bash scripts/demo.sh

default-model: $(SERVER_STAMP)
	bash scripts/build_default_model.sh

clean:
	rm -rf dist build demo-output tests/artifacts
