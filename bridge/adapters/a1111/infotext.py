"""A1111's infotext both ways: the `parameters` text written into every image (`write`, shared with the engine's
stored results in `bridge.infotext`), and reading it back into the dict `/sdapi/v1/png-info` answers (A1111's
parse_generation_parameters, as 1.10 behaves; docs/api/a1111.md).

The text is `prompt`, an optional `Negative prompt: ...` part, and a last line of `Key: value` pairs; a value with a
comma, colon, newline or quote is written as a JSON string. Reading gives every value as a string (sizes split
into `Key-1`/`Key-2`), then adds A1111's defaults for keys the text lacks, so that pasting an old infotext
restores the settings it was made with.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

from bridge import samplers as a1111_samplers
from bridge.infotext import quote, write

# A1111's pattern for one `Key: value` of the last line, tried at one place at a time (`_pairs`)
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY_RUN = re.compile(r"\s*(\w[\w \-/]*)?")
_SIZE = re.compile(r"^(\d+)x(\d+)$")
# `(word:1.2)`: A1111 records which emphasis rule such a prompt was made with. Its `\d*\.?\d+` written so that a
# long run of digits is split one way only: A1111's took seconds on `(x:` and 20,000 digits.
_WEIGHTED = re.compile(r"\(([^()]*):\s*[-+]?(?:\d+(?:\.\d+)?|\.\d+)\s*\)")
# Sizes beyond these digits are not sizes (int() refuses over 4,300 digits; the old first pass needs floats)
_SIZE_DIGITS = 6

# What A1111 assumes for keys an infotext lacks (in the order it adds them).
DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Clip skip", "1"),
    ("Hires resize-1", 0),
    ("Hires resize-2", 0),
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
    ("Refiner switch by sampling steps", False),
)

# PIL `info` keys A1111 leaves out of png-info's `items` (format details, not what the image was made with).
NOT_ITEMS = {"parameters", "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "exif", "loop", "background",
             "timestamp", "duration", "progressive", "progression", "icc_profile", "chromaticity", "photoshop"}


def _pairs(line: str) -> list[tuple[str, str]]:
    """`_PARAM.findall(line)` in time linear in the line: findall tries every place in turn, and a place inside a
    run of key characters (`[\\w \\-/]`) scans to the run's end, so a long line without a colon took seconds
    (60,000 characters: 23 s). Every place in a run that does not end in a colon fails the same way: the next try
    is after it."""
    found: list[tuple[str, str]] = []
    at = 0
    while at < len(line):
        m = _PARAM.match(line, at)
        if m:
            found.append((m.group(1), m.group(2)))
            at = m.end()
        else:
            run = _KEY_RUN.match(line, at)
            at = max(run.end(), at + 1)
    return found


def parse(text: str) -> dict[str, Any]:
    """A1111's reading of an infotext: the parameters dict of `/sdapi/v1/png-info`."""
    res: dict[str, Any] = {}
    *lines, last = text.strip().split("\n")
    pairs = _pairs(last)
    if len(pairs) < 3:
        lines.append(last)
        pairs = []
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    for key, value in pairs:
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass  # A1111 keeps such a value out; a broken quote is rare enough to keep as written
        size = _SIZE.match(value) if isinstance(value, str) else None
        if size:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    res["Prompt"] = "\n".join(prompt)
    res["Negative prompt"] = "\n".join(negative)
    sizes = [res.get(k, "") for k in ("First pass size-1", "First pass size-2", "Size-1", "Size-2")]
    if all(v.isascii() and v.isdigit() and len(v) <= _SIZE_DIGITS for v in sizes):
        # An infotext from before A1111 1.0's hires fix: "First pass size 0x0" meant half of Size. (A1111 answers
        # 500 for sizes of 0 or of thousands of digits; such a text is left as written here.)
        first_w, first_h, width, height = (int(v) for v in sizes)
        if (first_w == 0 or first_h == 0) and width and height:
            first_w, first_h = _old_first_pass(width, height)
        if first_w and first_h:
            del res["First pass size-1"], res["First pass size-2"]
            res["Size-1"], res["Size-2"] = first_w, first_h
            res["Hires resize-1"], res["Hires resize-2"] = width, height
    if _WEIGHTED.search(res["Prompt"]) or _WEIGHTED.search(res["Negative prompt"]):
        res.setdefault("Emphasis", "Original")
    for key, default in DEFAULTS:
        res.setdefault(key, default)
    return res


