"""The application's keys (aiohttp `AppKey`s), in a module of their own so adapters can read the engine and the
settings typed without importing the app that imports them."""
from __future__ import annotations

from aiohttp import web

from bridge.config import Settings
from bridge.engine import JobEngine
from bridge.events import EventStreams
from bridge.managed import ManagedComfyUI
from bridge.metrics import Metrics

ENGINE = web.AppKey("engine", JobEngine)
SETTINGS = web.AppKey("settings", Settings)
MANAGED = web.AppKey("managed_comfyui", ManagedComfyUI)
METRICS = web.AppKey("metrics", Metrics)
STREAMS = web.AppKey("event_streams", EventStreams)
OPENAPI_CACHE = web.AppKey("openapi_cache", dict)
# The adapters enabled in this app (set before any adapter's setup runs, so none depends on their order).
ADAPTERS = web.AppKey("adapters", tuple)
