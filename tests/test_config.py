"""Settings: flags beat --set beat environment beat .env beat defaults; bad values name their variable."""
from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict

from bridge.__main__ import build_parser, settings_from_args
from bridge.config import AdapterSettings, SettingsError, load_settings


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text(
        "BRIDGE_PORT=9001\n"
        "BRIDGE_HOST=10.0.0.1\n"
        "COMFYUI_URL=http://dotenv:1\n"
        "BRIDGE_API_KEYS=dotenv-key\n"
        "BRIDGE_RATE_LIMIT=3\n"
        "DEMO_TIMEOUT=11\n"
        "DEMO_NAME=from-dotenv\n"
    )
    return path


class DemoSettings(AdapterSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")

    timeout: float = 60.0
    name: str = "default"
    enabled: bool = True


def test_defaults(tmp_path: Path) -> None:
    s = load_settings(env_file=tmp_path / "missing.env")
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.comfyui_urls == [] and s.managed_comfyui
    assert s.api_keys == [] and s.cors_origins == []
    assert s.auth_exempt == ["/", "/health", "/metrics", "/docs", "/docs/*", "/openapi.json"]
    assert s.max_body_bytes == 32 * 1024 * 1024
    assert s.workflows_dir.name == "workflows"


def test_the_output_bound_setting_says_what_the_engine_does() -> None:
    # the settings do not import the engine (a command's --help would load it all): their words are checked here
    from bridge.config import Settings
    from bridge.engine.options import EngineOptions
    from bridge.engine.results import MAX_OUTPUT_IMAGES

    field = Settings.model_fields["max_output_bytes"]
    assert field.default == EngineOptions.max_output_bytes
    assert f"({EngineOptions.max_output_bytes / 1024 ** 3:g} GiB)" in field.description
    assert f"more than {MAX_OUTPUT_IMAGES:,} images" in field.description


def test_dotenv_then_env_then_flags(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(env_file=env_file)
    assert s.port == 9001 and s.host == "10.0.0.1"
    assert s.comfyui_urls == ["http://dotenv:1"] and not s.managed_comfyui
    assert s.api_keys == ["dotenv-key"] and s.rate_limit == 3.0

    monkeypatch.setenv("BRIDGE_PORT", "9002")
    monkeypatch.setenv("COMFYUI_URL", "http://env-a:1/, http://env-b:2")
    s = load_settings(env_file=env_file)
    assert s.port == 9002 and s.host == "10.0.0.1"  # env beats .env only where set
    assert s.comfyui_urls == ["http://env-a:1", "http://env-b:2"]  # comma list, trailing slash dropped

    s = load_settings({"port": 9003, "comfyui_urls": ["http://flag:3"]}, env_file=env_file)
    assert s.port == 9003 and s.comfyui_urls == ["http://flag:3"]
    assert s.host == "10.0.0.1"


def test_command_line_flags_win(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_PORT", "9002")
    args = build_parser().parse_args([
        "--env-file", str(env_file), "--port", "9100", "--comfyui-url", "http://x:1,http://y:2",
        "--comfyui-url", "http://z:3", "--api-key", "k1", "--api-key", "k2", "--no-cors-credentials",
        "--set", "BRIDGE_MAX_QUEUE=7", "--set", "BRIDGE_PORT=1234",
    ])
    s = settings_from_args(args)
    assert s.port == 9100  # the flag beats --set, env and .env
    assert s.comfyui_urls == ["http://x:1", "http://y:2", "http://z:3"]
    assert s.api_keys == ["k1", "k2"]
    assert s.max_queue == 7  # --set reaches core settings too
    assert s.host == "10.0.0.1"


def test_set_beats_environment(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_MAX_QUEUE", "5")
    s = load_settings(overrides={"bridge_max_queue": "9"}, env_file=env_file)  # names are case-insensitive
    assert s.max_queue == 9


def test_adapter_settings_layers(env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    core = load_settings(env_file=env_file)
    demo = DemoSettings.from_settings(core)
    assert demo.timeout == 11.0 and demo.name == "from-dotenv" and demo.enabled

    monkeypatch.setenv("DEMO_NAME", "from-env")
    monkeypatch.setenv("DEMO_ENABLED", "false")
    demo = DemoSettings.from_settings(load_settings(env_file=env_file))
    assert demo.name == "from-env" and demo.enabled is False and demo.timeout == 11.0

    core = load_settings(overrides={"DEMO_NAME": "from-flag", "DEMO_TIMEOUT": "2.5"}, env_file=env_file)
    demo = DemoSettings.from_settings(core)
    assert demo.name == "from-flag" and demo.timeout == 2.5


def test_adapter_settings_without_env_file() -> None:
    demo = DemoSettings.from_settings(load_settings(env_file=None))
    assert (demo.timeout, demo.name) == (60.0, "default")


@pytest.mark.parametrize(("overrides", "variable", "words"), [
    ({"BRIDGE_PORT": "eighty"}, "BRIDGE_PORT", "integer"),
    ({"BRIDGE_PORT": "70000"}, "BRIDGE_PORT", "65535"),
    ({"COMFYUI_URL": "localhost:8188"}, "COMFYUI_URL", "http://"),
    ({"BRIDGE_LOG_LEVEL": "chatty"}, "BRIDGE_LOG_LEVEL", "chatty"),
    ({"BRIDGE_RATE_LIMIT": "-1"}, "BRIDGE_RATE_LIMIT", "greater than or equal"),
    ({"BRIDGE_CORS_ORIGINS": "*", "BRIDGE_CORS_CREDENTIALS": "true"}, "BRIDGE_CORS_CREDENTIALS", "'*'"),
])
def test_bad_values_name_the_variable(overrides: dict[str, str], variable: str,
                                      words: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(overrides=overrides, env_file=None)
    assert info.value.field == variable
    assert str(info.value).startswith(variable + ":")
    assert words in str(info.value)


def test_bad_adapter_value_names_the_variable() -> None:
    core = load_settings(overrides={"DEMO_TIMEOUT": "soon"}, env_file=None)
    with pytest.raises(SettingsError) as info:
        DemoSettings.from_settings(core)
    assert info.value.field == "DEMO_TIMEOUT"


def test_cors_wildcard_without_credentials_is_fine() -> None:
    s = load_settings(overrides={"BRIDGE_CORS_ORIGINS": "*"}, env_file=None)
    assert s.cors_origins == ["*"] and not s.cors_credentials


def test_json_list_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_CORS_ORIGINS", '["https://a.example", "https://b.example"]')
    assert load_settings(env_file=None).cors_origins == ["https://a.example", "https://b.example"]
