"""The jobs API dialect: its error shape, its settings, and how a job looks to its clients."""
from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from bridge import images as image_io
from bridge.api import Dialect
from bridge.config import AdapterSettings
from bridge.engine import JobEngine
from bridge.errors import BridgeError
from bridge.fields import MAX_TEXT, FieldError
from bridge.http import json_answer
from bridge.jsontext import longer_than
from bridge.store import Job

log = logging.getLogger("bridge.adapters.jobs_api")

# meta["api"] of the jobs this dialect owns (its four types and the generic workflow endpoint); other dialects'
# jobs are invisible here.
API = "jobs"

# The engine's statuses under the names this API's clients filter by ("processing", not "running").
STATUS_OUT = {"queued": "queued", "running": "processing", "completed": "completed", "failed": "failed",
              "cancelled": "cancelled"}
STATUS_IN = {v: k for k, v in STATUS_OUT.items()}

MAX_SIDE = 2048
MIN_SIDE = 64


class JobsApiSettings(AdapterSettings):
    """Job API settings (environment `JOBS_API_*`, or `--set JOBS_API_...=...`)."""

    model_config = SettingsConfigDict(env_prefix="JOBS_API_", extra="ignore", env_file_encoding="utf-8",
                                      populate_by_name=True)

    default_model: str = Field("", description="Checkpoint used when a request names none; empty: the workflow's "
                                               "own, else the first the backend lists.")
    clip_vision: str = Field("", description="CLIP vision file for style transfer (ComfyUI models/clip_vision); "
                                             "empty: the first one installed.")
    style_model: str = Field("", description="Style model file for style transfer (models/style_models, an SD1.x "
                                             "T2I style adapter); empty: the first one installed.")
    default_sampler: str = Field("euler_a", description="Sampler when a request names none.")
    default_steps: int = Field(20, ge=1, le=150, description="Steps when a request names none.")
    default_guidance_scale: float = Field(7.5, ge=0, le=30, description="guidanceScale when a request has none.")
    default_size: int = Field(512, ge=MIN_SIDE, le=MAX_SIDE, multiple_of=8,
                              description="text2img width/height when a request has none.")


SETTINGS_KEY = web.AppKey("jobs_api_settings", JobsApiSettings)


# ------------------------------------------------------------------------------------------------ the dialect
class JobsError(BaseModel):
    """This API's error shape."""

    error: str
    field: str | None
    validValues: list[str] | None = None
    retryAfter: int | None = None


@dataclass(frozen=True)
class JobsDialect(Dialect):
    def error(self, status: int, message: str, field: str | None = None, *, code: str | None = None,
              headers: Mapping[str, str] | None = None, **extra: Any) -> web.Response:
        out = dict(headers or {})
        if "retryAfter" in extra:
            out["Retry-After"] = str(extra["retryAfter"])
        return web.json_response({"error": message, "field": field, **extra}, status=status, headers=out)

    def invalid(self, errors: Sequence[FieldError], body: Any, where: str = "body") -> web.Response:
        first = errors[0]
        if first.field is None:
            return self.error(400, "Request body must be a JSON object", "body")
        if first.field == "prompt" and first.kind in ("missing", "blank"):
            return self.error(400, "Prompt is required", "prompt")  # the seed API's own words
        return self.error(400, first.message, first.field)

    def bad_body(self, message: str, status: int = 400) -> web.Response:
        return self.error(status, f"Request body must be valid JSON ({message})" if status == 400 else message,
                          "body")


DIALECT = JobsDialect("jobs", JobsError, ("jobs",))


def not_found() -> web.Response:
    return DIALECT.error(404, "Job not found", "id")  # the seed API's words


# ------------------------------------------------------------------------------------------------ answers
StatusName = Literal["queued", "processing", "completed", "failed", "cancelled"]


class JobAccepted(BaseModel):
    """Job queued."""

    id: str
    type: str
    status: Literal["queued"]
    request: dict[str, Any]
    createdAt: str
    progress: int


class JobSummary(BaseModel):
    id: str
    type: str | None
    status: StatusName
    createdAt: str | None
    startedAt: str | None
    completedAt: str | None
    progress: int
    error: str | None


class JobResult(BaseModel):
    images: list[str] = Field(description="PNG data URLs (the workflow's `images` output).")
    seed: int | None
    parameters: dict[str, Any] | None
    timeTaken: int | None = Field(description="Milliseconds from start to finish.")
    outputs: dict[str, list[Any]] | None = Field(None, description=(
        "Jobs of POST /workflows/{name}: every output the job produced, images as data URLs, values as reported."))


