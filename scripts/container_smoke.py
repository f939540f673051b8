#!/usr/bin/env python3
"""`docker compose up`, for real: build the image and smoke-test the composed service with Podman.

    make container-smoke        (= .venv/bin/python scripts/container_smoke.py)

Needs root on a Debian-family machine (as CI has) and the project's virtual environment (for the
openai SDK, httpx and the test suite's fake Anthropic API). No Docker engine and no image registry
are needed. Each step reuses what an earlier run left, so a second run only redoes what changed:

1. Tools: podman, podman-compose, runc, netavark, iptables and debootstrap, installed with apt-get
   when missing.
2. Podman settings for this machine, in a containers.conf of the script's own passed through
   CONTAINERS_CONF (the system's files are left alone): ulimits at the machine's hard limits
   (Podman's defaults are higher, and raising a hard limit is refused in a sandboxed VM), runc
   (crun refuses a hybrid cgroup v1/v2 layout), netavark, cgroupfs and a file event log (no systemd).
3. The base image: python:3.11-slim when it is in local storage (`podman pull` it first where a
   registry is reachable); otherwise a stand-in under the same name, made once per machine from
   Debian bookworm (debootstrap from this machine's own apt source) with Python 3.11, pip and
   setuptools installed where the real image has them.
4. `podman build --format docker` (the default OCI format drops HEALTHCHECK), with the host's CA
   bundle mounted (for the build only; no layer keeps it) so pip trusts what the host trusts.
5. The project's docker-compose.yml, copied byte for byte into a scratch directory beside a
   generated .env, comes up under podman-compose as project `claude-code-proxy-smoke` (its own
   network, volume and container; a real deployment is not touched) on a free loopback port.
6. Checks, against the fake Anthropic API of the test suite: see `main` below.

Networking: the fake upstream runs in this process on the host, bound to the gateway address of
the project's bridge network (created here before podman-compose would create it), so the
container reaches it without host networking and nothing listens beyond that bridge.
Podman runs no periodic health checks without systemd, so `podman healthcheck run` is polled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.fake_upstream import DEFAULT_TEXT, FakeUpstream, last_user_text  # noqa: E402

BASE_SUITE = "bookworm"  # the Debian release python:3.11-slim is built on
STAND_IN_LABEL = "claude-code-proxy.base-stand-in"
STAND_IN_RECIPE = f"{BASE_SUITE}.2"  # a stand-in made by an older recipe is made again
PROJECT = "claude-code-proxy-smoke"
APT_PACKAGES = {  # command to look for -> Debian package
    "podman": "podman", "podman-compose": "podman-compose", "runc": "runc", "netavark": "netavark",
    "iptables": "iptables", "debootstrap": "debootstrap",
}
NETAVARK_DIRS = ("/usr/lib/podman", "/usr/libexec/podman", "/usr/local/libexec/podman")
HEALTHY_WITHIN = 120.0  # seconds from `up` to a passing healthcheck (a busy machine is slow)
STREAM_SECONDS = 3.0  # how long the stream interrupted by `podman stop` takes


class SmokeError(Exception):
    """A check failed: the message says which and what was seen."""


def log(message: str) -> None:
    print(f"[container-smoke] {message}", flush=True)


def run(*argv: str, check: bool = True, quiet: bool = False, timeout: float = 900,
        env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                            env=env, **kwargs)
    if check and result.returncode != 0:
        raise SmokeError(f"`{' '.join(argv)}` exited {result.returncode}:\n{result.stdout}{result.stderr}")
    if not quiet and result.stderr.strip() and result.returncode != 0:
        log(result.stderr.strip())
    return result


@contextlib.contextmanager
def step(name: str, timings: dict[str, float]) -> Iterator[None]:
    started = time.monotonic()
    log(f"{name} ...")
    yield
    timings[name] = time.monotonic() - started
    log(f"{name}: {timings[name]:.1f} s")


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeError(message)


# -- 1-3: tools, settings, base image ------------------------------------------------------------


def ensure_tools() -> None:
    missing = [pkg for cmd, pkg in APT_PACKAGES.items() if not _have(cmd)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SmokeError(f"missing {', '.join(missing)}: install them (apt-get) or run this as root")
    log(f"installing {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run("apt-get", "update", "-qq", env=env)
    run("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing, env=env)


def _have(command: str) -> bool:
    if command == "netavark":  # not on PATH: podman looks in its helper directories
        return any(Path(d, command).exists() for d in NETAVARK_DIRS)
    return shutil.which(command) is not None


def containers_conf(directory: Path) -> Path:
    """Podman settings this machine needs, without touching /etc/containers."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
    nproc = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    path = directory / "containers.conf"
    path.write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[network]\n"
        'network_backend = "netavark"\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'events_logger = "file"\n'
        'cgroup_manager = "cgroupfs"\n'
    )
    return path


