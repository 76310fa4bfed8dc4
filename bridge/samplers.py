"""A1111 sampler and scheduler names, and how they resolve to ComfyUI's KSampler values.

Resolution follows A1111 1.10's `sd_samplers.get_sampler_and_scheduler`: the `scheduler` field accepts a name or
a label, a legacy sampler name carries its scheduler as a suffix (`DPM++ 2M Karras`), and an unknown sampler
silently becomes the first sampler (`DPM++ 2M`) instead of failing. Samplers that core ComfyUI cannot run
(PLMS, Restart, DDIM CFG++) are not advertised and resolve like unknown names, so the infotext always names the
sampler that really ran.
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
    # Timestep samplers (DDIM, UniPC) ignore the sigma schedule in A1111; ComfyUI needs ddim_uniform to match.
    fixed_comfy_scheduler: str | None = None


@dataclass(frozen=True)
class Scheduler:
    name: str
    label: str
    comfy: str | None
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False
    extra: dict[str, object] = field(default_factory=dict)


# A1111 1.10 order (`/sdapi/v1/samplers`), only those core ComfyUI can run. `options` mirrors A1111's
# SamplerItem (string values, as pydantic v1 renders Dict[str, str]).
SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), {"scheduler": "karras"}, "dpmpp_2m", "karras"),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"},
            "dpmpp_sde", "karras"),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), {"scheduler": "exponential", "brownian_noise": "True"},
            "dpmpp_2m_sde", "exponential"),
    Sampler("DPM++ 2M SDE Heun", ("k_dpmpp_2m_sde_heun",),
            {"scheduler": "exponential", "brownian_noise": "True", "solver_type": "heun"},
            "dpmpp_2m_sde_heun", "exponential"),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), {"scheduler": "karras", "uses_ensd": "True", "second_order": "True"},
            "dpmpp_2s_ancestral", "karras"),
    Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",),
            {"scheduler": "exponential", "discard_next_to_last_sigma": "True", "brownian_noise": "True"},
            "dpmpp_3m_sde", "exponential"),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), {"uses_ensd": "True"}, "euler_ancestral"),
    Sampler("Euler", ("k_euler",), {}, "euler"),
    Sampler("LMS", ("k_lms",), {}, "lms"),
    Sampler("Heun", ("k_heun",), {"second_order": "True"}, "heun"),
    Sampler("DPM2", ("k_dpm_2",), {"scheduler": "karras", "discard_next_to_last_sigma": "True", "second_order": "True"},
            "dpm_2", "karras"),
    Sampler("DPM2 a", ("k_dpm_2_a",),
            {"scheduler": "karras", "discard_next_to_last_sigma": "True", "uses_ensd": "True", "second_order": "True"},
            "dpm_2_ancestral", "karras"),
    Sampler("DPM fast", ("k_dpm_fast",), {"uses_ensd": "True"}, "dpm_fast"),
    Sampler("DPM adaptive", ("k_dpm_ad",), {"uses_ensd": "True"}, "dpm_adaptive"),
    Sampler("DDIM", ("ddim",), {}, "ddim", fixed_comfy_scheduler="ddim_uniform"),
    Sampler("UniPC", ("unipc",), {}, "uni_pc", fixed_comfy_scheduler="ddim_uniform"),
    Sampler("LCM", ("k_lcm",), {}, "lcm"),
)

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
    """What runs: A1111's names (for infotext/info) and ComfyUI's KSampler values."""

    sampler_name: str
    scheduler_label: str
    comfy_sampler: str
    comfy_scheduler: str


def _available(sampler: Sampler, comfy_samplers: set[str] | None) -> bool:
    return comfy_samplers is None or sampler.comfy in comfy_samplers


def resolve(sampler_name: str | None, scheduler_name: str | None,
            comfy_samplers: Iterable[str] | None = None,
            comfy_schedulers: Iterable[str] | None = None) -> Resolved:
    """Resolve an A1111 sampler/scheduler pair the way A1111 1.10 does.

    `comfy_samplers`/`comfy_schedulers` are the live KSampler choices; a sampler the backend lacks is treated
    as unknown (A1111's fallback), a scheduler it lacks as Automatic.
    """
    live_samplers = set(comfy_samplers) if comfy_samplers is not None else None
    live_schedulers = set(comfy_schedulers) if comfy_schedulers is not None else None

    found = _SCHEDULERS_BY_NAME.get(scheduler_name or "", AUTOMATIC)
    name = sampler_name or DEFAULT_SAMPLER.name
    if name not in _SAMPLERS_BY_NAME:
        # A legacy name carries its schedule as a suffix; A1111 strips any scheduler label, name or alias.
        for sched in SCHEDULERS:
            stripped = False
            for opt in (sched.label, sched.name, *sched.aliases):
                if name.endswith(" " + opt):
                    found = sched
                    name = name[: -(len(opt) + 1)]
                    stripped = True
                    break
            if stripped:
                break
    sampler = _SAMPLERS_BY_NAME.get(name, _SAMPLERS_BY_NAME.get(name.lower(), DEFAULT_SAMPLER))
    if not _available(sampler, live_samplers):
        sampler = next((s for s in SAMPLERS if _available(s, live_samplers)), DEFAULT_SAMPLER)
    if found.comfy is not None and live_schedulers is not None and found.comfy not in live_schedulers:
        found = AUTOMATIC
    # A1111 reports "DPM++ 2M" + "Karras" as Automatic because that is the sampler's own default.
    if sampler.options.get("scheduler") == found.name:
        found = AUTOMATIC

    if sampler.fixed_comfy_scheduler:
        comfy_scheduler = sampler.fixed_comfy_scheduler
    elif found is AUTOMATIC:
        comfy_scheduler = _SCHEDULERS_BY_NAME[sampler.automatic].comfy or "normal"
    else:
        comfy_scheduler = found.comfy or "normal"
    return Resolved(sampler.name, found.label, sampler.comfy, comfy_scheduler)


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
