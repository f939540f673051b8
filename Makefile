# The two commands of the quick start: `make run` and `make test`.
# Every install comes from a hashed lock in requirements/: exact versions, checked downloads.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check

RUNTIME_LOCK := requirements/runtime.txt
DEV_LOCK     := requirements/dev.txt
# The lock tool is needed only to re-resolve the locks, never to install from them.
UV_VERSION   := 0.13.8
LOCK_FLAGS   := --quiet --universal --python-version 3.11 --generate-hashes \
                --custom-compile-command 'make lock (make upgrade-lock for newer versions)'

.PHONY: install install-dev run test test-deps lint typecheck bench container-smoke lock upgrade-lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What running needs: the runtime lock, then the proxy itself (its dependencies are the lock's).
$(VENV)/.installed-runtime: $(RUNTIME_LOCK) pyproject.toml | $(BIN)/python
	$(PIP) install --quiet --require-hashes -r $(RUNTIME_LOCK)
	$(PIP) install --quiet --no-deps -e .
	touch $@

# The dev lock is the runtime lock (same pins) plus the test and lint tools.
$(VENV)/.installed-dev: $(DEV_LOCK) $(RUNTIME_LOCK) pyproject.toml | $(BIN)/python
	$(PIP) install --quiet --require-hashes -r $(DEV_LOCK)
	$(PIP) install --quiet --no-deps -e .
	touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed-runtime  ## create .venv with what running needs (requirements/runtime.txt)

install-dev: $(VENV)/.installed-dev  ## add the test and lint tools (requirements/dev.txt)

run: install  ## run the server on 127.0.0.1:8000 (CLAUDE_PROXY_PORT=8001 make run for another port)
	$(BIN)/claude-code-proxy serve

test: install-dev  ## run the whole test suite
	$(BIN)/python -m pytest

# What the tests need from the system (Chromium, Codex CLI, PostgreSQL...), in one visible step.
test: test-deps
test-deps:  ## install the system tools the tests need (scripts/install-test-deps.sh)
	scripts/install-test-deps.sh

lint: install-dev  ## lint and type-check
	$(BIN)/ruff check claude_code_proxy tests bench scripts
	$(BIN)/mypy

bench: install-dev  ## side-by-side benchmark against the fake upstream (not part of the tests)
	$(BIN)/python -m bench

container-smoke: install-dev  ## build the image and check `docker compose up` for real, with Podman (root; see docs/docker.md)
	$(BIN)/python scripts/container_smoke.py

$(BIN)/uv: | $(BIN)/python
	$(PIP) install --quiet "uv==$(UV_VERSION)"

lock: $(BIN)/uv  ## re-resolve the locks after editing pyproject.toml, keeping every pin that still fits
	$(BIN)/uv pip compile $(LOCK_FLAGS) -o $(RUNTIME_LOCK) pyproject.toml
	$(BIN)/uv pip compile $(LOCK_FLAGS) --extra dev -c $(RUNTIME_LOCK) -o $(DEV_LOCK) pyproject.toml

upgrade-lock: $(BIN)/uv  ## move every pin to the newest version pyproject.toml allows, then run the suite on them
	$(BIN)/uv pip compile $(LOCK_FLAGS) --upgrade -o $(RUNTIME_LOCK) pyproject.toml
	$(BIN)/uv pip compile $(LOCK_FLAGS) --upgrade --extra dev -c $(RUNTIME_LOCK) -o $(DEV_LOCK) pyproject.toml
	$(MAKE) test

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
