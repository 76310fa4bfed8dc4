"""The engine's limits and timings, in one frozen object (the BRIDGE_* settings they come from are in
bridge/config.py)."""
from __future__ import annotations

import dataclasses

from bridge import images as image_io

from .client import FILE_ANSWER_BYTES


@dataclasses.dataclass(frozen=True)
class EngineOptions:
    max_queue: int = 100                    # jobs waiting or running (all replicas) before submissions get QueueFull
    job_timeout: float | None = 600         # seconds a job may run
    requeue_on_backend_death: bool = False  # run a job again once when its ComfyUI dies
    max_image_bytes: int = image_io.DEFAULT_MAX_BYTES
    max_image_pixels: int = image_io.DEFAULT_MAX_PIXELS
    # One job's result images together (ComfyUI's frames and files); by default what one answer of ComfyUI's may be,
    # so that a job of one largest image fits.
    max_output_bytes: int = FILE_ANSWER_BYTES
    reconnect_max_delay: float = 10.0       # longest back-off between websocket reconnects
    poll_interval: float = 2.0              # seconds between /history looks at a run whose messages stopped
    cancel_grace: float = 5.0               # seconds a cancel waits for ComfyUI to confirm
    feature_flags: bool = True              # ask ComfyUI for its feature flags on connect
    keep_in_memory: int = 10000             # finished jobs kept in memory (the store keeps all)
    connect_wait: float = 5.0               # seconds start() waits for the first websocket connection
    max_request_cost: int = 0               # workflow cost parameters' product per request; 0: no bound
    max_jobs_per_client: int = 0            # jobs one client may have waiting or running; 0: no bound
    queue_timeout: float | None = None      # seconds a job may wait in the queue
    queue_poll_interval: float = 5.0        # seconds between looks at a backend's queue
    output_metadata: str = "infotext"       # what stored PNGs carry: "infotext", "none", or "comfyui" (the graph)
    lease: float = 15.0                     # seconds a replica holds its jobs without renewing (shared store)
    claim_interval: float = 1.0             # seconds between looks for jobs nobody holds (shared store)
