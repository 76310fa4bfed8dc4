"""Axera AX650N nodes: SD1.5 + LCM-LoRA on the NPU (axengine), or on the ONNX exports (onnxruntime) elsewhere.

The pipeline lives in ``core/axera``; these classes only adapt ComfyUI types, the progress bar and interrupts.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .core.axera import lcm
from .core.axera.pipeline import RESIZE_MODES, AxeraPipeline, Generation, cache_key, get_pipeline, resolve_model_dir
from .core.axera.runtime import RUNTIMES
from .core.tensors import iter_batch_uint8, require_images, uint8_to_image

PIPELINE_TYPE = "AXERA_PIPELINE"
SEED_MAX = 0xFFFFFFFFFFFFFFFF


def _axera_folders() -> list[str]:
    """ComfyUI's models/axera, plus ``axera:`` entries of extra_model_paths.yaml (registered under "axera")."""
    try:
        import folder_paths
    except ImportError:  # unit tests and the bridge run without ComfyUI
        return []
    folders = []
    if "axera" in folder_paths.folder_names_and_paths:
        folders += list(folder_paths.get_folder_paths("axera"))
    default = os.path.join(folder_paths.models_dir, "axera")
    return folders + ([default] if default not in folders else [])


def _model_dir(value: str):
    return resolve_model_dir(value, _axera_folders())


class _Steps:
    """Advances ComfyUI's progress bar per UNet step and lets a queue interrupt stop between steps."""

    def __init__(self, total: int):
        self.done = 0
        self.total = total
        try:
            import comfy.model_management
            import comfy.utils
        except ImportError:
            self._bar = None
            self._check = None
        else:
            self._bar = comfy.utils.ProgressBar(total)
            self._check = comfy.model_management.throw_exception_if_processing_interrupted

    def interrupt_point(self) -> None:
        if self._check is not None:
            self._check()

    def __call__(self, _step: int, _steps: int) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update_absolute(self.done, self.total)
        self.interrupt_point()


def _report(pipeline: AxeraPipeline, generations: list[Generation], image_rows: list[np.ndarray]) -> dict:
    timings = []
    described = pipeline.describe()
    for g in generations:
        entry = g.timings.to_dict()
        entry["seed"] = g.seed
        entry["timesteps"] = g.timesteps
        entry["runtime"] = described["runtime"]
        entry["providers"] = described["providers"]
        entry["width"], entry["height"] = described["width"], described["height"]
        timings.append(entry)
    text = [f"seed {g.seed}, {len(g.timesteps)} steps: {g.timings.summary()}" for g in generations]
    return {
        "ui": {"axera_timings": timings, "text": text},
        "result": (uint8_to_image(image_rows), json.dumps(timings)),
    }


_SHARED_INPUTS = {
    "prompt": ("STRING", {"multiline": True, "default": "",
                          "tooltip": "What to draw. There is no negative prompt: the LCM build runs without "
                                     "classifier-free guidance."}),
    "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                     "tooltip": "Noise seed (torch generator). The same seed and prompt give the same image; "
                                "a batch uses seed, seed+1, ..."}),
}


