# The two set-up commands: `make run` and `make test`. Both create the virtual
# environment and install everything they need on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch 2.14.1 pairs with torchvision 0.29.1 (the `vision` extra), which the tests exercise.
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
NPM_STAMP := frontend/node_modules/.installed
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: setup run test lint bench bench-deps chromium frontend clean gpu-wheels

setup: $(STAMP) $(NPM_STAMP)

# npm first: building the package (setup.py) needs the chart library in frontend/node_modules.
$(STAMP): pyproject.toml setup.py Makefile $(NPM_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(NPM_STAMP): frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $@

frontend: $(NPM_STAMP)

# Debian's chromium is the real browser for the browser tests.
chromium:
	@test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

run: setup
	$(BIN)/ldam serve

test: setup chromium
	OMP_NUM_THREADS=1 LDAM_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check server models tests benchmarks

# `ldam bench` compares against Lucent (torch-lucent), which is never a dependency of ldam: it
# goes into the git-ignored .bench-deps/, which only the benchmark puts on sys.path (--lucent).
# --no-deps keeps Lucent's own requirements (torch, torchvision, numpy, ...) from replacing the
# environment's; IPython (imported by lucent.optvis.render for notebook display) comes with its
# pure-Python requirements.
BENCH_DEPS := .bench-deps
LUCENT := torch-lucent==0.1.8 kornia==0.9.0 kornia_rs==0.2.0 tqdm decorator
$(BENCH_DEPS)/.installed: Makefile $(STAMP)
	$(BIN)/pip install -q --upgrade --no-deps --target $(BENCH_DEPS) $(LUCENT)
	$(BIN)/pip install -q --upgrade --target $(BENCH_DEPS) ipython
	touch $@

bench-deps: $(BENCH_DEPS)/.installed

bench: setup bench-deps
	$(BIN)/ldam bench --lucent $(BENCH_DEPS)

clean:
	rm -rf $(VENV) frontend/node_modules .bench-deps .gpu

# For benchmarks/gpu.sh on a lent GPU machine (Python 3.12, torch already there, no network):
# the ldam wheel, the web packages that machine lacks, and Lucent for the side-by-side rows.
GPU_PY := --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
gpu-wheels: $(STAMP)
	rm -rf .gpu && mkdir -p .gpu/wheels .gpu/lucent
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w .gpu/wheels .
	$(BIN)/pip download -q $(GPU_PY) -d .gpu/wheels fastapi uvicorn websockets pydantic httpx
	$(BIN)/pip download -q $(GPU_PY) --no-deps -d .gpu/lucent torch-lucent==0.1.8 decorator kornia kornia_rs tqdm
	$(BIN)/pip download -q $(GPU_PY) -d .gpu/lucent ipython

