"""Shared fixtures: the ComfyUI protocol double and the real-ComfyUI harness live in tests/support/; settings
isolation is here, for every test."""
from __future__ import annotations

import os

import pytest

from tests.support.fixtures import *  # noqa: F401,F403
from tests.support.postgres import STORE_FIXTURES


def _settings_variables() -> tuple[tuple[str, ...], frozenset[str]]:
    """Prefixes of every adapter's settings, and the core settings' variable names, read from the classes."""
    import bridge.adapters as adapters
    from bridge.config import AdapterSettings, Settings, env_name

    for name in adapters.ENABLED:
        adapters.load(name)  # registers each adapter's settings class
    prefixes = {"BRIDGE_"}
    stack = list(AdapterSettings.__subclasses__())
    while stack:
        cls = stack.pop()
        stack += cls.__subclasses__()
        prefix = str(cls.model_config.get("env_prefix") or "")
        if prefix:
            prefixes.add(prefix.upper())
    # COMFYUI_DIR stays: it says where the checkout is, which the real-ComfyUI harness needs.
    names = frozenset(env_name(Settings, f) for f in Settings.model_fields) - {"COMFYUI_DIR"}
    return tuple(sorted(prefixes)), names


_PREFIXES, _NAMES = _settings_variables()


@pytest.fixture(autouse=True)
def isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own bridge and adapter variables (BRIDGE_*, COMFYUI_URL, A1111_*, PICO_*, ...) never leak
    into a test; a test sets what it needs with monkeypatch or `--set` overrides."""
    for name in list(os.environ):
        upper = name.upper()
        if upper in _NAMES or upper.startswith(_PREFIXES):
            monkeypatch.delenv(name)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The engine and dialect suites run on both job stores: SQLite, and a real PostgreSQL (skipped, saying why,
    where no server binaries exist). Tests against a real ComfyUI run once, on SQLite; tests that ask for a
    PostgreSQL database themselves (`pg_url`: several replicas) run once, on it."""
    if "job_database" in metafunc.fixturenames and any(f in metafunc.fixturenames for f in STORE_FIXTURES) \
            and "pg_url" not in metafunc.fixturenames and not metafunc.definition.get_closest_marker("comfyui"):
        metafunc.parametrize("job_database", ["sqlite", "postgresql"], indirect=True)
