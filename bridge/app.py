"""The bridge's aiohttp application: app factory, common routes (/health, /metrics, /openapi.json, /events),
middleware, the engine's and the managed ComfyUI's lifecycles, and the enabled adapters."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from bridge import __version__, adapters
from bridge.config import Settings
from bridge.engine import JobEngine
from bridge.events import EventStreams, stream_events
from bridge.http import (
    Cors,
    TokenBucket,
    path_matches,
    auth_middleware,
    body_limit_middleware,
    error_middleware,
    json_error,
    rate_limit_middleware,
)
from bridge.managed import ManagedComfyUI
from bridge.metrics import CONTENT_TYPE, Metrics, request_counter
from bridge.openapi import build_spec, openapi

log = logging.getLogger("bridge.app")

ENGINE = web.AppKey("engine", JobEngine)
SETTINGS = web.AppKey("settings", Settings)
MANAGED = web.AppKey("managed_comfyui", ManagedComfyUI)
METRICS = web.AppKey("metrics", Metrics)
STREAMS = web.AppKey("event_streams", EventStreams)
_OPENAPI_CACHE = web.AppKey("openapi_cache", dict)


def build_engine(settings: Settings, backends: Sequence[str]) -> JobEngine:
    return JobEngine(
        list(backends),
        settings.data_dir,
        settings.workflows_dir,
        max_queue=settings.max_queue,
        job_timeout=settings.job_timeout or None,
        requeue_on_backend_death=settings.requeue_on_backend_death,
    )


def create_app(settings: Settings, engine: JobEngine | None = None, *,
               adapter_names: Sequence[str] | None = None) -> web.Application:
    """Build the application. Without `engine`, one is built on settings.comfyui_urls, or on a managed ComfyUI
    child when no URL is set. The app starts and stops the engine (and the child) through cleanup_ctx.
    `adapter_names` defaults to settings.adapters, then to every module in bridge.adapters.ENABLED."""
    metrics = Metrics()
    cors = Cors(settings.cors_origins, settings.cors_credentials)
    middlewares: list[Any] = [request_counter(metrics)]
    if cors.enabled:
        middlewares.append(cors.middleware)
    middlewares += [error_middleware, body_limit_middleware(settings.max_body_bytes)]
    if settings.api_keys:
        middlewares.append(auth_middleware(settings.api_keys, settings.auth_exempt))
    if settings.rate_limit > 0:
        middlewares.append(rate_limit_middleware(TokenBucket(settings.rate_limit, settings.rate_burst),
                                                 settings.rate_exempt))

    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[STREAMS] = EventStreams()
    app[_OPENAPI_CACHE] = {}

    if engine is None:
        if settings.managed_comfyui:
            managed = ManagedComfyUI(settings)
            app[MANAGED] = managed
            # Before the engine's context: the engine connects to a ComfyUI that already answers.
            app.cleanup_ctx.append(_managed_ctx)
            engine = build_engine(settings, [managed.url])
        else:
            engine = build_engine(settings, settings.comfyui_urls)
    app[ENGINE] = engine
    app.cleanup_ctx.append(_engine_ctx)
    app.cleanup_ctx.append(_job_metrics_ctx)

    if cors.enabled:
        app.on_response_prepare.append(cors.on_response_prepare)
    app.on_shutdown.append(app[STREAMS].shutdown)

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    app.router.add_get("/events", events_handler)

    names = adapter_names if adapter_names is not None else settings.adapters
    adapters.setup_all(app, names)
    return app


async def _managed_ctx(app: web.Application) -> AsyncIterator[None]:
    managed = app[MANAGED]
    await managed.start()
    try:
        yield
    finally:
        await managed.stop()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    await engine.start()
    try:
        yield
    finally:
        await engine.stop()


async def _job_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Feeds the job-duration histogram from the engine's events."""
    engine, metrics = app[ENGINE], app[METRICS]

    async def observe() -> None:
        async for event in engine.subscribe(None):
            if event.get("type") == "status":
                metrics.observe_job(event.get("job") or {})

    task = asyncio.create_task(observe(), name="bridge-job-metrics")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _cuda_available(backends: Sequence[dict[str, Any]]) -> bool:
    for backend in backends:
        for device in backend.get("devices") or ():
            if isinstance(device, dict) and str(device.get("type", "")).lower() == "cuda":
                return True
        if backend.get("cuda_available"):
            return True
    return False


@openapi(tags=["bridge"], responses={
    200: {"description": "At least one backend answers.", "content": {"application/json": {"schema": {
        "type": "object",
        "required": ["status", "model_loaded", "cuda_available", "version", "queue_depth", "backends"],
        "properties": {
            "status": {"enum": ["healthy", "degraded", "unhealthy"]},
            "model_loaded": {"type": "boolean"}, "cuda_available": {"type": "boolean"},
            "version": {"type": "string"}, "queue_depth": {"type": "integer"},
            "jobs": {"type": "object"}, "backends": {"type": "array", "items": {"type": "object"}},
            "managed_comfyui": {"type": ["object", "null"]},
        }}}}},
    503: {"description": "No backend answers (same body, status unhealthy)."},
})
async def health(request: web.Request) -> web.Response:
    """Bridge and backend health: each ComfyUI's state, queue depth, version."""
    app = request.app
    engine = app[ENGINE]
    backends = [dict(b) for b in engine.backend_states()]
    stats = engine.stats()
    healthy = sum(1 for b in backends if b.get("healthy"))
    if backends and healthy == len(backends):
        status = "healthy"
    elif healthy:
        status = "degraded"
    else:
        status = "unhealthy"
    managed = app.get(MANAGED)
    body = {
        "status": status,
        # AleaArt's client reads these two: a backend that answers has its models available to load.
        "model_loaded": healthy > 0,
        "cuda_available": _cuda_available(backends),
        "version": __version__,
        "queue_depth": int(stats.get("queue_depth", 0)),
        "jobs": stats.get("by_status") or stats.get("counts") or {},
        "backends": backends,
        "managed_comfyui": managed.info() if managed is not None else None,
    }
    return web.json_response(body, status=200 if healthy else 503, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus metrics: jobs by state, queue depth, job durations, backend up, HTTP requests."""
    engine = request.app[ENGINE]
    text = request.app[METRICS].render(engine.stats(), engine.backend_states(), __version__)
    return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE})


async def openapi_handler(request: web.Request) -> web.Response:
    """OpenAPI 3.1 description of every route, generated from the router."""
    cache = request.app[_OPENAPI_CACHE]
    if "spec" not in cache:
        settings = request.app[SETTINGS]
        cache["spec"] = build_spec(
            request.app, title="Pixart bridge", version=__version__, secured=bool(settings.api_keys),
            exempt=lambda path: path_matches(path, settings.auth_exempt),
        )
    return web.json_response(cache["spec"])


@openapi(tags=["bridge"], parameters=[
    {"name": "job", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "Only this job's events; the stream ends when the job finishes."},
], responses={200: {"description": "text/event-stream of `status` and `progress` events "
                                   "(data: {\"type\", \"job\"})",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def events_handler(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events stream of job status and progress events."""
    job_id = request.query.get("job") or None
    return await stream_events(
        request, request.app[ENGINE], request.app[STREAMS], job_id,
        on_unknown_job=lambda jid: json_error(404, "job_not_found", f"job {jid!r} does not exist", "job"),
    )
