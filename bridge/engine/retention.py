"""How long results are kept, and removing what is no longer kept.

Four things grow without bound otherwise: the bridge's stored results (blob store), its job rows, ComfyUI's own
copy of every image in its output folder, and every input image the bridge uploaded into ComfyUI's input folder
(which also lengthens LoadImage's list in every /object_info answer). ComfyUI's copy is removed once the bridge
holds the result, and a job's uploads once no prompt will read them, where the bridge knows that folder (the managed
ComfyUI, or `COMFYUI_OUTPUT_DIR` / `COMFYUI_INPUT_DIR` for one on the same machine): ComfyUI has no request that
deletes a file.
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
    comfyui_input_dirs: dict[str, Path] = field(default_factory=dict)   # backend URL -> its input folder


def comfyui_files(history_entry: dict) -> list[tuple[str, str]]:
    """(subfolder, filename) of every file a finished prompt wrote to ComfyUI's output folder."""
    files = []
    outputs = history_entry.get("outputs")
    # a completed job's entry: its wanted outputs were read, the other nodes' may be of any shape; a type left empty
    # is an output, as results reads it
    for node_out in outputs.values() if isinstance(outputs, dict) else ():
        images = node_out.get("images") if isinstance(node_out, dict) else None
        for img in images if isinstance(images, list) else ():
            if isinstance(img, dict) and (img.get("type") or "output") == "output" and img.get("filename"):
                files.append((str(img.get("subfolder") or ""), str(img["filename"])))
    return files


def remove_comfyui_files(folder: Path, files: Iterable[tuple[str, str]]) -> int:
    """Delete files of ComfyUI's; names from /history never leave the folder (checked after resolving)."""
    root = folder.resolve()
    removed = 0
    for subfolder, name in files:
        if "\x00" in subfolder + name:  # no file's name; resolve() raised, and the rest of the batch stayed
            log.warning("not removing %r: not a file name", name)
            continue
        path = (root / subfolder / name).resolve()
        if root not in path.parents:
            log.warning("not removing %s: outside ComfyUI's folder %s", path, root)
            continue
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.info("ComfyUI's %s not removed: %s", path, exc)
    return removed


# ComfyUI's copies are removed this long after the first of a batch (seconds): one worker-thread call for the files
# of many jobs. A call per job cost the bridge more CPU than the removal: each hands the interpreter lock back and
# forth between the worker and the event loop's thread, and every system call the loop makes meanwhile (a webhook's
# among them) is a chance for the worker to take it. One bridge process, model-free jobs with results in S3,
# alternating over 8 rounds of 500 (bench_delivery's set-up): a call per job 3.12 ms of CPU a job without a webhook
# and 3.52 with one; batched 2.91 and 3.18, and jobs per second with a webhook 0.97x those without (0.89x before).
REMOVE_DELAY = 0.2


class CopyRemover:
    """ComfyUI's copies of results the bridge now holds, and the inputs of ended jobs, removed in batches off the
    event loop."""

    def __init__(self, delay: float = REMOVE_DELAY) -> None:
        self.delay = delay
        self._pending: list[tuple[Path, list[tuple[str, str]]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def add(self, folder: Path, files: list[tuple[str, str]]) -> None:
        if not files:
            return
        self._pending.append((folder, files))
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._later(), name="remove-comfyui-copies")

    async def _later(self) -> None:
        try:
            await asyncio.sleep(self.delay)
            await self.flush()
        finally:
            self._task = None
            if self._pending and not self._closed:  # added while this batch was being removed
                self._task = asyncio.get_running_loop().create_task(self._later(), name="remove-comfyui-copies")

    async def flush(self) -> None:
        """Remove every file added so far."""
        batch, self._pending = self._pending, []
        if batch:
            await asyncio.to_thread(_remove_batch, batch)

    async def close(self) -> None:
        """Remove what is pending now rather than after the delay (the bridge stops)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()


def _remove_batch(batch: list[tuple[Path, list[tuple[str, str]]]]) -> None:
    for folder, files in batch:
        remove_comfyui_files(folder, files)


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
