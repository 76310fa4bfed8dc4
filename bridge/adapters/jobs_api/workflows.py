"""Any workflow is an endpoint: `GET /workflows`, `GET /workflows/{name}`, `POST /workflows/{name}[?wait=S]`,
`POST /workflows/reload`.

A workflow plus manifest dropped into the workflows folder (or a folder named by BRIDGE_EXTRA_WORKFLOWS_DIRS) is
served after a restart or a reload with no Python written: the manifest's parameters are the request body, checked
by the workflow's own request model, documented in OpenAPI as one typed path per workflow. Jobs are jobs of this
API: `GET /jobs/{id}` and `POST /jobs/{id}/cancel` serve them, and with `?wait=SECONDS` the answer carries the
finished result, as Salad's comfyui-api offers.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, create_model

from bridge.api import endpoint
from bridge.errors import WorkflowError
from bridge.fields import LooseFloat, OutputFormat, OutputQuality, Request, ResponseFormat, Webhook
from bridge.keys import OPENAPI_CACHE
from bridge.workflows import Workflow

from ..toolkit import engine_of, long_poll, request_origin
from .dialect import API, DIALECT, JobAccepted, JobView, echoed, iso, new_job_id, not_found, view_answer

# Longest a POST /workflows/{name}?wait= holds the connection: longer waits belong to GET /jobs/{id}?wait= polls.
MAX_WAIT = 600.0


class WorkflowSummary(BaseModel):
    name: str
    version: int
    description: str


class WorkflowList(BaseModel):
    """The workflows this bridge serves."""

    workflows: list[WorkflowSummary]


class WorkflowOutput(BaseModel):
    type: Literal["images", "value"]


class WorkflowDescription(WorkflowSummary):
    """A workflow's parameters (as JSON Schema) and outputs."""

    parameters: dict[str, Any] = Field(description="JSON Schema of the `parameters` object POST accepts.")
    outputs: dict[str, WorkflowOutput]


class WaitQuery(Request):
    wait: Annotated[LooseFloat, Field(ge=0.0, le=MAX_WAIT)] = Field(
        0.0, description="Seconds to wait for the job to finish; the answer then carries the result (200), or the "
                         "queued job (202) when it is still running.")


class Envelope(Request):
    """`POST /workflows/{name}`: the workflow's parameters, and optionally which outputs to produce."""

    model_config = ConfigDict(extra="forbid")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Values for the workflow's parameters "
                                                                          "(GET /workflows/{name}).")
    outputs: list[str] | None = Field(None, min_length=1, description="Only these outputs (ComfyUI runs only what "
                                                                       "they need); default: all.")
    webhook: Webhook | None = Field(None, description="Where to POST signed messages when the job ends (a URL, or "
                                                      "{url, events}); see docs/api/webhooks.md.")
    response_format: ResponseFormat | None = None
    output_format: OutputFormat | None = None
    output_quality: OutputQuality | None = None


class Reloaded(BaseModel):
    """The workflows served after the reload."""

    workflows: list[str]


# id(workflow) -> (workflow, model): workflows are not hashable, and a reload replaces them all.
_ENVELOPES: dict[int, tuple[Workflow, type[BaseModel]]] = {}


def typed_envelope(wf: Workflow) -> type[BaseModel]:
    """The envelope with this workflow's typed parameters, for its OpenAPI path."""
    cached = _ENVELOPES.get(id(wf))
    if cached is not None and cached[0] is wf:
        return cached[1]
    outputs = Literal[tuple(wf.outputs)]  # type: ignore[valid-type]
    model = create_model(f"{wf.request_model.__name__.removesuffix('Parameters')}Request", __base__=Envelope,
                         parameters=(wf.request_model, Field(default_factory=dict)),
                         outputs=(list[outputs] | None, Field(None, min_length=1)))  # type: ignore[valid-type]
    _ENVELOPES[id(wf)] = (wf, model)
    return model


def _expand(app: web.Application) -> list[tuple[str, type[BaseModel], str]]:
    from bridge.keys import ENGINE

    engine = app[ENGINE]
    return [(f"/workflows/{name}", typed_envelope(wf), wf.description) for name, wf in sorted(engine.workflows.items())]


@endpoint(dialect=DIALECT, responses={200: WorkflowList})
async def list_workflows(request: web.Request) -> web.Response:
    """The workflows this bridge serves (name, version, description)."""
    engine = engine_of(request)
    return web.json_response({"workflows": [{"name": wf.name, "version": wf.version, "description": wf.description}
                                            for _, wf in sorted(engine.workflows.items())]})


@endpoint(dialect=DIALECT, responses={200: WorkflowDescription})
async def describe_workflow(request: web.Request) -> web.Response:
    """A workflow's parameters as JSON Schema, and its outputs.

    A parameter whose values come from a backend's node list (`choices_from`: palettes, checkpoints, samplers)
    carries what the healthy backends offer now as its `enum`."""
    return web.json_response(engine_of(request).describe_workflow(request.match_info["name"]))


@endpoint(dialect=DIALECT, body=Envelope, query=WaitQuery, responses={200: JobView, 202: JobAccepted},
          empty_body={}, expand=_expand)
async def run_workflow(request: web.Request, body: Envelope, query: WaitQuery) -> web.Response:
    """Run a workflow with these parameters: a job of the jobs API (GET /jobs/{id})."""
    engine = engine_of(request)
    wf = engine.workflow(request.match_info["name"])
    echo = {k: echoed(v) for k, v in body.parameters.items()}
    job = await engine.submit(wf.name, body.parameters, outputs=body.outputs, job_id=new_job_id(),
                              meta={"api": API, "type": wf.name, "generic": True, "request": echo,
                                    "webhook": body.webhook, "response_format": body.response_format,
                                    "output_format": body.output_format, "output_quality": body.output_quality})
    accepted = {"id": job.id, "type": wf.name, "status": "queued", "request": echo,
                "createdAt": iso(job.created_at), "progress": 0}
    if query.wait > 0:
        ended = await long_poll(request, job, query.wait)
        if ended is None:
            return not_found()  # deleted while the answer waited
        if ended.done:
            return await view_answer(engine, ended, origin=request_origin(request))
    return web.json_response(accepted, status=202)


@endpoint(dialect=DIALECT, responses={200: Reloaded})
async def reload_workflows(request: web.Request) -> web.Response:
    """Read the workflow folders again: a workflow dropped in is served from now on (422 names what is broken)."""
    # dropped before too: the reload frees what it replaced (`JobEngine.reload_workflows`), these models included
    _ENVELOPES.clear()
    try:
        names = await engine_of(request).reload_workflows()
    except WorkflowError as exc:
        return DIALECT.error(422, exc.message, "workflows")
    _ENVELOPES.clear()
    request.app[OPENAPI_CACHE].clear()
    return web.json_response({"workflows": names})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/workflows", list_workflows)
    r.add_post("/workflows/reload", reload_workflows)
    r.add_get("/workflows/{name}", describe_workflow)
    r.add_post("/workflows/{name}", run_workflow)
