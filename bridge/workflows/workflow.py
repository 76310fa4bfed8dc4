"""A loaded workflow: its graph, its parameters as one typed request model, and binding values into the graph.

The request model is built from the manifest with the shared field types of `bridge.fields`, so a workflow's
parameters are validated, described in OpenAPI and documented at `GET /workflows/{name}` from the same object.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, StrictFloat, StrictInt, TypeAdapter, \
    ValidationError, ValidationInfo, WithJsonSchema, create_model
from pydantic_core import PydanticCustomError

from bridge import fields
from bridge.errors import NAME_SHOWN, InvalidParameter, quote

from .cost import IMAGE_SIZES, Endless, Formula, formula, split_name
from .graph import ancestors
from .manifest import Output, Parameter, random_range

log = logging.getLogger("bridge.workflows")

# Output node classes whose images arrive as binary websocket frames instead of /history files.
WEBSOCKET_IMAGE_CLASSES = frozenset({"SaveImageWebsocket"})
# What a job's cost is the product of, unless its manifest says (`cost`): pixels x steps x images.
COST_PARAMETERS = ("width", "height", "steps", "batch_size")

IMAGE_SCHEMA = {"type": "string", "contentEncoding": "base64",
                "description": "PNG, JPEG or WebP as base64 text or a data URL."}


def _num(x: float | int) -> int | float:
    return int(x) if float(x).is_integer() else x


def given_size(value: Any) -> tuple[int, int]:
    """Width and height of an image parameter's value where it says them: a decoded image (an adapter's); (0, 0)
    for None (an image left out). Text or bytes not yet read raise ValueError: their size is the header's (the
    engine reads it, see `Workflow.sized_images`)."""
    if value is None:
        return (0, 0)
    if hasattr(value, "png") and hasattr(value, "width"):
        return (int(value.width), int(value.height))
    raise ValueError("the image's size is known once its header is read")


def _image_value(value: Any) -> Any:
    # Adapters hand over bytes or an already decoded image; JSON clients send base64 text.
    if isinstance(value, (str, bytes, bytearray)) or hasattr(value, "png"):
        return value
    raise PydanticCustomError("image_type", "must be base64 text, a data URL or bytes")


def _int_parser(p: Parameter) -> Callable[[Any, ValidationInfo], Any]:
    lo, hi = random_range(p)

    def parse(value: Any, info: ValidationInfo) -> Any:
        value = fields._integral(value)
        if p.random_value is not None and value == p.random_value:
            rng = (info.context or {}).get("rng") or random
            return rng.randint(lo, hi)
        return value

    return parse


def _exact_choice(p: Parameter) -> Callable[[Any], Any]:
    def exact(value: Any) -> Any:
        if not any(type(value) is type(c) and value == c for c in p.choices or ()):
            raise PydanticCustomError("literal_error", "Input should be one of {expected}",
                                      {"expected": ", ".join(map(repr, p.choices or ()))})
        return value
    return exact


def value_type(p: Parameter) -> Any:
    """The annotated type that validates one parameter's value (limits, choices and all)."""
    doc = {"description": p.description} if p.description else {}
    if p.type == "string":
        return Annotated[str, Strict(), Field(max_length=p.max_length if p.max_length is not None else fields.MAX_TEXT,
                                              pattern=p.pattern)]
    if p.type == "bool":
        return fields.Bool
    if p.type == "float":
        return Annotated[float, BeforeValidator(fields._finite), Strict(), Field(ge=p.min, le=p.max)]
    if p.type == "int":
        limits = {k: _num(v) for k, v in (("minimum", p.min), ("maximum", p.max)) if v is not None}
        if p.multiple_of:
            limits["multipleOf"] = p.multiple_of
        schema: dict[str, Any] = {"type": "integer", **limits}
        if p.random_value is not None:
            schema = {"anyOf": [{"const": p.random_value, "description": "draw a random value"}, schema]}
        return Annotated[int, BeforeValidator(_int_parser(p)), Strict(),
                         Field(ge=p.min, le=p.max, multiple_of=p.multiple_of), WithJsonSchema({**schema, **doc})]
    if p.type == "choice":
        if p.choices is not None:
            if all(isinstance(c, str) for c in p.choices):
                return Literal[tuple(p.choices)]  # type: ignore[valid-type]
            # numbers listed: pydantic's Literal would take True for 1 and "2.0" nowhere, 2.0 for 2
            return Annotated[Literal[tuple(p.choices)], BeforeValidator(_exact_choice(p))]  # type: ignore[valid-type]
        live = f"One of the backend's {p.choices_from} values."
        if isinstance(p.default, (int, float)) and not isinstance(p.default, bool):
            # a custom node's list of numbers ([1, 2, 4]): the graph's own value says which kind
            return Annotated[StrictInt | StrictFloat, Field(description=live)]
        return Annotated[str, Strict(), Field(min_length=1, description=live)]
    if p.type == "image":
        return Annotated[Any, BeforeValidator(_image_value), WithJsonSchema({**IMAGE_SCHEMA, **doc})]
    if p.type == "loras":
        return fields.Loras
    return Any  # json: written as given


