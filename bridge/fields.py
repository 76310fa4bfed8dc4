"""Request field types shared by every dialect, and the one translation of a validation failure into words.

Each rule about a request value (an integer that refuses booleans, a size on the latent grid, a seed where -1 means
"draw one", an image given as base64 or a data URL) is written here once as an annotated type. Dialects build their
pydantic request models from these, so the checks, the error messages and the OpenAPI schema all come from the same
place and cannot disagree.
"""
from __future__ import annotations

import collections
import dataclasses
import decimal
import functools
import math
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from typing_extensions import NotRequired, TypedDict

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError,
                      WithJsonSchema, with_config)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from bridge.errors import NAME_SHOWN, quote, shorten

__all__ = [
    "Int", "LooseInt", "LaxInt", "Float", "LooseFloat", "LaxFloat", "Bool", "LooseBool", "Text", "NonBlank", "ImageData", "Seed", "Loras",
    "loras_setting", "Webhook", "WEBHOOK_EVENTS", "ResponseFormat", "OutputFormat", "OutputQuality",
    "RANDOM_SEED", "SEED_MAX", "asks_random_seed", "Request", "JsonSchema", "FieldError", "field_errors",
    "first_error", "describe",
]

SEED_MAX = 2**64 - 1
# -1 asks for a random seed; it is drawn from 0..2^32-1, which every client (A1111 seeds are u32) can show.
RANDOM_SEED = -1
RANDOM_SEED_HIGH = 2**32 - 1
# Longer than any prompt a person writes; bounds the work a hostile body can cause in tokenisers and logs.
MAX_TEXT = 10_000
MAX_ERRORS = 20  # fields one answer names
# An image field holds megabytes of base64; the body limit (BRIDGE_MAX_BODY_MB) is what bounds it in practice.
MAX_IMAGE_TEXT = 512 * 1024 * 1024


def _not_bool(value: Any, kind: str) -> Any:
    # JSON true/false are not numbers, although Python's bool is an int subclass.
    if isinstance(value, bool):
        raise PydanticCustomError(f"{kind}_type", "must be " + ("an integer" if kind == "int" else "a number"))
    return value


def _integral(value: Any) -> Any:
    value = _not_bool(value, "int")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise PydanticCustomError("int_from_float", "must be an integer, got {value}", {"value": value})
        return int(value)
    return value


# ASCII: int() and float() take any script's digits ("٣" is 3), which no client means to send
_INT_TEXT = re.compile(r"\s*[-+]?\d{1,40}\s*", re.ASCII)
_FLOAT_TEXT = re.compile(r"\s*[-+]?(\d{1,40}(\.\d{0,40})?|\.\d{1,40})([eE][-+]?\d{1,4})?\s*", re.ASCII)


def _truncated(value: Any) -> Any:
    # pydantic v1 read a float into an int field with int(): 20.7 is 20, 1e19 is 10^19 (v2 refuses the first and
    # cannot read the second as an integer at all)
    if isinstance(value, float):
        return int(_finite(value))
    return value


def _loose_integral(value: Any) -> Any:
    # Form-encoded bodies and some JavaScript clients send numbers as strings.
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    return _integral(value)


def _finite(value: Any) -> Any:
    value = _not_bool(value, "float")
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "must be a finite number")
    return value


def _loose_finite(value: Any) -> Any:
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value):
        value = float(value)
    return _finite(value)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _loose_bool(value: Any) -> Any:
    # Query strings carry booleans as words.
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return value


def _non_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be empty")
    return value


