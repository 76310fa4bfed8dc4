"""The A1111 dialect shared by `/sdapi/v1` and the Pico endpoint: settings, Basic auth, A1111's error bodies, and
tasks (one request = one task = one engine job per image, for `/progress`, `/interrupt` and `/skip`)."""
from __future__ import annotations

import base64
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from bridge.api import Dialect, endpoint
from bridge.config import AdapterSettings
from bridge.engine import JobEngine, SharedRun
from bridge.errors import BridgeError, InvalidParameter, QueueFull
from bridge.fields import FieldError
from bridge.keys import SETTINGS

from ..toolkit import JobGroup, Submission, engine_of
from .models import A1111Error, body_error, validation_error
from .styles import StyleBook

log = logging.getLogger("bridge.adapters.a1111")

PREFIX = "/sdapi/v1"

# A1111 field -> workflow parameter, for every workflow this adapter drives. Errors the engine raises about a
# workflow parameter are reported under the A1111 field name.
PARAMS = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "seed": "seed",
    "steps": "steps",
    "cfg_scale": "cfg",
    "sampler_name": "sampler",
    "scheduler": "scheduler",
    "width": "width",
    "height": "height",
    "sd_model_checkpoint": "checkpoint",
    "sd_vae": "vae",
    "loras": "loras",
    "denoising_strength": "denoise",
    "init_images": "image",
    "mask": "mask",
    "CLIP_stop_at_last_layers": "clip_skip",
    "inpainting_fill": "fill",
    "subseed": "subseed",
    "subseed_strength": "subseed_strength",
    "seed_resize_from_w": "seed_resize_from_width",
    "seed_resize_from_h": "seed_resize_from_height",
    "eta_noise_seed_delta": "noise_seed_delta",
    "initial_noise_multiplier": "noise_multiplier",
    "tiling": "tiling",
    "hr_second_pass_steps": "hr_steps",
    "hr_sampler_name": "hr_sampler",
    "hr_scheduler": "hr_scheduler",
    "hr_prompt": "hr_prompt",
    "hr_negative_prompt": "hr_negative_prompt",
    "hr_upscaler": "upscaler",
}
FIELD_FOR_PARAM = {v: k for k, v in PARAMS.items()}
# Workflow parameters several A1111 fields feed: errors about them name the field that decides them.
FIELD_FOR_PARAM.update({"hr_width": "hr_scale", "hr_height": "hr_scale", "latent_upscale_mode": "hr_upscaler",
                        "upscale_model": "hr_upscaler", "hr_denoise": "denoising_strength", "hr_cfg": "cfg_scale",
                        "hr_crop_width": "hr_resize_x", "hr_crop_height": "hr_resize_y", "hr_crop_x": "hr_resize_x",
                        "hr_crop_y": "hr_resize_y",
                        # the SD upscale script's arguments: ["", overlap, upscaler, scale factor]
                        "overlap": "script_args[1]", "upscale_width": "script_args[3]",
                        "upscale_height": "script_args[3]"})


class A1111Settings(AdapterSettings):
    """A1111 adapter settings (environment `A1111_*`, or `--set A1111_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="A1111_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    api_auth: str = Field("", repr=False,
                          description="HTTP Basic credentials for /sdapi/v1, 'user:pass[,user:pass]' like A1111's "
                                      "--api-auth (A1111_API_AUTH); empty: no auth.")
    txt2img_workflow: str = Field("txt2img", description="Workflow behind /sdapi/v1/txt2img.")
    img2img_workflow: str = Field("img2img", description="Workflow behind /sdapi/v1/img2img without a mask.")
    inpaint_workflow: str = Field("inpaint", description="Workflow behind /sdapi/v1/img2img with a mask.")
    hires_workflow: str = Field("txt2img_hires", description="Workflow behind /sdapi/v1/txt2img with enable_hr.")
    sd_upscale_workflow: str = Field("sd_upscale", description="Workflow behind img2img's 'sd upscale' script.")
    upscale_workflow: str = Field("upscale", description="Workflow behind /sdapi/v1/extra-single-image and "
                                                         "extra-batch-images.")
    interrogate_workflows: dict[str, str] = Field(
        {"clip": "interrogate_blip", "deepdanbooru": "interrogate_wd14"},
        description="Workflow per /sdapi/v1/interrogate model (JSON object); each needs its caption node pack on "
                    "the backend.")
    max_steps: int = Field(150, ge=1, description="Largest `steps` a request may ask for.")
    max_size: int = Field(2048, ge=64, description="Largest `width`/`height` a request may ask for.")
    styles_file: str = Field("", description=(
        "A1111 styles.csv files (paths or globs, separated by the path separator ':'), like A1111's "
        "--styles-file; read again when they change."))

    @field_validator("api_auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        parse_credentials(value)
        return value


def parse_credentials(text: str) -> dict[str, str]:
    """`user:pass,user2:pass2` -> {user: pass}; A1111 splits the same way (`,` then `:`)."""
    creds: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        user, sep, password = part.partition(":")
        if not sep or not user:
            raise ValueError(f"credential {part.split(':')[0]!r} must look like user:password")
        creds[user] = password
    return creds


# ---------------------------------------------------------------------------------------------------------------
# Tasks


@dataclass
class Task:
    id: str
    kind: str  # "txt2img" | "img2img"
    job_ids: list[str]
    started: float
    job_timestamp: str
    interrupted: bool = False
    skipped: bool = False
    finished: bool = False
    size: int = 0  # images planned; job_ids may hold fewer while they are being submitted

    async def unfinished(self, engine: JobEngine) -> list[str]:
        """Ids of this task's jobs still queued or running, in submission order."""
        jobs = [(job_id, await engine.find(job_id)) for job_id in self.job_ids]
        return [job_id for job_id, job in jobs if job is not None and job.status in ("queued", "running")]

    def meta(self) -> dict[str, Any]:
        """What each of its jobs carries, so that any replica can answer /progress, /interrupt and /skip."""
        return {"task": self.id, "task_kind": self.kind, "task_started": self.started,
                "task_timestamp": self.job_timestamp, "task_size": self.size}


