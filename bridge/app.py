"""The bridge's aiohttp application: app factory, common routes (/, /health, /metrics, /openapi.json, /events,
/docs), middleware, the engine's and the managed ComfyUI's lifecycles, and the enabled adapters."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from bridge import __version__, adapters, apidocs, job_routes
from bridge import images as image_io
from bridge.api import endpoint
from bridge.comfyui_process import ComfyUIProcess
from bridge.config import Settings
from bridge.engine import EngineOptions, JobEngine
from bridge.engine.retention import Retention
from bridge.events import EventStreams, stream_events
from bridge.http import (ApiKeys, Cors, FailureLockout, SharedLimits, TokenBucket, auth_middleware,
                         body_limit_middleware, client_identity, error_middleware, forwarded_for, json_error,
                         path_matches, rate_limit_middleware)
from bridge.keys import ENGINE, MANAGED, METRICS, OPENAPI_CACHE, SETTINGS, STREAMS
from bridge.managed import ManagedComfyUI
from bridge.metrics import CONTENT_TYPE, Metrics, request_counter
from bridge.openapi import build_spec, hidden
from bridge.outbound import OutboundPolicy
from bridge.storage import open_blob_store
from bridge.store import open_store
from bridge.webhooks import Policy, Receiver, WebhookConfig

log = logging.getLogger("bridge.app")

# Re-exported for code that still reads the keys from the app module.
__all__ = ["ENGINE", "SETTINGS", "MANAGED", "METRICS", "STREAMS", "create_app", "build_engine"]


def build_engine(settings: Settings, backends: Sequence[str], managed: ComfyUIProcess | None = None) -> JobEngine:
    output_dir = managed.output_dir if managed else settings.comfyui_output_dir
    input_dir = managed.input_dir if managed else settings.comfyui_input_dir
    # ComfyUI's folders are known for one backend only: a folder given for several would be one ComfyUI's
    one_backend = backends[0].rstrip("/") if len(backends) == 1 else None
    return JobEngine(
        list(backends),
        settings.data_dir,
        settings.workflows_dir,
        EngineOptions(max_queue=settings.max_queue, job_timeout=settings.job_timeout or None,
                      requeue_on_backend_death=settings.requeue_on_backend_death,
                      max_request_cost=settings.max_request_cost, max_jobs_per_client=settings.max_jobs_per_client,
                      queue_timeout=settings.queue_timeout or None,
                      queue_poll_interval=settings.queue_poll_interval, output_metadata=settings.output_metadata,
                      max_output_bytes=settings.max_output_bytes,
                      lease=settings.lease),
        extra_workflow_dirs=list(settings.extra_workflows_dirs),
        store=open_store(settings.database, settings.data_dir),
        blobs=open_blob_store(settings.storage, settings.data_dir, endpoint=settings.s3_endpoint,
                              region=settings.s3_region, access_key_id=settings.s3_access_key_id,
                              secret_access_key=settings.s3_secret_access_key),
        retention=Retention(max_age=settings.result_max_age, max_bytes=settings.result_max_bytes,
                            interval=settings.retention_interval,
                            comfyui_output_dirs={one_backend: Path(output_dir)} if one_backend and output_dir else {},
                            comfyui_input_dirs={one_backend: Path(input_dir)} if one_backend and input_dir else {}),
        outbound=OutboundPolicy.from_list(settings.outbound_allow, timeout=settings.fetch_timeout,
                                          max_bytes=image_io.DEFAULT_MAX_BYTES),
        webhooks=WebhookConfig(
            secret=settings.webhook_secret,
            everyone=Receiver(settings.webhook_url, tuple(settings.webhook_events)) if settings.webhook_url else None,
            policy=Policy(timeout=settings.webhook_timeout, retry_for=settings.webhook_retry_for,
                          retry_base=settings.webhook_retry_base,
                          progress_interval=settings.webhook_progress_interval),
            public_url=settings.public_url, link_lifetime=settings.url_lifetime),
    )


def create_app(settings: Settings, engine: JobEngine | None = None, *,
               adapter_names: Sequence[str] | None = None) -> web.Application:
    """Build the application. Without `engine`, one is built on settings.comfyui_urls, or on a managed ComfyUI
    child when no URL is set. The app starts and stops the engine (and the child) through cleanup_ctx.
    `adapter_names` defaults to settings.adapters, then to every module in bridge.adapters.ENABLED."""
    metrics = Metrics()
    cors = Cors(settings.cors_origins, settings.cors_credentials)
    keys = ApiKeys(settings.api_keys) if settings.api_keys else None
    middlewares: list[Any] = [request_counter(metrics), forwarded_for(settings.trusted_proxies), client_identity(keys)]
    if cors.enabled:
        middlewares.append(cors.middleware)
    middlewares += [error_middleware, body_limit_middleware(settings.max_body_bytes)]
    store_of = lambda: app[ENGINE].store if ENGINE in app else None  # noqa: E731 - the app is made below
    if settings.rate_limit > 0:
        # Before authentication, so refused keys are counted (by address).
        limits = SharedLimits(store_of, bucket=TokenBucket(settings.rate_limit, settings.rate_burst))
        middlewares.append(rate_limit_middleware(limits, settings.rate_exempt, keys))
    if keys is not None:
        lockout = (SharedLimits(store_of, lockout=FailureLockout(settings.auth_max_failures,
                                                                 settings.auth_failure_window, settings.auth_lockout))
                   if settings.auth_max_failures > 0 else None)
        middlewares.append(auth_middleware(keys, settings.auth_exempt, lockout))

    # Bodies are read as sent and compressed ones refused (`body_limit_middleware`): aiohttp's parser would still
    # inflate them while it drains an unread body after the refusal (a 400 KB gzip of spaces held the event loop
    # 1.2 s) and refuse a br body in plain text.
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes,
                          handler_args={"auto_decompress": False})
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[STREAMS] = EventStreams(settings.max_streams_per_client)
    app[OPENAPI_CACHE] = {}

    if engine is None:
        if settings.managed_comfyui:
            managed = ManagedComfyUI(settings)
            app[MANAGED] = managed
            # Before the engine's context: the engine connects to a ComfyUI that already answers.
            app.cleanup_ctx.append(_started(MANAGED))
            engine = build_engine(settings, [managed.url], managed.process)
        else:
            engine = build_engine(settings, settings.comfyui_urls)
    app[ENGINE] = engine
    metrics.watch_engine(lambda: (engine.stats(), engine.backend_states()), __version__)
    app.cleanup_ctx.append(_started(ENGINE))
    app.cleanup_ctx.append(_job_metrics_ctx)

    if cors.enabled:
        app.on_response_prepare.append(cors.on_response_prepare)
    app.on_shutdown.append(app[STREAMS].shutdown)
    app.on_shutdown.append(_release_waiters)

    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/openapi.json", openapi_handler)
    app.router.add_get("/events", events_handler)
    job_routes.setup(app)
    apidocs.setup(app)

    names = adapter_names if adapter_names is not None else settings.adapters
    adapters.setup_all(app, names)
    if not any(r.method == "GET" and r.resource is not None and r.resource.canonical == "/"
               for r in app.router.routes()):
        # An adapter may own / (AleaArt's backend answers it); otherwise it links to the docs.
        app.router.add_get("/", index)
    return app


def _started(key: web.AppKey[Any]) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that starts `app[key]` with the app and stops it with the app."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        part = app[key]
        await part.start()
        try:
            yield
        finally:
            await part.stop()

    return ctx


async def _release_waiters(app: web.Application) -> None:
    app[ENGINE].stopping.set()


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


class BackendState(BaseModel):
    url: str
    healthy: bool
    pending: int = Field(description="Jobs dispatched there and not finished.")
    version: str | None
    devices: list[dict[str, str]]
    last_error: str | None
    connected_since: float | None
    workflow_problems: dict[str, list[str]]


class Health(BaseModel):
    """Bridge and backend health (503 with the same body when no backend answers)."""

    status: Literal["healthy", "degraded", "unhealthy"]
    model_loaded: bool = Field(description="A backend answers, so its models can be loaded (AleaArt reads it).")
    cuda_available: bool
    version: str
    queue_depth: int
    jobs: dict[str, int]
    backends: list[BackendState]
    managed_comfyui: dict[str, Any] | None
    replica: dict[str, Any] = Field(description="The process that answered: its id, its job store and the replicas "
                                                "on that store.")


@hidden
async def index(request: web.Request) -> web.Response:
    """Links to the API documentation."""
    return apidocs.index_page(__version__)


@endpoint(responses={200: Health, 503: Health})
async def health(request: web.Request) -> web.Response:
    """Bridge and backend health: each ComfyUI's state, queue depth, version."""
    app = request.app
    engine = app[ENGINE]
    backends = engine.backend_states()
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
        "jobs": stats.get("counts") or {},
        "backends": backends,
        "managed_comfyui": managed.info() if managed is not None else None,
        # Which process answered, on which store, beside which others (replicas behind a load balancer).
        "replica": {"id": stats.get("replica"), "store": stats.get("store"), "replicas": stats.get("replicas")},
    }
    return web.json_response(body, status=200 if healthy else 503, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


@endpoint(responses={200: {"description": "Prometheus text exposition",
                           "content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}})
async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus metrics: jobs by state, queue depth, job durations, backend up, HTTP requests."""
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


@endpoint(responses={200: {"description": "This document.", "content": {"application/json": {
    "schema": {"type": "object"}}}}})
async def openapi_handler(request: web.Request) -> web.Response:
    """OpenAPI 3.1 description of every route, generated from the request and response models."""
    cache = request.app[OPENAPI_CACHE]
    spec = cache.get("spec")
    if spec is None:
        settings = request.app[SETTINGS]

        def build() -> bytes:
            return json.dumps(build_spec(
                request.app, title="Pixart bridge", version=__version__, secured=bool(settings.api_keys),
                exempt=lambda path: path_matches(path, settings.auth_exempt),
                description="Pixel art, A1111, Pico, AleaArt, jobs and any shared workflow on top of ComfyUI. "
                            "Interactive documentation: /docs.",
            )).encode()

        def forget_failure(done: asyncio.Future[bytes]) -> None:
            if (done.cancelled() or done.exception() is not None) and cache.get("spec") is done:
                del cache["spec"]  # the next call tries again

        # Every model's JSON Schema, made in Python: on the loop, the first call (and the first after each reload)
        # held it 0.1 s with the shipped workflows, 0.9 s with a hundred large ones. In a thread the loop turns
        # meanwhile; callers that come during it share it (a reload drops it from the cache, not from them). The
        # text is kept, not the document: writing it again took 24 ms a call.
        spec = cache["spec"] = asyncio.ensure_future(asyncio.to_thread(build))
        spec.add_done_callback(forget_failure)
    return web.Response(body=await asyncio.shield(spec), content_type="application/json", charset="utf-8")


class EventsQuery(BaseModel):
    # min_length: `?job=` from a client whose id was empty meant every job's events, a stream that never ends
    job: str | None = Field(None, min_length=1, max_length=128, description="Only this job's events; the stream "
                                                                            "ends when the job finishes.")
    api_key: str | None = Field(None, max_length=512, description="The API key, for EventSource clients that cannot "
                                                                  "set headers.")


@endpoint(query=EventsQuery, responses={200: {
    "description": "text/event-stream of `status` and `progress` events (data: {\"type\", \"job\"})",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def events_handler(request: web.Request, query: EventsQuery) -> web.StreamResponse:
    """Server-Sent Events stream of job status and progress events."""
    return await stream_events(
        request, request.app[ENGINE], request.app[STREAMS], query.job,
        on_unknown_job=lambda jid: json_error(404, "job_not_found", f"job {jid!r} does not exist", "job"),
    )
