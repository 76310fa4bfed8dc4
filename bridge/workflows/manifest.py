"""The manifest format as a pydantic model: what a `<name>.manifest.json` may say, checked field by field.

`workflows/manifest.schema.json` is generated from these classes (`python -m bridge.workflows schema`), so editors
validate manifests with exactly the rules the bridge applies at start-up. Rules that need the graph (a target's node
exists and sets that input) are checked when the workflow loads (bridge.workflows.loader).
"""
from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, TypeAdapter,
                      ValidationError, field_validator, model_validator)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import SchemaError

from .cost import formula, split_name

PARAM_TYPES = ("string", "int", "float", "bool", "choice", "image", "json", "loras")
OUTPUT_TYPES = ("images", "value")
NodeId = Annotated[str, Field(pattern=r"^\d+$", description="A node id of the API-format graph (decimal).")]
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
# An int map translates a small range (clip_skip 1..12), never a seed-sized one.
MAX_INT_MAP = 1024
# The largest limit a number parameter may have (seeds go to 2^64 - 1).
MAX_LIMIT = 2**64
# Seeds drawn for `random_value` stay below 2^32: every client (A1111 seeds are u32) can show them.
RANDOM_HIGH = 2**32 - 1
# A version past this loaded, then every request to the workflow was a 500: the job store keeps it in a 64-bit
# column (and JavaScript clients read integers exactly up to 2^53).
MAX_VERSION = 2**53 - 1
# A longer limit than any request body could reach; 10^30 loaded into a validator pydantic could not build.
MAX_LENGTH = 2**32


def random_range(p: Parameter) -> tuple[int, int]:
    """The values `random_value` draws from: [max(min, 0), min(max, 2^32 - 1)]."""
    lo = max(0, math.ceil(p.min)) if p.min is not None else 0
    hi = min(math.floor(p.max), RANDOM_HIGH) if p.max is not None else RANDOM_HIGH
    return lo, hi


def is_limit(value: Any) -> bool:
    """A number a limit may be: finite, at most MAX_LIMIT in size (json reads NaN, Infinity and 1e400 as numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= MAX_LIMIT  # not NaN


class _Strict(BaseModel):
    # A misspelt key ("defualt") would otherwise be ignored and its value silently lost.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    """Where a parameter's value is written: `graph[node]["inputs"][input]`."""

    node: NodeId
    input: str = Field(min_length=1)
    map: dict[str, Any] | None = Field(None, description=(
        "Value written per parameter value: for a choice, keys equal `choices`; for an int, one key per value "
        "from min to max. A value that is a link [\"node\", slot] rewires the graph."))


class Rewire(_Strict):
    """A link a parameter puts in place when a request sets it: `graph[node]["inputs"][input] = link`."""

    node: NodeId
    input: str = Field(min_length=1)
    link: tuple[NodeId, Annotated[int, Field(ge=0)]] = Field(description="[node id, output slot]")


