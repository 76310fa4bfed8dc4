"""AleaArt parameters: contract derivation, AleaArt's mapping, palettes, and the node."""
from __future__ import annotations

import itertools
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pixart_nodes.core import aleaart
from pixart_nodes.core.aleaart import RenderParams, derive_params, resolve

# ComfyUI 0.3.64 KSampler choices (shared/reference/comfyui.md §5, verified there via /object_info).
COMFY_SAMPLERS = {
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
}
COMFY_SCHEDULERS = {"simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
                    "linear_quadratic", "kl_optimal"}


# --- an independent Keccak-f[1600] sponge, so the hash itself is cross-checked, not only its use ------------

def _ref_keccak256(data: bytes) -> bytes:
    mask = (1 << 64) - 1

    def rol(v: int, n: int) -> int:
        n %= 64
        return ((v << n) | (v >> (64 - n))) & mask

    # round constants and rotation offsets generated from their definitions (FIPS 202 §3.2.2, §3.2.5)
    lfsr = 1
    rc_bits = []
    for _ in range(7 * 24):
        rc_bits.append(lfsr & 1)
        lfsr = ((lfsr << 1) ^ (0x71 if lfsr & 0x80 else 0)) & 0xFF
    rcs = [sum(rc_bits[7 * r + j] << ((1 << j) - 1) for j in range(7)) for r in range(24)]
    rot = [[0] * 5 for _ in range(5)]
    x, y = 1, 0
    for t in range(24):
        rot[x][y] = ((t + 1) * (t + 2) // 2) % 64
        x, y = y, (2 * x + 3 * y) % 5

    def permute(a: list[int]) -> list[int]:
        for rc in rcs:
            c = [a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20] for x in range(5)]
            d = [c[(x - 1) % 5] ^ rol(c[(x + 1) % 5], 1) for x in range(5)]
            a = [a[i] ^ d[i % 5] for i in range(25)]
            b = [0] * 25
            for x in range(5):
                for y in range(5):
                    b[y + 5 * ((2 * x + 3 * y) % 5)] = rol(a[x + 5 * y], rot[x][y])
            a = [b[i] ^ (~b[(i + 1) % 5 + 5 * (i // 5)] & mask & b[(i + 2) % 5 + 5 * (i // 5)]) for i in range(25)]
            a[0] ^= rc
        return a

    rate = 136
    msg = bytearray(data) + b"\x01"  # Keccak's pad10*1 with domain byte 0x01 (SHA3 uses 0x06)
    msg += b"\x00" * (-len(msg) % rate)
    msg[-1] |= 0x80
    state = [0] * 25
    for off in range(0, len(msg), rate):
        block = msg[off:off + rate]
        for i in range(rate // 8):
            state[i] ^= int.from_bytes(block[8 * i:8 * i + 8], "little")
        state = permute(state)
    return b"".join(state[i].to_bytes(8, "little") for i in range(4))


def _ref_derive(seed: bytes) -> dict[str, int]:
    """``_deriveParams`` re-done from the Solidity text with byte slicing instead of shifts."""
    words = [seed] + [_ref_keccak256(seed + b"\x00" * 31 + bytes([i])) for i in (1, 2, 3)]
    s = [int(w.hex(), 16) for w in words]
    return {
        "promptIndex": s[0] % 12,
        "styleIndex": int(words[0][:27].hex(), 16) % 10,    # s0 >> 40 drops the low 5 bytes
        "samplerIndex": int(words[1][:20].hex(), 16) % 6,   # s1 >> 96 drops 12 bytes
        "aspectIndex": int(words[1][:12].hex(), 16) % 5,    # s1 >> 160 drops 20 bytes
        "paletteId": int(words[2][:7].hex(), 16) % 24,      # s2 >> 200 drops 25 bytes
        "steps": 18 + s[2] % 47,
        "cfg": 70 + s[3] % 111,
        "latentSeed": int(words[3][28:].hex(), 16),         # uint32(s3): the last 4 bytes
    }


def _pseudo_seeds(n: int) -> list[bytes]:
    # deterministic and varied: SHA-256 of a counter (not keccak, so the inputs do not share the code under test)
    import hashlib
    return [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]


def test_keccak_is_not_sha3():
    import hashlib
    empty = "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert aleaart.keccak256(b"").hex() == empty
    assert _ref_keccak256(b"").hex() == empty
    assert hashlib.sha3_256(b"").hexdigest() != empty
    # a two-block message exercises absorption over the rate boundary in both implementations
    for data in (b"abc", bytes(64), bytes(range(200)), b"\xff" * 136):
        assert aleaart.keccak256(data) == _ref_keccak256(data)
    assert aleaart.keccak256(b"abc").hex() == "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"


def test_derive_matches_independent_implementation():
    for seed in _pseudo_seeds(200) + [bytes(32), b"\xff" * 32]:
        assert derive_params(seed).to_dict() == _ref_derive(seed), seed.hex()


def test_derive_literal_vectors():
    # s1..s3 digests pinned separately so a failure says whether hashing or slicing moved.
    zero = bytes(32)
    assert aleaart.keccak256(zero + (3).to_bytes(32, "big")).hex() == \
        "3617319a054d772f909f7c479a2cebe5066e836a939412e32403c99029b92eff"
    # s0 = 0 gives prompt 0 and style 0; latentSeed = 0x29b92eff = 700002047 (low 4 bytes of s3 above).
    assert derive_params(zero) == RenderParams(0, 0, 4, 2, 46, 112, 700002047, 8)
    # s0 = 5 * 2**40 + 7: 2**40 = 4**20 = 4 (mod 12) so s0 = 27 = 3 (mod 12); s0 >> 40 = 5.
    b = "0x" + "00" * 26 + "050000000007"
    assert derive_params(b) == RenderParams(3, 5, 0, 2, 60, 113, 0xA40F35E3, 7)
    # s0 = 2**256 - 1 = 3 (mod 12); (s0 >> 40) = 2**216 - 1 and 2**216 = 6 (mod 10) so style 5.
    assert derive_params("0x" + "ff" * 32) == RenderParams(3, 5, 1, 1, 54, 146, 0x6954D08C, 15)


def test_derive_accepts_bytes_and_hex_forms_alike():
    seed = _pseudo_seeds(1)[0]
    expected = derive_params(seed)
    assert derive_params("0x" + seed.hex()) == expected
    assert derive_params("0X" + seed.hex().upper()) == expected
    assert derive_params(seed.hex()) == expected
    assert derive_params(bytearray(seed)) == expected


@pytest.mark.parametrize("bad", ["0x1234", "0x" + "zz" * 32, b"\x00" * 31, "", 12345, None])
def test_derive_rejects_bad_seed_naming_field(bad):
    with pytest.raises(ValueError, match=r"^seed: "):
        derive_params(bad)


def test_derived_values_stay_in_range_and_cover_every_index():
    seen = {name: set() for name in aleaart.RANGES}
    for seed in _pseudo_seeds(600):
        p = derive_params(seed).to_dict()
        for name, value in p.items():
            seen[name].add(value)
    for name in ("promptIndex", "styleIndex", "samplerIndex", "aspectIndex", "paletteId"):
        lo, hi = aleaart.RANGES[name]
        assert seen[name] == set(range(lo, hi + 1)), name
    assert min(seen["steps"]) >= 18 and max(seen["steps"]) <= 64
    assert min(seen["cfg"]) >= 70 and max(seen["cfg"]) <= 180


def test_every_index_resolves_to_valid_prompt_size_sampler():
    prompts = set()
    for pi, si, ai in itertools.product(range(12), range(10), range(5)):
        r = resolve(RenderParams(pi, si, 0, ai, 20, 75, 1, 0))
        assert r["prompt"] == (f"{aleaart.PROMPTS[pi]}, {aleaart.STYLES[si]}, {aleaart.ASPECTS[ai]}"
                               " | max detail | 8k")
        prompts.add(r["prompt"])
    assert len(prompts) == 12 * 10 * 5
    sizes = [(resolve(RenderParams(0, 0, 0, a, 20, 75, 1, 0))["width"],
              resolve(RenderParams(0, 0, 0, a, 20, 75, 1, 0))["height"]) for a in range(5)]
    # the route's ternaries, not the README's 1024x448 / 512x683
    assert sizes == [(512, 512), (1024, 576), (768, 1024), (512, 512), (512, 512)]
    for w, h in sizes:
        assert w % 64 == 0 and h % 64 == 0  # SD1.5 latents need multiples of 8; AleaArt's are of 64
    expected = ["DPM++ 2M Karras", "DPM++ SDE Karras", "Euler a", "DPM++ 2M", "DPM++ SDE", "LMS"]
    pairs = []
    for i in range(6):
        r = resolve(RenderParams(0, 0, i, 0, 20, 75, 1, 0))
        assert r["sampler"] == expected[i]
        assert r["sampler_name"] in COMFY_SAMPLERS and r["scheduler"] in COMFY_SCHEDULERS
        assert (r["scheduler"] == "karras") == r["sampler"].endswith("Karras")
        pairs.append((r["sampler_name"], r["scheduler"]))
    assert len(set(pairs)) == 6


def test_resolve_pins_the_seed_doc_example():
    # aleaart-backend seed doc: promptIndex 0, styleIndex 0, aspect 0, steps 20, cfg 75, latentSeed 12345
    r = resolve(RenderParams.from_dict({"promptIndex": 0, "styleIndex": 0, "samplerIndex": 0, "aspectIndex": 0,
                                        "steps": 20, "cfg": 75, "latentSeed": 12345, "paletteId": 5}))
    assert r["prompt"] == ("retrofuturism bodywear, primitive, vintage, intricate detail, digital art, digital "
                           "painting, concept art, poster, award winning, max detail, 8k, ultra realistic, square, "
                           "1:1 | max detail | 8k")
    assert (r["steps"], r["cfg"], r["seed"], r["sampler"], r["width"], r["height"]) == \
        (20, 7.5, 12345, "DPM++ 2M Karras", 512, 512)
    assert (r["sampler_name"], r["scheduler"], r["negative_prompt"], r["palette_id"]) == \
        ("dpmpp_2m", "karras", "", 5)
    assert r["palette"] == list(aleaart.PALETTES[5][1])
    for cfg in range(70, 181):
        got = resolve(RenderParams(0, 0, 0, 0, 20, cfg, 0, 0))["cfg"]
        assert isinstance(got, float) and got == pytest.approx(cfg / 10, abs=1e-12)


def test_from_dict_round_trip_and_coercion():
    d = {"promptIndex": 11, "styleIndex": 9, "samplerIndex": 5, "aspectIndex": 4, "steps": 64, "cfg": 180,
         "latentSeed": 2**32 - 1, "paletteId": 23}
    p = RenderParams.from_dict(d)
    assert p.to_dict() == d
    # web3 clients give BigInt-as-string and JSON floats; extra keys (tokenId) are ignored
    p2 = RenderParams.from_dict({**{k: str(v) for k, v in d.items()}, "steps": 64.0, "tokenId": "7"})
    assert p2 == p


@pytest.mark.parametrize("field,value", [
    ("promptIndex", 12), ("promptIndex", -1), ("styleIndex", 10), ("samplerIndex", 6), ("aspectIndex", 5),
    ("steps", 17), ("steps", 65), ("cfg", 69), ("cfg", 181), ("latentSeed", 2**32), ("latentSeed", -1),
    ("paletteId", 24), ("steps", "twenty"), ("cfg", 7.5), ("paletteId", True), ("styleIndex", [1]),
])
def test_from_dict_errors_name_the_field(field, value):
    d = {"promptIndex": 0, "styleIndex": 0, "samplerIndex": 0, "aspectIndex": 0, "steps": 20, "cfg": 75,
         "latentSeed": 0, "paletteId": 0, field: value}
    with pytest.raises(ValueError, match=rf"^{field}: "):
        RenderParams.from_dict(d)


@pytest.mark.parametrize("value", ["\u0662\u0660", "2_0", "0x1_4", "\u200720", "\uff12\uff10", "0x", "--20", "20.0"])
def test_from_dict_refuses_text_no_web3_library_writes(value):
    # int() takes any script's digits and underscores: "\u0662\u0660" (Arabic-Indic) and "2_0" were read as 20
    d = {"promptIndex": 0, "styleIndex": 0, "samplerIndex": 0, "aspectIndex": 0, "steps": value, "cfg": 75,
         "latentSeed": 0, "paletteId": 0}
    with pytest.raises(ValueError, match=r"^steps: expected an integer"):
        RenderParams.from_dict(d)
    # what web3 clients do write still reads: decimal and 0x strings, padded
    assert RenderParams.from_dict({**d, "steps": " 20\n"}).steps == RenderParams.from_dict({**d, "steps": "0x14"}).steps
    # zero-padded past a uint256's width (a 32-byte word written out with its leading zeros) is the same number
    assert RenderParams.from_dict({**d, "steps": "0x" + "0" * 66 + "14"}).steps == 20
    assert RenderParams.from_dict({**d, "steps": "0" * 100 + "20"}).steps == 20
    assert RenderParams.from_dict({**d, "steps": "+" + "0" * 5000 + "20"}).steps == 20  # int() stops at 4,300 digits


@pytest.mark.parametrize("value", ["0x" + "f" * 5000, 10**5000, "9" * 5000, "9" * 79, 1e308, -(10**4400)],
                         ids=["hex-5000", "int-5001-digits", "dec-5000", "dec-79", "1e308", "neg-int-4401-digits"])
def test_huge_values_are_refused_naming_the_field_in_a_short_message(value):
    # past 4,300 digits str() of an int raises its own ValueError, which named no field (the range message
    # formatted the value); below that the message repeated the whole value
    d = {"promptIndex": 0, "styleIndex": 0, "samplerIndex": 0, "aspectIndex": 0, "steps": 20, "cfg": 75,
         "latentSeed": value, "paletteId": 0}
    with pytest.raises(ValueError, match=r"^latentSeed: ") as info:
        RenderParams.from_dict(d)
    assert len(str(info.value)) < 200 and "out of range 0..4294967295" in str(info.value)
    if isinstance(value, int):
        with pytest.raises(ValueError, match=r"^latentSeed: ") as info:
            RenderParams(0, 0, 0, 0, 20, 75, value, 0)
        assert len(str(info.value)) < 200
        with pytest.raises(ValueError, match=r"^paletteId: ") as info:
            aleaart.palette_rgb(value)
        assert len(str(info.value)) < 200
    # a uint256 out of range is still "out of range", not "not an integer"
    with pytest.raises(ValueError, match=r"^latentSeed: .* out of range"):
        RenderParams.from_dict({**d, "latentSeed": str(2**256 - 1)})


def test_a_bad_seed_message_does_not_repeat_the_seed():
    padded = " " * 1_000_000 + "zz" * 32  # 64 characters once stripped: it reached the hex check
    with pytest.raises(ValueError, match=r"^token_seed: not a hex string") as info:
        aleaart.parse_seed(padded, field="token_seed")
    assert len(str(info.value)) < 200  # was 1,000,096 characters


def test_from_dict_missing_and_non_mapping():
    with pytest.raises(ValueError, match=r"^latentSeed: missing"):
        RenderParams.from_dict({"promptIndex": 0, "styleIndex": 0, "samplerIndex": 0, "aspectIndex": 0,
                                "steps": 20, "cfg": 75, "paletteId": 0})
    with pytest.raises(ValueError, match=r"^parameters: "):
        RenderParams.from_dict([0, 0, 0, 0, 20, 75, 0, 0])
    with pytest.raises(ValueError, match=r"^cfg: "):
        RenderParams(0, 0, 0, 0, 20, 200, 0, 0)


def test_palettes_are_24_distinct_valid_sets():
    assert len(aleaart.PALETTES) == 24
    names = [name for name, _ in aleaart.PALETTES]
    assert len(set(names)) == 24
    sets = []
    for pid in range(24):
        name, colors = aleaart.palette_rgb(pid)
        hexes = resolve(RenderParams(0, 0, 0, 0, 20, 75, 0, pid))["palette"]
        assert all(re.fullmatch(r"#[0-9a-f]{6}", h) for h in hexes), name
        assert 4 <= len(hexes) <= 16, name
        assert [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in hexes] == colors
        # colours within a palette far enough apart that a quantizer can tell them apart
        closest = min(math.dist(a, b) for a, b in itertools.combinations(colors, 2))
        assert closest >= 30, (name, closest)
        sets.append(frozenset(colors))
    assert len(set(sets)) == 24
    with pytest.raises(ValueError, match=r"^paletteId: "):
        aleaart.palette_rgb(24)


def test_docs_list_every_palette():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "aleaart.md").read_text(encoding="utf-8").lower()
    for pid, (name, colors) in enumerate(aleaart.PALETTES):
        row = next((line for line in doc.splitlines() if line.startswith(f"| {pid} | `{name}`")), None)
        assert row is not None, pid
        assert name in row and all(c in row for c in colors), pid


# --- the node ------------------------------------------------------------------------------------------------

from pixart_nodes import nodes_aleaart  # noqa: E402

NODE = nodes_aleaart.PixartAleaArtParams


def test_node_declaration():
    spec = NODE.INPUT_TYPES()["required"]
    assert NODE.CATEGORY == "Pixart/AleaArt" and NODE.DESCRIPTION
    for name, (_, opts) in spec.items():
        assert opts.get("tooltip"), name
    assert spec["mode"][0] == ["params", "seed"]
    for name, (lo, hi) in aleaart.RANGES.items():
        assert (spec[name][1]["min"], spec[name][1]["max"]) == (lo, hi), name
    assert len(NODE.RETURN_TYPES) == len(NODE.RETURN_NAMES) == len(NODE.OUTPUT_TOOLTIPS) == 10
    assert NODE.RETURN_TYPES[-1] == "PIXART_PALETTE"
    assert nodes_aleaart.NODE_CLASS_MAPPINGS["PixartAleaArtParams"] is NODE


def _run(**kw):
    args = dict(mode="params", promptIndex=0, styleIndex=0, samplerIndex=0, aspectIndex=0, steps=20, cfg=75,
                latentSeed=0, paletteId=0, token_seed="")
    args.update(kw)
    return NODE().run(**args)


def test_node_runs_in_both_modes():
    pytest.importorskip("pixart_nodes.core.palette", reason="core/palette.py (Palette class) not written yet")
    import numpy as np

    seed = "0x" + "00" * 26 + "050000000007"
    out = _run(mode="seed", token_seed=seed, promptIndex=11)  # params ignored in seed mode
    expected = resolve(derive_params(seed))
    prompt, negative, w, h, steps, cfg, s, sampler, scheduler, palette = out["result"]
    assert (prompt, negative, w, h, steps, cfg, s, sampler, scheduler) == (
        expected["prompt"], "", 768, 1024, 60, 11.3, 0xA40F35E3, "dpmpp_2m", "karras")
    assert palette.name == "aleaart-wasteland"
    assert palette.colors.dtype == np.uint8 and palette.colors.shape == (6, 3)
    assert palette.colors.tolist() == [list(c) for c in aleaart.palette_rgb(7)[1]]
    report = out["ui"]["aleaart"]
    assert len(report) == 1 and report[0]["params"] == derive_params(seed).to_dict()
    assert {k: report[0][k] for k in expected} == expected

    out = _run(promptIndex=9, styleIndex=3, samplerIndex=2, aspectIndex=1, steps=33, cfg=99, latentSeed=42,
               paletteId=23)
    assert out["result"][:9] == (resolve(RenderParams(9, 3, 2, 1, 33, 99, 42, 23))["prompt"], "", 1024, 576, 33,
                                 9.9, 42, "euler_ancestral", "normal")
    assert out["result"][9].colors.shape == (12, 3)


def test_node_errors_name_the_field():
    with pytest.raises(ValueError, match=r"^token_seed: "):
        _run(mode="seed", token_seed="")
    with pytest.raises(ValueError, match=r"^token_seed: "):
        _run(mode="seed", token_seed="0xabc")
    with pytest.raises(ValueError, match=r"^steps: "):
        _run(steps=100)
    with pytest.raises(ValueError, match=r"^mode: "):
        _run(mode="chain")


def test_node_seed_errors_are_short_and_name_the_input():
    with pytest.raises(ValueError, match=r"^token_seed: ") as info:
        _run(mode="seed", token_seed="\t" * 500_000 + "0x" + "g" * 64)
    assert len(str(info.value)) < 200


def _comfyui_dir() -> Path | None:
    for cand in (os.environ.get("COMFYUI_DIR"), str(Path.home() / "ComfyUI")):
        if cand and (Path(cand) / "comfy" / "samplers.py").is_file():
            return Path(cand)
    return None


@pytest.mark.comfyui
def test_sampler_outputs_link_to_ksampler_in_comfyui():
    """Inside ComfyUI the combo outputs must pass the link check KSampler's inputs apply (execution.py)."""
    comfy_dir = _comfyui_dir()
    if comfy_dir is None:
        pytest.skip("no ComfyUI checkout (set COMFYUI_DIR)")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(comfy_dir)!r})\n"
        "from comfy.cli_args import args; args.cpu = True\n"
        "import comfy.samplers as s\n"
        "from comfy_execution.validation import validate_node_input as ok\n"
        "from pixart_nodes.nodes_aleaart import PixartAleaArtParams as N\n"
        "rt = N.RETURN_TYPES\n"
        "assert ok(rt[7], s.KSampler.SAMPLERS) and ok(rt[8], s.KSampler.SCHEDULERS), rt[7:9]\n"
        "assert not ok('STRING', s.KSampler.SAMPLERS)  # why plain STRING would not do\n"
        "from pixart_nodes.core.aleaart import SAMPLERS\n"
        "assert all(a in s.KSampler.SAMPLERS and b in s.KSampler.SCHEDULERS for _, a, b in SAMPLERS)\n"
        "print('linked-ok')\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root / "custom_nodes"), str(root)]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=root)
    if proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr:
        pytest.skip(f"ComfyUI's requirements are incomplete in this venv: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0 and "linked-ok" in proc.stdout, proc.stderr[-2000:]
