"""Latent nodes: a seeded random latent, for A1111's "latent noise" inpainting fill."""
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
                    "Reference latent: only its shape is used (batch, channels, height, width), e.g. the "
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
        noise = latent.noise_like(samples["samples"], int(seed), process_out)
        return ({"samples": noise},)


NODE_CLASS_MAPPINGS = {"PixartNoiseLatent": PixartNoiseLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"PixartNoiseLatent": "Noise Latent (seeded)"}
