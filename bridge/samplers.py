"""A1111 sampler and scheduler names, and how they resolve to ComfyUI's KSampler values.

Resolution follows A1111 1.10's `sd_samplers.get_sampler_and_scheduler`: the `scheduler` field accepts a name or
a label, a legacy sampler name carries its scheduler as a suffix (`DPM++ 2M Karras`), and an unknown sampler
silently becomes the first sampler (`DPM++ 2M`) instead of failing.

Every sampler A1111 1.10 lists runs as itself or as a documented equivalent among ComfyUI's samplers (the table in
docs/api/a1111.md): PLMS as `ipndm` (the same fourth-order Adams-Bashforth steps on DDIM timesteps; only the first
step differs), DDIM CFG++ as `euler_cfg_pp` on DDIM timesteps with A1111's CFG scale divided by 12.5, DDIM with
eta 1 as `euler_ancestral` on DDIM timesteps (the same update), and Restart as Heun on Karras sigmas, which is
A1111's Restart exactly below 20 steps (A1111 adds no restart intervals there); from 20 steps on Restart's noise
re-injection is missing, so the infotext then names what ran (`Heun`, `Karras`), never a sampler that did not run.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple[str, ...]
    options: dict[str, str]
    comfy: str
    # The scheduler "Automatic" means for this sampler, as an A1111 scheduler name.
    automatic: str = "uniform"
    # Timestep samplers (DDIM, PLMS, UniPC) ignore the sigma schedule in A1111; ComfyUI needs ddim_uniform to match.
    fixed_comfy_scheduler: str | None = None
    # A1111 passes `eta` to these (k-diffusion functions with an eta argument); ComfyUI's KSampler runs them at
    # `comfy_eta` (and those of ETA_ZERO at 0, through their twins).
    uses_eta: bool = False
    # 1 but for DPM fast and adaptive, whose k-diffusion default ComfyUI's KSampler keeps: eta 0 (A1111 passes its
    # eta_ancestral, 1).
    comfy_eta: float = 1.0
    # Their per-step noise comes from A1111's generator, which "eta noise seed delta" re-seeds (ancestral, LCM);
    # the Brownian-tree SDE samplers seed their noise from the image seed alone.
    ensd_noise: bool = False
    # The CFG scale ComfyUI gets is A1111's times this (CFG++ maps A1111's 0..12.5 slider to 0..1).
    cfg_factor: float = 1.0
    # Runs as itself only below this many steps (Restart); from there on `fallback` names what runs.
    exact_below_steps: int | None = None
    fallback: str | None = None


@dataclass(frozen=True)
class Scheduler:
    name: str
    label: str
    comfy: str | None
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False
    extra: dict[str, object] = field(default_factory=dict)


# A1111 1.10 order (`/sdapi/v1/samplers`). `options` mirrors A1111's SamplerItem (string values, as pydantic v1
# renders Dict[str, str]).
SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), {"scheduler": "karras"}, "dpmpp_2m", "karras"),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"},
            "dpmpp_sde", "karras", uses_eta=True),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), {"scheduler": "exponential", "brownian_noise": "True"},
            "dpmpp_2m_sde", "exponential", uses_eta=True),
    Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",),
            {"scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun"},
            "dpmpp_2m_sde_heun", "exponential", uses_eta=True),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), {"scheduler": "karras", "uses_ensd": "True", "second_order": "True"},
            "dpmpp_2s_ancestral", "karras", uses_eta=True, ensd_noise=True),
    Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",),
            {"scheduler": "exponential", "discard_next_to_last_sigma": "True", "brownian_noise": "True"},
            "dpmpp_3m_sde", "exponential", uses_eta=True),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), {"uses_ensd": "True"}, "euler_ancestral", uses_eta=True,
            ensd_noise=True),
    Sampler("Euler", ("k_euler",), {}, "euler"),
    Sampler("LMS", ("k_lms",), {}, "lms"),
    Sampler("Heun", ("k_heun",), {"second_order": "True"}, "heun"),
    Sampler("DPM2", ("k_dpm_2",), {"scheduler": "karras", "discard_next_to_last_sigma": "True", "second_order": "True"},
            "dpm_2", "karras"),
    Sampler("DPM2 a", ("k_dpm_2_a",),
            {"scheduler": "karras", "discard_next_to_last_sigma": "True", "uses_ensd": "True", "second_order": "True"},
            "dpm_2_ancestral", "karras", uses_eta=True, ensd_noise=True),
    Sampler("DPM fast", ("k_dpm_fast",), {"uses_ensd": "True"}, "dpm_fast", uses_eta=True, ensd_noise=True,
            comfy_eta=0.0),
    Sampler("DPM adaptive", ("k_dpm_ad",), {"uses_ensd": "True"}, "dpm_adaptive", uses_eta=True, ensd_noise=True,
            comfy_eta=0.0),
    Sampler("Restart", ("restart",), {"scheduler": "karras", "second_order": "True"}, "heun", "karras",
            exact_below_steps=20, fallback="Heun"),
    Sampler("DDIM", ("ddim",), {}, "ddim", fixed_comfy_scheduler="ddim_uniform"),
    Sampler("DDIM CFG++", ("ddim_cfgpp",), {}, "euler_cfg_pp", fixed_comfy_scheduler="ddim_uniform",
            cfg_factor=1 / 12.5),
    Sampler("PLMS", ("plms",), {}, "ipndm", fixed_comfy_scheduler="ddim_uniform"),
    Sampler("UniPC", ("unipc",), {}, "uni_pc", fixed_comfy_scheduler="ddim_uniform"),
    Sampler("LCM", ("k_lcm",), {}, "lcm", ensd_noise=True),
)
# DDIM's and DDIM CFG++'s eta (A1111 opts.eta_ddim, default 0): 0 is ComfyUI's deterministic step; 1 adds DDPM's
# full noise, which is exactly the ancestral Euler step on the same timesteps.
ETA_ONE = {"ddim": "euler_ancestral", "euler_cfg_pp": "euler_ancestral_cfg_pp"}
# Ancestral samplers at eta 0 add no noise (k-diffusion's sigma_up is 0, sigma_down the next sigma), which is step
# for step their deterministic sampler; DPM++ 2M SDE's midpoint step at eta 0 is DPM-Solver++(2M)'s, and its Heun
# step RES's second-order multistep (the same coefficients, no noise term). DPM++ SDE and 2S a at 0 (the same
# sampler) and DPM++ 3M SDE at 0 have no such twin in ComfyUI's KSampler.
ETA_ZERO = {"Euler a": "euler", "DPM2 a": "dpm_2", "DPM++ 2M SDE": "dpmpp_2m", "DPM++ 2M SDE Heun": "res_multistep"}
TIMESTEP_SAMPLERS = ("DDIM", "DDIM CFG++")

# A1111 1.10 order (`/sdapi/v1/schedulers`). Polyexponential and Align Your Steps have no KSampler value in
# ComfyUI (they are SIGMAS nodes), so they are not offered and resolve like unknown names (Automatic).
SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", "normal", need_inner_model=True),
    Scheduler("karras", "Karras", "karras", default_rho=7.0),
    Scheduler("exponential", "Exponential", "exponential"),
    Scheduler("sgm_uniform", "SGM Uniform", "sgm_uniform", aliases=("SGMUniform",), need_inner_model=True),
    Scheduler("kl_optimal", "KL Optimal", "kl_optimal"),
    Scheduler("simple", "Simple", "simple", need_inner_model=True),
    Scheduler("normal", "Normal", "normal", need_inner_model=True),
    Scheduler("ddim", "DDIM", "ddim_uniform", need_inner_model=True),
    Scheduler("beta", "Beta", "beta", need_inner_model=True),
)

DEFAULT_SAMPLER = SAMPLERS[0]
AUTOMATIC = SCHEDULERS[0]

_SAMPLERS_BY_NAME: dict[str, Sampler] = {}
for _s in SAMPLERS:
    for _key in (_s.name, *_s.aliases):
        _SAMPLERS_BY_NAME.setdefault(_key, _s)
        _SAMPLERS_BY_NAME.setdefault(_key.lower(), _s)

_SCHEDULERS_BY_NAME: dict[str, Scheduler] = {}
for _sc in SCHEDULERS:
    for _key in (_sc.name, _sc.label, *_sc.aliases):
        _SCHEDULERS_BY_NAME[_key] = _sc
        _SCHEDULERS_BY_NAME[_key.lower()] = _sc


@dataclass(frozen=True)
class Resolved:
    """What runs: A1111's names (for infotext/info: the sampler that really ran) and ComfyUI's KSampler values."""

    sampler_name: str
    scheduler_label: str
    comfy_sampler: str
    comfy_scheduler: str
    cfg_factor: float = 1.0
    eta: float | None = None  # the eta A1111 would run with, where the sampler takes one
    eta_key: str | None = None  # the infotext key A1111 writes when that eta is not the sampler's default
    ensd_noise: bool = False  # eta noise seed delta re-seeds this sampler's per-step noise
    requested: str = ""  # the A1111 name the request resolved to (before a step-count fallback)


class EtaError(ValueError):
    """An eta the sampler cannot run with in ComfyUI's KSampler (message names the values that can); `field` is
    where it came from: the request's `eta`, or the option read in its absence."""

    def __init__(self, message: str, field: str = "eta") -> None:
        super().__init__(message)
        self.field = field