class Parameter(_Strict):
    """One request parameter and the graph inputs it sets."""

    type: Literal["string", "int", "float", "bool", "choice", "image", "json", "loras"] = Field(description=(
        "'loras': a list of {name, strength, clip_strength} written as JSON text to a LoRA stack node's input; "
        "names are checked against `choices_from` (default LoraLoader.lora_name) and a unique file stem is "
        "accepted for a file name."))
    targets: list[Target] = Field(min_length=1)
    default: Any = Field(None, description="Used when the caller leaves the parameter out (checked at load).")
    required: bool = False
    description: str = ""
    min: int | float | None = Field(None, description="Inclusive lower limit (int, float).")
    max: int | float | None = Field(None, description="Inclusive upper limit (int, float).")
    multiple_of: int | None = Field(None, gt=0, description="int only.")
    max_length: int | None = Field(None, ge=0, le=MAX_LENGTH, description="string only.")
    pattern: str | None = Field(None, min_length=1, max_length=1024, description=(
        "string only: a regular expression a value must match somewhere (anchor it with ^ and $ to match the "
        "whole value), in the syntax of Rust's regex crate that the bridge checks with: no look-around or "
        "back-references, so a match takes time linear in the value's length."))
    choices: list[StrictStr | StrictInt | StrictFloat] | None = Field(None, min_length=1, description=(
        "Fixed list for a choice (texts, or the numbers a custom node lists)."))
    choices_from: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$", description=(
        "'<NodeClass>.<input>': the list is the backend's, read from its /object_info."))
    random_value: int | None = Field(None, description=(
        "int only: this value asks for a random one in [max(min, 0), min(max, 2^32-1)], recorded in the job."))
    rewire: list[Rewire] | None = Field(None, description=(
        "Links put in place only when a request sets this parameter, e.g. a VAE file parameter that routes the "
        "decoders to its VAELoader instead of the checkpoint's VAE; left out, the graph stays as it is."))
    # Set by the loader from the manifest key; not part of the file format.
    name: SkipJsonSchema[str] = Field("", exclude=True)

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set

    @field_validator("min", "max")
    @classmethod
    def _limit(cls, value: int | float | None) -> int | float | None:
        # json reads NaN, Infinity and 1e400 (as inf): a limit like that made answers that are not JSON and 500s
        if value is not None and not is_limit(value):
            raise ValueError(f"must be a finite number of at most 2^64 in size, got {str(value)[:40]}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Parameter:
        if self.type == "choice" and self.choices is None and self.choices_from is None:
            raise ValueError("a choice needs 'choices' or 'choices_from'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is more than 'max' ({self.max}): no value would do")
        # `choices` and `map` cover a choice's (or a bounded int's) every value; on another type a request's value
        # outside them would pass the request model and find no entry in the map when the job is bound
        for key, types in (("choices", ("choice",)), ("multiple_of", ("int",)), ("random_value", ("int",)),
                           ("max_length", ("string",)),
                           ("pattern", ("string",)),
                           ("min", ("int", "float")), ("max", ("int", "float"))):
            if getattr(self, key) is not None and self.type not in types:
                raise ValueError(f"'{key}' applies to {' and '.join(types)} parameters only, not {self.type}")
        if self.pattern is not None:
            try:  # the validator's own engine, so a pattern that loads is one every request can be checked with
                TypeAdapter(Annotated[str, Field(pattern=self.pattern)])
            except SchemaError as exc:
                raise ValueError(f"'pattern' is not a regular expression the bridge can check: "
                                 f"{str(exc).splitlines()[-1][:200]}") from None
        if self.random_value is not None and self.type == "int" and (span := random_range(self))[0] > span[1]:
            raise ValueError(f"'random_value' draws from max(min, 0) to min(max, 2^32 - 1): no value between "
                             f"{self.min} and {self.max}")
        if self.rewire and self.has_default:
            raise ValueError("a parameter with 'rewire' takes no 'default': it rewires only when a request sets it")
        for t in self.targets:
            if t.map is None:
                continue
            if self.type not in ("choice", "int"):
                raise ValueError(f"target {t.node}.{t.input}: 'map' applies to choice and int parameters only, "
                                 f"not {self.type}")
            if self.type == "int":
                lo, hi = self.min, self.max
                whole = lo is not None and hi is not None and float(lo).is_integer() and float(hi).is_integer()
                if not whole or not 0 <= hi - lo < MAX_INT_MAP \
                        or set(t.map) != {str(i) for i in range(int(lo), int(hi) + 1)}:
                    raise ValueError(f"target {t.node}.{t.input}: an int 'map' needs 'min' and 'max' and one key "
                                     f"per value from min to max")
            elif self.choices is None or set(t.map) != {str(c) for c in self.choices}:
                raise ValueError(f"target {t.node}.{t.input}: 'map' keys must equal 'choices'")
        return self

    def describe(self) -> dict[str, Any]:
        """The parameter as adapters show it (a /models route, an options listing)."""
        out: dict[str, Any] = {"type": self.type, "required": self.required}
        if self.has_default:
            out["default"] = self.default
        for key in ("description", "min", "max", "multiple_of", "max_length", "pattern", "choices_from",
                    "random_value"):
            value = getattr(self, key)
            if value not in (None, ""):
                out[key] = int(value) if key in ("min", "max") and float(value).is_integer() else value
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


class Output(_Strict):
    """A result the job reports: images from an image-saving node, or one `ui` value of a node."""

    node: NodeId
    type: Literal["images", "value"]
    key: str | None = Field(None, description="For a 'value' output: the key of the node's `ui` dict.")
    name: SkipJsonSchema[str] = Field("", exclude=True)

    @model_validator(mode="after")
    def _key(self) -> Output:
        if self.type == "value" and not self.key:
            raise ValueError("a 'value' output needs 'key'")
        return self


class Check(_Strict):
    """A rule on several parameters that a request must meet, refused naming `field` (limits on one parameter are
    its own `min`, `max` and `pattern`)."""

    rule: str = Field(min_length=1, description=(
        "A comparison of two formulas over the number parameters (as `cost` reads them), e.g. "
        "`2 * overlap <= width`."))
    field: Name = Field(description="The parameter a request that breaks the rule is refused for.")
    message: str = Field(min_length=1, max_length=500, description="Why, in words, e.g. 'at most half the tile'.")


class Manifest(_Strict):
    """A workflow's manifest: its name, version, graph file, parameters and outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Pixart workflow manifest",
    })

    name: Name = Field(description="Unique; what adapters and POST /workflows/{name} use.")
    version: int = Field(description="Positive integer; bump it when parameters change meaning.")
    description: str = ""
    workflow: str | None = Field(None, description="The API-format graph file beside the manifest "
                                                   "(default: <name>.json).")
    parameters: dict[Name, Parameter] = Field(default_factory=dict)
    outputs: dict[Name, Output] = Field(min_length=1)
    checks: list[Check] = Field(default_factory=list, description=(
        "Rules on several parameters a request must meet, refused with a 400 naming the rule's field (e.g. a tile "
        "overlap of at most half the tile)."))
    cost: list[Name] | str | None = Field(None, description=(
        "What one job costs (the request cost bound, BRIDGE_MAX_REQUEST_COST): a list of int parameters (their "
        "product), or a formula over the number parameters and the sizes of image parameters (image.width, "
        "image.height) with + - * / //, parentheses, ceil, floor, min and max, for work a product cannot say "
        "(two passes, overlapping tiles, tiles of the sent picture); default: the product of whichever "
        "of width, height, steps and batch_size the workflow has."))

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
            raise ValueError("must be a positive integer of at most 2^53 - 1")
        return value

    def _formula_names(self, where: str, text: str, rule: bool = False) -> None:
        try:
            names = formula(text, rule).names
        except ValueError as exc:
            raise ValueError(f"{where}: the formula {exc}") from None
        for name in names:
            image, size = split_name(name)
            if size:
                if rule:  # a request's checks run before any of its images is read
                    raise ValueError(f"{where}: {name!r}: a check reads number parameters only, not an image's size")
                if image not in self.parameters or self.parameters[image].type != "image":
                    raise ValueError(f"{where}: {name!r}: {image!r} is not an image parameter of this workflow")
                continue  # an image left out reads as 0 x 0
            if name not in self.parameters or self.parameters[name].type not in ("int", "float"):
                raise ValueError(f"{where}: {name!r} is not a number parameter of this workflow")
            p = self.parameters[name]
            if not (p.has_default or p.required):  # the graph's value: a link, or a number past the limits
                raise ValueError(f"{where}: {name!r} needs a default (or required: true) for the formula to read")

    @model_validator(mode="after")
    def _checks(self) -> Manifest:
        for i, check in enumerate(self.checks):
            self._formula_names(f"checks[{i}]", check.rule, rule=True)
            if check.field not in self.parameters:
                raise ValueError(f"checks[{i}]: field {check.field!r} is not a parameter of this workflow")
        return self

    @model_validator(mode="after")
    def _cost(self) -> Manifest:
        if isinstance(self.cost, str):
            self._formula_names("cost", self.cost)
            return self
        if self.cost is not None and len(set(self.cost)) != len(self.cost):
            raise ValueError("cost: a parameter is listed twice (its value would count squared)")
        for name in self.cost or ():
            if name not in self.parameters or self.parameters[name].type != "int":
                raise ValueError(f"cost: {name!r} is not an int parameter of this workflow")
        return self

    @model_validator(mode="after")
    def _named(self) -> Manifest:
        # The manifest key is the name everywhere else; copying it in keeps error messages self-contained.
        params = {k: p.model_copy(update={"name": k}) for k, p in self.parameters.items()}
        outs = {k: o.model_copy(update={"name": k}) for k, o in self.outputs.items()}
        object.__setattr__(self, "parameters", params)
        object.__setattr__(self, "outputs", outs)
        return self


def manifest_problems(exc: ValidationError) -> list[str]:
    """Pydantic's errors as sentences that name the parameter or output and the key."""
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "literal_error":
            msg = f"must be one of {err.get('ctx', {}).get('expected')}"
        elif err.get("type") == "extra_forbidden":
            msg = "is not a manifest key"
        if len(loc) >= 2 and loc[0] in ("parameters", "outputs"):
            where = f"{'parameter' if loc[0] == 'parameters' else 'output'} {loc[1]!r}"
            rest = ".".join(loc[2:])
            out.append(f"{where}: {rest} {msg}" if rest else f"{where}: {msg}")
        elif loc:
            out.append(f"{'.'.join(repr(p) for p in loc[:1])}{'.' + '.'.join(loc[1:]) if loc[1:] else ''} {msg}")
        else:
            out.append(msg)
    return out


def json_schema() -> dict[str, Any]:
    return Manifest.model_json_schema(mode="validation")


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


__all__ = ["PARAM_TYPES", "OUTPUT_TYPES", "Target", "Rewire", "Parameter", "Output", "Manifest", "manifest_problems",
           "json_schema", "json_schema_text"]
