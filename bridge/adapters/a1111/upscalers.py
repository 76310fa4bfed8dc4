"""A1111's upscaler names and what runs for each: the six latent modes of hires fix, Lanczos and Nearest, and the
model files of ComfyUI's `upscale_models` folder (listed by A1111's names where A1111 knows the file, by file stem
otherwise, as A1111 names the files it finds)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

LATENT_MODES = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                "Latent (nearest)", "Latent (nearest-exact)")
PLAIN = ("Lanczos", "Nearest")

# File stems of the models A1111 downloads for these names (its Real-ESRGAN and ESRGAN definitions).
KNOWN_MODELS: dict[str, tuple[str, float]] = {
    "RealESRGAN_x4plus": ("R-ESRGAN 4x+", 4.0),
    "RealESRGAN_x4plus_anime_6B": ("R-ESRGAN 4x+ Anime6B", 4.0),
    "RealESRGAN_x2plus": ("R-ESRGAN 2x+", 2.0),
    "realesr-general-x4v3": ("R-ESRGAN General 4xV3", 4.0),
    "realesr-general-wdn-x4v3": ("R-ESRGAN General WDN 4xV3", 4.0),
    "realesr-animevideov3": ("R-ESRGAN AnimeVideo", 4.0),
    "ESRGAN_4x": ("ESRGAN_4x", 4.0),
}
REAL_ESRGAN = {stem for stem, (name, _) in KNOWN_MODELS.items() if name.startswith("R-ESRGAN")}
_SCALE = re.compile(r"(?:^|[^0-9])([1-8])x|x([1-8])(?:[^0-9]|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Upscaler:
    name: str
    kind: str  # "none" | "latent" | "lanczos" | "nearest" | "model"
    file: str | None = None  # the model file, as UpscaleModelLoader names it
    scale: float = 4.0

    def item(self) -> dict[str, object]:
        """A1111's UpscalerItem."""
        return {"name": self.name, "model_name": PurePath(self.file).stem if self.file else None,
                "model_path": self.file, "model_url": None, "scale": self.scale}


def _scale_of(stem: str) -> float:
    found = _SCALE.search(stem)
    return float(found.group(1) or found.group(2)) if found else 4.0


def model_upscalers(files: list[str]) -> list[Upscaler]:
    """One upscaler per model file, sorted by lower-cased name as A1111 lists them."""
    out = []
    for f in files:
        stem = PurePath(f).stem
        name, scale = KNOWN_MODELS.get(stem, (stem, _scale_of(stem)))
        out.append(Upscaler(name, "model", f, scale))
    return sorted(out, key=lambda u: u.name.lower())


def listed(files: list[str]) -> list[Upscaler]:
    """`/sdapi/v1/upscalers`: None, Lanczos, Nearest, then the model files."""
    return [Upscaler("None", "none"), Upscaler("Lanczos", "lanczos"), Upscaler("Nearest", "nearest"),
            *model_upscalers(files)]


def find(name: str | None, files: list[str], *, latent: bool, case_sensitive: bool = True) -> Upscaler | None:
    """The upscaler a request names (`latent`: the hires-fix modes count too); None when there is none such."""
    if name is None:
        return None
    candidates = [Upscaler(m, "latent") for m in LATENT_MODES] if latent else []
    candidates += listed(files)
    key = name if case_sensitive else name.lower()
    for u in candidates:
        if (u.name if case_sensitive else u.name.lower()) == key:
            return u
    return None


def choices(files: list[str], *, latent: bool) -> list[str]:
    return ([*LATENT_MODES] if latent else []) + [u.name for u in listed(files)]
