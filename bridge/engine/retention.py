"""How long results are kept, and removing what is no longer kept.

Three things grow without bound otherwise: the bridge's stored results (blob store), its job rows, and ComfyUI's
own copy of every image in its output folder. ComfyUI's copy is removed as soon as the bridge holds the result,
where the bridge knows that folder (the managed ComfyUI, or `COMFYUI_OUTPUT_DIR` for one on the same machine).
Finished jobs and their files expire after `max_age` seconds, and the oldest go first while the stored results
exceed `max_bytes`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bridge.storage import BlobStore

log = logging.getLogger("bridge.engine.retention")

OUTPUTS = "outputs/"
# Blobs not tied to a job (AleaArt's /generated_images) expire by age alone.
LOOSE_PREFIXES = ("generated_images/",)


@dataclass(frozen=True)
class Retention:
    max_age: float = 7 * 24 * 3600.0   # seconds a finished job and its results are kept; 0: forever
    max_bytes: int = 10 * 1024 ** 3     # stored results in all; beyond, the oldest finished jobs go; 0: no bound
    interval: float = 300.0             # seconds between sweeps
    comfyui_output_dirs: dict[str, Path] = field(default_factory=dict)  # backend URL -> its output folder


def comfyui_files(history_entry: dict) -> list[tuple[str, str]]:
    """(subfolder, filename) of every file a finished prompt wrote to ComfyUI's output folder."""
    files = []
    for node_out in (history_entry.get("outputs") or {}).values():
        for img in (node_out or {}).get("images", []) or []:
            if isinstance(img, dict) and img.get("type", "output") == "output" and img.get("filename"):
                files.append((str(img.get("subfolder") or ""), str(img["filename"])))
    return files


def remove_comfyui_files(folder: Path, files: Iterable[tuple[str, str]]) -> int:
    """Delete ComfyUI's copies; names from /history never leave the folder (checked after resolving)."""
    root = folder.resolve()
    removed = 0
    for subfolder, name in files:
        path = (root / subfolder / name).resolve()
        if root not in path.parents:
            log.warning("not removing %s: outside ComfyUI's output folder %s", path, root)
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.info("ComfyUI output %s not removed: %s", path, exc)
    return removed


async def stored_bytes_by_job(blobs: BlobStore) -> dict[str, int]:
    sizes: dict[str, int] = {}
    async for info in blobs.list(OUTPUTS):
        job_id = info.key[len(OUTPUTS):].split("/", 1)[0]
        sizes[job_id] = sizes.get(job_id, 0) + info.size
    return sizes


async def sweep(policy: Retention, blobs: BlobStore, finished: Callable[[], Awaitable[list[tuple[str, float]]]],
                delete: Callable[[str], Awaitable[None]], now: float | None = None) -> list[str]:
    """One pass: delete finished jobs older than max_age, then the oldest while results exceed max_bytes, then
    loose blobs older than max_age. `finished()` lists (job id, finished_at) of finished jobs, oldest first.
    Returns the deleted job ids."""
    now = time.time() if now is None else now
    gone: list[str] = []
    jobs = await finished()
    if policy.max_age > 0:
        cutoff = now - policy.max_age
        for job_id, at in jobs:
            if at < cutoff:
                await delete(job_id)
                gone.append(job_id)
        jobs = [(j, at) for j, at in jobs if j not in set(gone)]
    if policy.max_bytes > 0:
        sizes = await stored_bytes_by_job(blobs)
        total = sum(sizes.values())
        for job_id, _ in jobs:
            if total <= policy.max_bytes:
                break
            if job_id in sizes:
                await delete(job_id)
                gone.append(job_id)
                total -= sizes[job_id]
    if policy.max_age > 0:
        for prefix in LOOSE_PREFIXES:
            old = [info.key async for info in blobs.list(prefix) if info.modified < now - policy.max_age]
            for key in old:
                await blobs.delete_prefix(key)
    if gone:
        log.info("retention: %d finished jobs removed", len(gone))
    return gone


async def run(policy: Retention, once: Callable[[], Awaitable[list[str]]]) -> None:
    while True:
        try:
            await once()
        except Exception:  # noqa: BLE001 - a failed sweep is retried at the next interval
            log.exception("retention sweep failed")
        await asyncio.sleep(policy.interval)
