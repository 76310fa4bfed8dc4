"""A1111 request bodies and error bodies: plain code with no aiohttp or engine in it.

Field lists and defaults follow A1111 1.10 (`modules/api/models.py` built from the processing dataclasses): no field
is required, unknown keys are ignored, `null` means "use the default".
"""
from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, ValidationError, create_model, field_validator

from bridge.api import BodyError, parse_json
from bridge.errors import BridgeError
from bridge.fields import (FieldError, ImageData, LaxFloat, LaxInt, Request, ResponseFormat,
                           field_errors)

API_VERSION = "pixart-a1111-1.10"
MAX_IMAGES_PER_REQUEST = 64
# The limits a request may ask for; A1111_MAX_STEPS / A1111_MAX_SIZE set them per server (`limited_models`).
MAX_STEPS = 150
MAX_SIZE = 2048
MAX_SEED = 4294967294  # A1111 draws random seeds from randrange(4294967294)
MAX_STYLES = 64


class A1111Error(BridgeError):
    """An error answered in A1111's shape `{error, detail, body, errors}`."""

    def __init__(self, status: int, detail: Any, *, error: str = "HTTPException", errors: str = "",
                 body: Any = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(errors or str(detail))
        self.status = status
        self.detail = detail
        self.error = error
        self.errors = errors
        self.body = body
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail, "body": self.body, "errors": self.errors}


def field_error(field: str, message: str, status: int = 400, detail: str | None = None) -> A1111Error:
    """A bad value in a known field: A1111's body, with `errors` naming the field."""
    return A1111Error(status, detail or f"{field}: {message}", errors=f"{field}: {message}")


class GenerationRequest(Request):
    # A1111's pydantic v1 models ignore unknown keys and accept every field under its own name (as Request does);
    # numbers are the shared LaxInt/LaxFloat (read as pydantic v1 did: numeric strings and booleans too, a float in
    # an int field cut to an int), every string has the shared length bound, and images are ImageData (base64, a
    # data URL, or a URL).

    prompt: str | list[str] | None = ""
    negative_prompt: str | None = ""
    # each style is applied to each image's prompt, and a style with `{prompt}` in it grows the prompt each time
    styles: Annotated[list[str], Field(max_length=MAX_STYLES)] | None = None
    seed: Annotated[LaxInt, Field(ge=-1)] | None = -1
    subseed: Annotated[LaxInt, Field(ge=-1)] | None = -1
    subseed_strength: LaxFloat | None = 0
    seed_resize_from_h: LaxInt | None = -1
    seed_resize_from_w: LaxInt | None = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: Annotated[LaxInt, Field(ge=1, le=MAX_IMAGES_PER_REQUEST)] | None = 1
    n_iter: Annotated[LaxInt, Field(ge=1, le=MAX_IMAGES_PER_REQUEST)] | None = 1
    steps: Annotated[LaxInt, Field(ge=1, le=MAX_STEPS)] | None = 50
    cfg_scale: Annotated[LaxFloat, Field(ge=0.0, le=30.0)] | None = 7.0
    width: Annotated[LaxInt, Field(ge=64, le=MAX_SIZE)] | None = 512
    height: Annotated[LaxInt, Field(ge=64, le=MAX_SIZE)] | None = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: LaxFloat | None = None
    denoising_strength: Annotated[LaxFloat, Field(ge=0.0, le=1.0)] | None = None
    s_min_uncond: LaxFloat | None = None
    s_churn: LaxFloat | None = None
    s_tmax: LaxFloat | None = None
    s_tmin: LaxFloat | None = None
    s_noise: LaxFloat | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: LaxFloat | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: ImageData | None = None
    comments: dict[str, Any] | None = None
    sampler_index: str | None = "Euler"
    script_name: str | None = None
    script_args: list[Any] | None = []
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = {}
    force_task_id: str | None = None
    infotext: str | None = None
    # Pixart extension: "url" answers `images` as links (presigned when results live in S3) instead of base64.
    response_format: ResponseFormat | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_list_not_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("prompt list is empty")
        return v


class StableDiffusionTxt2ImgProcessingAPI(GenerationRequest):
    enable_hr: bool | None = False
    denoising_strength: Annotated[LaxFloat, Field(ge=0.0, le=1.0)] | None = 0.75
    # legacy: the first pass's size where not 0 (hr_scale then applies to it), bounded as width and height
    firstphase_width: Annotated[LaxInt, Field(ge=0, le=MAX_SIZE)] | None = 0
    firstphase_height: Annotated[LaxInt, Field(ge=0, le=MAX_SIZE)] | None = 0
    hr_scale: LaxFloat | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: LaxInt | None = 0
    hr_resize_x: LaxInt | None = 0
    hr_resize_y: LaxInt | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""


class StableDiffusionImg2ImgProcessingAPI(GenerationRequest):
    init_images: Annotated[list[ImageData], Field(max_length=MAX_IMAGES_PER_REQUEST)] | None = None
    resize_mode: Literal[0, 1, 2, 3] | None = 0
    denoising_strength: Annotated[LaxFloat, Field(ge=0.0, le=1.0)] | None = 0.75
    image_cfg_scale: LaxFloat | None = None
    mask: ImageData | None = None
    mask_blur_x: Annotated[LaxInt, Field(ge=0, le=256)] | None = 4
    mask_blur_y: Annotated[LaxInt, Field(ge=0, le=256)] | None = 4
    mask_blur: Annotated[LaxInt, Field(ge=0, le=256)] | None = None
    mask_round: bool | None = True
    inpainting_fill: Literal[0, 1, 2, 3] | None = 0
    inpaint_full_res: bool | None = True
    inpaint_full_res_padding: Annotated[LaxInt, Field(ge=0, le=4096)] | None = 0
    inpainting_mask_invert: LaxInt | None = 0
    initial_noise_multiplier: LaxFloat | None = None
    latent_mask: ImageData | None = None
    include_init_images: bool | None = False