class PixartAxeraLoader:
    DESCRIPTION = ("Open an Axera SD1.5-LCM model folder (tokenizer, text encoder, unet, vae_encoder, vae_decoder, "
                   "time_input_*.npy) with the axengine NPU runtime when installed, otherwise onnxruntime on the "
                   ".onnx exports.")
    CATEGORY = "Pixart/Axera"
    FUNCTION = "load"
    RETURN_TYPES = (PIPELINE_TYPE, "STRING")
    RETURN_NAMES = ("pipeline", "runtime_info")
    OUTPUT_TOOLTIPS = ("The opened models, for the Axera sampler nodes.",
                       "JSON: runtime and providers actually used, image size, files, warnings.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model_dir": ("STRING", {
                    "default": "",
                    "tooltip": "Model folder as the Axera release ships it. Empty: $PIXART_AXERA_MODEL_DIR, else "
                               "ComfyUI's models/axera (or an 'axera:' path of extra_model_paths.yaml). A relative "
                               "name is a sub-folder of those folders, never of ComfyUI's working folder."}),
                "runtime": (list(RUNTIMES), {
                    "default": "auto",
                    "tooltip": "auto: axengine (.axmodel on the NPU) when it imports, else onnxruntime (.onnx). "
                               "Naming a runtime that is not installed is an error."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, model_dir: str, runtime: str):
        # reload when a model file changes on disk, not only when the widget text changes
        try:
            return repr(cache_key(_model_dir(model_dir), runtime))
        except (OSError, ValueError):
            return float("nan")

    def load(self, model_dir: str, runtime: str):
        pipe = get_pipeline(_model_dir(model_dir), runtime)
        info = json.dumps(pipe.describe())
        return {"ui": {"text": [info]}, "result": (pipe, info)}


class PixartAxeraTxt2Img:
    DESCRIPTION = ("Text to image with the Axera SD1.5 + LCM-LoRA build: 4 LCM steps (timesteps 999/759/499/259), "
                   "no guidance, image size fixed by the model. Reports per-stage timings.")
    CATEGORY = "Pixart/Axera"
    FUNCTION = "generate"
    # an output node so that its timings are a declared workflow output the bridge may read from /history
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "timings")
    OUTPUT_TOOLTIPS = ("Generated images, at the model's size.",
                       "JSON list, one entry per image: text encoder, UNet per step, VAE and total times in ms.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (PIPELINE_TYPE, {"tooltip": "Models from the Axera Loader node."}),
                **_SHARED_INPUTS,
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64,
                                       "tooltip": "Images to make, one after another (the NPU build is batch 1)."}),
            }
        }

    def generate(self, pipeline: AxeraPipeline, prompt: str, seed: int, batch_size: int = 1):
        steps = _Steps(len(lcm.TIMESTEPS) * batch_size)
        gens = []
        for i in range(batch_size):
            steps.interrupt_point()
            gens.append(pipeline.txt2img(prompt, (seed + i) % (SEED_MAX + 1), on_step=steps))
        return _report(pipeline, gens, [g.image for g in gens])


class PixartAxeraImg2Img:
    DESCRIPTION = ("Image to image with the Axera SD1.5 + LCM-LoRA build. Strength picks where the 4-step schedule "
                   "starts (<=0.35: 1 step, <=0.60: 2, <=0.85: 3, else 4), as the Pi service does; the input is fitted "
                   "to the model's size first.")
    CATEGORY = "Pixart/Axera"
    FUNCTION = "generate"
    # an output node so that its timings are a declared workflow output the bridge may read from /history
    OUTPUT_NODE = True
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "timings")
    OUTPUT_TOOLTIPS = ("Generated images, one per input image, at the model's size.",
                       "JSON list, one entry per image: text encoder, VAE encoder, UNet per step, VAE decoder and "
                       "total times in ms.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "pipeline": (PIPELINE_TYPE, {"tooltip": "Models from the Axera Loader node (needs vae_encoder)."}),
                "image": ("IMAGE", {"tooltip": "Starting image(s); alpha is dropped. Each image of a batch is "
                                               "processed with seed, seed+1, ..."}),
                **_SHARED_INPUTS,
                "denoise": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "Denoising strength. Only four levels exist: <=0.35 runs timestep "
                                                 "259, <=0.60 499+259, <=0.85 759+499+259, above all four."}),
                "resize_mode": (list(RESIZE_MODES), {
                    "default": "stretch",
                    "tooltip": "Fitting the image to the model size: stretch, crop (cover, centre) or pad "
                               "(contain, black bars)."}),
            }
        }

    def generate(self, pipeline: AxeraPipeline, image, prompt: str, seed: int, denoise: float = 0.5,
                 resize_mode: str = "stretch"):
        require_images(image)
        per_image = len(lcm.TIMESTEPS) - lcm.start_index(denoise)
        frames = list(iter_batch_uint8(image))
        steps = _Steps(per_image * len(frames))
        gens = []
        for i, frame in enumerate(frames):
            steps.interrupt_point()
            gens.append(pipeline.img2img(prompt, frame, denoise, (seed + i) % (SEED_MAX + 1), resize_mode,
                                         on_step=steps))
        return _report(pipeline, gens, [g.image for g in gens])


NODE_CLASS_MAPPINGS = {
    "PixartAxeraLoader": PixartAxeraLoader,
    "PixartAxeraTxt2Img": PixartAxeraTxt2Img,
    "PixartAxeraImg2Img": PixartAxeraImg2Img,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "PixartAxeraLoader": "Axera Loader (SD1.5 LCM)",
    "PixartAxeraTxt2Img": "Axera Txt2Img (LCM)",
    "PixartAxeraImg2Img": "Axera Img2Img (LCM)",
}
