"""A1111's settings (`/sdapi/v1/options`): the full key set of 1.10, typed on the wire as A1111 types it, the
keys that act on generation checked when they are set, the rest stored and echoed.

`data/options.json` holds every key A1111 1.10.1 answers with its default and JSON type (read off A1111's own
option table and API response model; see docs/api/a1111.md). A1111 builds its response model from the defaults:
an option whose default is a whole number other than 0 is a float field (`jpeg_quality` prints `80.0`, also after
`POST {"jpeg_quality": 90}`), a falsy default is untyped (`eta_noise_seed_delta` stays `0`). Clients rely on both,
and Open WebUI posts the whole GET answer back to switch models, so that answer must be accepted as a body.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, Strict, TypeAdapter, ValidationError

from bridge.errors import NAME_SHOWN, quote
from bridge.fields import MAX_TEXT, Bool, Float, Int, Text, describe

from .models import A1111Error, field_error

DATA = Path(__file__).with_name("data") / "options.json"

# What the bridge really does where it differs from a fresh A1111: ComfyUI draws its initial noise on the CPU.
BRIDGE_DEFAULTS: dict[str, Any] = {"randn_source": "CPU"}

# A1111 skips these on POST without a word: explanatory HTML and the options only its command line may change.
IGNORED_ON_POST = {"api_enable_requests", "api_forbid_local_requests", "api_useragent"}

SAMPLE_FORMATS = ("png", "jpg", "jpeg", "webp")
CLIP_SKIP_MAX = 12  # A1111's "Clip skip" slider runs 1..12
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


@cache
def defaults() -> dict[str, Any]:
    """Every option and its default, in the order A1111 answers them."""
    table = json.loads(DATA.read_text(encoding="utf-8"))
    table.update(BRIDGE_DEFAULTS)
    return table


def _is_html(key: str) -> bool:
    value = defaults().get(key)
    return isinstance(value, str) and value.lstrip().startswith("<")


def wire(key: str, value: Any) -> Any:
    """`value` as A1111's response model prints it for `key`."""
    default = defaults().get(key)
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _only(*allowed: Any, why: str) -> Any:
    """An option that acts here only at some of A1111's values: the others are refused naming the key, rather
    than stored and silently not applied."""
    words = " or ".join(repr(a) for a in allowed)
    return Annotated[Literal[allowed], Field(description=f"Only {words} runs here ({why}).")]  # type: ignore


_KSAMPLER = "ComfyUI's KSampler has no such setting"
ClipSkip = Annotated[Int, Field(ge=1, le=CLIP_SKIP_MAX, description="A1111's Clip skip: 1 (none) to 12.")]

# The options that change what the bridge generates, typed: they are checked when set (A1111 would fail later,
# mid-generation, with a 500), in override_settings too, and the published schema states the same limits. The
# checkpoint and VAE are checked by the route against the backend's lists; every other key round-trips as sent.
TYPES: dict[str, Any] = {
    "randn_source": _only("CPU", why="ComfyUI draws its initial noise with the CPU generator"),
    "eta_ancestral": _only(1.0, 0.0, why="ComfyUI's KSampler runs ancestral and SDE samplers at eta 1; Euler a "
                                        "and DPM2 a at 0 as Euler and DPM2"),
    "eta_ddim": _only(0.0, 1.0, why="DDIM runs deterministic (0) or as the ancestral step on DDIM timesteps (1)"),
    "s_churn": _only(0.0, why=_KSAMPLER),
    "s_tmin": _only(0.0, why=_KSAMPLER),
    "s_tmax": _only(0.0, why=_KSAMPLER),
    "s_noise": _only(1.0, why=_KSAMPLER),
    "s_min_uncond": _only(0.0, why=_KSAMPLER),
    "initial_noise_multiplier": Annotated[Float, Field(ge=0.0, le=2.0)],
    "live_previews_enable": Bool,
    "CLIP_stop_at_last_layers": ClipSkip,
    "samples_format": Annotated[Literal[SAMPLE_FORMATS], BeforeValidator(_lower)],  # type: ignore[valid-type]
    "jpeg_quality": Annotated[Int, Field(ge=1, le=100)],
    "webp_lossless": Bool,
    "enable_pnginfo": Bool,
    "eta_noise_seed_delta": Annotated[Int, Field(ge=0, le=2**32 - 1)],
    "img2img_background_color": Annotated[str, Strict(), Field(pattern=_COLOUR.pattern,
                                                                description="A colour like '#ffffff'.")],
    "tiling": Bool,
    "sd_lora": Text,
    "extra_networks_default_multiplier": Annotated[Float, Field(ge=-10.0, le=10.0)],
    "enable_prompt_comments": Bool,
    "return_grid": Bool,
    "grid_only_if_multiple": Bool,
    "n_rows": Annotated[Int, Field(ge=-1, le=64)],
    "grid_prevent_empty_spots": Bool,
    "add_model_name_to_info": Bool,
    "add_version_to_infotext": Bool,
    "face_restoration": Bool,
}
_ADAPTERS = {key: TypeAdapter(kind) for key, kind in TYPES.items()}


