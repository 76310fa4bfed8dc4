"""AleaArt render parameters: on-chain derivation and mapping to a Stable Diffusion / ComfyUI job.

AleaArt (kartikey58678/AleaArt, ayushsinha487/AleaArt) draws a 32-byte seed per token on chain and derives a
``RenderParams`` struct from it in ``_deriveParams``; its Next.js routes then turn the indices into a prompt,
a size and a sampler name for a diffusers backend. This module reproduces both halves: ``derive_params`` is the
Solidity function, ``resolve`` is the TypeScript mapping (the code, not the README, where they disagree) plus
the translation to ComfyUI ``KSampler`` names, plus a palette table for ``paletteId`` that AleaArt never defined.

Imports without ComfyUI; only ``Crypto.Hash.keccak`` (pycryptodome) beyond the standard library.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from Crypto.Hash import keccak

from .messages import show

# --- AleaArt's tables (frontend-aleart/src/app/api/generate-image/route.ts) ---------------------------------

PROMPTS: tuple[str, ...] = (
    "retrofuturism bodywear, primitive, vintage, intricate detail, digital art, digital painting, concept art, "
    "poster, award winning",
    "cyberpunk cityscape, neon lights, futuristic architecture, digital art, concept art, detailed",
    "fantasy landscape, magical forest, ethereal lighting, digital painting, concept art, detailed",
    "steampunk machinery, brass and copper, Victorian era, intricate detail, digital art",
    "space exploration, cosmic landscapes, nebula, digital art, concept art, detailed",
    "underwater world, marine life, bioluminescent, digital painting, concept art",
    "medieval fantasy, castle, dragons, magical atmosphere, digital art, detailed",
    "post-apocalyptic wasteland, ruins, desolate landscape, digital art, concept art",
    "alien planet, exotic flora and fauna, otherworldly, digital painting, detailed",
    "ancient civilization, pyramids, desert, mystical atmosphere, digital art",
    "arctic wilderness, aurora borealis, ice formations, digital painting, concept art",
    "tropical paradise, lush vegetation, crystal clear water, digital art, detailed",
)

STYLES: tuple[str, ...] = (
    "max detail, 8k, ultra realistic",
    "artistic, painterly, brush strokes",
    "minimalist, clean, simple",
    "baroque, ornate, decorative",
    "impressionist, soft, dreamy",
    "expressionist, bold, dramatic",
    "surreal, abstract, dreamlike",
    "photorealistic, detailed, sharp",
    "watercolor, soft, flowing",
    "oil painting, rich, textured",
)

ASPECTS: tuple[str, ...] = ("square, 1:1", "landscape, 16:9", "portrait, 9:16", "wide, 21:9", "tall, 3:4")

# What the route actually sends: only landscape and portrait get their own size; "wide" and "tall" stay
# 512x512 (the README's 1024x448 / 512x683 were never implemented). Reproducing the code keeps images
# identical to what AleaArt users got.
SIZES: tuple[tuple[int, int], ...] = ((512, 512), (1024, 576), (768, 1024), (512, 512), (512, 512))

# AleaArt sampler name -> (ComfyUI sampler_name, ComfyUI scheduler). AleaArt's backend builds diffusers
# schedulers, so a name without "Karras" means diffusers' default (linearly spaced) timesteps, i.e. ComfyUI's
# "normal" -- not A1111's "Automatic", which would pick karras for DPM++ 2M / DPM++ SDE.
SAMPLERS: tuple[tuple[str, str, str], ...] = (
    ("DPM++ 2M Karras", "dpmpp_2m", "karras"),
    ("DPM++ SDE Karras", "dpmpp_sde", "karras"),
    ("Euler a", "euler_ancestral", "normal"),
    ("DPM++ 2M", "dpmpp_2m", "normal"),
    ("DPM++ SDE", "dpmpp_sde", "normal"),
    ("LMS", "lms", "normal"),
)

# --- Pixart's palette table for paletteId (AleaArt stores 0..23 but never defined colours) -------------------
# Entries 0..11 follow the moods of the 12 prompt templates, 12..21 are general ramps, 22..23 are broad
# general-purpose sets. Each is ordered roughly dark to light; docs/aleaart.md shows them.
PALETTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("aleaart-ember", ("#1a0b0b", "#3d1414", "#6e1f12", "#a3300f", "#d4541a", "#f08a2c", "#f7c15c", "#fff1c4")),
    ("aleaart-neon-night", ("#0b0a1f", "#1f1247", "#3b1f8f", "#7a04eb", "#ff2a6d", "#05d9e8", "#ff9f1c",
                            "#d1f7ff")),
    ("aleaart-enchanted-forest", ("#0e1a12", "#1d3b24", "#2f5e31", "#4f8a3a", "#8cbf4a", "#d9e58a", "#6ad1c4",
                                  "#f4f9e3")),
    ("aleaart-brass-works", ("#1c140d", "#4a3020", "#7d5330", "#b5813c", "#e0b45e", "#f5e2b0")),
    ("aleaart-nebula", ("#07051a", "#1c1045", "#43207a", "#8a2fa3", "#d14a9c", "#f28ab8", "#5fb3f5", "#f2eaff")),
    ("aleaart-abyssal-glow", ("#020b17", "#06243d", "#0b4766", "#127a8f", "#1fbfb8", "#7cf5d9", "#3a2f8c",
                              "#e8fffb")),
    ("aleaart-castle-stone", ("#141418", "#2e2d33", "#4f4c52", "#7a746f", "#a89e8c", "#d6cbb0", "#7a1f24",
                              "#2b4a7d")),
    ("aleaart-wasteland", ("#1f1a14", "#4a3b2a", "#806448", "#b39468", "#d9c49a", "#55704a")),
    ("aleaart-alien-flora", ("#120a1f", "#2d0f4a", "#6b1a8c", "#c42ea6", "#3dd68c", "#b8f25c", "#f2f07a",
                             "#35e0e0")),
    ("aleaart-desert-dynasty", ("#2b1a0e", "#6b3f1d", "#b0702e", "#e0a85a", "#f5dca3", "#2e6e8c")),
    ("aleaart-aurora", ("#050a1a", "#0e1f3d", "#1f4f6b", "#2ec48c", "#8cf2a0", "#b06bf2", "#e0f5ff", "#4a2a8c")),
    ("aleaart-lagoon", ("#0a2e2a", "#0f6b5c", "#12a894", "#4fe0d0", "#b8f5ea", "#3a8c2e", "#8cd94a", "#f5e6b0")),
    ("aleaart-lcd-green", ("#172a16", "#3e5a2a", "#8ca23a", "#d0dc8e")),
    ("aleaart-sepia", ("#241a12", "#594230", "#8f6e4d", "#c4a47e", "#efe0c4")),
    ("aleaart-ink-wash", ("#0f0f10", "#454548", "#85858a", "#c4c4c7", "#f5f5f2")),
    ("aleaart-sakura", ("#3a1f2e", "#7a3a55", "#c46a8a", "#f2a7bf", "#fde3ea", "#6b8c4a")),
    ("aleaart-autumn", ("#1f1008", "#4d1f0b", "#8c3210", "#c45a14", "#e8962a", "#f2c84a", "#6b5a1f", "#a3a35a")),
    ("aleaart-candy", ("#2b1b3d", "#ff5c8a", "#ffa3c4", "#ffd96b", "#8ef0c8", "#6bc8ff", "#b58cff", "#fff7fb")),
    ("aleaart-volcanic", ("#0d0a0a", "#2e1e1c", "#5c2a1f", "#b3260f", "#ff6a14", "#ffd23f")),
    ("aleaart-midnight", ("#05071a", "#101a45", "#223a80", "#4a72c4", "#a8c4f2")),
    ("aleaart-terracotta", ("#2e1a14", "#6b3422", "#a8553a", "#d98a64", "#f2c6a3", "#5e6b45")),
    ("aleaart-glacier", ("#0f1f33", "#2a4f73", "#5c8fb8", "#a8d4ec", "#f0fbff")),
    ("aleaart-general-16", ("#101018", "#3a3a4a", "#7a7a8a", "#c8c8d0", "#ffffff", "#6b1e1e", "#d03a2a", "#f08c3a",
                            "#f5d84a", "#3a7a2a", "#7ad44a", "#1e3a7a", "#3a8cf0", "#7ae0f0", "#8a3ab0",
                            "#f08cc8")),
    ("aleaart-spectrum-12", ("#e63b3b", "#e6843b", "#e6c83b", "#a6e63b", "#4fe63b", "#3be68a", "#3be6e0",
                             "#3b9ae6", "#3b4fe6", "#8a3be6", "#d43be6", "#e63b9a")),
)

# Inclusive ranges of the struct fields, as ``_deriveParams`` can produce them.
RANGES: dict[str, tuple[int, int]] = {
    "promptIndex": (0, len(PROMPTS) - 1),
    "styleIndex": (0, len(STYLES) - 1),
    "samplerIndex": (0, len(SAMPLERS) - 1),
    "aspectIndex": (0, len(ASPECTS) - 1),
    "steps": (18, 64),
    "cfg": (70, 180),
    "latentSeed": (0, 2**32 - 1),
    "paletteId": (0, len(PALETTES) - 1),
}


# What web3 libraries write for a uint: decimal (BigInt.toString()) or 0x hex, ASCII digits only. int() alone also
# takes underscores ("2_0") and any script's digits ("\u0662\u0660"), which none writes.
_UINT_TEXT = re.compile(r"\s*(?:[-+]?[0-9]+|0[xX][0-9a-fA-F]+)\s*", re.ASCII)


def _as_int(name: str, value: Any) -> int:
    # Apps read the struct through web3 libraries that hand back ints, decimal strings (BigInt JSON) or floats;
    # accept those when they are exact integers, refuse the rest with the field's name.
    if isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError(f"{name}: expected an integer, got {show(value)}")
    if isinstance(value, str):
        if not _UINT_TEXT.fullmatch(value):
            raise ValueError(f"{name}: expected an integer (decimal or 0x hex digits), got {show(value)}")
        text = value.strip()
        hexa = text[:2].lower() == "0x"
        sign = "" if hexa else text[:1].strip("0123456789")
        digits = text[2 if hexa else len(sign):].lstrip("0") or "0"
        if len(digits) > (64 if hexa else 78):
            # past a uint256, out of every field's range (and int() refuses past 4,300 digits, naming no field)
            lo, hi = RANGES[name]
            raise ValueError(f"{name}: {show(value)} is out of range {lo}..{hi}")
        return int(sign + digits, 16 if hexa else 10)
    raise ValueError(f"{name}: expected an integer, got {type(value).__name__}")


@dataclass(frozen=True)
class RenderParams:
    """The contract's ``RenderParams`` struct; construction checks every field's range."""

    promptIndex: int
    styleIndex: int
    samplerIndex: int
    aspectIndex: int
    steps: int
    cfg: int
    latentSeed: int
    paletteId: int

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{f.name}: expected an integer, got {type(value).__name__}")
            lo, hi = RANGES[f.name]
            if not lo <= value <= hi:
                raise ValueError(f"{f.name}: {show(value)} is out of range {lo}..{hi}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RenderParams":
        """Build from a mapping with the struct's field names; unknown keys are ignored."""
        if not isinstance(d, Mapping):
            raise ValueError(f"parameters: expected an object with {', '.join(RANGES)}, got {type(d).__name__}")
        values = {}
        for name in RANGES:
            if name not in d or d[name] is None:
                raise ValueError(f"{name}: missing")
            values[name] = _as_int(name, d[name])
        return cls(**values)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def keccak256(data: bytes) -> bytes:
    """Ethereum's keccak-256 (original Keccak padding), which is not NIST SHA3-256."""
    h = keccak.new(digest_bits=256)
    h.update(data)
    return h.digest()


