"""The job resources: a job, the job list, cancelling, queue statistics and the model list."""
from __future__ import annotations

import re
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from bridge.api import endpoint
from bridge.errors import BackendUnavailable
from bridge.fields import LooseFloat, LooseInt, Request, ResponseFormat
from bridge.store import Job

from ..toolkit import engine_of, live_choices, long_poll, request_origin
from .dialect import (DIALECT, SETTINGS_KEY, STATUS_IN, STATUS_OUT, CancelAnswer, JobList, JobView, ModelList,
                      API, QueueStatus, job_summary, not_found, owned, view_answer)
from .generate import WORKFLOWS, model_stem
from .workflows import MAX_WAIT


class ListQuery(Request):
    status: Literal["queued", "processing", "completed", "failed", "cancelled"] | None = Field(
        None, description="Only jobs with this status.")
    type: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="text2img, img2img, inpaint, style-transfer, or the name of a workflow run through "
                          "POST /workflows/{name}.")
    limit: Annotated[LooseInt, Field(ge=1, le=1000)] = 100
    # a window far down is still read through by the database
    offset: Annotated[LooseInt, Field(ge=0, le=10_000)] = 0


async def owned_job(request: web.Request) -> Job | None:
    """The job the path names, if it is one of this API's (other dialects' jobs are not found here)."""
    job = await engine_of(request).find(request.match_info["id"])
    return job if owned(job) else None


class JobQuery(Request):
    wait: Annotated[LooseFloat, Field(ge=0.0, le=MAX_WAIT)] = Field(
        0.0, description="Seconds to hold the answer while the job is queued or running: it comes as soon as the "
                         "job ends (or when the time is up, with the job as it then stands). One request instead "
                         "of many polls.")
    response_format: ResponseFormat | None = Field(None, description="b64: images as data URLs; url: as links; "
                                                                     "default: what the job was submitted with.")


@endpoint(dialect=DIALECT, query=JobQuery, responses={200: JobView})
async def get_job(request: web.Request, query: JobQuery) -> web.Response:
    """A job's status, progress and (when completed) its images as data URLs; `?wait=SECONDS` answers as soon as
    the job ends."""
    engine = engine_of(request)
    job = await owned_job(request)
    if job is None:
        return not_found()
    if query.wait > 0 and not job.done:
        job = await long_poll(request, job, query.wait)
        if job is None:
            return not_found()
    return await view_answer(engine, job, query.response_format, request_origin(request))


@endpoint(dialect=DIALECT, query=ListQuery, responses={200: JobList})
async def list_jobs(request: web.Request, query: ListQuery) -> web.Response:
    """List jobs, newest first, optionally filtered by status and type."""
    engine = engine_of(request)
    if query.type is not None and query.type not in WORKFLOWS and query.type not in engine.workflows:
        return DIALECT.error(400, f"type must be one of {', '.join(WORKFLOWS)} or a workflow name "
                                  f"({', '.join(sorted(engine.workflows))}), got {query.type!r}", "type")
    workflow = WORKFLOWS.get(query.type, query.type) if query.type else None
    meta = {"api": API, **({"type": query.type} if query.type else {})}
    picked = await engine.list(status=STATUS_IN[query.status] if query.status else None, workflow=workflow,
                               limit=query.limit, offset=query.offset, meta=meta)
    return web.json_response({"jobs": [job_summary(j) for j in picked]})


@endpoint(dialect=DIALECT, responses={200: CancelAnswer, 409: CancelAnswer})
async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a queued or running job."""
    job = await owned_job(request)
    if job is None:
        return not_found()
    if not await engine_of(request).cancel(job.id):
        return web.json_response({"success": False, "error": f"Job is already {STATUS_OUT[job.status]}"},
                                 status=409)
    return web.json_response({"success": True})


@endpoint(dialect=DIALECT, responses={200: QueueStatus})
async def queue_status(request: web.Request) -> web.Response:
    """Queue statistics: jobs per status and the average processing time in milliseconds."""
    stats = engine_of(request).stats()
    counts = stats.get("counts") or {}
    average = stats.get("average_duration")
    return web.json_response({
        "queuedJobs": counts.get("queued", 0),
        "processingJobs": counts.get("running", 0),
        "completedJobs": counts.get("completed", 0),
        "failedJobs": counts.get("failed", 0),
        "cancelledJobs": counts.get("cancelled", 0),
        "averageProcessingTime": int(round(average * 1000)) if average else 0,
    })


_VERSION_PATTERNS = (
    (re.compile(r"sd[-_ ]?xl|sdxl|[-_]xl[-_.]", re.I), "xl"),
    (re.compile(r"(?:sd|v)[-_ ]?1[-_.]?5|sd15", re.I), "1.5"),
    (re.compile(r"(?:sd|v)[-_ ]?1[-_.]?4|sd14", re.I), "1.4"),
    (re.compile(r"(?:sd|v)[-_ ]?2[-_.]?1|sd21", re.I), "2.1"),
)


def guess_version(name: str) -> str | None:
    """The base-model version a file name states (ComfyUI does not report it without loading the file)."""
    for pattern, version in _VERSION_PATTERNS:
        if pattern.search(name):
            return version
    return None


@endpoint(dialect=DIALECT, responses={200: ModelList})
async def list_models(request: web.Request) -> web.Response:
    """Checkpoints, CLIP vision and style models the ComfyUI backend really has."""
    engine = engine_of(request)
    settings = request.app[SETTINGS_KEY]
    checkpoints = await live_choices(engine, "CheckpointLoaderSimple.ckpt_name")
    if checkpoints is None:
        raise BackendUnavailable("No ComfyUI backend is available to list the models")
    clip_vision = await live_choices(engine, "CLIPVisionLoader.clip_name") or []
    style_models = await live_choices(engine, "StyleModelLoader.style_model_name") or []
    models = []
    for name in checkpoints:
        models.append({"id": name, "name": model_stem(name),
                       "description": "Stable Diffusion checkpoint" + (" (default)" if name == settings.default_model
                                                                        else ""),
                       "type": "base", "loaded": True, "version": guess_version(name)})
    for kind, names, label, configured in (
        ("clip_vision", clip_vision, "CLIP vision model for style transfer", settings.clip_vision),
        ("style", style_models, "Style model (T2I style adapter) for style transfer", settings.style_model),
    ):
        in_use = configured or (names[0] if names else "")
        for name in names:
            models.append({"id": name, "name": model_stem(name),
                           "description": label + (" (used)" if name == in_use else ""),
                           "type": kind, "loaded": True, "version": guess_version(name)})
    return web.json_response({"models": models})


