#!/usr/bin/env bash
# Installs the client tools the end-to-end tests drive, into the project's own .cache/:
# OpenAI's Codex CLI from npm (tests/integration/test_codex_cli.py). Idempotent: a tool
# already at the pinned version is left alone. Python test extras come from pyproject's
# `dev` extra, locked in requirements/dev.txt (`make install-dev`), not from here.
set -euo pipefail
cd "$(dirname "$0")/.."

CODEX_VERSION="${CODEX_VERSION:-0.171.0}"
TOOLS_DIR=".cache/test-tools"

if ! command -v npm >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "install-test-tools: npm is missing; install Node.js 18+ and npm" >&2
        exit 1
    fi
fi

installed="$(node -p "try { require('./$TOOLS_DIR/node_modules/@openai/codex/package.json').version } catch (e) { '' }" 2>/dev/null || true)"
if [ "$installed" != "$CODEX_VERSION" ]; then
    mkdir -p "$TOOLS_DIR"
    [ -f "$TOOLS_DIR/package.json" ] || echo '{"private": true}' > "$TOOLS_DIR/package.json"
    npm install --prefix "$TOOLS_DIR" --no-audit --no-fund --loglevel=error "@openai/codex@$CODEX_VERSION"
fi
"$TOOLS_DIR/node_modules/.bin/codex" --version