async def current_task(state: A1111State, engine: JobEngine) -> Task | None:
    """The task being run: this replica's own, else (replicas behind a load balancer) the oldest one any replica
    runs, rebuilt from its jobs in the store."""
    local = state.active()
    if local is not None or not engine.store.shared:
        return local
    jobs = await engine.list(status="running", limit=50) + await engine.list(status="queued", limit=200)
    tasks: dict[str, list[Any]] = {}
    for job in jobs:
        if job.meta.get("task") and job.meta.get("dialect") in ("a1111", "pico"):
            tasks.setdefault(job.meta["task"], []).append(job)
    if not tasks:
        return None
    members = min(tasks.values(), key=lambda js: min(j.created_at for j in js))
    first = members[0].meta
    size = int(first.get("task_size") or len(members))
    ids: list[str] = [""] * size
    for job in members:
        index = int(job.meta.get("index") or 0)
        if 0 <= index < size:
            ids[index] = job.id
    return Task(id=str(first["task"]), kind=str(first.get("task_kind") or "txt2img"), job_ids=ids,
                started=float(first.get("task_started") or members[0].created_at),
                job_timestamp=str(first.get("task_timestamp") or "0"), size=size)


@dataclass
class A1111State:
    settings: A1111Settings
    credentials: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    styles: StyleBook = field(default_factory=lambda: StyleBook(""))
    lora_listings: SharedRun[list[dict[str, Any]]] = field(default_factory=SharedRun)  # /loras answers
    # /progress's last current_image: (the preview as ComfyUI sent it, the format options, its encoding); clients
    # poll several times a step and the preview changes once a step (re-encoding it cost ~35 ms of the pool a poll)
    shown_preview: tuple[bytes, tuple[Any, ...], bytes] | None = None

    def active(self) -> Task | None:
        return next((t for t in self.tasks if not t.finished), None)


STATE = web.AppKey("a1111_state", A1111State)
# The first job of the request's task: the answer images kept for `response_format: "url"` go beside it.
TASK_ANCHOR = web.RequestKey("a1111_task_anchor", str)


def ensure_state(app: web.Application) -> A1111State:
    """The state both A1111 endpoints share (tasks, options, credentials), made by whichever is set up first."""
    if STATE not in app:
        settings = A1111Settings.from_settings(app[SETTINGS])
        app[STATE] = A1111State(settings=settings, credentials=parse_credentials(settings.api_auth),
                                styles=StyleBook(settings.styles_file))
    return app[STATE]


async def run_task(request: web.Request, kind: str, job_timestamp: str, submissions: Sequence[Submission]
                   ) -> tuple[Task, list[Any]]:
    """Submit one job per planned image, wait for all, and return the finished jobs (None where skipped or
    interrupted). The jobs are cancelled when the client goes away (unless BRIDGE_KEEP_JOBS_ON_DISCONNECT)."""
    state = request.app[STATE]
    group = JobGroup(engine_of(request), request)
    task = Task(id=uuid.uuid4().hex, kind=kind, job_ids=[], started=time.time(), job_timestamp=job_timestamp,
                size=len(submissions))
    await group.check_cost(submissions)
    state.tasks.append(task)
    try:
        # All submitted first, so that a multi-backend engine can run them side by side.
        for sub in submissions:
            if task.interrupted:
                break
            await group.submit(Submission(sub.workflow, sub.params, {**sub.meta, **task.meta()}))
            task.job_ids = group.ids
            request.setdefault(TASK_ANCHOR, task.job_ids[0])
        jobs = await group.wait()
        failed = next((j for j in jobs if j.status == "failed"), None)
        if failed is not None:
            await group.cancel()
            raise A1111Error(500, "", error="RuntimeError", errors=f"generation failed: {failed.error}")
        return task, [j if j.status == "completed" else None for j in jobs]
    finally:
        task.finished = True
        # Keep only unfinished tasks plus the latest one: /progress reads nothing older.
        state.tasks[:] = ([t for t in state.tasks if not t.finished] + [task])[-16:]


