#!/usr/bin/env bash
# What the test suite needs from the system, beyond the Python packages in .venv.
# `make test` runs this first (as `make test-deps`); run it yourself after a fresh clone.
#
# Idempotent: each section checks for its tool and installs it only when it is missing, so a
# second run changes nothing. One section per tool; add a new tool as a new section.
set -euo pipefail

# Install Debian/Ubuntu packages, as root or through sudo.
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "install-test-deps: need root or sudo to install: $*" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-test-deps: no apt-get here; install these yourself: $*" >&2
        exit 1
    fi
    # The package lists may be missing or stale on a fresh machine: refresh them if the
    # install cannot find the package.
    if ! ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" </dev/null; then
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update </dev/null
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" </dev/null
    fi
}

# -- Chromium: tests/integration/test_dashboard.py renders the dashboard headless ---------------
if command -v chromium >/dev/null 2>&1; then
    echo "install-test-deps: chromium: $(command -v chromium)"
else
    echo "install-test-deps: installing chromium"
    apt_install chromium
fi

# -- PostgreSQL: tests/support/postgres.py starts a throwaway server (initdb, pg_ctl) -----------
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
    echo "install-test-deps: postgresql: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1)"
else
    echo "install-test-deps: installing postgresql"
    apt_install postgresql
fi

# -- Codex CLI (npm): tests/integration/test_codex_cli.py drives the real client ----------------
./scripts/install-test-tools.sh