def _old_first_pass(width: int, height: int) -> tuple[int, int]:
    # The old hires fix picked a first pass of about 512x512 pixels with the final aspect ratio, in steps of 64.
    import math

    scale = math.sqrt((512 * 512) / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def items(info: Mapping[str, Any]) -> dict[str, Any]:
    """png-info's `items`: the image's own text and format values, minus `parameters` and format details, as JSON
    values."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if key in NOT_ITEMS:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, tuple):
            value = list(value)
        elif not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            value = str(value)
        out[str(key)] = value
    return out


# ---------------------------------------------------------------------------------------------------------------
# A request's `infotext` (A1111 1.9+, `Api.apply_infotext`): the text is read as above, and each paste field with an
# API name that the request left unset takes the text's value (a key, or a rule over the whole dict).


def _sampler_pair(d: Mapping[str, Any]) -> tuple[str, str]:
    found = a1111_samplers.resolve(d.get("Sampler"), d.get("Schedule type"))  # get_sampler_and_scheduler
    return found.requested, found.scheduler_label


SAME_SAMPLER = "Use same sampler"  # the hires pass's choices that mean the first pass's
SAME_SCHEDULER = "Use same scheduler"


def _hires_pair(d: Mapping[str, Any]) -> tuple[str, str]:
    # get_hr_sampler_and_scheduler: "Use same ..." unless the hires pass names its own
    sampler = d.get("Hires sampler", SAME_SAMPLER)
    scheduler = d.get("Hires schedule type", SAME_SCHEDULER)
    name, label = _sampler_pair({
        "Sampler": d.get("Sampler") if sampler == SAME_SAMPLER else sampler,
        "Schedule type": d.get("Schedule type") if scheduler == SAME_SCHEDULER else scheduler})
    return (name if name != d.get("Sampler") else SAME_SAMPLER,
            label if label != d.get("Schedule type") else SAME_SCHEDULER)


Paste = tuple[str, Any]  # a field and its infotext key, or a rule over the parsed dict
# The scripts' fields, on both tabs: Sampler and Seed (whose "Seed resize from" width goes to seed_resize_from_h and
# its height to _w, as 1.10 pastes them). The Refiner script pastes its checkpoint only where A1111 has that file
# installed (and its switch point); no backend here runs a refiner, so both are left out as A1111 leaves out a
# checkpoint it lacks.
_SCRIPT_FIELDS: tuple[Paste, ...] = (
    ("steps", "Steps"), ("sampler_name", lambda d: _sampler_pair(d)[0]), ("scheduler", lambda d: _sampler_pair(d)[1]),
    ("seed", "Seed"), ("subseed", "Variation seed"), ("subseed_strength", "Variation seed strength"),
    ("seed_resize_from_h", "Seed resize from-1"), ("seed_resize_from_w", "Seed resize from-2"),
)
# txt2img's own list (ui.py); img2img's has no API names, so only the scripts' fields reach an img2img request.
# Left out: styles, which A1111 pastes from the "Styles array" its reading adds when saved styles are found in the
# prompt (the infotext_styles option); `parse` finds none. enable_hr's rule holds for any "Denoising strength",
# since reading adds "Hires resize-1": 0 to every text: an img2img infotext pasted into txt2img turns the hires fix
# on, in A1111 as here.
_TXT2IMG_FIELDS: tuple[Paste, ...] = (
    ("prompt", "Prompt"), ("negative_prompt", "Negative prompt"), ("cfg_scale", "CFG scale"), ("width", "Size-1"),
    ("height", "Size-2"), ("batch_size", "Batch size"), ("denoising_strength", "Denoising strength"),
    ("enable_hr", lambda d: "Denoising strength" in d and ("Hires upscale" in d or "Hires upscaler" in d
                                                            or "Hires resize-1" in d)),
    ("hr_scale", "Hires upscale"), ("hr_upscaler", "Hires upscaler"), ("hr_second_pass_steps", "Hires steps"),
    ("hr_resize_x", "Hires resize-1"), ("hr_resize_y", "Hires resize-2"), ("hr_checkpoint_name", "Hires checkpoint"),
    ("hr_sampler_name", lambda d: _hires_pair(d)[0]), ("hr_scheduler", lambda d: _hires_pair(d)[1]),
    ("hr_prompt", "Hires prompt"), ("hr_negative_prompt", "Hires negative prompt"),
)
# Settings A1111 pastes into override_settings (options with an infotext label), those that act on generation here
# (some only at one value: the route leaves out a value the bridge cannot run).
SETTINGS: tuple[tuple[str, str], ...] = (
    ("Clip skip", "CLIP_stop_at_last_layers"), ("ENSD", "eta_noise_seed_delta"),
    ("Noise multiplier", "initial_noise_multiplier"), ("RNG", "randn_source"), ("Eta", "eta_ancestral"),
    ("Eta DDIM", "eta_ddim"), ("Sigma churn", "s_churn"), ("Sigma tmin", "s_tmin"), ("Sigma tmax", "s_tmax"),
    ("Sigma noise", "s_noise"), ("NGMS", "s_min_uncond"), ("Tiling", "tiling"), ("VAE", "sd_vae"),
)


def pasted_fields(params: Mapping[str, Any], img2img: bool, sent: Collection[str]) -> dict[str, Any]:
    """The request fields `params` (a `parse` result) fills: those with a value there that `sent` lacks, as
    written (the request model converts them as A1111 casts them to the field's type)."""
    out: dict[str, Any] = {}
    for name, rule in (_SCRIPT_FIELDS if img2img else _TXT2IMG_FIELDS + _SCRIPT_FIELDS):
        if name in sent:
            continue
        value = params.get(rule) if isinstance(rule, str) else rule(params)
        if value is not None:
            out[name] = value
    return out


def pasted_settings(params: Mapping[str, Any], current: Callable[[str], Any],
                    default: Callable[[str], Any]) -> dict[str, Any]:
    """`get_override_settings`: each setting of `SETTINGS` the text names, cast as `Options.cast_value` casts (to
    the type of the option's `default`; for a boolean only "False" is false), where it differs from
    `current(setting)`."""
    out: dict[str, Any] = {}
    for label, setting in SETTINGS:
        value = params.get(label)
        kind = type(default(setting))
        if value is None:
            continue
        try:
            value = (value != "False" and bool(value)) if kind is bool else kind(value)
        except (TypeError, ValueError):
            continue  # A1111 fails the request (500); a value no option holds is left out here
        if value != current(setting):
            out[setting] = value
    return out


__all__ = ["quote", "write", "parse", "pasted_fields", "pasted_settings", "DEFAULTS", "NOT_ITEMS", "SETTINGS",
           "SAME_SAMPLER", "SAME_SCHEDULER"]
