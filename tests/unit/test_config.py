"""Settings: sources, parsing, and the generated files that must not drift."""

from __future__ import annotations

from pathlib import Path

import pytest

from claude_code_proxy.config import envfile
from claude_code_proxy.config.settings import DEFAULT_MODEL_ALIASES, Settings


def test_env_example_matches_settings() -> None:
    assert envfile.ENV_EXAMPLE.read_text(encoding="utf-8") == envfile.render_env_example(), (
        "run: python -m claude_code_proxy.config.envfile"
    )


def test_configuration_doc_table_matches_settings() -> None:
    current = envfile.CONFIG_DOC.read_text(encoding="utf-8")
    assert envfile.render_config_doc(current) == current, "run: python -m claude_code_proxy.config.envfile"


def test_env_example_lists_every_setting_once() -> None:
    names = [line.split("=", 1)[0] for line in envfile.ENV_EXAMPLE.read_text().splitlines()
             if line and not line.startswith("#")]
    assert names == [f"CLAUDE_PROXY_{n.upper()}" for n in Settings.model_fields]


def test_env_example_loads_to_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(envfile.ENV_EXAMPLE.read_text())
    from_file = Settings()
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert from_file.model_dump() == defaults.model_dump()


def test_environment_wins_over_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CLAUDE_PROXY_PORT=9001\nCLAUDE_PROXY_DEFAULT_MODEL=haiku\n")
    monkeypatch.setenv("CLAUDE_PROXY_PORT", "9002")
    settings = Settings()
    assert settings.port == 9002
    assert settings.default_model == "haiku"


def test_list_and_mapping_settings_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_MODELS", "claude-a-1, claude-b-2")
    monkeypatch.setenv("CLAUDE_PROXY_MODEL_ALIASES", "gpt-4o=opus,my-model=haiku")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.models == ["claude-a-1", "claude-b-2"]
    assert settings.model_aliases["gpt-4o"] == "opus"
    assert settings.model_aliases["my-model"] == "haiku"
    assert settings.model_aliases["o3"] == DEFAULT_MODEL_ALIASES["o3"]


def test_api_key_is_secret_and_empty_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_API_KEY", "")
    assert Settings(_env_file=None).api_key is None  # type: ignore[call-arg]
    monkeypatch.setenv("CLAUDE_PROXY_API_KEY", "sekret-value")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "sekret-value" not in repr(settings)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "sekret-value"


def test_cli_path_auto_detects_the_bundled_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAUDE_PROXY_CLI_PATH", raising=False)
    path = Settings(_env_file=None).resolved_cli_path()  # type: ignore[call-arg]
    assert path is not None and Path(path).name == "claude" and "_bundled" in path
    monkeypatch.setenv("CLAUDE_PROXY_CLI_PATH", "/opt/custom/claude")
    assert Settings(_env_file=None).resolved_cli_path() == "/opt/custom/claude"  # type: ignore[call-arg]


def test_the_pool_follows_the_machine_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_WARM_POOL_SIZE", "")
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert Settings(_env_file=None).pool_size == 6  # type: ignore[call-arg]
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert Settings(_env_file=None).pool_size == 2  # type: ignore[call-arg]
    monkeypatch.setenv("CLAUDE_PROXY_WARM_POOL_SIZE", "0")
    assert Settings(_env_file=None).pool_size == 0  # type: ignore[call-arg]
