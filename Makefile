# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install run test lint typecheck bench container-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the proxy with its dev tools

run: install  ## run the server on 127.0.0.1:8000
	$(BIN)/claude-code-proxy serve

test: install  ## run the whole test suite
	$(BIN)/python -m pytest

# What the tests need from the system (Chromium for the dashboard test, PostgreSQL for the
# replica tests), in one visible step.
.PHONY: test-deps
test: test-deps
test-deps:  ## install the system tools the tests need (scripts/install-test-deps.sh)
	scripts/install-test-deps.sh

lint: install  ## lint and type-check
	$(BIN)/ruff check claude_code_proxy tests bench scripts
	$(BIN)/mypy

bench: install  ## side-by-side benchmark against the fake upstream (not part of the tests)
	$(BIN)/python -m bench

container-smoke: install  ## build the image and check `docker compose up` for real, with Podman (root; see docs/docker.md)
	$(BIN)/python scripts/container_smoke.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
