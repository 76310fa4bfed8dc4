"""The A1111 sampler table's eta rules, checked against ComfyUI's own k-diffusion functions.

`bridge.samplers.ETA_ZERO` runs an A1111 sampler asked for eta 0 as another ComfyUI sampler; that is only right if
ComfyUI's function for the first, called with eta 0, is step for step the second. Both are run here on the same
start, sigmas and a deterministic stand-in denoiser (an SD 1.5-style epsilon model's sampling object, as KSampler
passes it), in float64, in a subprocess that imports the checkout (ComfyUI reads its command line on import). And
the eta each sampler runs at on ComfyUI's KSampler (`Sampler.comfy_eta`) is its function's default.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge import samplers

SCRIPT = r"""
import inspect, json, sys
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, PATH)
import comfy.options
comfy.options.enable_args_parsing()
import torch
import comfy.k_diffusion.sampling as ks
import comfy.model_sampling as ms

class Sampling(ms.ModelSamplingDiscrete, ms.EPS):
    pass

sampling = Sampling()

class Patcher:
    def get_model_object(self, name):
        return sampling

class Base:
    model_sampling = sampling

class Inner:
    model_patcher = Patcher()
    inner_model = Base()

torch.manual_seed(0)
weights = torch.randn(8, 8, dtype=torch.float64)

class Denoiser:
    inner_model = Inner()

    def __call__(self, x, sigma, **kwargs):
        return torch.tanh(x @ weights) * 0.5 + 0.2 * x / (1 + sigma.view(-1, 1, 1, 1))

start = torch.randn(1, 4, 8, 8, dtype=torch.float64)
sigmas = ks.get_sigmas_karras(12, 0.0292, 14.6146).double()

def run(name, **kwargs):
    return getattr(ks, "sample_" + name)(Denoiser(), start * sigmas[0], sigmas, disable=True, **kwargs)

out = {"eta defaults": {name: inspect.signature(getattr(ks, "sample_" + name)).parameters["eta"].default
                        for name in ETA_TAKERS}}
for first, second in PAIRS:
    a = run(first, eta=0.0)
    b = run(second)
    out[first + " " + second] = [float((a - b).abs().max()), float(b.abs().max())]
print(json.dumps(out))
"""


# Pairs run at eta 0 against the second sampler: every twin of the table, and controls, so the comparison can tell
# samplers apart: DPM++ 2M SDE's Heun correction at eta 0 is not 2M's, and DPM++ SDE at eta 0 is DPM++ 2S a at eta 0
# (which KSampler runs at 1 only), not 2M.
TWINS = [(samplers.by_name(name).comfy, twin) for name, twin in samplers.ETA_ZERO.items()]
CONTROLS = [("dpmpp_2m_sde_heun", "dpmpp_2m"), ("dpmpp_sde", "dpmpp_2m")]


@pytest.fixture(scope="module")
def comfyui_samplers(comfyui_dir: Path) -> dict[str, Any]:
    """One run of SCRIPT in the checkout: the eta defaults and every pair's (difference, scale)."""
    takers = [s.comfy for s in samplers.SAMPLERS if s.uses_eta]
    code = SCRIPT.replace("PATH", repr(str(comfyui_dir))).replace("PAIRS", repr(TWINS + CONTROLS)).replace(
        "ETA_TAKERS", repr(takers))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=comfyui_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_eta_zero_twin_is_comfyuis_sampler_at_eta_zero(comfyui_samplers: dict[str, Any]) -> None:
    for first, second in TWINS:
        diff, scale = comfyui_samplers[f"{first} {second}"]
        assert scale > 0.1 and diff < 1e-12 * scale, (first, second, diff)
    for first, second in CONTROLS:
        diff, scale = comfyui_samplers[f"{first} {second}"]
        assert diff > 1e-3 * scale, (first, second, diff)


def test_the_eta_each_sampler_runs_at_is_comfyuis_default(comfyui_samplers: dict[str, Any]) -> None:
    # ComfyUI's KSampler passes no eta (its samplers' extra options are empty), so each runs at its k-diffusion
    # function's default: 1, but 0 for DPM fast and adaptive, where A1111 passes its eta_ancestral (1).
    defaults = comfyui_samplers["eta defaults"]
    assert {s.comfy: s.comfy_eta for s in samplers.SAMPLERS if s.uses_eta} == defaults
    assert defaults["dpm_fast"] == 0.0 and defaults["euler_ancestral"] == 1.0
