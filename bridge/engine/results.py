"""What a finished prompt produced: its `/history` entry (or the same, gathered from its websocket messages) read
into an outcome for the job.

Images come from ComfyUI's output folder where the bridge can read it (a managed ComfyUI, COMFYUI_OUTPUT_DIR), else
from `/view` (SaveImage, PreviewImage), or from the binary websocket frames the run collected
(SaveImageWebsocket); values from the node's `ui` dict. A prompt that ComfyUI calls a success but whose images
output is empty is never completed empty: when the images only ever existed as websocket frames the bridge did not
see (it restarted or lost the socket mid-run) the job is run once more, otherwise it fails naming the output.
"""
from __future__ import annotations

import asyncio
import logging
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.store import Job
from bridge.workflows import WEBSOCKET_IMAGE_CLASSES, Workflow

from . import client as client_mod
from .client import AnswerTooLargeError, BackendError, ComfyClient
from .events import error_text
from .runs import Run

log = logging.getLogger("bridge.engine.results")

# Files up to this size are read on the event loop (a page-cache read of a few hundred kB costs less than handing
# it to a thread); larger ones in a thread.
INLINE_READ_BYTES = 1024 * 1024
# A file in the output folder older than its job (less this, for file systems with coarse timestamps) is not its
# result: COMFYUI_OUTPUT_DIR names another ComfyUI's folder, whose default names (ComfyUI_00001_.png...) collide.
STALE_SLACK = 2.0
_warned: set[Path] = set()
# A job's result images together (websocket frames, /view answers, files of the output folder; each alone bounded by
# client.FILE_ANSWER_BYTES): a ComfyUI that sends or lists image after image for one prompt must not take the
# bridge's memory. The bytes' bound is EngineOptions.max_output_bytes.
MAX_OUTPUT_IMAGES = 10_000


class Malformed(ValueError):
    """A history entry (or `executed` message) in a shape ComfyUI never gives; the message names the field."""


class OverBound(Exception):
    """The job's result images pass MAX_OUTPUT_IMAGES or the engine's max_output_bytes."""


def past_bounds(count: int, size: int, max_bytes: int) -> str | None:
    """Why `count` result images of `size` bytes in all are more than a job may have; None when they are not."""
    if count > MAX_OUTPUT_IMAGES:
        return f"ComfyUI gave more than {MAX_OUTPUT_IMAGES} result images for the job"
    if size > max_bytes:
        return f"ComfyUI gave more than {max_bytes} bytes of result images for the job (BRIDGE_MAX_OUTPUT_BYTES)"
    return None


