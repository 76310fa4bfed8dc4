"""Prometheus metrics with `prometheus_client`: one registry per app (tests build many apps in one process).

Counters and the job-duration histogram are kept as requests and jobs happen; engine state (jobs by state, queue
depth, backends up) is read at scrape time by a collector, so it is never stale.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# The classic text format every Prometheus version scrapes (names here need none of 1.0.0's escaping).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
JOB_STATES = ("queued", "running", "completed", "failed", "cancelled")
# Jobs range from sub-second pixel filters to minutes of CPU diffusion.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class _EngineCollector(Collector):
    def __init__(self, read: Callable[[], tuple[Mapping[str, Any], list[Mapping[str, Any]]]], version: str) -> None:
        self._read = read
        self._version = version

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats, backends = self._read()
        info = GaugeMetricFamily("pixart_bridge_info", "Bridge version.", labels=["version"])
        info.add_metric([self._version], 1)
        yield info
        jobs = GaugeMetricFamily("pixart_jobs", "Jobs known to the bridge, by state.", labels=["state"])
        counts = stats.get("counts") or {}
        for state in JOB_STATES:
            jobs.add_metric([state], int(counts.get(state, 0)))
        yield jobs
        yield GaugeMetricFamily("pixart_queue_depth", "Jobs queued or running.", value=int(stats.get("queue_depth", 0)))
        up = GaugeMetricFamily("pixart_backend_up", "Whether a ComfyUI backend answers (1) or not (0).",
                               labels=["backend"])
        for backend in backends:
            up.add_metric([str(backend.get("url", ""))], 1 if backend.get("healthy") else 0)
        yield up


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pixart_http_requests", "HTTP requests served, by route and status.",
                                ["method", "route", "status"], registry=self.registry)
        self.durations = Histogram("pixart_job_duration_seconds", "Run time of finished jobs, start to finish.",
                                   ["workflow", "status"], buckets=DURATION_BUCKETS, registry=self.registry)
        # Terminal events can repeat (reconnects, re-sent status); count each job once.
        self._observed: OrderedDict[str, None] = OrderedDict()

    def watch_engine(self, read: Callable[[], tuple[Mapping[str, Any], list[Mapping[str, Any]]]],
                     version: str) -> None:
        self.registry.register(_EngineCollector(read, version))

    def count_request(self, method: str, route: str, status: int) -> None:
        self.requests.labels(method, route, str(status)).inc()

    def observe_job(self, job: Mapping[str, Any]) -> None:
        """Record a finished job's run time (start to finish; queue wait is not the backend's work)."""
        job_id = str(job.get("id"))
        status = job.get("status")
        if status not in ("completed", "failed", "cancelled") or job_id in self._observed:
            return
        finished, started = job.get("finished_at"), job.get("started_at") or job.get("created_at")
        if finished is None or started is None:
            return
        self._observed[job_id] = None
        while len(self._observed) > 10_000:
            self._observed.popitem(last=False)
        self.durations.labels(str(job.get("workflow", "")), str(status)).observe(max(0.0, float(finished) -
                                                                                     float(started)))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _route_name(request: web.Request) -> str:
    # The route template, not the raw path: job ids in paths would make one series per job.
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical


def request_counter(metrics: Metrics) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            metrics.count_request(request.method, _route_name(request), status)

    return count