# ---------------------------------------------------------------------------------------------------------------
# Errors and auth


class A1111ErrorBody(BaseModel):
    """A1111's error shape (FastAPI's `detail`, plus `error`, `body`, `errors`)."""

    error: str
    detail: Any
    body: Any
    errors: str


def translate_engine_error(exc: BridgeError) -> A1111Error:
    """Engine errors in A1111's shape; the field is named as the A1111 client knows it."""
    if isinstance(exc, A1111Error):
        return exc
    name = type(exc).__name__
    headers: dict[str, str] = {}
    if isinstance(exc, QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    elif exc.status == 503:
        headers["Retry-After"] = "5"
    message = exc.message
    if isinstance(exc, InvalidParameter) and exc.field:
        a1111_field = FIELD_FOR_PARAM.get(exc.field, exc.field)
        message = message.replace(f"{exc.field}:", f"{a1111_field}:", 1) if exc.field != a1111_field else message
        if a1111_field not in message:
            message = f"{a1111_field}: {message}"
        return A1111Error(400, message, error=name, errors=message)
    status = exc.status if exc.status != 404 else 500  # a missing workflow is a configuration fault here
    return A1111Error(status, message, error=name, errors=message, headers=headers)


@dataclass(frozen=True)
class A1111Dialect(Dialect):
    def error(self, status: int, message: str, field: str | None = None, *, code: str | None = None,
              headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
        detail = extra.get("detail", f"{field}: {message}" if field and field not in message else message)
        body = {"error": code or "HTTPException", "detail": detail, "body": extra.get("body", ""),
                "errors": message}
        return web.json_response(body, status=status, headers=dict(headers or {}))

    def invalid(self, errors: Sequence[FieldError], body: Any, where: str = "body") -> web.Response:
        # FastAPI's 422: every failing field under `detail`, as A1111 clients display it.
        return self.bridge_error(validation_error(errors, body if isinstance(body, (dict, list)) else "", where))

    def bad_body(self, message: str, status: int = 400) -> web.Response:
        if status != 400:
            return self.error(status, message, "body", code="RequestTimeout")
        return self.bridge_error(body_error(message))

    def bridge_error(self, exc: BridgeError, names: Mapping[str, str] | None = None) -> web.Response:
        err = translate_engine_error(exc)
        return web.json_response(err.to_json(), status=err.status, headers=err.headers)


DIALECT = A1111Dialect("a1111", A1111ErrorBody, ("a1111",), query_last_wins=True)

Handler = Callable[..., Awaitable[web.StreamResponse]]


def check_auth(request: web.Request, credentials: dict[str, str]) -> None:
    if not credentials:
        return
    challenge = {"WWW-Authenticate": "Basic"}
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise A1111Error(401, "Not authenticated", headers=challenge)
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except ValueError:  # not base64 (binascii.Error), not ASCII (a str b64decode refuses), not UTF-8 once decoded
        raise A1111Error(401, "Invalid authentication credentials", headers=challenge) from None
    expected = credentials.get(user)
    # compare_digest on both branches so a wrong user name costs as long as a wrong password
    ok = hmac.compare_digest(password.encode(), (expected if expected is not None else "\0" + password).encode())
    if expected is None or not ok:
        raise A1111Error(401, "Incorrect username or password", headers=challenge)


def a1111_endpoint(*, body: type[BaseModel] | None = None, responses: Mapping[int, Any] | None = None,
                   auth: bool = True, empty_body: Any = None,
                   query: type[BaseModel] | None = None) -> Callable[[Handler], Handler]:
    """An A1111 route: Basic auth first, A1111's error bodies, X-Process-Time on every answer."""

    def decorate(fn: Handler) -> Handler:
        inner = endpoint(dialect=DIALECT, body=body, responses=responses, empty_body=empty_body, query=query)(fn)

        async def timed(request: web.Request) -> web.StreamResponse:
            start = time.perf_counter()
            try:
                if auth:
                    check_auth(request, request.app[STATE].credentials)
                response = await inner(request)
            except A1111Error as exc:
                response = DIALECT.bridge_error(exc)
            except web.HTTPException:
                raise
            except Exception as exc:  # A1111 answers every uncaught exception with its shape and 500
                log.exception("A1111 handler %s failed", request.path)
                response = DIALECT.bridge_error(A1111Error(500, "", error=type(exc).__name__, errors=str(exc)))
            response.headers["X-Process-Time"] = f"{time.perf_counter() - start:.4f}"
            return response

        for attr in ("__name__", "__doc__", "__qualname__", "__module__", "__endpoint__"):
            setattr(timed, attr, getattr(inner, attr))
        return timed

    return decorate
