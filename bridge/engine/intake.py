"""Accepting a job: its values checked against the workflow and the limits, its images fetched, decoded once (in the
image pool) and stored, its row inserted (where the queue bound and the client's quota are checked across
replicas), and its first dispatch.

Order matters for a hostile client: everything that costs nothing is checked before any image is fetched or
decoded, and a job refused after its images were stored leaves nothing behind.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from bridge import images as image_io
from bridge import workflows as wfmod
from bridge.errors import (BridgeError, Conflict, CostTooHigh, InvalidParameter, QueueFull, TooManyJobs)
from bridge.outbound import OutboundRefused
from bridge.storage import BlobNotFound
from bridge.store import Job, LimitReached, check_id, input_key
from bridge.workflows import Workflow
from bridge.workflows.cost import split_name

from .client import BackendError
from .dispatcher import LostJob, NoBackend, crashed

if TYPE_CHECKING:
    from . import JobEngine

log = logging.getLogger("bridge.engine")


class Intake:
    def __init__(self, engine: JobEngine) -> None:
        self.engine = engine
        self.rng = random.Random()
        # Client-chosen job ids whose submission is under way (images being decoded and stored): a second
        # submission with the same id is refused at once instead of writing over the first one's inputs.
        self.submitting: dict[str, asyncio.Event] = {}
        self.stored_inputs: dict[str, bool] = {}  # submissions under way that have stored an input image

    async def submit(self, workflow: str, parameters: Mapping[str, Any] | None, *, meta: Mapping[str, Any] | None,
                     job_id: str | None, timeout: float | None, outputs: list[str] | None,
                     client: str | None) -> Job:
        engine = self.engine
        table, _ = engine._parts()
        wf = engine.workflow(workflow)
        await self.check_room(client)
        values = wf.coerce(parameters or {}, rng=self.rng)
        await self._check_webhook((meta or {}).get("webhook"))
        wanted = wanted_outputs(wf, outputs)
        if job_id is not None:
            try:
                check_id(job_id)
            except ValueError as exc:
                raise InvalidParameter("job_id", str(exc)) from None
            if await engine.find(job_id) is not None or job_id in self.submitting:
                raise Conflict(f"job {job_id!r} already exists", field="job_id")
        await self.check_cost([(wf, values)])  # last: it may fetch an image to read its size
        jid = job_id or uuid.uuid4().hex
        self.submitting[jid] = asyncio.Event()
        try:
            return await self._accept(wf, values, jid, wanted, meta, timeout, client)
        except BaseException:
            if table.get(jid) is None and self.stored_inputs.pop(jid, False):
                await engine.drop_inputs(jid)  # refused after its images were stored: nothing may keep them
            raise
        finally:
            self.submitting.pop(jid).set()
            self.stored_inputs.pop(jid, None)

    async def check_room(self, client: str | None) -> None:
        """QueueFull or TooManyJobs where a submission now would get them (the insert checks again)."""
        engine = self.engine
        table, _ = engine._parts()
        opts = engine.options
        if table.active >= opts.max_queue:
            raise QueueFull(engine.retry_after(table.active))
        if opts.max_jobs_per_client and client is not None:
            mine = await table.store.active_for(client) if table.shared else table.active_here_for(client)
            if mine >= opts.max_jobs_per_client:
                raise TooManyJobs(opts.max_jobs_per_client, engine.retry_after(table.active))

    async def _accept(self, wf: Workflow, values: dict[str, Any], jid: str, wanted: list[str] | None,
                      meta: Mapping[str, Any] | None, timeout: float | None, client: str | None) -> Job:
        engine = self.engine
        table, dispatcher = engine._parts()
        opts = engine.options
        dispatcher.check_support(wf)
        self._check_choices(wf, values)
        params = dict(values)
        inputs: dict[str, str] = {}
        for name, p in wf.parameters.items():
            if p.type != "image" or name not in values:
                continue
            # Adapters that looked at the image pass it decoded; anything else is decoded here, once, in the pool.
            img = await image_io.decode_async(await self.fetch_image(values[name], name),
                                              name, max_bytes=opts.max_image_bytes, max_pixels=opts.max_image_pixels)
            inputs[name] = input_key(jid, name)
            self.stored_inputs[jid] = True
            await engine.blobs.put(inputs[name], img.png, "image/png")
            params[name] = {"image": inputs[name], "width": img.width, "height": img.height,
                            "format": img.source_format}
        job_meta = dict(meta or {})
        if client is not None:
            job_meta["client"] = client
        job = Job(id=jid, workflow=wf.name, workflow_version=wf.version, params=params, status="queued",
                  created_at=time.time(), meta=job_meta, inputs=inputs,
                  timeout=timeout if timeout is not None else opts.job_timeout, wanted=wanted)
        # Dispatched from here when this replica has a backend for it; else stored for whichever replica has one.
        here = not dispatcher.local and dispatcher.pick(wf.name) is not None
        try:
            await table.insert(job, max_active=opts.max_queue, max_per_client=opts.max_jobs_per_client,
                               owned=here or not table.shared)
        except LimitReached as full:
            if full.which == "client":
                raise TooManyJobs(opts.max_jobs_per_client, engine.retry_after(table.active)) from None
            raise QueueFull(engine.retry_after(full.active)) from None
        if not here and table.shared:
            table.hub.emit("status", job)
            return job
        if here:
            try:
                await dispatcher.dispatch(job)
            except BridgeError:
                # Refused by the backend's validation: the job was never accepted.
                table.forget(job)
                await table.store.delete(job.id)
                raise
            except (BackendError, NoBackend) as exc:
                log.warning("job %s: direct dispatch failed (%s); queued", jid, exc)
                if isinstance(exc, BackendError):
                    dispatcher.failed(job, exc)  # a first failure: the rule needs five, and ten seconds
                await engine.queue_again(job, front=True)
            except LostJob:
                pass  # another replica took it over at once; it answers for the job from now on
            except Exception as exc:  # noqa: BLE001 - accepted, it fails saying why, as in the dispatch loop: raised,
                # it was a 500 and a job left queued that no dispatcher holds
                log.exception("job %s: dispatch crashed", jid)
                assert engine._tracker is not None
                engine._tracker.fail(job, crashed(exc))
        else:
            await engine.queue_again(job, front=False)
        table.hub.emit("status", job)
        return job

    async def accepted(self, job_id: str) -> Job | None:
        """The job with this id once a submission of it under way has ended: the job, or None when that
        submission was refused (adapters answer a repeated identical request with the first one's job)."""
        pending = self.submitting.get(job_id)
        if pending is not None:
            await pending.wait()
        return await self.engine.find(job_id)

    # ------------------------------------------------------------------ images by URL
    async def fetch_image(self, value: Any, field: str) -> Any:
        """An image field's value with a URL replaced by the bytes it names: `http(s)://` through the outbound
        policy (public addresses only, size, time and redirect limits), `s3://bucket/key` from the configured S3
        store's own bucket only (the bridge's credentials read nothing else). Anything else comes back as it is."""
        if not isinstance(value, str) or not value.startswith(("http://", "https://", "s3://")):
            return value
        if value.startswith("s3://"):
            return await self._fetch_s3(value, field)
        try:
            return await self.engine.outbound.fetch(value)
        except OutboundRefused as exc:
            raise InvalidParameter(field, f"{field}: the image URL was refused: {exc}") from None

    async def _fetch_s3(self, url: str, field: str) -> bytes:
        blobs = self.engine.blobs
        bucket = getattr(blobs, "bucket", None)
        parts = url[len("s3://"):].split("/", 1)
        if bucket is None or parts[0] != bucket or len(parts) < 2 or not parts[1]:
            where = f"s3://{bucket}/..." if bucket else "nothing: BRIDGE_STORAGE is not S3"
            raise InvalidParameter(field, f"{field}: s3:// images are read from the bridge's own bucket only "
                                          f"({where})")
        try:
            return await blobs.read_path(parts[1], self.engine.outbound.policy.max_bytes)  # type: ignore[attr-defined]
        except BlobNotFound:
            raise InvalidParameter(field, f"{field}: {url} does not exist") from None
        except ValueError as exc:
            raise InvalidParameter(field, f"{field}: {exc}") from None

    # ------------------------------------------------------------------ checks
    async def request_cost(self, jobs: list[tuple[str, Mapping[str, Any]]]) -> None:
        engine = self.engine
        await self.check_cost([(engine.workflow(name), engine.workflow(name).coerce(params, rng=self.rng))
                               for name, params in jobs])

    async def check_cost(self, jobs: list[tuple[Workflow, dict[str, Any]]]) -> None:
        bound = self.engine.options.max_request_cost
        if not bound or not jobs:
            return
        total = 0
        for wf, values in jobs:
            total += wf.cost(values, await self._sizes(wf, values))
        if total > bound:
            wf = jobs[0][0]
            # a formula's `image.width` names the parameter `image`
            terms = list(dict.fromkeys(split_name(t)[0] for t in wf.cost_terms())) + (["jobs"] if len(jobs) > 1
                                                                                       else [])
            raise CostTooHigh(terms, total, bound, wf.cost_text() + (" x jobs" if len(jobs) > 1 else ""))

    async def _sizes(self, wf: Workflow, values: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """Width and height of the images whose size `wf`'s cost reads and that came as text, bytes or a URL,
        from their headers (in the image pool, no pixel decoded). `values` keeps the image's bytes, so a job
        submitted with them neither fetches a URL nor decodes base64 again (`request_cost` checks a copy: a URL
        there is fetched again when each job is submitted)."""
        opts = self.engine.options

        def read(value: Any, name: str) -> tuple[bytes, image_io.Header]:
            data = image_io.decode_base64(value, name, max_bytes=opts.max_image_bytes)
            return data, image_io.read_header(data, name, max_pixels=opts.max_image_pixels)

        sizes = {}
        for name in wf.sized_images():
            if isinstance(values.get(name), (str, bytes, bytearray)):
                values[name], header = await image_io.run_in_pool(read, await self.fetch_image(values[name], name),
                                                                  name)
                sizes[name] = (header.width, header.height)
        return sizes

    async def _check_webhook(self, spec: Any) -> None:
        """A job's own receiver is checked when the job is accepted: a client learns now, not from a failed
        delivery later, that it named an address the bridge will not call."""
        url = spec.get("url") if isinstance(spec, Mapping) else spec
        if not url:
            return
        try:
            await self.engine.outbound.check_target(str(url))
        except OutboundRefused as exc:
            raise InvalidParameter("webhook", f"webhook: the receiver URL was refused: {exc}") from None

    def _known(self) -> list[Any]:
        return [c for c in self.engine.connections.values() if c.healthy and c.object_info is not None]

    def offered_choices(self, wf: Workflow, names: Iterable[str] | None = None) -> dict[str, list[Any]]:
        """Per choice parameter that takes its values from a node's list (`choices_from`), of `names` (None: all):
        what the healthy backends offer now, each value once in the order they list them (none while no healthy
        backend lists it)."""
        known = self._known()
        out: dict[str, list[Any]] = {}
        for name in wf.parameters if names is None else names:
            p = wf.parameters.get(name)
            if p is None or p.type != "choice" or not p.choices_from:
                continue
            seen: dict[Any, None] = {}
            for c in known:
                seen.update(dict.fromkeys(c.choices(p.choices_from) or []))
            if seen:
                out[name] = list(seen)
        return out

    def _check_choices(self, wf: Workflow, values: dict[str, Any]) -> None:
        """A choice no healthy backend offers is refused now, before any image is decoded (dispatch checks the
        chosen backend's list again); LoRA names are resolved to the backend's files."""
        known = self._known()
        offered = self.offered_choices(wf, values)  # only the sent ones: a submit need not copy every list
        for name, p in wf.parameters.items():
            if p.type == "loras" and name in values and known:
                live = known[0].choices(p.choices_from or wfmod.LORA_LIST) or []
                # Names become the files the backend lists, so the job records exactly what it applies.
                values[name] = wfmod.resolve_loras(name, values[name], live)  # type: ignore[index]
            elif name in offered and name in values and values[name] not in offered[name]:
                raise InvalidParameter(name, f"{name}: {values[name]!r} is not available on the backend; "
                                             f"choose one of {wfmod.short_list(offered[name])}")


def wanted_outputs(wf: Workflow, outputs: Any) -> list[str] | None:
    """The caller's output selection, checked: None (all), or a non-empty list of the manifest's names."""
    if outputs is None:
        return None
    if not isinstance(outputs, (list, tuple)) or not outputs or not all(isinstance(o, str) for o in outputs):
        raise InvalidParameter("outputs", f"outputs must be a non-empty list of output names of workflow "
                                          f"{wf.name!r} ({', '.join(wf.outputs)})")
    unknown = [o for o in outputs if o not in wf.outputs]
    if unknown:
        raise InvalidParameter("outputs", f"outputs: workflow {wf.name!r} has no output {unknown[0]!r}; "
                                          f"known: {', '.join(wf.outputs)}")
    return list(dict.fromkeys(outputs))
