"""SD1.5 + LCM-LoRA txt2img / img2img on the Axera model set (axmodel on the NPU, or the ONNX exports).

Model folder, as the Axera release ships it::

    tokenizer/{vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json}
    text_encoder/sd15_text_encoder_sim.axmodel (.onnx)
    unet.axmodel (.onnx)        vae_encoder.axmodel (.onnx)        vae_decoder.axmodel (.onnx)
    time_input_txt2img.npy      time_input_img2img.npy

Sizes are read from the models (the UNet's ``sample`` input gives the latent, x8 the image), so the 512x512,
1024x768 and 256x256 builds all work. Every input is built in the dtype and shape the model declares, because the
NPU runtime does no casting.
"""
from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import lcm
from .runtime import GuardedSession, TensorSpec, model_extension, resolve_runtime
from .tokenizer import ClipTokenizer

RESIZE_MODES = ("stretch", "crop", "pad")
UNET_TIME_INPUT = "/down_blocks.0/resnets.0/act_1/Mul_output_0"
UNET_SAMPLE_INPUT = "sample"
UNET_TEXT_INPUT = "encoder_hidden_states"

# candidate locations per model, without extension, in order of preference
MODEL_CANDIDATES: dict[str, tuple[str, ...]] = {
    "text_encoder": ("text_encoder/sd15_text_encoder_sim", "text_encoder/*", "text_encoder"),
    "unet": ("unet", "unet/*"),
    "vae_encoder": ("vae_encoder", "vae_encoder/*"),
    "vae_decoder": ("vae_decoder", "vae_decoder/*"),
}

StepCallback = Callable[[int, int], None]


def find_model(folder: Path, role: str, ext: str) -> Path | None:
    for candidate in MODEL_CANDIDATES[role]:
        if candidate.endswith("*"):
            matches = sorted(folder.glob(candidate + ext))
            if matches:
                return matches[0]
        else:
            path = folder / (candidate + ext)
            if path.is_file():
                return path
    return None


def inspect_model_dir(folder: str | Path, runtime: str = "auto") -> dict[str, object]:
    """Whether a folder holds a usable model set, from its files alone (nothing is loaded): what the bridge asks
    a backend before it sends Axera jobs there."""
    from .runtime import RuntimeUnavailable, model_extension, resolve_runtime

    folder = Path(folder).expanduser()
    out: dict[str, object] = {"model_dir": str(folder), "found": False, "img2img": False, "runtime": None}
    try:
        resolved = resolve_runtime(runtime)
    except (RuntimeUnavailable, ValueError) as exc:
        out["reason"] = str(exc)
        return out
    out["runtime"] = resolved
    if not folder.is_dir():
        out["reason"] = f"{folder} is not a folder"
        return out
    ext = model_extension(resolved)
    missing = [role for role in ("text_encoder", "unet", "vae_decoder") if find_model(folder, role, ext) is None]
    if not (folder / "tokenizer").is_dir():
        missing.append("tokenizer")
    if missing:
        out["reason"] = f"{folder} has no {', '.join(missing)} ({ext} models for {resolved})"
        return out
    out.update(found=True, img2img=find_model(folder, "vae_encoder", ext) is not None,
               reason=f"model set found in {folder}")
    return out


@dataclass
class Timings:
    """Milliseconds per stage of one image."""

    text_encoder_ms: float = 0.0
    vae_encoder_ms: float = 0.0
    unet_ms: list[float] = field(default_factory=list)
    vae_decoder_ms: float = 0.0
    total_ms: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet_total_ms"] = float(sum(self.unet_ms))
        return {k: (round(v, 3) if isinstance(v, float) else [round(x, 3) for x in v] if isinstance(v, list) else v)
                for k, v in d.items()}

    def summary(self) -> str:
        steps = " / ".join(f"{x:.1f}" for x in self.unet_ms)
        enc = f", vae encoder {self.vae_encoder_ms:.1f} ms" if self.vae_encoder_ms else ""
        return (f"text encoder {self.text_encoder_ms:.1f} ms{enc}, unet {steps} ms, "
                f"vae decoder {self.vae_decoder_ms:.1f} ms, total {self.total_ms:.1f} ms")


