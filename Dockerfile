# claude-code-proxy: the proxy plus the Claude Code CLI that the claude-agent-sdk wheel bundles.
#
#   docker compose up -d        (see docker-compose.yml and docs/docker.md)
#
# No credentials are ever part of the image: the API key and the Claude login arrive at run
# time (env_file / a bind-mounted credentials file). Built to run with a read-only root
# filesystem, as a non-root user, with tini as PID 1 reaping every CLI process.
# For reproducible builds pin the base image by digest: python:3.11-slim@sha256:...

# ---- 1. build: the locked dependencies (cached layer), then the package -------------------
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The runtime lock: exact versions with checked hashes, the ones `make run` installs and the
# tests run on. Docker checks a COPY by content, so only a lock change rebuilds this layer.
COPY requirements/runtime.txt /tmp/requirements.txt
# The claude-agent-sdk wheel carries the CLI (claude_agent_sdk/_bundled/claude): no Node stage.
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY claude_code_proxy ./claude_code_proxy
# pip and setuptools only install: they stay behind in this stage (the runtime never runs them).
RUN pip install --no-cache-dir --no-deps . \
 && /opt/venv/lib/python3.11/site-packages/claude_agent_sdk/_bundled/claude --version \
 && python -m pip uninstall --yes --quiet pip setuptools wheel

# ---- 2. runtime ---------------------------------------------------------------------------
FROM python:3.11-slim AS runtime
# tini is PID 1: it forwards SIGTERM to the server (graceful drain) and reaps orphaned CLI
# processes. Its version follows the base image's Debian release.
# The base image's own pip, setuptools and wheel go too: nothing here installs anything at run time.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && python -m pip uninstall --yes --quiet pip setuptools wheel
# A fixed numeric UID/GID. HOME is mode 1777, like /tmp: the compose file mounts a tmpfs on it,
# and only `uid=` could give a tmpfs to user 10001, which Podman rejects. runc gives a tmpfs the
# mode of the directory it covers, other runtimes the mount's `mode=`: both say 1777.
# CLAUDE_CONFIG_DIR (HOME/.claude) is not created here: its own tmpfs mount point is made inside
# HOME's tmpfs at start, with the compose file's mode.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --no-create-home \
      --shell /usr/sbin/nologin app \
 && install -d -o 10001 -g 10001 -m 1777 /home/app \
 && install -d -o 10001 -g 10001 -m 0700 /data
COPY --from=builder /opt/venv /opt/venv

# HOME and CLAUDE_CONFIG_DIR are written by the CLI: tmpfs (or a volume) in production, which
# is what lets the root filesystem be read-only. The usage ledger lives on the /data volume.
# The auto-updater, telemetry and other non-essential traffic are off; the proxy also sets
# these for every CLI it starts. The in-container bind is 0.0.0.0, so the server requires
# CLAUDE_PROXY_API_KEY (given at run time, never here).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/app \
    CLAUDE_CONFIG_DIR=/home/app/.claude \
    DISABLE_AUTOUPDATER=1 \
    DISABLE_TELEMETRY=1 \
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 \
    CLAUDE_PROXY_HOST=0.0.0.0 \
    CLAUDE_PROXY_PORT=8000 \
    CLAUDE_PROXY_USAGE_DB=/data/usage.db

USER 10001:10001
WORKDIR /home/app
VOLUME ["/data"]
EXPOSE 8000

# Liveness only: /health/live answers from the event loop and never spawns the CLI (no curl in
# this image, so python's urllib does the request). The start period is longer than the interval:
# Docker Engine 25 and later then probe every 5 s (their default start interval) until the first
# success, so the container turns healthy a few seconds after start; engines that have no start
# interval (older Docker, Podman) first report healthy within one interval, 30 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/health/live' % os.environ.get('CLAUDE_PROXY_PORT', '8000'), timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m", "claude_code_proxy"]
CMD ["serve"]
