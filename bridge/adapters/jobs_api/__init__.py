"""Image-generation job API: asynchronous text2img, img2img, inpaint and style-transfer jobs with a job list,
cancellation, queue statistics and a model list (shared/seeds/image-generation-job-api.md, issue 4 §2).

`POST /generate/<type>` takes the client's camelCase body (one typed model per type), picks the workflow
(`txt2img`, `img2img`, `inpaint`, `style_transfer`), resolves sampler, model and seed so the job can report what it
really used, and answers 202 with the queued job. `GET /jobs/{id}` returns the job and, once completed, its images
as data URLs. `POST /workflows/{name}` runs any served workflow as a job of this API (`workflows`).

Parts: `dialect` (error shape, settings, how a job looks), `generate` (the four request types), `jobs` (job,
list, cancel, queue, models), `workflows` (the generic workflow endpoints).

Errors use this dialect's shape, `{"error": "<text>", "field": "<camelCase field or null>"}` (plus `validValues`
for an unknown sampler or model), never the core shape: clients show `error` as is.
"""
from __future__ import annotations

from aiohttp import web

from bridge.keys import SETTINGS

from . import generate, jobs, workflows
from .dialect import SETTINGS_KEY, JobsApiSettings

__all__ = ["setup", "JobsApiSettings"]


def setup(app: web.Application) -> None:
    app[SETTINGS_KEY] = JobsApiSettings.from_settings(app[SETTINGS])
    r = app.router
    for kind in generate.WORKFLOWS:
        r.add_post(f"/generate/{kind}", generate.handler(kind))
    r.add_get("/jobs", jobs.list_jobs)
    r.add_get("/jobs/{id}", jobs.get_job)
    r.add_post("/jobs/{id}/cancel", jobs.cancel_job)
    r.add_get("/queue/status", jobs.queue_status)
    r.add_get("/models", jobs.list_models)
    workflows.setup(app)

