"""OpenAPI 3.1 document built from the router and the endpoint declarations (bridge.api).

Each route contributes its method, path, path parameters and the first line of its handler's docstring as summary;
request bodies, query parameters and responses are the JSON Schemas of the same pydantic models that validate them,
and each route's `default` response is its dialect's error shape.
"""
from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bridge.api import Endpoint, ErrorBody, describe
from bridge.fields import JsonSchema

_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
REF = "#/components/schemas/{model}"


class _Components:
    """Schemas of every model the spec mentions, by name; a name used by two different models is an error."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self._owners: dict[str, type[BaseModel]] = {}

    def ref(self, model: type[BaseModel], mode: str = "validation") -> dict[str, Any]:
        schema = model.model_json_schema(by_alias=True, ref_template=REF, schema_generator=JsonSchema, mode=mode)
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, sub)
        name = model.__name__
        owner = self._owners.setdefault(name, model)
        if owner is not model:
            raise ValueError(f"two models are called {name} ({owner.__module__} and {model.__module__})")
        self.schemas[name] = schema
        return {"$ref": REF.format(model=name)}

    def schema(self, spec: Any, mode: str) -> Any:
        if isinstance(spec, type) and issubclass(spec, BaseModel):
            return self.ref(spec, mode)
        return spec


def _handler_doc(handler: Any) -> tuple[str, str]:
    doc = inspect.getdoc(handler) or ""
    first, _, rest = doc.partition("\n")
    return first.strip(), rest.strip()


def _route_path(resource: web.AbstractResource) -> str | None:
    info = resource.get_info()
    if "path" in info:
        return str(info["path"])
    if "formatter" in info:
        return str(info["formatter"])
    if "prefix" in info:  # static files
        return str(info["prefix"]).rstrip("/") + "/{filename}"
    return None


def _query_parameters(model: type[BaseModel], components: _Components) -> list[dict[str, Any]]:
    schema = model.model_json_schema(by_alias=True, ref_template=REF, schema_generator=JsonSchema)
    for name, sub in schema.pop("$defs", {}).items():
        components.schemas.setdefault(name, sub)
    required = set(schema.get("required", []))
    out = []
    for name, prop in (schema.get("properties") or {}).items():
        prop = dict(prop)
        description = prop.pop("description", None)
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def _response(status: int, spec: Any, ep: Endpoint, components: _Components) -> dict[str, Any]:
    content_type = ep.response_content.get(status, "application/json")
    if isinstance(spec, Mapping) and ("description" in spec or "content" in spec):
        out = {"description": "", **spec}
        if "content" in spec:
            out["content"] = {kind: {**media, "schema": components.schema(media.get("schema"), "serialization")}
                              for kind, media in spec["content"].items()}
    elif spec is None:
        out = {"description": "No content"}
    else:
        doc = ""
        if isinstance(spec, type) and issubclass(spec, BaseModel):
            doc = (inspect.getdoc(spec) or "").split("\n")[0]
        out = {"description": doc, "content": {content_type: {"schema": components.schema(spec, "serialization")}}}
    if status in ep.headers:
        out["headers"] = {k: dict(v) for k, v in ep.headers[status].items()}
    return out


def _operation(method: str, path: str, handler: Any, components: _Components,
               body: type[BaseModel] | None = None) -> dict[str, Any]:
    ep = describe(handler)
    summary, description = _handler_doc(handler)
    op: dict[str, Any] = {"summary": (ep.summary if ep else None) or summary or f"{method} {path}"}
    if (ep and ep.description) or description:
        op["description"] = (ep.description if ep and ep.description else description)
    if ep and ep.tags:
        op["tags"] = list(ep.tags)
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in _PARAM.findall(path)]
    if ep and ep.query is not None:
        params += _query_parameters(ep.query, components)
    if params:
        op["parameters"] = params
    body = body or (ep.body if ep else None)
    if ep and body is not None:
        op["requestBody"] = {"required": ep.empty_body is None,
                             "content": {ep.request_content: {"schema": components.ref(body)}}}
    responses = {str(k): _response(k, v, ep, components) for k, v in ((ep.responses if ep else {}) or {}).items()}
    if not any(code.startswith("2") for code in responses):
        responses["200"] = {"description": "Success"}
    error_model = ep.dialect.error_model if ep else ErrorBody
    responses["default"] = {"description": "Error",
                            "content": {"application/json": {"schema": components.ref(error_model, "serialization")}}}
    op["responses"] = responses
    return op


def build_spec(app: web.Application, *, title: str, version: str, secured: bool = False,
               exempt: Callable[[str], bool] = lambda path: False,
               description: str | None = None) -> dict[str, Any]:
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    used_ids: set[str] = set()
    for route in app.router.routes():
        method = route.method.upper()
        if method in ("HEAD", "*"):
            continue
        path = _route_path(route.resource) if route.resource is not None else None
        if path is None or getattr(route.handler, "__openapi_hidden__", False):
            continue
        ep = describe(route.handler)
        variants = [(path, None, None)]
        if ep is not None and ep.expand is not None:
            variants = list(ep.expand(app))
        for concrete, body, about in variants:
            op = _operation(method, concrete, route.handler, components, body)
            if about:
                op["description"] = about
            name = getattr(route.handler, "__name__", "handler")
            op_id = f"{method.lower()}_{name}" + (f"_{concrete.rsplit('/', 1)[-1]}" if body is not None else "")
            while op_id in used_ids:
                op_id += "_"
            used_ids.add(op_id)
            op["operationId"] = op_id
            if secured and exempt(concrete):
                op["security"] = []
            paths.setdefault(_PARAM.sub(lambda m: "{" + m.group(1) + "}", concrete), {})[method.lower()] = op
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": info,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(components.schemas.items()))},
    }
    if secured:
        spec["components"]["securitySchemes"] = {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "BearerAuth": {"type": "http", "scheme": "bearer"},
        }
        spec["security"] = [{"ApiKeyHeader": []}, {"BearerAuth": []}]
    return spec


def hidden(handler: Any) -> Any:
    """Leave a route out of the spec (the docs page's own assets)."""
    handler.__openapi_hidden__ = True
    return handler
