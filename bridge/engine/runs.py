"""Live tracking of submitted prompts: which job a prompt id belongs to, and what its messages said so far.

Not persisted: after a restart a run is rebuilt from the graph, and `/history` fills in what was missed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from bridge.store import Job
from bridge.workflows import Workflow


@dataclass
class Run:
    weights: dict[str, float]
    total: float
    done: set[str] = field(default_factory=set)
    current: str | None = None
    fraction: float = 0.0
    frames: dict[str, list[bytes]] = field(default_factory=dict)
    frame_count: int = 0  # in `frames`, all nodes together
    frame_bytes: int = 0
    executed: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    interrupted: bool = False
    succeeded: bool = False  # ComfyUI said execution_success
    cancel_requested: bool = False
    posting: bool = False  # POST /prompt under way: ComfyUI may not hold the prompt yet
    timed_out: bool = False
    last_event: float = field(default_factory=time.monotonic)
    finishing: bool = False
    node_t0: dict[str, float] = field(default_factory=dict)
    node_ms: dict[str, float] = field(default_factory=dict)
    # The latest preview frame ComfyUI sent while sampling (its image type and bytes), for live previews.
    preview: tuple[str, bytes] | None = None
    preview_announced: float = -1e9

    @classmethod
    def for_job(cls, wf: Workflow | None, job: Job, graph: dict[str, Any] | None = None) -> Run:
        if wf is None:
            return cls(weights={}, total=1.0)
        graph = wf.graph if graph is None else graph
        weights = {}
        for nid in wf.needed_nodes(job.wanted, graph):
            steps = graph[nid]["inputs"].get("steps")
            # Sampling dominates the run time, so a sampler counts as many nodes as it has steps.
            weights[nid] = float(steps) if isinstance(steps, int) and steps > 0 else 1.0
        return cls(weights=weights, total=sum(weights.values()) or 1.0)

    def progress(self) -> float:
        """0..99: the share of the weighted nodes done (100 is only ever set by completion)."""
        done = sum(self.weights.get(n, 0.0) for n in self.done)
        if self.current is not None and self.current not in self.done:
            done += self.weights.get(self.current, 0.0) * self.fraction
        return min(99.0, 100.0 * done / self.total) if self.total else 0.0

    def node_started(self, node: str) -> None:
        now = time.monotonic()
        if self.current is not None:
            self.done.add(self.current)
            self._close(self.current, now)
        self.current, self.fraction = node, 0.0
        self.node_t0[node] = now

    def nodes_cached(self, nodes: tuple[str, ...]) -> None:
        self.done.update(nodes)
        for n in nodes:
            self.node_ms.setdefault(n, 0.0)

    def execution_ended(self) -> None:
        if self.current is not None:
            self._close(self.current, time.monotonic())

    def _close(self, node: str, now: float) -> None:
        t0 = self.node_t0.pop(node, None)
        if t0 is not None:
            self.node_ms[node] = round(self.node_ms.get(node, 0.0) + (now - t0) * 1000, 3)


class Runs:
    """Runs by job id, and job ids by prompt id."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._by_prompt: dict[str, str] = {}

    def start(self, job: Job, prompt_id: str, run: Run) -> None:
        self._by_prompt[prompt_id] = job.id
        self._runs[job.id] = run

    def get(self, job_id: str) -> Run | None:
        return self._runs.get(job_id)

    def job_for(self, prompt_id: str | None) -> str | None:
        return self._by_prompt.get(prompt_id) if prompt_id else None

    def stop(self, job: Job) -> None:
        if job.prompt_id:
            self._by_prompt.pop(job.prompt_id, None)
        self._runs.pop(job.id, None)

    def forget_prompt(self, prompt_id: str, job_id: str) -> None:
        self._by_prompt.pop(prompt_id, None)
        self._runs.pop(job_id, None)