class JobView(JobSummary):
    """The job, with its result once completed."""

    request: dict[str, Any] | None
    result: JobResult | None


class JobList(BaseModel):
    """Jobs, newest first."""

    jobs: list[JobSummary]


class CancelAnswer(BaseModel):
    """Cancelled (or, with 409, why not)."""

    success: bool
    error: str | None = None


class QueueStatus(BaseModel):
    """Jobs per status and the average processing time in milliseconds."""

    queuedJobs: int
    processingJobs: int
    completedJobs: int
    failedJobs: int
    cancelledJobs: int
    averageProcessingTime: int


class ModelItem(BaseModel):
    id: str
    name: str
    description: str
    type: Literal["base", "clip_vision", "style"]
    loaded: bool
    version: str | None


class ModelList(BaseModel):
    """Checkpoints, CLIP vision and style models on the backend."""

    models: list[ModelItem]



# ------------------------------------------------------------------------------------------------ helpers
def iso(ts: float | None) -> str | None:
    """Unix seconds as the clients' ISO 8601 (`2025-11-07T10:00:00.000Z`)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_job_id() -> str:
    # The seed's id format (job_<ms>_<random>), which also sorts by creation time.
    return f"job_{int(time.time() * 1000)}_{secrets.token_hex(4)}"



def owned(job: Job | None) -> bool:
    return job is not None and isinstance(job.meta, dict) and job.meta.get("api") == API


# The longest parameter a job shows as sent (characters of text, of JSON), in its `request` echo (kept in its meta,
# which every listing reads) and a generic job's `result.parameters`: a `json` parameter may be a 32 MiB body.
ECHO_CHARS = 256
ECHO_JSON_CHARS = 4096


def echoed(value: Any, chars: int = ECHO_CHARS) -> Any:
    """`value` as a job shows it: text past `chars` characters and JSON past ECHO_JSON_CHARS by their size."""
    if isinstance(value, str):
        return value if len(value) <= chars else f"<{len(value)} characters>"
    if isinstance(value, (dict, list)) and longer_than(value, ECHO_JSON_CHARS):
        return f"<JSON of more than {ECHO_JSON_CHARS} characters>"
    return value


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "type": job.meta.get("type"),
        "status": STATUS_OUT.get(job.status, job.status),
        "createdAt": iso(job.created_at),
        "startedAt": iso(job.started_at),
        "completedAt": iso(job.finished_at),
        "progress": int(round(job.progress)),
        "error": job.error,
    }


async def job_view(engine: JobEngine, job: Job, response_format: str | None = None, origin: str = ""
                   ) -> dict[str, Any]:
    """The job as the API shows it; images inline as data URLs, or as links when `response_format` (else the
    one the job was submitted with) is "url"."""
    meta = job.meta
    links = (response_format or meta.get("response_format") or "b64") == "url"
    view = job_summary(job)
    view["request"] = meta.get("request")
    result = None
    if job.status == "completed":
        outputs: dict[str, list[Any]] = {}
        for name, values in job.outputs.items():
            if engine.workflow_output_type(job.workflow, name) != "images":
                outputs[name] = list(values)
                continue
            if links:
                outputs[name] = [await engine.result_link(job, name, i, origin) for i in range(len(values))]
                continue
            blobs = [await engine.read_output(job, name, i) for i in range(len(values))]
            outputs[name] = [image_io.data_url(x) for x in blobs]
        taken = (job.finished_at - job.started_at) if job.started_at and job.finished_at else None
        # A generic workflow job reports what it ran with: its parameters (images summarised) and its seed.
        generic = ({k: echoed(v, MAX_TEXT) for k, v in job.params.items() if not isinstance(v, dict)}
                   if meta.get("generic") else None)
        result = {"images": outputs.get("images") or [],
                  "seed": meta.get("seed") if generic is None else generic.get("seed"),
                  "parameters": meta.get("parameters") if generic is None else generic,
                  "timeTaken": int(round(taken * 1000)) if taken is not None else None}
        if meta.get("generic"):
            result["outputs"] = outputs
    view["result"] = result
    return view


async def view_answer(engine: JobEngine, job: Job, response_format: str | None = None, origin: str = ""
                      ) -> web.Response:
    """The job as an answer (`job_view`); a stored result that cannot be read is this dialect's 500 naming the job,
    whichever route read it (a POST /workflows/{name}?wait= answered a bare 500 without the id of the job it ran)."""
    try:
        return await json_answer(await job_view(engine, job, response_format, origin))
    except (OSError, BridgeError) as exc:
        log.error("job %s: stored result unreadable: %s", job.id, exc)
        return DIALECT.error(500, f"The result of job {job.id} cannot be read", "id")