LORA_LIST = "LoraLoader.lora_name"


def resolve_loras(name: str, items: list[dict[str, Any]], live: list[str]) -> list[dict[str, Any]]:
    """The `loras` value with each name made the file the backend lists (exact, or a unique file stem) and both
    strengths explicit; a name the backend lacks is refused naming the parameter and the item."""
    from pathlib import PurePath

    out = []
    for i, item in enumerate(items):
        wanted = item["name"]
        found = wanted if wanted in live else None
        if found is None:
            by_stem = [f for f in live if PurePath(f).stem == wanted or PurePath(f).name == wanted]
            found = by_stem[0] if len(by_stem) == 1 else None
        if found is None:
            raise InvalidParameter(f"{name}[{i}].name", f"{name}[{i}].name: {wanted!r} is not a LoRA on the backend; "
                                                        f"choose one of {short_list(live)}")
        strength = float(item.get("strength", 1.0))
        out.append({"name": found, "strength": strength, "clip_strength": float(item.get("clip_strength", strength))})
    return out


@dataclass
class Workflow:
    name: str
    version: int
    description: str
    graph: dict[str, Any]
    parameters: dict[str, Parameter]
    outputs: dict[str, Output]
    path: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    # the manifest's `cost`: the parameters whose product it is, or a formula (bridge.workflows.cost)
    cost_rule: tuple[str, ...] | str | None = None
    # the manifest's `checks`: (rule, field, message)
    checks: tuple[tuple[str, str, str], ...] = ()

    # ---------------------------------------------------------------- the request model
    @cached_property
    def request_model(self) -> type[BaseModel]:
        """One pydantic model for the parameters: unknown names refused, defaults applied (and validated)."""
        defs: dict[str, Any] = {}
        for i, (name, p) in enumerate(self.parameters.items()):
            kind = value_type(p)
            # Fields get neutral Python names (a parameter may be called `json` or `schema`); the alias is the name.
            info: dict[str, Any] = {"alias": name, "description": p.description or None}
            if p.has_default:
                defs[f"p{i}"] = (kind, Field(default=p.default, validate_default=True, **info))
            elif p.required:
                defs[f"p{i}"] = (kind, Field(**info))
            else:
                defs[f"p{i}"] = (kind | None, Field(default=None, **info))
        title = "".join(part.capitalize() for part in self.name.replace("-", "_").split("_")) + "Parameters"
        return create_model(title, __config__=ConfigDict(extra="forbid", populate_by_name=False,
                                                          str_max_length=fields.MAX_TEXT,
                                                          json_schema_extra={"additionalProperties": False}), **defs)

    @cached_property
    def parameters_schema(self) -> dict[str, Any]:
        """The parameters as JSON Schema (built once: shared, read it only)."""
        return self.request_model.model_json_schema(by_alias=True, mode="validation",
                                                    schema_generator=fields.JsonSchema)

    def coerce(self, params: Mapping[str, Any], *, rng: random.Random | None = None) -> dict[str, Any]:
        """Check caller values by type and limits; returns the normalised values with defaults applied.

        Unknown names are refused so that a typo never falls back to a default; null means "not given".
        """
        if not isinstance(params, Mapping):
            raise InvalidParameter("parameters", "must be a JSON object")
        given = {k: v for k, v in params.items() if v is not None}
        try:
            model = self.request_model.model_validate(given, context={"rng": rng})
        except ValidationError as exc:
            raise self._invalid(exc) from None
        # Attributes, not model_dump: an image may be a decoded-image object, which dumping would turn into a dict.
        values = {info.alias or name: getattr(model, name) for name, info in type(model).model_fields.items()
                  if getattr(model, name) is not None}
        self._check_rules(values)
        return values

    @cached_property
    def _rules(self) -> list[tuple[Formula, str, str]]:
        return [(formula(rule, rule=True), field, message) for rule, field, message in self.checks]

    def _check_rules(self, values: Mapping[str, Any]) -> None:
        """The manifest's `checks` on coerced `values` (every name they read has a default or is required)."""
        for formula, field, message in self._rules:
            given = self._numbers(formula.names, values)
            try:
                holds = formula.holds(given)
            except Endless:
                holds = False
            if not holds:
                shown = ", ".join(f"{n} = {v}" for n, v in given.items())
                raise InvalidParameter(field, f"{field}: {message} ({formula.text}; here {shown})")

    @cached_property
    def _checkers(self) -> dict[str, TypeAdapter[Any]]:
        """One parameter's value checked alone (a default, a waiting job's values)."""
        return {name: TypeAdapter(value_type(p)) for name, p in self.parameters.items()}

    def recheck(self, values: Mapping[str, Any], images: Iterable[str] = ()) -> dict[str, Any]:
        """A job's coerced `values` (its stored `images` named apart), checked again against this workflow: it
        may have been edited and reloaded since the job was accepted (a parameter removed, retyped, given other
        limits or another map). Returns the values as this version takes them; raises InvalidParameter naming
        the first one that no longer fits, where binding it would write a wrong value or fail. A parameter the
        workflow no longer has is dropped (a job holds every default it was accepted with, so refusing those
        would fail every waiting job of the workflow)."""
        changed = f"workflow {self.name!r} changed (now v{self.version}) after the job was accepted"
        for name in images:
            if name in self.parameters and self.parameters[name].type != "image":
                raise InvalidParameter(name, f"{name}: no longer an image parameter; {changed}")
        out = {}
        for name, value in values.items():
            if name not in self.parameters:
                log.warning("%s: parameter %r dropped: no longer in the workflow", changed, name)
                continue
            if self.parameters[name].type == "image":
                raise InvalidParameter(name, f"{name}: now an image parameter; {changed}")
            try:
                out[name] = self.check(name, value)
            except InvalidParameter as exc:
                raise InvalidParameter(name, f"{exc.message}; {changed}") from None
        return out

    def check(self, name: str, value: Any) -> Any:
        """One parameter's value checked alone as a request's would be; InvalidParameter names the parameter."""
        try:
            return self._checkers[name].validate_python(value, context={"rng": random.Random()})
        except ValidationError as exc:
            raise InvalidParameter(name, fields.first_error(exc).message.replace("body ", f"{name} ", 1)) from None

    def _invalid(self, exc: ValidationError) -> InvalidParameter:
        err = exc.errors(include_url=False)[0]
        # only a top-level key is an unknown parameter; one inside a value ("loras[0].zzz") is named where it is
        if err.get("type") == "extra_forbidden" and len(err["loc"]) == 1:
            name = str(err["loc"][0])
            return InvalidParameter(name, f"unknown parameter {quote(name, NAME_SHOWN)} for workflow {self.name!r}; "
                                          f"known: {', '.join(sorted(self.parameters))}")
        bad = fields.first_error(exc, self.request_model)
        return InvalidParameter(bad.field or "parameters", bad.message)

    def check_defaults(self) -> list[str]:
        """Defaults that their own parameter would refuse (checked when the workflow loads)."""
        problems = []
        for name, p in self.parameters.items():
            if not p.has_default:
                continue
            try:
                self._checkers[name].validate_python(p.default)
            except ValidationError as exc:
                problems.append(f"parameter {name!r}: default is invalid: {fields.first_error(exc).message}"
                                .replace("body ", f"{name} ", 1))
        return problems

    # ---------------------------------------------------------------- cost
    @cached_property
    def _cost_formula(self) -> Formula | None:
        return formula(self.cost_rule) if isinstance(self.cost_rule, str) else None

    def cost_terms(self) -> tuple[str, ...]:
        """The parameters one job's cost reads: the manifest's `cost` list or the names its formula uses, else
        those of width, height, steps and batch_size the workflow has."""
        if self._cost_formula is not None:
            return tuple(self._cost_formula.names)
        if self.cost_rule is not None:
            return tuple(self.cost_rule)
        return tuple(n for n in COST_PARAMETERS if n in self.parameters and self.parameters[n].type == "int")

    def sized_images(self) -> tuple[str, ...]:
        """The image parameters whose size the cost formula reads (`image.width`)."""
        formula = self._cost_formula
        sized = (split_name(n) for n in formula.names) if formula else ()
        return tuple(dict.fromkeys(param for param, side in sized if side))

    def _numbers(self, names: Iterable[str], values: Mapping[str, Any],
                 sizes: Mapping[str, tuple[int, int]] | None = None) -> dict[str, int | float]:
        """The values of `names` as a formula reads them (a parameter left to the graph: the graph's value; not a
        number: 0; an image's width or height: from `sizes`, else from a decoded image or a job's stored image,
        0 for an image left out)."""
        given: dict[str, int | float] = {}
        for name in names:
            image, side = split_name(name)
            if side:
                size = (sizes or {}).get(image) or given_size(values.get(image))
                given[name] = size[IMAGE_SIZES.index(side)]
                continue
            value = values.get(name, self.graph_value(name))
            given[name] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
        return given

    def cost_text(self) -> str:
        """How one job's cost is reckoned, for the error that refuses it."""
        formula = self._cost_formula
        if formula is None:
            return " x ".join(self.cost_terms())
        return f"the cost of {', '.join(formula.names)} (workflow {self.name}'s formula)"

    def cost(self, values: Mapping[str, Any], sizes: Mapping[str, tuple[int, int]] | None = None) -> int:
        """One job's cost for coerced `values` (a parameter left to the graph counts with the graph's value;
        `sizes`: width and height of the images in `values` that are not decoded yet, see `sized_images`). A
        manifest's formula that divides by zero for these values is refused, naming the divisor's parameters."""
        given = self._numbers(self.cost_terms(), values, sizes)
        formula = self._cost_formula
        if formula is None:
            return math.prod(v if isinstance(v, int) and v > 0 else 1 for v in given.values())
        try:
            return max(0, math.ceil(formula(given)))
        except Endless as exc:
            names = exc.names or list(given)
            shown = ", ".join(f"{n} = {given[n]}" for n in names)
            raise InvalidParameter(names[0], f"{names[0]}: with {shown}, {self.cost_text()} divides by zero: "
                                             f"the work would never end") from None

    # ---------------------------------------------------------------- binding
    def bind(self, values: Mapping[str, Any], choices: Callable[[str], list[str] | None] | None = None,
             ) -> dict[str, Any]:
        """Return a fresh API graph with `values` (already coerced; images as uploaded file names) written in.

        `choices("Class.input")` gives the backend's current list for `choice` parameters; a value
        that is not in it is refused naming the parameter, and a parameter left to the graph takes the
        first live choice when the graph's value is not available there.
        """
        graph = copy.deepcopy(self.graph)
        for name, p in self.parameters.items():
            ref = p.choices_from or (LORA_LIST if p.type == "loras" else None)
            live = choices(ref) if (choices and ref) else None
            if name in values:
                value = values[name]
                if p.type == "loras":
                    value = json.dumps(resolve_loras(name, value, live) if live is not None else value)
                elif p.type == "choice" and live is not None and value not in live:
                    raise InvalidParameter(name, f"{name}: {value!r} is not available on the backend; "
                                                 f"choose one of {short_list(live)}")
            elif p.type == "choice" and live:
                if self.graph_value(name) in live:
                    continue
                value = live[0]
            else:
                continue
            if name in values:
                for r in p.rewire or ():
                    graph[r.node]["inputs"][r.input] = [r.link[0], r.link[1]]
            for t in p.targets:
                written = value if t.map is None else t.map[value if isinstance(value, str) else str(value)]
                if p.type == "json" and isinstance(written, list):
                    written = {"__value__": written}  # a bare list would read as a link
                graph[t.node]["inputs"][t.input] = copy.deepcopy(written)
        return graph

    # ---------------------------------------------------------------- introspection
    def graph_value(self, parameter: str) -> Any:
        """What the graph itself holds where a parameter writes (its first target)."""
        t = self.parameters[parameter].targets[0]
        return self.graph[t.node]["inputs"].get(t.input)

    def node_types(self) -> set[str]:
        return {n["class_type"] for n in self.graph.values()}

    def output_class(self, output: Output) -> str:
        return self.graph[output.node]["class_type"]

    def websocket_image_nodes(self) -> set[str]:
        """Node ids of image outputs that arrive as binary websocket frames (SaveImageWebsocket)."""
        return {o.node for o in self.outputs.values()
                if o.type == "images" and self.output_class(o) in WEBSOCKET_IMAGE_CLASSES}

    def needed_nodes(self, outputs: list[str] | None = None, graph: Mapping[str, Any] | None = None) -> set[str]:
        """The nodes ComfyUI runs to produce these outputs (all outputs when None), in `graph` (a bound copy whose
        links a parameter may have rewired) or the workflow's own."""
        targets = [self.outputs[n].node for n in (outputs or self.outputs) if n in self.outputs]
        return ancestors(self.graph if graph is None else graph, targets)

    def describe(self) -> dict[str, Any]:
        """Name, version, description, the parameters as JSON Schema and the outputs (GET /workflows/{name})."""
        return {"name": self.name, "version": self.version, "description": self.description,
                "parameters": self.parameters_schema,
                "outputs": {n: {"type": o.type} for n, o in self.outputs.items()}}

    def parameter_for_input(self, node: str, input_name: str) -> str | None:
        """The parameter bound to a node input (to name the field in a ComfyUI validation error)."""
        for p in self.parameters.values():
            for t in p.targets:
                if t.node == node and t.input == input_name:
                    return p.name
        return None


def short_list(values: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")
