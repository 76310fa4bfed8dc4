"""Latent nodes: A1111's noise (the "latent noise" inpainting fill, variation seeds, eta noise seed delta, noise
multiplier) and its latent upscale modes for hires fix."""
from __future__ import annotations

from .core import latent


class PixartNoiseLatent:
    DESCRIPTION = (
        "A latent of standard-normal noise with the shape of the given latent, drawn from the seed the way "
        "KSampler draws its initial noise (so with the same seed it is the very noise KSampler adds). Fed as the "
        "source of Latent Composite Masked over the inpaint mask, it gives A1111's 'latent noise' masked content. "
        "With a model connected the noise is unit-variance in the model's latent space, as in A1111."
    )
    CATEGORY = "Pixart/Latent"
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("noise",)
    OUTPUT_TOOLTIPS = ("Noise with the reference latent's batch, channels, height and width.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": (
                    "Reference latent: only its shape (batch, channels, height, width) and batch_index (set by "
                    "Latent From Batch: which of KSampler's per-image draws each image gets) are used, e.g. the "
                    "VAE-encoded init image.")}),
                "seed": ("INT", {"default": 0, "min": 0, "max": latent.SEED_MAX, "control_after_generate": True,
                                 "tooltip": "Noise seed; give it KSampler's seed to get KSampler's own noise."}),
            },
            "optional": {
                "model": ("MODEL", {"tooltip": (
                    "The model that will sample this latent. Connected: the noise is scaled into the VAE's raw "
                    "latent scale (SD1.5: divided by 0.18215) so the model sees unit noise. Not connected: the "
                    "latent holds unit noise as is.")}),
            },
        }

    def run(self, samples, seed, model=None):
        process_out = None
        if model is not None:
            # The latent format knows the model's scale (and shift, for SD3/Flux-type models).
            process_out = model.get_model_object("latent_format").process_out
        noise = latent.noise_like(samples["samples"], int(seed), process_out, samples.get("batch_index"))
        return ({"samples": noise},)


class PixartVariationSeed:
    DESCRIPTION = (
        "A1111's seed controls for every sampler that uses this model: a variation seed blended into the seed's "
        "noise (subseed strength, A1111's spherical blend), 'resize seed from' (the noise drawn at another size and "
        "centred, so a composition survives a size change), A1111's batch numbering (image i from seed + i), an "
        "offset for the seed of the sampler's own per-step noise (A1111's eta noise seed delta, for ancestral "
        "samplers) and a multiplier of the initial noise. With the defaults the sampler runs exactly as without "
        "this node, from its own seed."
    )
    CATEGORY = "Pixart/Latent"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model; samplers using it start from A1111's noise.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model the samplers will use."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": latent.SEED_MAX, "control_after_generate": True,
                                 "tooltip": "Seed of the initial noise when a variation, resize, A1111 batch numbering or "
                                            "multiplier is asked for; give it the sampler's seed."}),
                "subseed": ("INT", {"default": 0, "min": 0, "max": latent.SEED_MAX, "tooltip": (
                    "Variation seed: its noise is blended into the seed's by subseed_strength.")}),
                "subseed_strength": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": (
                    "0: the seed's noise only; 1: the variation seed's noise only; between: A1111's spherical "
                    "blend of the two.")}),
                "seed_resize_from_width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8, "tooltip": (
                    "With seed_resize_from_height: draw the noise as for a picture of this size and centre it "
                    "in the real one (A1111's 'resize seed from'); 0 = off.")}),
                "seed_resize_from_height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8,
                                                    "tooltip": "Height for 'resize seed from'; 0 = off."}),
                "batch_seeds": (["comfyui", "a1111"], {"tooltip": (
                    "comfyui: a batch keeps ComfyUI's one draw for the whole batch unless a variation, resize or "
                    "multiplier is set. a1111: image i of a batch always gets its own noise from seed + i "
                    "(subseed + i), as A1111 numbers the images of a batch.")}),
                "sampler_seed_delta": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1, "tooltip": (
                    "Added to the seed the sampler draws its per-step noise from (ancestral and SDE samplers); "
                    "A1111's 'eta noise seed delta' (ENSD, e.g. 31337). 0 = unchanged.")}),
                "noise_multiplier": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.01, "tooltip": (
                    "Scales the initial noise (A1111's img2img 'noise multiplier'); 1 = unchanged.")}),
            },
        }

    def patch(self, model, seed, subseed, subseed_strength, seed_resize_from_width, seed_resize_from_height,
              batch_seeds, sampler_seed_delta, noise_multiplier):
        import comfy.patcher_extension as extension

        resize = (int(seed_resize_from_width), int(seed_resize_from_height))
        plan = latent.NoisePlan(
            seed=int(seed), subseed=int(subseed), subseed_strength=float(subseed_strength),
            resize_from=resize if resize[0] > 0 and resize[1] > 0 else None,
            sampler_seed_delta=int(sampler_seed_delta), noise_multiplier=float(noise_multiplier),
            batch_seeds=str(batch_seeds))
        patched = model.clone()
        key = extension.WrappersMP.OUTER_SAMPLE
        # A second node on the same model replaces the first one's plan instead of stacking on it.
        patched.remove_wrappers_with_key(key, WRAPPER_KEY)
        patched.add_wrapper_with_key(key, WRAPPER_KEY, _outer_sample(plan))
        return (patched,)


WRAPPER_KEY = "pixart_variation_seed"


def _outer_sample(plan):
    def wrapper(executor, noise, *args, **kwargs):
        # CFGGuider.outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        args = list(args)
        if len(args) >= 7:
            noise, args[6] = plan.apply(noise, args[6])
        else:
            noise, kwargs["seed"] = plan.apply(noise, kwargs.get("seed"))
        return executor(noise, *args, **kwargs)

    return wrapper


class PixartLatentUpscale:
    DESCRIPTION = (
        "Resizes a latent with one of A1111's six latent upscale modes, as its hires fix does between the two "
        "passes: bilinear or bicubic with or without antialiasing, nearest or nearest-exact."
    )
    CATEGORY = "Pixart/Latent"
    FUNCTION = "upscale"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = ("The latent on the grid of width x height pixels.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to resize (e.g. the first pass of hires fix)."}),
                "width": ("INT", {"default": 1024, "min": 64, "max": 16384, "step": 8,
                                  "tooltip": "Target width in pixels (the latent gets width // 8 columns)."}),
                "height": ("INT", {"default": 1024, "min": 64, "max": 16384, "step": 8,
                                   "tooltip": "Target height in pixels (the latent gets height // 8 rows)."}),
                "mode": (list(latent.LATENT_UPSCALE_MODES), {"tooltip": (
                    "A1111's name: Latent = bilinear, (antialiased) adds antialiasing, (bicubic), (nearest), "
                    "(nearest-exact).")}),
            },
        }

    def upscale(self, samples, width, height, mode):
        out = dict(samples)
        out.pop("noise_mask", None)  # a mask of the old size would no longer fit
        out["samples"] = latent.latent_upscale(samples["samples"], int(width), int(height), mode)
        return (out,)


NODE_CLASS_MAPPINGS = {"PixartNoiseLatent": PixartNoiseLatent, "PixartVariationSeed": PixartVariationSeed,
                       "PixartLatentUpscale": PixartLatentUpscale}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartNoiseLatent": "Noise Latent (seeded)",
                              "PixartVariationSeed": "Variation Seed (A1111 noise)",
                              "PixartLatentUpscale": "Latent Upscale (A1111 modes)"}
