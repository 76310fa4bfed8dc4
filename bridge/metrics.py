"""Prometheus text exposition (format 0.0.4) for the bridge, written by hand: a few gauges, counters and one
histogram do not justify a dependency."""
from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JOB_STATES = ("queued", "running", "completed", "failed", "cancelled")
# Jobs range from sub-second pixel filters to minutes of CPU diffusion.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Histogram:
    def __init__(self, buckets: Iterable[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # last slot: above every bound
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: Mapping[str, str]) -> list[str]:
        out = []
        cumulative = 0
        for bound, count in zip(self.bounds + (float("inf"),), self.counts):
            cumulative += count
            out.append(f"{name}_bucket{_labels({**labels, 'le': _num(bound)})} {cumulative}")
        out.append(f"{name}_sum{_labels(labels)} {_num(self.total)}")
        out.append(f"{name}_count{_labels(labels)} {self.n}")
        return out


class Metrics:
    """Counters the bridge keeps itself; engine state is read at scrape time."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], Histogram] = {}
        # Terminal events can repeat (reconnects, re-sent status); count each job once.
        self._observed: OrderedDict[str, None] = OrderedDict()

    def count_request(self, method: str, route: str, status: int) -> None:
        key = (method, route, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1

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
        key = (str(job.get("workflow", "")), str(status))
        self.durations.setdefault(key, Histogram()).observe(max(0.0, float(finished) - float(started)))

    def render(self, stats: Mapping[str, Any], backends: Iterable[Mapping[str, Any]], version: str) -> str:
        lines = [
            "# HELP pixart_bridge_info Bridge version.",
            "# TYPE pixart_bridge_info gauge",
            f"pixart_bridge_info{_labels({'version': version})} 1",
            "# HELP pixart_jobs Jobs known to the bridge, by state.",
            "# TYPE pixart_jobs gauge",
        ]
        by_status = stats.get("by_status") or stats.get("counts") or {}
        for state in JOB_STATES:
            lines.append(f"pixart_jobs{_labels({'state': state})} {int(by_status.get(state, 0))}")
        lines += [
            "# HELP pixart_queue_depth Jobs queued or running.",
            "# TYPE pixart_queue_depth gauge",
            f"pixart_queue_depth {int(stats.get('queue_depth', 0))}",
            "# HELP pixart_backend_up Whether a ComfyUI backend answers (1) or not (0).",
            "# TYPE pixart_backend_up gauge",
        ]
        for backend in backends:
            up = 1 if backend.get("healthy") else 0
            lines.append(f"pixart_backend_up{_labels({'backend': str(backend.get('url', ''))})} {up}")
        lines += [
            "# HELP pixart_job_duration_seconds Run time of finished jobs, start to finish.",
            "# TYPE pixart_job_duration_seconds histogram",
        ]
        for (workflow, status), hist in sorted(self.durations.items()):
            lines += hist.lines("pixart_job_duration_seconds", {"workflow": workflow, "status": status})
        lines += [
            "# HELP pixart_http_requests_total HTTP requests served, by route and status.",
            "# TYPE pixart_http_requests_total counter",
        ]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(
                f"pixart_http_requests_total{_labels({'method': method, 'route': route, 'status': status})} {n}")
        return "\n".join(lines) + "\n"


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