_V1_MESSAGES = {
    "int_type": ("value is not a valid integer", "type_error.integer"),
    "int_parsing": ("value is not a valid integer", "type_error.integer"),
    "int_from_float": ("value is not a valid integer", "type_error.integer"),
    "float_type": ("value is not a valid float", "type_error.float"),
    "float_parsing": ("value is not a valid float", "type_error.float"),
    "bool_type": ("value could not be parsed to a boolean", "type_error.bool"),
    "bool_parsing": ("value could not be parsed to a boolean", "type_error.bool"),
    "string_type": ("str type expected", "type_error.str"),
    "list_type": ("value is not a valid list", "type_error.list"),
    "dict_type": ("value is not a valid dict", "type_error.dict"),
    "greater_than_equal": ("ensure this value is greater than or equal to {ge}", "value_error.number.not_ge"),
    "less_than_equal": ("ensure this value is less than or equal to {le}", "value_error.number.not_le"),
    "literal_error": ("unexpected value; permitted: {expected}", "value_error.const"),
    "too_long": ("ensure this value has at most {max_length} items", "value_error.list.max_items"),
}


_LOC_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")
# A 422 echoes the body as A1111 does up to this size (about, in JSON bytes), "" beyond it: a 24 MB body came back
# as 36 MB, encoded on the event loop
ECHO_LIMIT = 64 * 1024


def _small(body: Any, limit: int = ECHO_LIMIT) -> bool:
    """Whether `body` is at most about `limit` bytes of JSON, looking at no more of it than that."""
    stack = [body]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            limit -= len(value) + 2
        elif isinstance(value, (list, dict)):
            limit -= 2 + 2 * len(value)  # counted before its items are looked at
            if limit >= 0:
                stack.extend(value.items() if isinstance(value, dict) else value)
        elif isinstance(value, tuple):
            stack.extend(value)
        else:
            limit -= 8
        if limit < 0:
            return False
    return True


def validation_error(errors: Sequence[FieldError], body: Any, where: str = "body") -> A1111Error:
    """FastAPI's 422 list under `detail` (pydantic v1's words, as A1111 clients see them) plus A1111's keys, with
    `errors` naming the fields; `where`: FastAPI's first `loc` part, "body" or "query"."""
    items: list[dict[str, Any]] = []
    for e in errors:
        # "[1]" is a list index (an int in FastAPI's loc); a dotted part is a name or a dict key, which stays a
        # string even when it is all digits (int() of one would also refuse a hostile key of 4300+ digits)
        loc = [int(index) if index else name for index, name in _LOC_PART.findall(e.field or "")]
        msg, typ = _V1_MESSAGES.get(e.kind, (e.message, "value_error"))
        try:
            msg = msg.format(**e.ctx)
        except (KeyError, IndexError, ValueError):
            msg = e.message
        items.append({"loc": [where, *loc], "msg": msg, "type": typ})
    text = "; ".join(f"{e.field or 'body'}: {i['msg']}" for e, i in zip(errors, items))
    return A1111Error(422, items, error="RequestValidationError", errors=text, body=body if _small(body) else "")


# The names A1111's own code uses for these bodies.
Txt2ImgRequest = StableDiffusionTxt2ImgProcessingAPI
Img2ImgRequest = StableDiffusionImg2ImgProcessingAPI
RequestT = TypeVar("RequestT", bound=GenerationRequest)


@functools.lru_cache(maxsize=8)
def limited(model: type[GenerationRequest], max_steps: int, max_size: int) -> type[GenerationRequest]:
    """`model` with this server's step and size limits (A1111_MAX_STEPS, A1111_MAX_SIZE), under its own name."""
    if (max_steps, max_size) == (MAX_STEPS, MAX_SIZE):
        return model
    side = Annotated[int, Field(ge=64, le=max_size)] | None
    sizes: dict[str, Any] = {"width": (side, 512), "height": (side, 512)}
    if "firstphase_width" in model.model_fields:
        first = Annotated[int, Field(ge=0, le=max_size)] | None
        sizes.update(firstphase_width=(first, 0), firstphase_height=(first, 0))
    return create_model(model.__name__, __base__=model, __doc__=model.__doc__,
                        steps=(Annotated[int, Field(ge=1, le=max_steps)] | None, 50), **sizes)


def parse_request(model: type[GenerationRequest], body: Any) -> GenerationRequest:
    if not isinstance(body, dict):
        raise A1111Error(422, [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}],
                         error="RequestValidationError", errors="body: value is not a valid dict (a JSON object)")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(field_errors(exc, model), body) from None


def body_error(message: str) -> A1111Error:
    """FastAPI's answer to a body that is not JSON it can read."""
    return A1111Error(422, [{"loc": ["body", 0], "msg": "Expecting value", "type": "value_error.jsondecode"}],
                      error="RequestValidationError", errors=f"body: {message}")


def parse_json_body(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return parse_json(raw)
    except BodyError as exc:
        raise body_error(exc.message) from None


def parameters_echo(req: GenerationRequest) -> dict[str, Any]:
    """The response's `parameters`: the request as parsed with defaults filled, as A1111 returns it."""
    data = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        data["init_images"] = None
        data["mask"] = None
    return data


