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
from typing import Any

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


def check_clip_skip(value: Any, where: str = "CLIP_stop_at_last_layers") -> int:
    # bool is an int subclass, but `true` is no layer count
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= CLIP_SKIP_MAX:
        raise field_error(where, f"must be an integer from 1 to {CLIP_SKIP_MAX}, got {value!r}")
    return value


def _check_int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise field_error(key, f"must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise field_error(key, f"must be true or false, got {value!r}")
    return value


def _check_number(key: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise field_error(key, f"must be a number from {lo} to {hi}, got {value!r}")
    return float(value)


def _check_format(key: str, value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in SAMPLE_FORMATS:
        raise field_error(key, f"must be one of {', '.join(SAMPLE_FORMATS)}, got {value!r}")
    return value.lower()


def _check_colour(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _COLOUR.match(value):
        raise field_error(key, f"must be a colour like '#ffffff', got {value!r}")
    return value


def _check_text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise field_error(key, f"must be a string, got {value!r}")
    return value


def _only(*allowed: Any, why: str):
    """An option that acts here only at some of A1111's values: the others are refused naming the key, rather
    than stored and silently not applied."""
    numeric = isinstance(allowed[0], float)

    def check(key: str, value: Any) -> Any:
        if numeric:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) in allowed
        else:
            ok = value in allowed
        if not ok:
            raise field_error(key, f"only {' or '.join(repr(a) for a in allowed)} runs here ({why}), got {value!r}")
        return float(value) if numeric else value
    return check


_KSAMPLER = "ComfyUI's KSampler has no such setting"

# The options that change what the bridge generates, checked when set (A1111 would fail later, mid-generation, with
# a 500). The checkpoint and VAE are checked by the route against the backend's lists.
CHECKS: dict[str, Any] = {
    "randn_source": _only("CPU", why="ComfyUI draws its initial noise with the CPU generator"),
    "eta_ancestral": _only(1.0, why="ComfyUI's KSampler runs ancestral and SDE samplers at eta 1"),
    "eta_ddim": _only(0.0, 1.0, why="DDIM runs deterministic (0) or as the ancestral step on DDIM timesteps (1)"),
    "s_churn": _only(0.0, why=_KSAMPLER),
    "s_tmin": _only(0.0, why=_KSAMPLER),
    "s_tmax": _only(0.0, why=_KSAMPLER),
    "s_noise": _only(1.0, why=_KSAMPLER),
    "s_min_uncond": _only(0.0, why=_KSAMPLER),
    "initial_noise_multiplier": lambda k, v: _check_number(k, v, 0.0, 2.0),
    "live_previews_enable": _check_bool,
    "CLIP_stop_at_last_layers": check_clip_skip,
    "samples_format": _check_format,
    "jpeg_quality": lambda k, v: _check_int(k, v, 1, 100),
    "webp_lossless": _check_bool,
    "enable_pnginfo": _check_bool,
    "eta_noise_seed_delta": lambda k, v: _check_int(k, v, 0, 2**32 - 1),
    "img2img_background_color": _check_colour,
    "tiling": _check_bool,
    "sd_lora": _check_text,
    "extra_networks_default_multiplier": lambda k, v: _check_number(k, v, -10.0, 10.0),
    "enable_prompt_comments": _check_bool,
    "return_grid": _check_bool,
    "grid_only_if_multiple": _check_bool,
    "n_rows": lambda k, v: _check_int(k, v, -1, 64),
    "add_model_name_to_info": _check_bool,
    "add_version_to_infotext": _check_bool,
    "face_restoration": _check_bool,
}


def _check_one(key: str, value: Any) -> Any:
    if key == "CLIP_stop_at_last_layers":
        return check_clip_skip(value)
    check = CHECKS.get(key)
    return check(key, value) if check is not None else value


def checked_updates(body: Mapping[str, Any]) -> dict[str, Any]:
    """The updates a POST body makes, checked. Unknown keys are refused with 400 naming them (A1111 answers a
    KeyError 500); like A1111, an unknown key sent as null changes nothing and is accepted, and HTML texts and the
    command-line-only options are skipped."""
    table = defaults()
    unknown = [k for k, v in body.items() if k not in table and v is not None]
    if unknown:
        raise A1111Error(400, f"unknown option {unknown[0]!r}", error="KeyError", errors=repr(unknown[0]))
    return {k: _check_one(k, v) for k, v in body.items()
            if k in table and k not in IGNORED_ON_POST and not _is_html(k)}


def override_value(overrides: Mapping[str, Any] | None, key: str) -> Any:
    """A request's `override_settings[key]`, checked (None when absent); unknown keys there are ignored as A1111
    does."""
    if not overrides or overrides.get(key) is None:
        return None
    if key == "CLIP_stop_at_last_layers":
        return check_clip_skip(overrides[key], f"override_settings.{key}")
    return _check_one(key, overrides[key]) if key in CHECKS else overrides[key]


def current(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The GET answer: every key, stored value else default, typed as A1111 prints it."""
    return {k: wire(k, stored.get(k, v)) for k, v in defaults().items()}


def value(stored: Mapping[str, Any], key: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The option in force for one request: its override, else the stored value, else the default."""
    found = override_value(overrides, key)
    if found is not None:
        return found
    return stored.get(key, defaults()[key])