def base_image_name() -> str:
    """The name Podman looks up for the Dockerfile's FROM: its short-name alias when one is set
    (registries.conf, as Debian ships one for python), else the local `localhost/` name."""
    first_from = re.search(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    expect(first_from is not None, "the Dockerfile has no FROM")
    assert first_from is not None
    repository, _, tag = first_from[1].partition(":")
    aliases: dict[str, str] = {}
    config = Path("/etc/containers")
    for path in [config / "registries.conf", *sorted(config.glob("registries.conf.d/*.conf"))]:
        if path.is_file():
            aliases.update(tomllib.loads(path.read_text()).get("aliases", {}))
    return f"{aliases.get(repository, f'localhost/{repository}')}:{tag or 'latest'}"


def ensure_base_image() -> str:
    """python:3.11-slim from local storage, or a stand-in made from Debian bookworm."""
    base_image = base_image_name()
    if run("podman", "image", "exists", base_image, check=False).returncode == 0:
        labels = json.loads(run("podman", "image", "inspect", "--format", "{{json .Labels}}", base_image).stdout)
        recipe = (labels or {}).get(STAND_IN_LABEL)
        if recipe is None:
            return "python:3.11-slim"
        if recipe == STAND_IN_RECIPE:
            return "stand-in"
        run("podman", "untag", base_image)  # its build cache may still use it: untag, never remove
        log(f"the stand-in {base_image} is from an older recipe ({recipe}): making it again")
    else:
        log(f"no {base_image} here: making a stand-in from Debian {BASE_SUITE}")
    mirror = apt_mirror()
    with tempfile.TemporaryDirectory(prefix="ccp-base-") as scratch:
        rootfs = Path(scratch, "rootfs")
        run("debootstrap", "--variant=minbase", BASE_SUITE, str(rootfs), mirror, timeout=1800)
        # apt in the chroot is quicker than debootstrap's --include (it resolves and fetches at once).
        shutil.copyfile("/etc/resolv.conf", rootfs / "etc/resolv.conf")
        run("chroot", str(rootfs), "apt-get", "update", "-qq")
        run("chroot", str(rootfs), "apt-get", "install", "-y", "-qq", "--no-install-recommends",
            "ca-certificates", "python3", "python3-venv", env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        Path(rootfs, "etc/resolv.conf").unlink()
        # Where python:3.11-slim has them: python and pip on /usr/local/bin, pip and setuptools
        # installed by pip (so the Dockerfile can uninstall them), no EXTERNALLY-MANAGED marker.
        for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()
        wheels = [f"/{w.relative_to(rootfs)}" for w in sorted(rootfs.glob("usr/share/python-wheels/*.whl"))
                  if w.name.startswith(("pip-", "setuptools-"))]
        pip_wheel = next(w for w in wheels if "/pip-" in w)
        run("chroot", str(rootfs), "python3", f"{pip_wheel}/pip", "install", "--quiet", "--no-index",
            "--no-cache-dir", *wheels)
        Path(rootfs, "usr/local/bin/python").symlink_to("/usr/bin/python3")
        # As in Debian's own container images: apt keeps no package caches in image layers.
        Path(rootfs, "etc/apt/apt.conf.d/docker-clean").write_text(
            'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
            'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        )
        for pattern in ("usr/share/doc/*", "usr/share/man/*", "usr/share/locale/*", "var/lib/apt/lists/*",
                        "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/log/*"):
            for path in rootfs.glob(pattern):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run("podman", "import",
            "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]',
            "--change", f"LABEL {STAND_IN_LABEL}={STAND_IN_RECIPE}",
            "-", base_image, stdin=tar.stdout)
        expect(tar.wait() == 0, "tar of the stand-in root filesystem failed")
    return "stand-in (made now)"


def apt_mirror() -> str:
    """The URI this machine's apt uses for Debian's main archive."""
    policy = run("apt-cache", "policy").stdout
    for match in re.finditer(r"^\s*\d+\s+(\S+)\s+([\w-]+)/main\s+\S+\s+Packages$", policy, re.M):
        uri, suite = match[1], match[2]
        if "-" not in suite and uri.startswith(("http://", "https://")):
            return uri
    raise SmokeError("no Debian main archive in `apt-cache policy`: cannot debootstrap a base image")


def build_image(image: str) -> None:
    command = ["podman", "build", "--format", "docker", "--layers", "-t", image]
    bundle = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    if Path(bundle).is_file():
        command += ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    run(*command, str(ROOT), timeout=1800)


# -- 5: compose -----------------------------------------------------------------------------------


@dataclass
class Composed:
    """The compose project under test, from a scratch directory."""

    directory: Path
    api_key: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run("podman-compose", "-p", PROJECT, "-f", str(self.directory / "docker-compose.yml"), *args)

    def container(self) -> str:
        names = run("podman", "ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}",
                    "--format", "{{.Names}}").stdout.split()
        expect(len(names) == 1, f"expected one container in project {PROJECT}, found {names}")
        return names[0]

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(run("podman", "inspect", self.container()).stdout)
        return data[0]

    def client(self, with_key: bool = True) -> httpx.Client:
        headers = {"x-api-key": self.api_key} if with_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60, trust_env=False)


def compose_image() -> str:
    """The image name the compose file runs (and would build)."""
    match = re.search(r"^ {4}image: *(\S+)$", (ROOT / "docker-compose.yml").read_text(), re.M)
    expect(match is not None, "docker-compose.yml names no image for its service")
    assert match is not None
    return match[1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def clean_project() -> None:
    """Remove what this project left (now or in an earlier, interrupted run): container, volume, network."""
    label = f"label=io.podman.compose.project={PROJECT}"
    for container in run("podman", "ps", "-aq", "--filter", label, check=False).stdout.split():
        run("podman", "rm", "-f", "-t", "0", container, check=False, quiet=True)
    for volume in run("podman", "volume", "ls", "-q", "--filter", label, check=False).stdout.split():
        run("podman", "volume", "rm", "-f", volume, check=False, quiet=True)
    run("podman", "network", "rm", "-f", f"{PROJECT}_default", check=False, quiet=True)


def create_network() -> str:
    """The project's network, made as podman-compose would make it; returns its gateway address."""
    name = f"{PROJECT}_default"
    run("podman", "network", "create", "--label", f"io.podman.compose.project={PROJECT}",
        "--label", f"com.docker.compose.project={PROJECT}", name)
    networks: list[dict[str, Any]] = json.loads(run("podman", "network", "inspect", name).stdout)
    gateway: str = networks[0]["subnets"][0]["gateway"]
    return gateway


SERVICE = "proxy"
"""The one service the smoke brings up: podman-compose (1.0) knows no profiles, so a bare `up`
would start the `replicas` profile's services too (docs/scaling.md)."""


def write_project(directory: Path, upstream_url: str) -> Composed:
    compose_file = directory / "docker-compose.yml"
    shutil.copyfile(ROOT / "docker-compose.yml", compose_file)
    composed = Composed(directory, secrets.token_hex(32), free_port())
    (directory / ".env").write_text(
        f"CLAUDE_PROXY_API_KEY={composed.api_key}\n"
        f"PROXY_HOST_PORT={composed.port}\n"
        f"ANTHROPIC_BASE_URL={upstream_url}\n"
        "ANTHROPIC_API_KEY=smoke-test-key-for-the-fake-upstream\n"
    )
    return composed


def wait_healthy(composed: Composed) -> float:
    """Poll `podman healthcheck run` (no systemd timer here); seconds from start to healthy."""
    name = composed.container()
    deadline = time.monotonic() + HEALTHY_WITHIN
    while (result := run("podman", "healthcheck", "run", name, check=False, quiet=True)).returncode != 0:
        status = run("podman", "inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if status != "running" or time.monotonic() > deadline:
            logs = run("podman", "logs", name, check=False)
            raise SmokeError(f"not healthy ({status}): {result.stdout}{result.stderr}\n{logs.stdout}{logs.stderr}")
        time.sleep(0.2)
    health, started = run("podman", "inspect", "--format", "{{.State.Health.Status}} {{.State.StartedAt.UnixNano}}",
                          name).stdout.split()
    expect(health == "healthy", f"health status {health} after a passing check")
    return time.time() - int(started) / 1e9


# -- 6: the checks ---------------------------------------------------------------------------------

# What runs inside the container to see how it runs (python, because the image has no shell tools
# beyond what Debian's base brings).
INSIDE = r"""
import importlib.util, json, os, subprocess, sys
FIND_TOOLS = "import importlib.util as u; print(*(m for m in ('pip', 'setuptools') if u.find_spec(m)))"
status = dict(line.split(":", 1) for line in open("/proc/1/status").read().splitlines())
self_status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
def writable(path):
    try:
        with open(os.path.join(path, ".smoke-write"), "w"):
            pass
        os.unlink(os.path.join(path, ".smoke-write"))
        return True
    except OSError:
        return False
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "pid1": open("/proc/1/cmdline").read().split("\0")[0],
    "cap_eff": status["CapEff"].strip(), "cap_bnd": status["CapBnd"].strip(),
    "no_new_privs": self_status["NoNewPrivs"].strip(),
    "writable": {p: writable(p) for p in ("/", "/opt/venv", "/tmp", os.environ["HOME"],
                                          os.environ["CLAUDE_CONFIG_DIR"], "/data")},
    "home": os.environ["HOME"], "config_dir": os.environ["CLAUDE_CONFIG_DIR"],
    "venv_tools": [m for m in ("pip", "setuptools") if importlib.util.find_spec(m)],
    "base_tools": subprocess.run([sys._base_executable, "-c", FIND_TOOLS],
                                 capture_output=True, text=True, check=True).stdout.split(),
}))
"""


def check_hardening(composed: Composed) -> dict[str, Any]:
    seen: dict[str, Any] = json.loads(run("podman", "exec", composed.container(), "python", "-c", INSIDE).stdout)
    expect(seen["uid"] == 10001 and seen["gid"] == 10001, f"runs as {seen['uid']}:{seen['gid']}, not 10001")
    expect(seen["pid1"] == "/usr/bin/tini", f"PID 1 is {seen['pid1']}, not tini")
    expect(int(seen["cap_eff"], 16) == 0 and int(seen["cap_bnd"], 16) == 0,
           f"capabilities left: effective {seen['cap_eff']}, bounding {seen['cap_bnd']}")
    expect(seen["no_new_privs"] == "1", "no-new-privileges is not set")
    wanted = {"/": False, "/opt/venv": False, "/tmp": True, seen["home"]: True, seen["config_dir"]: True,
              "/data": True}
    expect(seen["writable"] == wanted, f"writable paths {seen['writable']}, wanted {wanted}")
    expect(not seen["venv_tools"] and not seen["base_tools"],
           f"install tools left: {seen['venv_tools']} in the venv, {seen['base_tools']} in the base Python")
    host = composed.inspect()["HostConfig"]
    expect(host["ReadonlyRootfs"] is True, "root filesystem is not read-only")
    expect(host["Memory"] == 2 * 1024**3, f"memory limit {host['Memory']}")
    expect(host["NanoCpus"] == 2 * 10**9, f"CPU limit {host['NanoCpus']}")
    seen["pids_limit"] = host["PidsLimit"]  # podman-compose 1.0 leaves pids_limit to Podman's default
    bindings = host["PortBindings"]["8000/tcp"]
    expect(bindings == [{"HostIp": "127.0.0.1", "HostPort": str(composed.port)}], f"published as {bindings}")
    return seen


# The API surfaces, one line each: path, request body for a prompt, and how to read the answer's
# text from the JSON body or from the SSE stream (None: the stream did not finish properly).


def anthropic_body(prompt: str, stream: bool) -> dict[str, Any]:
    return {"model": "sonnet", "max_tokens": 200, "stream": stream, "messages": [{"role": "user", "content": prompt}]}


def openai_chat_body(prompt: str, stream: bool) -> dict[str, Any]:
    return {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": prompt}]}


def anthropic_text(body: dict[str, Any]) -> str:
    return "".join(block["text"] for block in body["content"] if block["type"] == "text")


def openai_chat_text(body: dict[str, Any]) -> str:
    content: str = body["choices"][0]["message"]["content"]
    return content


def sse_events(raw: str) -> list[tuple[str, str]]:
    """(event name, data) per SSE event."""
    events = []
    for block in raw.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, "\n".join(data)))
    return events


def anthropic_stream_text(raw: str) -> str | None:
    events = sse_events(raw)
    if not events or events[-1][0] != "message_stop":
        return None
    deltas = [json.loads(data)["delta"] for name, data in events if name == "content_block_delta"]
    return "".join(d["text"] for d in deltas if d["type"] == "text_delta")


def openai_chat_stream_text(raw: str) -> str | None:
    events = [data for _, data in sse_events(raw)]
    if not events or events[-1] != "[DONE]":
        return None
    chunks = [json.loads(data) for data in events[:-1]]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


@dataclass(frozen=True)
class Surface:
    path: str
    body: Callable[[str, bool], dict[str, Any]]
    text: Callable[[dict[str, Any]], str]
    stream_text: Callable[[str], str | None]


SURFACES = [
    Surface("/v1/messages", anthropic_body, anthropic_text, anthropic_stream_text),
    Surface("/v1/chat/completions", anthropic_body, anthropic_text, anthropic_stream_text),
    Surface("/openai/v1/chat/completions", openai_chat_body, openai_chat_text, openai_chat_stream_text),
]
MODEL_LISTS = ["/v1/models", "/openai/v1/models"]


def upstream_saw(upstream: FakeUpstream, prompt: str) -> bool:
    return any(last_user_text(call.body) == prompt for call in upstream.messages_calls)


def check_surfaces(composed: Composed, upstream: FakeUpstream) -> str:
    count = 0
    with composed.client() as client:
        for surface in SURFACES:
            for stream in (False, True):
                marker = f"smoke-{secrets.token_hex(4)}"
                prompt = f"[[say:{marker}]]"
                where = f"{surface.path} (stream={stream})"
                response = client.post(surface.path, json=surface.body(prompt, stream))
                expect(response.status_code == 200, f"{where}: {response.status_code} {response.text[:300]}")
                text = surface.stream_text(response.text) if stream else surface.text(response.json())
                expect(text == marker, f"{where}: answered {text!r}, wanted {marker!r}")
                expect(upstream_saw(upstream, prompt), f"{where}: the fake upstream never received the prompt")
                count += 1
        for path in MODEL_LISTS:
            response = client.get(path)
            expect(response.status_code == 200 and response.json()["data"], f"{path}: {response.text[:300]}")
        health = client.get("/health").json()
        expect(health["status"] == "ok" and health["cli"]["found"], f"/health: {health}")
    return (f"{count} answers from {len(SURFACES)} surfaces (plain and streaming), each seen by the fake upstream; "
            f"{', '.join(MODEL_LISTS)} and /health")


def check_key_required(composed: Composed) -> str:
    with composed.client(with_key=False) as client:
        live = client.get("/health/live")
        expect(live.status_code == 200, f"/health/live without a key: {live.status_code}")
        for surface in SURFACES:
            response = client.post(surface.path, json=surface.body("no key", False))
            expect(response.status_code == 401, f"{surface.path} without a key: {response.status_code}")
        for path in [*MODEL_LISTS, "/usage"]:
            response = client.get(path)
            expect(response.status_code == 401, f"{path} without a key: {response.status_code}")
    wrong = httpx.get(f"{composed.base_url}/v1/models", headers={"x-api-key": "wrong"}, trust_env=False)
    expect(wrong.status_code == 401, f"/v1/models with a wrong key: {wrong.status_code}")
    return "401 without the key or with a wrong one, on every surface; /health/live open"


def check_openai_sdk(composed: Composed, upstream: FakeUpstream) -> str:
    """The README's own OpenAI SDK lines, pointed at the composed service."""
    client = openai.OpenAI(base_url=f"{composed.base_url}/openai/v1", api_key=composed.api_key,
                           _strict_response_validation=True)
    upstream.clear()
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    expect(reply.choices[0].message.content == DEFAULT_TEXT, f"openai SDK: {reply.choices[0].message.content!r}")
    expect(upstream_saw(upstream, "hi"), "openai SDK: the fake upstream never received 'hi'")
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
        model="sonnet", stream=True, messages=[{"role": "user", "content": "a story"}]) if chunk.choices)
    expect(streamed == DEFAULT_TEXT, f"openai SDK stream: {streamed!r}")
    expect(upstream_saw(upstream, "a story"), "openai SDK stream: the fake upstream never received 'a story'")
    return f"the README's two calls (plain and streaming) answered {DEFAULT_TEXT!r}"


def check_doctor(composed: Composed) -> str:
    result = run("podman", "exec", composed.container(), "python", "-m", "claude_code_proxy", "doctor", "--json",
                 check=False)
    report: dict[str, Any] = json.loads(result.stdout)
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    expect(result.returncode == 0 and report["ok"], f"doctor: {statuses}")
    # The port is taken by the running proxy itself: doctor says so as a warning, nothing else warns.
    expect(all(s in ("ok", "skip") for n, s in statuses.items() if n != "port"), f"doctor: {statuses}")
    return ", ".join(f"{name} {status}" for name, status in statuses.items())


def check_ledger_kept(composed: Composed, before: set[str]) -> str:
    after = recorded_ids(composed)
    expect(len(before) > 0 and before <= after, f"ledger rows lost across down/up: {sorted(before - after)}")
    return f"all {len(before)} earlier requests still in /usage after down/up"


def describe_hardening(seen: dict[str, Any]) -> str:
    return (f"uid {seen['uid']}, PID 1 {seen['pid1']}, no capabilities, no-new-privileges, read-only root "
            f"(writable: {', '.join(p for p, ok in seen['writable'].items() if ok)}), "
            f"pids limit {seen['pids_limit']}, no pip or setuptools")


def recorded_ids(composed: Composed) -> set[str]:
    with composed.client() as client:
        report = client.get("/usage", params={"recent": 500}).json()
    return {record["request_id"] for record in report["recent"]}


def check_stop_mid_stream(composed: Composed, upstream: FakeUpstream) -> str:
    """`podman stop` while a stream runs: the stream still ends properly and the exit code is 0."""
    answer = f"slow-{secrets.token_hex(4)} and more words to spread over time"
    prompt = f"[[say:{answer}]] [[slow:{STREAM_SECONDS}]]"
    first_text = threading.Event()
    outcome: dict[str, Any] = {}
    parts: list[str] = []

    def stream() -> None:
        try:
            with composed.client() as client, client.stream(
                    "POST", "/openai/v1/chat/completions", json=openai_chat_body(prompt, True)) as response:
                outcome["status"] = response.status_code
                for chunk in response.iter_text():
                    parts.append(chunk)
                    if "slow-" in "".join(parts):
                        first_text.set()
        except Exception as exc:  # reported below, in the main thread
            outcome["error"] = repr(exc)
        finally:
            outcome["raw"] = "".join(parts)
            first_text.set()

    thread = threading.Thread(target=stream)
    thread.start()
    expect(first_text.wait(60), "the slow stream never started")
    so_far = "".join(parts)
    expect("[DONE]" not in so_far and "error" not in outcome, f"the stream was over before the stop: {so_far[-300:]!r}")
    started = time.monotonic()
    name = composed.container()
    run("podman", "stop", "-t", "20", name)  # the compose file's stop_grace_period
    stop_seconds = time.monotonic() - started
    thread.join(60)
    expect("error" not in outcome, f"the stream broke at `podman stop`: {outcome.get('error')}")
    text = openai_chat_stream_text(outcome.get("raw", ""))
    expect(outcome.get("status") == 200 and text == answer,
           f"the stream did not finish at `podman stop`: {outcome.get('raw', '')[-300:]!r}")
    state = composed.inspect()["State"]
    expect(state["Status"] == "exited" and state["ExitCode"] == 0,
           f"after `podman stop`: {state['Status']}, exit code {state['ExitCode']}")
    expect(upstream_saw(upstream, prompt), "the slow stream never reached the fake upstream")
    return f"the stream ended with [DONE], exit code 0, `podman stop` took {stop_seconds:.1f} s"


# -- the run ------------------------------------------------------------------------------------


class Checks:
    """Runs named checks in order and logs each; CI reads the closing `N passed, N failed` line."""

    def __init__(self) -> None:
        self.passed = 0

    def __call__(self, name: str, check: Callable[[], str]) -> None:
        started = time.monotonic()
        detail = check()
        self.passed += 1
        log(f"ok: {name} ({time.monotonic() - started:.1f} s): {detail}")


def main(checks: Checks, argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true",
                        help="after the checks, keep the service and the fake upstream up until Ctrl-C")
    args = parser.parse_args(argv)
    # Interrupted or killed (a CI timeout, Ctrl-C even from a background job): still clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timings: dict[str, float] = {}
    began = time.monotonic()
    image = compose_image()
    with tempfile.TemporaryDirectory(prefix="ccp-smoke-") as scratch:
        os.environ["CONTAINERS_CONF"] = str(containers_conf(Path(scratch)))
        with step("tools", timings):
            ensure_tools()
        with step("base image", timings):
            base = ensure_base_image()
        with step("build", timings):
            build_image(image)
        size = int(run("podman", "image", "inspect", "--format", "{{.Size}}", image).stdout)
        log(f"image {image}: {size / 1e6:.0f} MB on base {base}")
        clean_project()
        gateway = create_network()
        project_dir = Path(scratch, "project")
        project_dir.mkdir()
        upstream = FakeUpstream(host=gateway, port=free_port())
        composed = write_project(project_dir, f"http://{gateway}:{upstream.port}")
        try:
            with step("compose up", timings):
                composed.compose("up", "-d", SERVICE)
                # The bridge and its gateway address exist once a container is on the network.
                upstream.start()
            checks("healthy", lambda: f"{wait_healthy(composed):.1f} s after start")
            checks("hardening", lambda: describe_hardening(check_hardening(composed)))
            checks("key required", lambda: check_key_required(composed))
            checks("surfaces", lambda: check_surfaces(composed, upstream))
            checks("openai SDK", lambda: check_openai_sdk(composed, upstream))
            checks("doctor", lambda: check_doctor(composed))
            before = recorded_ids(composed)
            checks("stop mid-stream", lambda: check_stop_mid_stream(composed, upstream))
            with step("down and up", timings):
                composed.compose("down", SERVICE)
                composed.compose("up", "-d", SERVICE)
            checks("healthy again", lambda: f"{wait_healthy(composed):.1f} s after start")
            checks("ledger kept", lambda: check_ledger_kept(composed, before))
            if args.keep:
                log(f"up at {composed.base_url} (key {composed.api_key}, project {project_dir}); Ctrl-C ends it")
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
        finally:
            clean_project()
            upstream.stop()
    timings["total"] = time.monotonic() - began
    log("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


if __name__ == "__main__":
    done = Checks()
    failed = 0
    try:
        main(done)
    except SmokeError as failure:
        log(f"FAILED: {failure}")
        failed = 1
    print(f"container-smoke: {done.passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