# An integer in JSON: 20 and 20.0 are accepted, "20", true and 20.5 are not.
Int = Annotated[int, BeforeValidator(_integral), Strict()]
# As Int, but "20" is accepted too (query strings, form bodies, lenient dialects).
LooseInt = Annotated[int, BeforeValidator(_loose_integral), Strict()]
# A finite JSON number (integers accepted); booleans, strings, NaN and infinities are not.
Float = Annotated[float, BeforeValidator(_finite), Strict()]
LooseFloat = Annotated[float, BeforeValidator(_loose_finite), Strict()]
# Numbers as pydantic v1 read them, for the dialect whose clients were written against it (A1111): numeric strings
# and booleans are accepted (A1111's own API tests send `"inpainting_mask_invert": false` to an int field).
LaxInt = Annotated[int, BeforeValidator(_truncated)]
LaxFloat = Annotated[float, AfterValidator(lambda v: _finite(v) if not isinstance(v, bool) else v)]
Bool = Annotated[bool, Strict()]
LooseBool = Annotated[bool, BeforeValidator(_loose_bool), Strict()]
Text = Annotated[str, Strict(), Field(max_length=MAX_TEXT)]
NonBlank = Annotated[str, Strict(), Field(max_length=MAX_TEXT), AfterValidator(_non_blank)]
# Base64 image bytes, plain or as a `data:` URL, or a URL to fetch. Only the type is checked here; fetching
# (JobEngine.fetch_image), decoding and the size and pixel limits run later, off the event loop (bridge.images).
ImageData = Annotated[str, Strict(), Field(max_length=MAX_IMAGE_TEXT), WithJsonSchema({
    "type": "string",
    "description": "PNG, JPEG or WebP bytes as base64 text or a data URL (data:image/png;base64,...), or an "
                   "http(s):// URL (public addresses only, unless BRIDGE_OUTBOUND_ALLOW admits it) or an "
                   "s3://bucket/key of the bridge's own bucket.",
})]
def asks_random_seed(value: Any) -> bool:
    """-1 or "-1", A1111's and every seed client's "random" (a blank seed is none at all)."""
    if isinstance(value, str):
        return value.strip() == "-1"
    return value == RANDOM_SEED and not isinstance(value, bool)


def _random_marker(value: Any) -> Any:
    # "random" and blank become None: the adapter draws the seed so it can report it.
    if asks_random_seed(value) or isinstance(value, str) and not value.strip():
        return None
    return value


# A seed: -1 or null asks for a random one (None after validation; the caller draws and records it), else
# 0..2^64-1. Numeric strings are accepted ("42"), as several clients send them.
Seed = Annotated[Annotated[LooseInt, Field(ge=0, le=SEED_MAX)] | None, BeforeValidator(_random_marker),
                 WithJsonSchema({"anyOf": [{"const": RANDOM_SEED, "description": "draw a random seed"},
                                           {"type": "integer", "minimum": 0, "maximum": SEED_MAX},
                                           {"type": "null"}]})]


@with_config(ConfigDict(extra="forbid"))
class LoraItem(TypedDict):
    name: Annotated[str, Strict(), Field(min_length=1, max_length=255, description=(
        "A file of the backend's loras folder: its name as ComfyUI lists it, or its file stem when that is unique."))]
    strength: NotRequired[Annotated[float, BeforeValidator(_finite), Strict(), Field(ge=-10, le=10, description=(
        "How strongly the LoRA changes the model (and the text encoder unless clip_strength says); default 1."))]]
    clip_strength: NotRequired[Annotated[float, BeforeValidator(_finite), Strict(), Field(ge=-10, le=10, description=(
        "How strongly it changes the text encoder; default: strength."))]]


MAX_LORAS = 16
# LoRAs to apply, in order: [{"name": "pixel_style", "strength": 0.8}]. Strength 0 leaves the model as it is.
Loras = Annotated[list[LoraItem], Field(max_length=MAX_LORAS)]


# How result images come back: inline (base64 or a data URL, as each dialect always sent them) or as links: a
# presigned URL of the S3 store (BRIDGE_URL_LIFETIME), else the bridge's /jobs/{id}/outputs/{name}/{index}.
ResponseFormat = Annotated[Literal["b64", "url"], Field(description=(
    "b64 (default): images inline; url: links to them (presigned S3 URLs when the bridge stores results in S3, "
    "else the bridge's /jobs/{id}/outputs/... route)."))]

