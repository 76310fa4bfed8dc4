"""What adapters read back from jobs: stored result images, links to them, files made from them, the job as a
webhook message carries it, and live previews. Part of `JobEngine` (a base class: the methods read the engine's
blob store, workflows, runs and store)."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from bridge.errors import NAME_SHOWN, InvalidParameter, JobNotFound, ResultGone, quote
from bridge.storage import BlobNotFound, content_type
from bridge.store import Job, outputs_prefix

if TYPE_CHECKING:
    from . import JobEngine


class Outputs:
    def workflow_output_type(self: JobEngine, workflow: str, output: str) -> str | None:
        """`images` or `value` for a workflow's output; None when either is unknown (e.g. removed by a reload)."""
        wf = self.workflows.get(workflow)
        out = wf.outputs.get(output) if wf else None
        return out.type if out else None

    async def read_output(self: JobEngine, job: Job | str, name: str = "images", index: int = 0) -> bytes:
        """Bytes of a stored result image."""
        if isinstance(job, str):
            found = await self.find(job)
            if found is None:
                raise JobNotFound(job)
            job = found
        if self.workflow_output_type(job.workflow, name) != "images":
            # the name comes from a URL path (8 KB) on /jobs/{id}/outputs/{name}/{index}
            raise InvalidParameter("output", f"workflow {job.workflow!r} has no image output "
                                             f"{quote(name, NAME_SHOWN)}")
        files = job.outputs.get(name) or []
        if not 0 <= index < len(files):
            raise InvalidParameter("index", f"output {name!r} of job {job.id} has {len(files)} images; "
                                            f"index {index} does not exist")
        try:
            return await self.blobs.get(files[index])
        except BlobNotFound:
            raise ResultGone(f"job {job.id}: result {name}[{index}] is no longer stored", field="job_id") from None

    async def result_link(self: JobEngine, job: Job, name: str, index: int, origin: str = "") -> str:
        """Where a client fetches a result image: a presigned store URL when the store gives one, else the
        bridge's own `/jobs/{id}/outputs/{name}/{index}`, absolute with BRIDGE_PUBLIC_URL or else `origin` (the
        scheme and host a request came to)."""
        key = job.outputs[name][index]
        url = await self.blobs.url(key, self.webhook_config.link_lifetime)
        base = self.webhook_config.public_url or origin
        return url or f"{base}/jobs/{job.id}/outputs/{name}/{index}"

    async def keep_file(self: JobEngine, job_id: str, data: bytes, ext: str, origin: str = "") -> str:
        """Store an image an adapter made from a job's results (A1111's answer image with its infotext, a grid)
        beside them, and return a link to it: presigned when the store signs URLs, else the bridge's
        `/jobs/{id}/files/{name}`. It goes with the job (DELETE, retention)."""
        name = f"answer_{hashlib.sha256(data).hexdigest()[:16]}.{ext}"
        key = outputs_prefix(job_id) + name
        await self.blobs.put(key, data, content_type(key))
        url = await self.blobs.url(key, self.webhook_config.link_lifetime)
        base = self.webhook_config.public_url or origin
        return url or f"{base}/jobs/{job_id}/files/{name}"

    async def describe(self: JobEngine, job: Job) -> dict[str, Any]:
        """A job as webhook messages carry it: state, timings, and links to its result images."""
        outputs: dict[str, list[Any]] = {}
        for name, values in job.outputs.items():
            if self.workflow_output_type(job.workflow, name) == "images":
                outputs[name] = [await self.result_link(job, name, i) for i in range(len(values))]
            else:
                outputs[name] = list(values)
        meta = {k: v for k, v in (job.meta or {}).items() if k in ("dialect", "client_id", "index", "seed")}
        return {"id": job.id, "status": job.status, "workflow": job.workflow, "workflow_version": job.workflow_version,
                "progress": round(job.progress, 1), "error": job.error, "created_at": job.created_at,
                "started_at": job.started_at, "finished_at": job.finished_at, "outputs": outputs, "meta": meta}

    def preview(self: JobEngine, job_id: str) -> tuple[str, bytes] | None:
        """The newest live preview of a job this replica runs (image type, bytes), or the last one of a job that
        ended here; None when ComfyUI sent none (it sends them when started with a --preview-method)."""
        run = self._runs.get(job_id)
        if run is not None and run.preview is not None:
            return run.preview
        return self._tracker.previews.get(job_id) if self._tracker is not None else None

    async def latest_preview(self: JobEngine, job_id: str) -> tuple[str, bytes] | None:
        """As `preview`, for a job on any replica (the replica running it keeps its newest preview in the store)."""
        return self.preview(job_id) or (await self.store.load_preview(job_id) if self.store.shared else None)
