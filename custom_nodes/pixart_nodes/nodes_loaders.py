"""Loaders: a stack of LoRAs set by one input, so an API workflow applies any number of them."""
from __future__ import annotations

from .core import loras as lora_list


class PixartLoraStack:
    DESCRIPTION = (
        "Applies a list of LoRAs to the model and the text encoder, in order, with ComfyUI's own LoRA loading. "
        "The list is one text input, so an API request sets any number of LoRAs (the Pixart bridge's `loras`); "
        "an empty list changes nothing."
    )
    CATEGORY = "Pixart/Loaders"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("model", "clip")
    OUTPUT_TOOLTIPS = ("The model with the LoRAs applied.", "The text encoder with the LoRAs applied.")

    def __init__(self):
        self._loaded: dict[str, object] = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model the LoRAs change."}),
                "clip": ("CLIP", {"tooltip": "The text encoder the LoRAs change."}),
                "loras": ("STRING", {"default": "[]", "multiline": True, "tooltip": (
                    'JSON list, e.g. [{"name": "pixel_style", "strength": 0.8, "clip_strength": 1.0}]: "name" is a '
                    'file of the loras folder or its unique stem; "strength" changes the model (default 1), '
                    '"clip_strength" the text encoder (default: strength). [] applies none.')}),
            }
        }

    def apply(self, model, clip, loras):
        import comfy.sd
        import comfy.utils
        import folder_paths

        specs = lora_list.parse_stack(loras)
        files = folder_paths.get_filename_list("loras") if specs else []
        loaded = {}
        for spec in specs:
            if spec.strength == 0 and spec.clip_strength == 0:
                continue  # as LoraLoader: a LoRA at zero is not loaded at all
            name = lora_list.resolve_name(spec.name, files)
            path = folder_paths.get_full_path_or_raise("loras", name)
            # Kept between runs (as LoraLoader keeps its last file) so a repeated request reads no file again.
            data = self._loaded.get(path) or comfy.utils.load_torch_file(path, safe_load=True)
            loaded[path] = data
            model, clip = comfy.sd.load_lora_for_models(model, clip, data, spec.strength, spec.clip_strength)
        self._loaded = loaded
        return (model, clip)


NODE_CLASS_MAPPINGS = {"PixartLoraStack": PixartLoraStack}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartLoraStack": "LoRA Stack (list)"}