def parse_seed(seed: bytes | bytearray | memoryview | str, field: str = "seed") -> bytes:
    """A token seed as 32 bytes, from bytes or a 64-digit hex string (``0x`` prefix optional)."""
    if isinstance(seed, (bytes, bytearray, memoryview)):
        raw = bytes(seed)
    elif isinstance(seed, str):
        text = seed.strip()
        if text[:2].lower() == "0x":
            text = text[2:]
        if len(text) != 64:
            raise ValueError(f"{field}: expected 32 bytes as 64 hex digits (0x...), got {len(text)} digits")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{field}: not a hex string: {show(seed.strip())}") from None
    else:
        raise ValueError(f"{field}: expected bytes or a hex string, got {type(seed).__name__}")
    if len(raw) != 32:
        raise ValueError(f"{field}: expected 32 bytes, got {len(raw)}")
    return raw


def derive_params(seed: bytes | str) -> RenderParams:
    """The contract's ``_deriveParams(bytes32 seed)``: the same struct the chain stores for that seed."""
    raw = parse_seed(seed)
    s0 = int.from_bytes(raw, "big")
    # s_i = uint256(keccak256(abi.encodePacked(seed, uint256(i)))): seed bytes then i as a 32-byte big-endian word
    s1, s2, s3 = (int.from_bytes(keccak256(raw + i.to_bytes(32, "big")), "big") for i in (1, 2, 3))
    return RenderParams(
        promptIndex=s0 % 12,
        styleIndex=(s0 >> 40) % 10,
        samplerIndex=(s1 >> 96) % 6,
        aspectIndex=(s1 >> 160) % 5,
        steps=18 + s2 % 47,
        cfg=70 + s3 % 111,
        latentSeed=s3 & 0xFFFFFFFF,
        paletteId=(s2 >> 200) % 24,
    )