@dataclass
class Generation:
    image: np.ndarray  # uint8 [H,W,3], rounded as the reference scripts round
    seed: int
    timesteps: list[int]
    timings: Timings


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def prepare_init_image(image: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Fit an ``uint8 [H,W,C]`` image to ``size`` = (width, height): stretch, crop (cover) or pad (contain, black)."""
    from PIL import Image

    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode: must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 [H,W,1|3|4], got {image.dtype} {list(image.shape)}")
    tw, th = size
    rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image, 3, axis=2)
    h, w = rgb.shape[:2]
    if (w, h) == (tw, th):
        return np.ascontiguousarray(rgb)
    pil = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if mode == "stretch":
        return np.asarray(pil.resize((tw, th), Image.LANCZOS))
    if mode == "crop":
        scale = max(tw / w, th / h)
        nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
        resized = pil.resize((nw, nh), Image.LANCZOS)
        left, top = (nw - tw) // 2, (nh - th) // 2
        return np.asarray(resized.crop((left, top, left + tw, top + th)))
    scale = min(tw / w, th / h)
    nw, nh = min(tw, max(1, round(w * scale))), min(th, max(1, round(h * scale)))
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    canvas.paste(pil.resize((nw, nh), Image.LANCZOS), ((tw - nw) // 2, (th - nh) // 2))
    return np.asarray(canvas)


class AxeraPipeline:
    """The four models, tokenizer and time inputs of one model folder, opened with one runtime."""

    def __init__(self, folder: str | Path, runtime: str = "auto", providers: Sequence[str] | None = None):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise FileNotFoundError(f"model_dir: {self.folder} is not a folder")
        self.runtime = resolve_runtime(runtime)
        ext = model_extension(self.runtime)
        lcm.alphas_cumprod()  # imports torch now, so that the first image's timings do not include it
        self.warnings: list[str] = []

        paths: dict[str, Path] = {}
        for role in MODEL_CANDIDATES:
            path = find_model(self.folder, role, ext)
            if path is None:
                if role == "vae_encoder":
                    self.warnings.append(f"no vae_encoder{ext}: img2img is unavailable")
                    continue
                wanted = " or ".join(c + ext for c in MODEL_CANDIDATES[role])
                raise FileNotFoundError(f"model_dir: {self.folder} has no {role} model ({wanted})")
            paths[role] = path
        self.files = {role: str(p) for role, p in paths.items()}

        self.tokenizer = ClipTokenizer.from_dir(self.folder / "tokenizer")
        self.text_encoder = GuardedSession(paths["text_encoder"], self.runtime, providers)
        self.unet = GuardedSession(paths["unet"], self.runtime, providers)
        self.vae_decoder = GuardedSession(paths["vae_decoder"], self.runtime, providers)
        self.vae_encoder = (GuardedSession(paths["vae_encoder"], self.runtime, providers)
                            if "vae_encoder" in paths else None)
        self._check_shapes()
        self.time_input = self._load_time_input()

    # ---- model geometry -------------------------------------------------------------------------------------

    def _single_input(self, session: GuardedSession) -> TensorSpec:
        if len(session.inputs) != 1:
            raise ValueError(f"{session.path.name}: expected one input, found {[s.name for s in session.inputs]}")
        return session.inputs[0]

    def _check_shapes(self) -> None:
        ids = self.text_encoder.input("input_ids")
        if len(ids.shape) != 2 or ids.shape[0] not in (1, None):
            raise ValueError(f"{self.text_encoder.path.name}: input_ids must be [1, length], got {ids.describe()}")
        self.token_length = ids.shape[1] or 77
        names = {s.name for s in self.unet.inputs}
        if UNET_SAMPLE_INPUT not in names or UNET_TEXT_INPUT not in names or len(names) != 3:
            raise ValueError(
                f"{self.unet.path.name}: expected inputs {UNET_SAMPLE_INPUT}, {UNET_TEXT_INPUT} and the time "
                f"embedding, found {sorted(names)}"
            )
        # the time input keeps the name of the tensor the export cut at; find it by elimination so that other
        # exports of the same cut still load
        self.unet_time = next(s for s in self.unet.inputs if s.name not in (UNET_SAMPLE_INPUT, UNET_TEXT_INPUT))
        self.unet_sample = self.unet.input(UNET_SAMPLE_INPUT)
        self.unet_text = self.unet.input(UNET_TEXT_INPUT)
        sample = self.unet_sample.shape
        if len(sample) != 4 or any(d is None for d in sample[1:]):
            raise ValueError(f"{self.unet.path.name}: sample must have a fixed [1,C,h,w] shape, got {sample}")
        self.latent_shape: tuple[int, int, int, int] = (1, int(sample[1]), int(sample[2]), int(sample[3]))
        self.height, self.width = self.latent_shape[2] * 8, self.latent_shape[3] * 8
        self.decoder_in = self._single_input(self.vae_decoder)
        if self.vae_encoder is not None:
            self.encoder_in = self._single_input(self.vae_encoder)
            enc_shape = self.encoder_in.shape
            if len(enc_shape) != 4 or tuple(enc_shape[2:]) != (self.height, self.width):
                raise ValueError(
                    f"{self.vae_encoder.path.name}: input {self.encoder_in.describe()} does not match the UNet's "
                    f"{self.width}x{self.height} image size"
                )

    def _load_time_input(self) -> np.ndarray:
        path = self.folder / "time_input_txt2img.npy"
        if not path.is_file():
            raise FileNotFoundError(f"model_dir: {path} is missing")
        table = np.load(path)
        width = self.unet_time.shape[-1]
        if table.ndim != 2 or table.shape[0] != len(lcm.TIMESTEPS) or (width and table.shape[1] != width):
            raise ValueError(f"{path.name}: expected shape ({len(lcm.TIMESTEPS)}, {width}), got {table.shape}")
        table = table.astype(self.unet_time.dtype)
        img2img = self.folder / "time_input_img2img.npy"
        if img2img.is_file():
            # the img2img file holds rows for 499/259 only; the schedule uses the txt2img rows for every strength,
            # so a build whose two files disagree would give different images than the reference img2img script
            other = np.load(img2img)
            if other.shape != table.shape or not np.allclose(other[:2], table[2:], rtol=1e-5, atol=1e-6):
                self.warnings.append(f"{img2img.name} rows 0-1 differ from {path.name} rows 2-3")
        return table

    def describe(self) -> dict:
        providers = sorted({p for s in self._sessions() for p in s.providers[:1]})
        return {
            "runtime": self.runtime,
            "providers": providers,
            "model_dir": str(self.folder),
            "width": self.width,
            "height": self.height,
            "latent_shape": list(self.latent_shape),
            "token_length": self.token_length,
            "img2img": self.vae_encoder is not None,
            "files": self.files,
            "warnings": list(self.warnings),
        }

    def _sessions(self) -> list[GuardedSession]:
        return [s for s in (self.text_encoder, self.unet, self.vae_encoder, self.vae_decoder) if s is not None]

    # ---- stages ---------------------------------------------------------------------------------------------

    def encode_prompt(self, prompt: str) -> np.ndarray:
        spec = self.text_encoder.input("input_ids")
        ids = self.tokenizer.encode(prompt, self.token_length).astype(spec.dtype)[None, :]
        embeds = self.text_encoder.run({spec.name: ids})[0]
        return embeds.astype(self.unet_text.dtype, copy=False)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """``uint8 [H,W,3]`` at the model size to the scaled latent (posterior sample, fixed seed)."""
        if self.vae_encoder is None:
            raise RuntimeError(f"img2img: {self.folder} has no vae_encoder model")
        x = image.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
        x = np.transpose(x, (2, 0, 1))[None].astype(self.encoder_in.dtype)
        moments = self.vae_encoder.run({self.encoder_in.name: x})[0]
        return lcm.sample_posterior(moments)

    def decode(self, latent: np.ndarray) -> np.ndarray:
        x = (latent / np.float32(lcm.VAE_SCALE)).astype(self.decoder_in.dtype)
        out = self.vae_decoder.run({self.decoder_in.name: x})[0]
        img = np.transpose(out[0], (1, 2, 0)).astype(np.float32)
        img = np.clip(img / 2 + 0.5, 0, 1)
        return (img * 255).round().astype(np.uint8)[:, :, :3]

    def denoise(self, latent: np.ndarray, embeds: np.ndarray, first: int, generator,
                on_step: StepCallback | None, timings: Timings) -> np.ndarray:
        steps = lcm.TIMESTEPS[first:]
        for i, t in enumerate(steps):
            feed = {
                self.unet_sample.name: latent.astype(self.unet_sample.dtype, copy=False),
                self.unet_time.name: self.time_input[first + i][None, :],
                self.unet_text.name: embeds,
            }
            start = time.perf_counter()
            eps = self.unet.run(feed)[0].astype(np.float32, copy=False)
            timings.unet_ms.append(_ms(start))
            last = i == len(steps) - 1
            noise = None if last else lcm.randn(latent.shape, generator)
            latent = lcm.step(latent, eps, t, t if last else steps[i + 1], noise)
            if on_step is not None:
                on_step(i + 1, len(steps))
        return latent

    # ---- public ---------------------------------------------------------------------------------------------

    def txt2img(self, prompt: str, seed: int, on_step: StepCallback | None = None) -> Generation:
        return self._generate(prompt, seed, 0, on_step)

    def img2img(self, prompt: str, image: np.ndarray, strength: float, seed: int, resize_mode: str = "stretch",
                on_step: StepCallback | None = None) -> Generation:
        first = lcm.start_index(strength)
        if self.vae_encoder is None:
            raise RuntimeError(f"img2img: {self.folder} has no vae_encoder model")
        init = prepare_init_image(image, (self.width, self.height), resize_mode)
        return self._generate(prompt, seed, first, on_step, init)

    def _generate(self, prompt: str, seed: int, first: int, on_step: StepCallback | None,
                  init: np.ndarray | None = None) -> Generation:
        # one path for both modes so the RNG is drawn in the same order as the Pi service: generator, then the
        # noise (after the VAE encoder for img2img, which draws nothing)
        timings = Timings()
        t0 = time.perf_counter()
        start = time.perf_counter()
        embeds = self.encode_prompt(prompt)
        timings.text_encoder_ms = _ms(start)
        generator = lcm.make_generator(seed)
        if init is None:
            latent = lcm.randn(self.latent_shape, generator)
        else:
            start = time.perf_counter()
            x0 = self.encode_image(init)
            timings.vae_encoder_ms = _ms(start)
            latent = lcm.add_noise(x0, lcm.randn(x0.shape, generator), lcm.TIMESTEPS[first])
        latent = self.denoise(latent, embeds, first, generator, on_step, timings)
        start = time.perf_counter()
        out = self.decode(latent)
        timings.vae_decoder_ms = _ms(start)
        timings.total_ms = _ms(t0)
        return Generation(out, seed, list(lcm.TIMESTEPS[first:]), timings)


MODEL_DIR_ENV = "PIXART_AXERA_MODEL_DIR"


# What a client (the bridge, the workflows' model_dir) may name: a sub-folder of the Axera model folders, never an
# absolute path, ~user or "..", so that it reaches nothing else and learns nothing of the rest of the disk. The
# workflow manifests carry the same pattern and length (a test holds them equal).
MODEL_DIR_PATTERN = r"^([A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*)?$"
MODEL_DIR_MAX_LENGTH = 255


def check_model_dir_name(value: str) -> str:
    """``value`` if a client may name it (empty: the default folder), else ValueError naming ``model_dir``."""
    import re

    if len(value) > MODEL_DIR_MAX_LENGTH:
        raise ValueError(f"model_dir: at most {MODEL_DIR_MAX_LENGTH} characters, got {len(value)}")
    if not re.fullmatch(MODEL_DIR_PATTERN, value):
        raise ValueError("model_dir: must name a sub-folder of the Axera model folders (letters, digits, _ . - and "
                         "/ between parts; no absolute path, ~ or ..)")
    return value


def resolve_model_dir(value: str, search: Sequence[str | Path] = ()) -> Path:
    """Where a ``model_dir`` setting points.

    ``search`` lists the ``axera`` model folders (ComfyUI's ``models/axera`` plus any ``axera:`` entry of
    extra_model_paths.yaml). Empty value: ``$PIXART_AXERA_MODEL_DIR``, else the first search folder that exists. A
    relative value is a sub-folder (one per build) of the first of ``$PIXART_AXERA_MODEL_DIR`` and the search
    folders that has it, else of the first of them (the loader's error then names where it looked): never of
    ComfyUI's working folder, which the bridge's clients, who may name only sub-folders, must not reach (taken as
    given only where there is no folder at all: outside ComfyUI, without the variable).
    """
    import os

    value = (value or "").strip()
    folders = [Path(p) for p in search]
    env = os.environ.get(MODEL_DIR_ENV, "").strip()
    if not value:
        if env:
            return Path(env).expanduser()
        for folder in folders:
            if folder.is_dir():
                return folder
        if folders:
            return folders[0]  # missing: the loader's error then names the folder it expected
        raise ValueError(f"model_dir: empty, and neither ${MODEL_DIR_ENV} nor a models/axera folder is set")
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    roots = ([Path(env).expanduser()] if env else []) + folders
    for root in roots:
        if (root / path).is_dir():
            return root / path
    return roots[0] / path if roots else path


_cache_lock = threading.Lock()
_cache: dict[tuple, AxeraPipeline] = {}


def cache_key(folder: Path, runtime: str) -> tuple:
    stamps = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()))
    return (str(folder.resolve()), runtime, stamps)


def get_pipeline(folder: str | Path, runtime: str = "auto") -> AxeraPipeline:
    """Open a model folder once and keep it: an NPU holds only a few SD instances, so one is cached, not many."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"model_dir: {folder} is not a folder")
    key = cache_key(folder, resolve_runtime(runtime))
    with _cache_lock:
        cached = _cache.get(key)
        if cached is None:
            _cache.clear()  # drop the old sessions before opening new ones
            cached = AxeraPipeline(folder, runtime)
            _cache[key] = cached
        return cached