def _checked(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise Malformed(f"{what} is {type(value).__name__}, not {'an object' if kind is dict else 'a list'}")
    return value


def _checked_image(img: Any, what: str) -> dict[str, Any]:
    """One entry of a node's `images`: the fields `/view` and the output folder are read with."""
    _checked(img, dict, what)
    name = img.get("filename")
    if not isinstance(name, str) or not name or "\x00" in name:
        raise Malformed(f"{what}.filename is {reprlib.repr(name)}, not a file name")
    for key in ("subfolder", "type"):
        value = img.get(key)
        if value is not None and (not isinstance(value, str) or "\x00" in value):
            kind = "folder" if key == "subfolder" else "file type"
            raise Malformed(f"{what}.{key} is {reprlib.repr(value)}, not a {kind} name")
    return img


@dataclass
class Outcome:
    status: str                     # completed | failed | cancelled | rerun
    error: str | None = None
    values: dict[str, list[Any]] = field(default_factory=dict)
    images: dict[str, list[bytes]] = field(default_factory=dict)


def _failure(entry: dict[str, Any], run: Run, job: Job) -> Outcome | None:
    status = _checked(entry.get("status") or {}, dict, "status")
    messages = _checked(status.get("messages") or [], list, "status.messages")
    kinds = [m[0] for m in messages if isinstance(m, list) and m]
    if status.get("status_str") == "success" and "execution_interrupted" not in kinds \
            and "execution_error" not in kinds:
        return None
    if "execution_interrupted" in kinds or run.interrupted:
        if run.cancel_requested:
            return Outcome("cancelled")
        if run.timed_out:
            return Outcome("failed", f"timed out after {job.timeout:g} s")
        return Outcome("failed", "interrupted on the ComfyUI server")
    error = run.error
    for m in messages:
        if isinstance(m, list) and len(m) == 2 and m[0] == "execution_error" and isinstance(m[1], dict):
            error = error_text(m[1])
    return Outcome("failed", error or "ComfyUI reported an error")


def _missing(wf: Workflow, job: Job, missing: list[str]) -> Outcome:
    described = ", ".join(f"{n!r} (node {wf.outputs[n].node}, {wf.output_class(wf.outputs[n])})" for n in missing)
    frames_only = all(wf.output_class(wf.outputs[n]) in WEBSOCKET_IMAGE_CLASSES for n in missing)
    if frames_only and not job.reruns:
        return Outcome("rerun", f"prompt {job.prompt_id} on {job.backend} finished while the bridge was not "
                                f"receiving its websocket image frames for {described}; submitted again")
    why = ("its websocket image frames were not received" + (" (also after a re-run)" if job.reruns else "")
           if frames_only else "ComfyUI listed no images for it")
    return Outcome("failed", f"ComfyUI reported success but output {described} produced no images: {why}")


def entry_from_run(wf: Workflow | None, job: Job, run: Run) -> dict[str, Any] | None:
    """The history entry of a prompt that ComfyUI said succeeded, built from its websocket messages: ComfyUI sends
    each output node's `ui` dict as `executed` (cached nodes too) and /history holds the same dicts. None when the
    messages do not tell the whole story (no execution_success, an error, a wanted output without its message,
    as after a reconnect): then /history is read."""
    if wf is None or not run.succeeded or run.error is not None or run.interrupted:
        return None
    for name in [n for n in job.wanted or wf.outputs if n in wf.outputs]:
        out = wf.outputs[name]
        if out.node not in run.executed and not (out.type != "value" and
                                                 wf.output_class(out) in WEBSOCKET_IMAGE_CLASSES):
            return None
    return {"status": {"status_str": "success", "completed": True, "messages": []},
            "outputs": dict(run.executed)}


async def _image(client: ComfyClient, folder: Path | None, img: dict[str, Any], since: float, left: int) -> bytes:
    """One image a node saved: read from ComfyUI's output folder where the bridge has it (a request to ComfyUI
    less, on both processes' CPU), else through /view. `since`: when the job was made (epoch seconds); `left`: the
    bytes the job's images may still take (OverBound past them)."""
    kind = img.get("type") or "output"
    if folder is not None and kind == "output":
        root = folder.resolve()
        path = (root / str(img.get("subfolder") or "") / str(img["filename"])).resolve()
        if root in path.parents:
            try:
                st = path.stat()
                if st.st_mtime < since - STALE_SLACK:
                    raise FileNotFoundError(f"written before the job ({st.st_mtime:.0f} < {since:.0f})")
                if st.st_size > left:
                    raise OverBound
                if st.st_size <= INLINE_READ_BYTES:
                    return path.read_bytes()
                return await asyncio.to_thread(path.read_bytes)
            except OSError as exc:  # COMFYUI_OUTPUT_DIR names another folder than ComfyUI writes to
                if root not in _warned:
                    _warned.add(root)
                    log.warning("%s not readable in ComfyUI's output folder (%s); asking ComfyUI for its images",
                                path, exc)
    limit = min(left, client_mod.FILE_ANSWER_BYTES)  # read per call, as ComfyClient.view reads it
    try:
        return await client.view(img["filename"], img.get("subfolder") or "", kind, limit=limit)
    except AnswerTooLargeError:
        if limit == left:
            raise OverBound from None
        raise


async def read_outcome(client: ComfyClient, wf: Workflow, job: Job, run: Run, entry: dict[str, Any],
                       folder: Path | None, *, max_bytes: int) -> Outcome:
    """`max_bytes`: what the job's result images may take together."""
    try:
        return await _read_outcome(client, wf, job, run, _checked(entry, dict, "the entry"), folder, max_bytes)
    except BackendError as exc:
        return Outcome("failed", f"could not fetch the results: {exc}")
    except Malformed as exc:
        # Not asked again: the same answer would come back, and the job would wait for it until its timeout.
        return Outcome("failed", f"{client.url} answered a history entry for prompt {job.prompt_id} that ComfyUI "
                                 f"never gives: {exc}")
    except OverBound as exc:
        return Outcome("failed", str(exc))


async def _read_outcome(client: ComfyClient, wf: Workflow, job: Job, run: Run, entry: dict[str, Any],
                        folder: Path | None, max_bytes: int) -> Outcome:
    failed = _failure(entry, run, job)
    if failed is not None:
        return failed
    outcome = Outcome("completed")
    missing: list[str] = []
    count = size = 0

    def take(images: int, nbytes: int) -> None:
        nonlocal count, size
        count, size = count + images, size + nbytes
        why = past_bounds(count, size, max_bytes)
        if why is not None:
            raise OverBound(why)

    outputs = _checked(entry.get("outputs") or {}, dict, "outputs")
    for name in [n for n in job.wanted or wf.outputs if n in wf.outputs]:
        out = wf.outputs[name]
        where = f"outputs[{out.node!r}]"
        node_out = _checked(outputs.get(out.node) or run.executed.get(out.node) or {}, dict, where)
        if out.type == "value":
            outcome.values[name] = list(_checked(node_out.get(out.key, []), list, f"{where}[{out.key!r}]"))
            continue
        if wf.output_class(out) in WEBSOCKET_IMAGE_CLASSES:
            blobs = list(run.frames.get(out.node, []))
            take(len(blobs), sum(map(len, blobs)))
        else:
            images = _checked(node_out.get("images", []), list, f"{where}['images']")
            # Counted before any is fetched: a list of a million names is refused without a million requests.
            take(len(images), 0)
            blobs = []
            for i, img in enumerate(images):
                try:
                    data = await _image(client, folder, _checked_image(img, f"{where}['images'][{i}]"),
                                        job.created_at, max_bytes - size)
                except OverBound:
                    raise OverBound(past_bounds(count, max_bytes + 1, max_bytes)) from None
                take(0, len(data))
                blobs.append(data)
        outcome.images[name] = blobs
        if not blobs:
            missing.append(name)
    return _missing(wf, job, missing) if missing else outcome
