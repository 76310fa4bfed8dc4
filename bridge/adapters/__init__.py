"""Enabled API dialects. Each adapter is a module with `setup(app: web.Application) -> None` that adds its routes.

Add an adapter's name to ENABLED when it lands (and to MODULES when its module is not `bridge.adapters.<name>`). A
listed adapter that fails to import or has no `setup` stops the bridge at start-up with the adapter named: a
half-loaded API is worse than none. Adapters import `toolkit` and `bridge.*`, never each other; the names enabled
are in `app[ADAPTERS]` before any setup runs, so no setup depends on the order.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType

from aiohttp import web

from bridge.keys import ADAPTERS

ENABLED: tuple[str, ...] = ("a1111", "pico", "unified", "pixart_editor", "jobs_api", "aleaart")
# Adapters that live inside another dialect's package.
MODULES: dict[str, str] = {"pico": "a1111.pico"}


class AdapterLoadError(RuntimeError):
    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"adapter {name!r} (bridge.adapters.{MODULES.get(name, name)}) cannot be loaded: {reason}")
        self.name = name


def load(name: str) -> ModuleType:
    if not name.isidentifier():
        raise AdapterLoadError(name, "not a module name (BRIDGE_ADAPTERS)")
    try:
        module = importlib.import_module(f"{__name__}.{MODULES.get(name, name)}")
    except Exception as exc:
        raise AdapterLoadError(name, f"{type(exc).__name__}: {exc}") from exc
    if not callable(getattr(module, "setup", None)):
        raise AdapterLoadError(name, "it has no setup(app) function")
    return module


def setup_all(app: web.Application, names: Iterable[str] | None = None) -> list[str]:
    """Import and set up each adapter (default: ENABLED); returns the names set up."""
    chosen = list(ENABLED if names is None else names)
    modules = [(name, load(name)) for name in chosen]  # import all first: fail before any route is added
    app[ADAPTERS] = tuple(chosen)
    for name, module in modules:
        try:
            module.setup(app)
        except AdapterLoadError:
            raise
        except Exception as exc:
            raise AdapterLoadError(name, f"setup(app) failed: {type(exc).__name__}: {exc}") from exc
    return chosen