# The file format results are stored and answered in; converted once, when the result is stored.
OutputFormat = Annotated[Literal["png", "jpeg", "webp"], Field(description=(
    "png (default), jpeg or webp: results are stored and answered in this format."))]
OutputQuality = Annotated[LooseInt, Field(ge=1, le=100, description=(
    "jpeg/webp quality 1..100 (default 90); webp at 100 is lossless."))]

WEBHOOK_EVENTS = ("job.completed", "job.failed", "job.cancelled", "job.progress")


@with_config(ConfigDict(extra="forbid"))
class WebhookSpec(TypedDict):
    # min_length 1, not 8: the pattern needs 8 characters anyway, and "ftp://x" was answered "must not be empty"
    url: Annotated[str, Strict(), Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s]+$", description=(
        "Where the bridge POSTs Standard Webhooks messages about this job (signed; see docs/api/webhooks.md)."))]
    events: NotRequired[Annotated[list[Literal[WEBHOOK_EVENTS]], Field(min_length=1, max_length=4,  # type: ignore[valid-type]
                                                                       description=(
        "Which events to send; default job.completed, job.failed, job.cancelled."))]]


def _webhook(value: Any) -> Any:
    # A bare URL is the common case; the object form also picks events.
    return {"url": value} if isinstance(value, str) else value


# A receiver for this job's events: a URL, or {"url", "events"}. Checked again (DNS, private addresses) before use.
Webhook = Annotated[WebhookSpec, BeforeValidator(_webhook), WithJsonSchema({
    "description": "Where to POST signed messages about this job: a URL, or {\"url\", \"events\"}.",
    "anyOf": [{"type": "string", "pattern": "^https?://", "maxLength": 2048},
              {"type": "object", "required": ["url"], "additionalProperties": False, "properties": {
                  "url": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
                  "events": {"type": "array", "minItems": 1, "maxItems": 4,
                             "items": {"enum": list(WEBHOOK_EVENTS)}}}}]})]


def loras_setting(text: str) -> list[LoraItem]:
    """A LoRA list written in a setting (JSON text), checked with the request type; "" is none."""
    from pydantic import TypeAdapter

    if not text.strip():
        return []
    try:
        return TypeAdapter(Loras).validate_json(text)
    except ValidationError as exc:
        raise ValueError(f"not a LoRA list: {first_error(exc).message}") from None


_NUMERIC_KEYS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum",
                 "multiple_of": "multipleOf"}