# An option without a type of its own holds what A1111's settings hold: a value or a short list of values, in all
# at most MAX_TEXT characters. Anything was kept before: one 32 MB body stayed in memory for good and came back with
# every GET.
MAX_LIST = 256


def _size(value: Any) -> int | None:
    """The characters a plain value takes (a number: 8), or None for anything else."""
    if isinstance(value, str):
        return len(value)
    return 8 if value is None or isinstance(value, (bool, int, float)) else None


def _plain(value: Any) -> bool:
    items = value if isinstance(value, list) and len(value) <= MAX_LIST else [value]
    sizes = [_size(item) for item in items]
    return None not in sizes and sum(sizes) <= MAX_TEXT


def _check_one(key: str, value: Any, where: str | None = None) -> Any:
    adapter = _ADAPTERS.get(key)
    if adapter is None:
        if _plain(value):
            return value
        raise field_error(where or key, f"must be a value or a list of at most {MAX_LIST} values (texts, numbers, "
                                        f"true or false; {MAX_TEXT} characters in all), as A1111's settings are")
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        name = where or key
        # the shared wording ("n_rows must be at most 64, got 99"), after A1111's "key: " prefix
        raise field_error(name, describe(exc.errors()[0], name).removeprefix(name).lstrip(": ")) from None


def check_clip_skip(value: Any, where: str = "CLIP_stop_at_last_layers") -> int:
    return _check_one("CLIP_stop_at_last_layers", value, where)


def checked_updates(body: Mapping[str, Any]) -> dict[str, Any]:
    """The updates a POST body makes, checked. Unknown keys are refused with 400 naming them (A1111 answers a
    KeyError 500); like A1111, an unknown key sent as null changes nothing and is accepted, and HTML texts and the
    command-line-only options are skipped."""
    table = defaults()
    unknown = [k for k, v in body.items() if k not in table and v is not None]
    if unknown:
        # a made-up key may be megabytes: its repr, twice, made a 50 MB answer encoded on the event loop
        name = quote(unknown[0], NAME_SHOWN)
        raise A1111Error(400, f"unknown option {name}", error="KeyError", errors=name)
    return {k: _check_one(k, v) for k, v in body.items()
            if k in table and k not in IGNORED_ON_POST and not _is_html(k)}


def override_value(overrides: Mapping[str, Any] | None, key: str) -> Any:
    """A request's `override_settings[key]`, checked (None when absent); unknown keys there are ignored as A1111
    does."""
    if not overrides or overrides.get(key) is None:
        return None
    return _check_one(key, overrides[key], f"override_settings.{key}")


def current(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The GET answer: every key, stored value else default, typed as A1111 prints it."""
    return {k: wire(k, stored.get(k, v)) for k, v in defaults().items()}


def value(stored: Mapping[str, Any], key: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The option in force for one request: its override, else the stored value, else the default."""
    found = override_value(overrides, key)
    if found is not None:
        return found
    return stored.get(key, defaults()[key])
