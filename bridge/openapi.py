"""OpenAPI 3.1 document generated from the aiohttp router.

Each route contributes its method, path, path parameters and the first line of its handler's docstring as
summary. Adapters attach request/response schemas with `@openapi(...)` on the handler.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiohttp import web

F = TypeVar("F", bound=Callable[..., Any])
_ATTR = "__openapi__"
_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message", "field"],
    "properties": {
        "error": {"type": "string", "description": "Stable machine-readable code."},
        "message": {"type": "string", "description": "Text naming the offending field."},
        "field": {"type": ["string", "null"]},
    },
}


def openapi(
    *,
    summary: str | None = None,
    description: str | None = None,
    request: Mapping[str, Any] | None = None,
    responses: Mapping[int | str, Any] | None = None,
    parameters: Sequence[Mapping[str, Any]] | None = None,
    tags: Sequence[str] | None = None,
    content_type: str = "application/json",
) -> Callable[[F], F]:
    """Attach OpenAPI details to a handler.

    `request`: JSON schema of the body. `responses`: {status: JSON schema, or a full OpenAPI response object when
    it has a "description" or "content" key}. `parameters`: extra OpenAPI parameter objects (query, header).
    """

    def decorate(handler: F) -> F:
        setattr(handler, _ATTR, {
            "summary": summary, "description": description, "request": request, "responses": responses,
            "parameters": parameters, "tags": tags, "content_type": content_type,
        })
        return handler

    return decorate


def _handler_doc(handler: Any) -> tuple[str, str]:
    doc = inspect.getdoc(handler) or ""
    first, _, rest = doc.partition("\n")
    return first.strip(), rest.strip()


def _response(spec: Any, content_type: str) -> dict[str, Any]:
    if isinstance(spec, Mapping) and ("description" in spec or "content" in spec):
        return {"description": "", **spec}
    return {"description": "", "content": {content_type: {"schema": spec}}}


def _route_path(resource: web.AbstractResource) -> str | None:
    info = resource.get_info()
    if "path" in info:
        return str(info["path"])
    if "formatter" in info:
        return str(info["formatter"])
    if "prefix" in info:  # static files
        return str(info["prefix"]).rstrip("/") + "/{filename}"
    return None


def build_spec(
    app: web.Application,
    *,
    title: str,
    version: str,
    secured: bool = False,
    exempt: Callable[[str], bool] = lambda path: False,
) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for route in app.router.routes():
        method = route.method.upper()
        if method in ("HEAD", "*"):
            continue
        path = _route_path(route.resource) if route.resource is not None else None
        if path is None:
            continue
        handler = route.handler
        extra: Mapping[str, Any] = getattr(handler, _ATTR, None) or {}
        summary, description = _handler_doc(handler)
        op: dict[str, Any] = {"summary": extra.get("summary") or summary or f"{method} {path}"}
        if extra.get("description") or description:
            op["description"] = extra.get("description") or description
        name = getattr(handler, "__name__", "handler")
        op_id = f"{method.lower()}_{name}"
        while op_id in used_ids:
            op_id += "_"
        used_ids.add(op_id)
        op["operationId"] = op_id
        if extra.get("tags"):
            op["tags"] = list(extra["tags"])
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in _PARAM.findall(path)
        ]
        params += [dict(p) for p in extra.get("parameters") or ()]
        if params:
            op["parameters"] = params
        content_type = extra.get("content_type") or "application/json"
        if extra.get("request") is not None:
            op["requestBody"] = {"required": True, "content": {content_type: {"schema": extra["request"]}}}
        responses = {str(k): _response(v, "application/json") for k, v in (extra.get("responses") or {}).items()}
        if not any(code.startswith("2") for code in responses):
            responses["200"] = {"description": "Success"}
        responses["default"] = {
            "description": "Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        op["responses"] = responses
        if secured and exempt(path):
            op["security"] = []
        paths.setdefault(_PARAM.sub(lambda m: "{" + m.group(1) + "}", path), {})[method.lower()] = op

    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }
    if secured:
        spec["components"]["securitySchemes"] = {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "BearerAuth": {"type": "http", "scheme": "bearer"},
        }
        spec["security"] = [{"ApiKeyHeader": []}, {"BearerAuth": []}]
    return spec