def _standard_keywords(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            node = {_NUMERIC_KEYS.get(k, k): v for k, v in node.items()}
        return {k: _standard_keywords(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_standard_keywords(v) for v in node]
    return node


class JsonSchema(GenerateJsonSchema):
    """Pydantic's generator, with limits written as JSON Schema keywords: behind a BeforeValidator (how these
    types refuse booleans) pydantic leaves them under their Python names (ge, le), which no client reads."""

    def generate(self, schema: Any, mode: Any = "validation") -> Any:
        return _standard_keywords(super().generate(schema, mode))

    def generate_definitions(self, inputs: Any) -> Any:
        keys, defs = super().generate_definitions(inputs)
        return keys, _standard_keywords(defs)


class Request(BaseModel):
    """Base of request models: unknown keys are ignored (clients send extras), fields by name or alias. Every string
    is at most MAX_TEXT characters unless its type says otherwise (images): a megabyte sampler name is refused,
    naming the field, before it reaches a lookup, a log line or a tokenizer."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=False, str_max_length=MAX_TEXT)


# ---------------------------------------------------------------------------------------------------------------
# Validation failures in words


@dataclass(frozen=True)
class FieldError:
    field: str | None   # the field as the client named it ("width", "pico.width", "init_images[1]"), None = body
    message: str        # a sentence naming the field
    kind: str           # pydantic's error type, for dialects that report it
    ctx: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the error's limits (ge, le, expected...)


_TYPE_TAGS = ("str", "int", "float", "bool", "list", "dict", "none", "literal", "union")


def _is_tag(part: str) -> bool:
    # a tag may carry its item type too: "list[constrained-str]"
    if part.startswith(("function-", "constrained-")):
        return True
    head, bracket, _ = part.partition("[")
    return head in _TYPE_TAGS and (not bracket or part.endswith("]"))


def _location(loc: Sequence[Any]) -> str | None:
    out = ""
    for part in loc:
        if isinstance(part, str):  # a made-up key of 200 KB came back twice, in `field` and the message
            part = shorten(part, NAME_SHOWN)
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _is_tag(part):
            continue  # pydantic names union members and validators in the location; clients never see them
        else:
            out += ("." if out else "") + str(part)
    return out or None


# What an error shows of a value that is not a number or a string: its start (a list may hold millions of items)
_SHOW = reprlib.Repr()
_SHOW.maxlist = _SHOW.maxdict = _SHOW.maxtuple = 4
_SHOW.maxstring = _SHOW.maxother = 40


def _num(value: Any) -> str:
    # integers in full below 10^24 (seeds and their 2^64 bounds), not 309 digits for 1e308 read into an int field;
    # a whole float only while exact (1e23 as 23 digits would be digits the client never sent)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, int) and abs(value) >= 10**24:
        try:
            return f"{float(value):.6g}"
        except OverflowError:  # past a float's range: the decimal module, without its trailing zeros
            return format(decimal.Decimal(value).normalize(), ".6g")
    return str(value)


@functools.lru_cache(maxsize=256)
def _limits(model: type[BaseModel]) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """Every field's inclusive limits, nested fields too, read from the model's JSON Schema (which sees through
    optional fields and nested annotations), keyed by the path of names clients use."""
    schema = model.model_json_schema(by_alias=True, schema_generator=JsonSchema)
    defs = schema.get("$defs", {})
    out: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def variants(node: dict[str, Any]) -> list[dict[str, Any]]:
        if "$ref" in node:
            node = defs.get(node["$ref"].rsplit("/", 1)[-1], {})
        found = [node]
        for v in node.get("anyOf", []):
            found += variants(v)
        if isinstance(node.get("items"), dict):
            found += variants(node["items"])
        return found

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        if len(path) > 6:
            return
        for variant in variants(node):
            if path and path not in out and ("minimum" in variant or "maximum" in variant):
                out[path] = (variant.get("minimum"), variant.get("maximum"))
            for name, prop in (variant.get("properties") or {}).items():
                walk(prop, path + (name,))

    walk(schema, ())
    return out


def _bounds(model: type[BaseModel] | None, loc: Sequence[Any]) -> tuple[Any, Any]:
    """The inclusive limits declared on a field, to say "between lo and hi" rather than half of it."""
    if model is None or not loc:
        return None, None
    path = tuple(str(p) for p in loc if not isinstance(p, int))
    try:
        return _limits(model).get(path, (None, None))
    except Exception:  # noqa: BLE001 - a model whose schema cannot be generated still gets a message
        return None, None


# pydantic error type -> sentence ({name} is the field; the other names come from the error's context).
_TEMPLATES = {
    **dict.fromkeys(("int_type", "int_parsing"), "{name} must be an integer"),
    **dict.fromkeys(("float_type", "float_parsing"), "{name} must be a number"),
    "finite_number": "{name} must be a finite number",
    **dict.fromkeys(("bool_type", "bool_parsing"), "{name} must be true or false"),
    "string_type": "{name} must be a string",
    "string_too_long": "{name} is longer than {max_length} characters",
    **dict.fromkeys(("string_too_short", "blank"), "{name} must not be empty"),
    "too_long": "{name} has more than {max_length} items",
    "too_short": "{name} needs at least {min_length} items",
    **dict.fromkeys(("list_type", "tuple_type"), "{name} must be a list"),
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type"), "{name} must be a JSON object"),
    "json_invalid": "{name} is not valid JSON",
    "int_parsing_size": "{name} is too large a number",
}

# pydantic reads no float past 2^63 into an integer field, whatever the field's own limits
_INT_READ = 2**63 - 1


def _as_limit(err: Mapping[str, Any], model: type[BaseModel] | None) -> Mapping[str, Any]:
    """A number too large to read as an integer (1e308 in `width`) as the limit it is past: pydantic reports it as
    unparsable text ("Unable to parse input string as an integer") before it looks at any limit. A text of 4300+
    digits in a field without that limit stays as it is (such a field takes a 300-digit text)."""
    if err.get("type") != "int_parsing_size":
        return err
    value = err.get("input")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    below = value < 0 if number else isinstance(value, str) and value.strip().startswith("-")
    lo, hi = _bounds(model, err.get("loc") or ())
    bound = lo if below else hi
    if bound is None and number:
        bound = -_INT_READ if below else _INT_READ
    if bound is None:
        return err
    kind, key = ("greater_than_equal", "ge") if below else ("less_than_equal", "le")
    return {**err, "type": kind, "ctx": {key: bound}}


def describe(err: Mapping[str, Any], field: str | None, model: type[BaseModel] | None = None) -> str:
    """One pydantic error as a sentence that starts with the field's name."""
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input")
    name = field or "body"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        shown = _num(value)
    elif isinstance(value, str):
        shown = quote(value)
    else:
        shown = _SHOW.repr(value)
    if kind == "missing":
        return f"{name} is required"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        lo, hi = _bounds(model, err.get("loc") or ())
        if lo is not None and hi is not None:
            return f"{name} must be between {_num(lo)} and {_num(hi)}, got {shown}"
        bound = _num(next(iter(ctx.values()))) if ctx else "?"
        words = {"greater_than_equal": "at least", "less_than_equal": "at most", "greater_than": "more than",
                 "less_than": "less than"}[kind]
        return f"{name} must be {words} {bound}, got {shown}"
    if kind == "multiple_of":
        return f"{name} must be a multiple of {_num(ctx.get('multiple_of'))}, got {shown}"
    if kind == "int_from_float":
        return f"{name} must be an integer, got {shown}"
    if kind == "string_pattern_mismatch":
        return f"{name} must match the pattern {ctx.get('pattern')}, got {shown}"
    template = _TEMPLATES.get(kind)
    if template is not None:
        return template.format_map(collections.defaultdict(lambda: "?", {**ctx, "name": name}))
    if kind in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        return f"{name} must be one of {expected}, got {shown}"
    msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    if msg.startswith(name):
        return msg
    return f"{name}: {msg}" if not msg.startswith("must") else f"{name} {msg}"


def field_errors(exc: ValidationError, model: type[BaseModel] | None = None,
                 rename: Callable[[str], str] | None = None) -> list[FieldError]:
    """The errors of a ValidationError, once per field (a union reports one error per member), the first
    MAX_ERRORS fields of them (each item of a long list may fail on its own)."""
    out: list[FieldError] = []
    seen: set[str | None] = set()
    for err in exc.errors(include_url=False):
        if len(out) == MAX_ERRORS:
            break
        field = _location(err.get("loc") or ())
        if rename is not None and field is not None:
            field = rename(field)
        if field in seen:
            continue
        seen.add(field)
        err = _as_limit(err, model)
        out.append(FieldError(field, describe(err, field, model), str(err.get("type", "")),
                              dict(err.get("ctx") or {})))
    return out


def first_error(exc: ValidationError, model: type[BaseModel] | None = None,
                rename: Callable[[str], str] | None = None) -> FieldError:
    return field_errors(exc, model, rename)[0]