def build_prompt(params: RenderParams) -> str:
    """AleaArt's final prompt string, byte for byte."""
    return (f"{PROMPTS[params.promptIndex]}, {STYLES[params.styleIndex]}, {ASPECTS[params.aspectIndex]}"
            " | max detail | 8k")


def resolve(params: RenderParams) -> dict[str, Any]:
    """Everything a txt2img job needs for ``params``; JSON-serialisable (the node reports it to the bridge)."""
    if not isinstance(params, RenderParams):
        raise ValueError(f"params: expected RenderParams, got {type(params).__name__}")
    width, height = SIZES[params.aspectIndex]
    sampler, sampler_name, scheduler = SAMPLERS[params.samplerIndex]
    palette_name, palette = PALETTES[params.paletteId]
    return {
        "prompt": build_prompt(params),
        "negative_prompt": "",  # AleaArt sends none
        "width": width,
        "height": height,
        "steps": params.steps,
        "cfg": params.cfg / 10,
        "seed": params.latentSeed,
        "sampler": sampler,
        "sampler_name": sampler_name,
        "scheduler": scheduler,
        "palette_id": params.paletteId,
        "palette_name": palette_name,
        "palette": list(palette),
    }


def palette_rgb(palette_id: int) -> tuple[str, list[tuple[int, int, int]]]:
    """Name and ``(r, g, b)`` colours of a palette id, for callers that want numbers rather than hex."""
    lo, hi = RANGES["paletteId"]
    if isinstance(palette_id, bool) or not isinstance(palette_id, int) or not lo <= palette_id <= hi:
        raise ValueError(f"paletteId: {show(palette_id)} is out of range {lo}..{hi}")
    name, colors = PALETTES[palette_id]
    return name, [tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) for c in colors]
