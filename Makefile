# One virtualenv (.venv) for everything; `make run` and `make test` set it up on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint typecheck pytest bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,dev,vertex,bedrock]'
	touch $(STAMP)

install: $(STAMP)

## Run the sidecar on 127.0.0.1:4000 (the built-in echo/echo model needs no provider key). ARGS="--config x.toml"
run: install
	$(PY) -m sidecar serve $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

# The interop tests install Bun + @oh-my-pi/pi-ai from the npm registry themselves (tests/interop), failing loudly
# when npm is missing.
pytest: install
	$(PY) -m pytest

## Everything CI runs: lint, strict typing, the whole test suite including the real-client interop tests.
test: lint typecheck pytest

# direct, sidecar and the reference `omp auth-gateway` side by side; the omp target installs Bun +
# @oh-my-pi/pi-coding-agent@18.2.3 from the npm registry into bench/.omp on first use (bench/omp/), failing loudly
# when npm or the registry is unavailable. ARGS="--quick" or ARGS="--targets direct,sidecar".
bench: install
	$(PY) bench/run.py --targets direct,sidecar,omp $(ARGS)

clean:
	rm -rf $(VENV) tests/interop/node_modules tests/ui/node_modules .mypy_cache .ruff_cache .pytest_cache
