"""Routes about any job, whatever dialect made it: its result images by link (what webhook messages point at) and
its webhook deliveries. The jobs API's own `/jobs/{id}` routes answer in that API's shape; these answer in the
bridge's common error shape."""
from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel, Field

from bridge.api import endpoint
from bridge.engine import Job
from bridge.errors import NAME_SHOWN, FileNotFound, InvalidParameter, JobNotFound, quote
from bridge.http import json_error
from bridge.keys import ENGINE
from bridge.storage import BlobNotFound, content_type
from bridge.store import outputs_prefix


def _not_found(job_id: str) -> JobNotFound:
    return JobNotFound(job_id, field="id")  # what these routes' path calls it, where the engine says job_id


async def _job(request: web.Request) -> Job:
    """The job the path's `id` names (404 when there is none)."""
    job_id = request.match_info["id"]
    job = await request.app[ENGINE].find(job_id)
    if job is None:
        raise _not_found(job_id)
    return job


class DeliveryAttempt(BaseModel):
    at: float
    duration_ms: float
    status: int | None = Field(description="The receiver's HTTP status; null when it never answered.")
    error: str | None


class DeliveryView(BaseModel):
    id: str = Field(description="The message id (`webhook-id` header).")
    url: str
    event: str
    status: str = Field(description="pending, delivered or failed (given up).")
    created_at: float
    next_attempt_at: float | None
    attempts: list[DeliveryAttempt]


class WebhookDeliveries(BaseModel):
    """Every webhook message of a job and each attempt to deliver it."""

    job: str
    deliveries: list[DeliveryView]


IMAGE = {"description": "The image (or a redirect to the object store's presigned URL)",
         "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}


# ASCII digits: int() also read "\u0663" (an Arabic-Indic 3) as 3 and "1_0" as 10, so a mistyped link served another
# image; and it took 4,300 digits, which the answer repeated. No output holds 10**9 images.
_INDEX = re.compile(r"[0-9]{1,9}")


def _index(raw: str) -> int:
    """The path's image index."""
    if _INDEX.fullmatch(raw):
        return int(raw)
    if raw.isascii() and raw.isdigit():
        raise InvalidParameter("index", f"index: {quote(raw)} is far past any output's last image")
    raise InvalidParameter("index", f"index: must be a whole number (0 is the first image), got {quote(raw)}")


@endpoint(responses={200: IMAGE})
async def result_image(request: web.Request) -> web.StreamResponse:
    """One result image of a job (`/jobs/{id}/outputs/{name}/{index}`), the link webhook messages carry. With an
    object store that signs URLs the answer redirects there, so the bytes do not pass through the bridge."""
    engine = request.app[ENGINE]
    name = request.match_info["name"]
    index = _index(request.match_info["index"])
    job = await _job(request)
    files = job.outputs.get(name) or []
    if engine.workflow_output_type(job.workflow, name) == "images" and 0 <= index < len(files):
        url = await engine.blobs.url(files[index], 300)
        if url is not None:
            raise web.HTTPTemporaryRedirect(url)
    data = await engine.read_output(job, name, index)
    return web.Response(body=data, content_type=content_type(files[index]),
                        headers={"Cache-Control": "private, max-age=3600"})


_FILE = re.compile(r"answer_[0-9a-f]{16}\.(png|jpg|jpeg|webp)")


@endpoint(responses={200: {"description": "The image", "content": {"image/png": {"schema": {
    "type": "string", "format": "binary"}}}}})
async def job_file(request: web.Request) -> web.StreamResponse:
    """An image an adapter made from a job's results and kept beside them (A1111's answer images with
    `response_format: url`)."""
    engine = request.app[ENGINE]
    job_id, name = (await _job(request)).id, request.match_info["name"]
    missing = FileNotFound(f"job {job_id}: no file named {quote(name, NAME_SHOWN)}", field="name")
    if not _FILE.fullmatch(name):
        raise missing
    key = outputs_prefix(job_id) + name
    url = await engine.blobs.url(key, 300)
    if url is not None:
        raise web.HTTPTemporaryRedirect(url)
    try:
        data = await engine.blobs.get(key)
    except BlobNotFound:
        raise missing from None
    return web.Response(body=data, content_type=content_type(key), headers={"Cache-Control": "private, max-age=3600"})


@endpoint(responses={200: WebhookDeliveries})
async def webhook_deliveries(request: web.Request) -> web.StreamResponse:
    """Every webhook message sent (or still to send) for a job, with each attempt's status, time and error."""
    engine = request.app[ENGINE]
    job_id = (await _job(request)).id
    deliveries = await engine.webhooks.deliveries(job_id) if engine.webhooks is not None else []
    return web.json_response({"job": job_id, "deliveries": deliveries})


PREVIEW = {"description": "The newest preview frame (JPEG or PNG, as ComfyUI sent it)",
           "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}


@endpoint(responses={200: PREVIEW})
async def preview_image(request: web.Request) -> web.StreamResponse:
    """The newest live preview of a running job (or the last one of a job that ended). ComfyUI sends previews
    when started with `--preview-method` (the managed ComfyUI is); 404 when none has come yet."""
    engine = request.app[ENGINE]
    job_id = (await _job(request)).id
    found = await engine.latest_preview(job_id)
    if found is None:
        return json_error(404, "no_preview", f"no preview of job {job_id} has arrived (ComfyUI sends them when "
                                             f"started with --preview-method)", "id")
    image_type, data = found
    return web.Response(body=data, content_type=image_type, headers={"Cache-Control": "no-store"})


class Deleted(BaseModel):
    """The job and its files are gone from every store."""

    deleted: str


@endpoint(responses={200: Deleted})
async def delete_job(request: web.Request) -> web.StreamResponse:
    """Remove a job of any dialect with its result and input images (local folder or S3) and its webhook log; a
    job still queued or running is cancelled first."""
    job_id = request.match_info["id"]
    try:
        await request.app[ENGINE].delete(job_id)
    except JobNotFound:
        raise _not_found(job_id) from None
    return web.json_response({"deleted": job_id})


def setup(app: web.Application) -> None:
    app.router.add_delete("/jobs/{id}", delete_job)
    app.router.add_get("/jobs/{id}/preview", preview_image)
    app.router.add_get("/jobs/{id}/files/{name}", job_file)
    app.router.add_get("/jobs/{id}/outputs/{name}/{index}", result_image)
    app.router.add_get("/jobs/{id}/webhooks", webhook_deliveries)