def _available(sampler: Sampler, comfy_samplers: set[str] | None) -> bool:
    return comfy_samplers is None or sampler.comfy in comfy_samplers


def by_name(name: str) -> Sampler | None:
    return _SAMPLERS_BY_NAME.get(name, _SAMPLERS_BY_NAME.get(name.lower()))


def split_label(label: str) -> tuple[str, Scheduler | None]:
    """A sampler label as A1111 reads it: (sampler name, the schedule a legacy label carries as a suffix, as in
    "DPM++ 2M Karras"); A1111 strips any scheduler label, name or alias."""
    if label in _SAMPLERS_BY_NAME:
        return label, None
    for sched in SCHEDULERS:
        for opt in (sched.label, sched.name, *sched.aliases):
            if label.endswith(" " + opt):
                return label[: -(len(opt) + 1)], sched
    return label, None


def is_label(label: str) -> bool:
    """Whether A1111 knows the label (a sampler's name or alias, with or without a schedule suffix)."""
    return by_name(split_label(label)[0]) is not None


def resolve(sampler_name: str | None, scheduler_name: str | None,
            comfy_samplers: Iterable[str] | None = None,
            comfy_schedulers: Iterable[str] | None = None, *, steps: int | None = None,
            eta: float | None = None, eta_ancestral: float = 1.0, eta_ddim: float = 0.0) -> Resolved:
    """Resolve an A1111 sampler/scheduler pair the way A1111 1.10 does.

    `comfy_samplers`/`comfy_schedulers` are the live KSampler choices; a sampler the backend lacks is treated
    as unknown (A1111's fallback), a scheduler it lacks as Automatic. `steps` decides Restart (exact below 20);
    `eta` is the request's (None: the `eta_ancestral` / `eta_ddim` option), checked against what ComfyUI can run
    (`EtaError`).
    """
    live_samplers = set(comfy_samplers) if comfy_samplers is not None else None
    live_schedulers = set(comfy_schedulers) if comfy_schedulers is not None else None

    found = _SCHEDULERS_BY_NAME.get(scheduler_name or "", AUTOMATIC)
    name, suffix = split_label(sampler_name or DEFAULT_SAMPLER.name)
    found = suffix or found
    sampler = by_name(name) or DEFAULT_SAMPLER
    if not _available(sampler, live_samplers):
        sampler = next((s for s in SAMPLERS if _available(s, live_samplers)), DEFAULT_SAMPLER)
    if found.comfy is not None and live_schedulers is not None and found.comfy not in live_schedulers:
        found = AUTOMATIC
    requested = sampler.name
    if sampler.exact_below_steps is not None and steps is not None and steps >= sampler.exact_below_steps:
        # The same solver and schedule run, but not the sampler the client named: the names say what ran.
        if found is AUTOMATIC:
            found = _SCHEDULERS_BY_NAME[sampler.automatic]
        sampler = by_name(sampler.fallback or "") or sampler
    # A1111 reports "DPM++ 2M" + "Karras" as Automatic because that is the sampler's own default.
    if sampler.options.get("scheduler") == found.name:
        found = AUTOMATIC

    if sampler.fixed_comfy_scheduler:
        comfy_scheduler = sampler.fixed_comfy_scheduler
    elif found is AUTOMATIC:
        comfy_scheduler = _SCHEDULERS_BY_NAME[sampler.automatic].comfy or "normal"
    else:
        comfy_scheduler = found.comfy or "normal"
    comfy_sampler = sampler.comfy
    used_eta, eta_key = None, None
    if sampler.name in TIMESTEP_SAMPLERS:
        used_eta = float(eta if eta is not None else eta_ddim)
        field = "eta" if eta is not None else "eta_ddim"
        if used_eta not in (0.0, 1.0):
            raise EtaError(f"{sampler.name} runs with eta 0 (deterministic) or 1 (full noise) here, got {used_eta:g}",
                           field)
        if used_eta == 1.0:
            if live_samplers is not None and ETA_ONE[comfy_sampler] not in live_samplers:
                raise EtaError(f"{sampler.name} with eta 1 needs ComfyUI's {ETA_ONE[comfy_sampler]} sampler", field)
            comfy_sampler = ETA_ONE[comfy_sampler]
            eta_key = "Eta DDIM"
    elif sampler.uses_eta:
        used_eta = float(eta if eta is not None else eta_ancestral)
        zero = ETA_ZERO.get(sampler.name)
        field = "eta" if eta is not None else "eta_ancestral"
        if used_eta == 0.0 and zero is not None:
            if live_samplers is not None and zero not in live_samplers:
                raise EtaError(f"{sampler.name} with eta 0 needs ComfyUI's {zero} sampler", field)
            comfy_sampler = zero
        elif used_eta == sampler.comfy_eta:
            pass
        elif used_eta == eta_ancestral and sampler.comfy_eta == 0.0:
            # DPM fast and adaptive at the option's eta (A1111's default 1, which webuiapi sends with every call: in
            # A1111 an eta sent equal to the option runs as none sent does): ComfyUI runs them without noise only, and
            # the infotext says so ("Eta: 0.0", which pasted back runs the same), as Restart's names say what ran.
            used_eta = 0.0
        else:
            also = f" or 0 ({zero})" if zero else ""
            raise EtaError(f"{sampler.name} runs with eta {sampler.comfy_eta:g}{also} here (ComfyUI's KSampler), "
                           f"got {used_eta:g}", field)
        if used_eta != 1.0:
            eta_key = "Eta"
    ensd = ((sampler.ensd_noise and used_eta != 0.0)
            or (sampler.name in TIMESTEP_SAMPLERS and used_eta == 1.0))
    return Resolved(sampler.name, found.label, comfy_sampler, comfy_scheduler, cfg_factor=sampler.cfg_factor,
                    eta=used_eta, eta_key=eta_key, ensd_noise=ensd, requested=requested)


def sampler_items(comfy_samplers: Iterable[str] | None = None) -> list[dict[str, object]]:
    """`/sdapi/v1/samplers` body: A1111's SamplerItem list, limited to what the backend can run."""
    live = set(comfy_samplers) if comfy_samplers is not None else None
    return [{"name": s.name, "aliases": list(s.aliases), "options": dict(s.options)}
            for s in SAMPLERS if _available(s, live)]


def scheduler_items(comfy_schedulers: Iterable[str] | None = None) -> list[dict[str, object]]:
    """`/sdapi/v1/schedulers` body: A1111's SchedulerItem list, limited to what the backend can run."""
    live = set(comfy_schedulers) if comfy_schedulers is not None else None
    return [{"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": s.default_rho,
             "need_inner_model": s.need_inner_model}
            for s in SCHEDULERS if s.comfy is None or live is None or s.comfy in live]
