"""The bridge's common HTTP surface over the ComfyUI protocol double: health, metrics, OpenAPI, auth, CORS,
body limit, rate limit, error shape, Server-Sent Events."""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import ENGINE, SETTINGS, create_app
from bridge.errors import InvalidParameter, QueueFull
from bridge import images
from bridge.http import TokenBucket, json_answer
from bridge.api import endpoint
from tests.support.waiting import wait_healthy

pytestmark = pytest.mark.asyncio

SMALL_JOB = {"prompt": "a cat", "width": 64, "height": 64, "steps": 3}


# ----------------------------------------------------------------------------------------------- health


async def test_health_reports_backend_and_aleaart_keys(bridge_client: Any, comfy_double: Any) -> None:
    body = await wait_healthy(bridge_client)
    assert body["status"] == "healthy"
    assert body["model_loaded"] is True
    assert isinstance(body["cuda_available"], bool)
    assert body["queue_depth"] == 0
    assert isinstance(body["version"], str) and body["version"]
    [backend] = body["backends"]
    assert backend["url"] == comfy_double.url.rstrip("/")
    assert backend["healthy"] is True
    assert backend["version"]  # ComfyUI's version from /system_stats
    assert body["managed_comfyui"] is None
    # the published schema has every key the answer has (/docs and the answers cannot disagree)
    from bridge.app import BackendState, Health

    assert set(body) == set(Health.model_fields) and set(backend) <= set(BackendState.model_fields)
    assert body["replica"]["id"] and body["replica"]["store"]


async def test_health_unhealthy_when_no_backend_answers(aiohttp_client: Any,
                                                        tmp_path: Any, unused_tcp_port: int) -> None:
    from bridge.config import load_settings

    settings = load_settings({"data_dir": tmp_path, "comfyui_urls": [f"http://127.0.0.1:{unused_tcp_port}"]},
                             env_file=None)
    client = await aiohttp_client(create_app(settings, adapter_names=[]))
    resp = await client.get("/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "unhealthy" and body["model_loaded"] is False
    assert body["backends"][0]["healthy"] is False
    assert "cannot connect" in (body["backends"][0]["last_error"] or "") or body["backends"][0]["last_error"]


# ----------------------------------------------------------------------------------------------- metrics


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def _sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError(f"{name}{labels} not in {families[family].samples}")


async def test_metrics_after_a_job(bridge_client: Any, comfy_double: Any) -> None:
    await wait_healthy(bridge_client)
    engine = bridge_client.app[ENGINE]
    job = await engine.submit("txt2img", SMALL_JOB)
    done = await engine.wait(job.id, timeout=30)
    assert done.status == "completed", done.error
    await asyncio.sleep(0.05)  # the metrics observer runs on the next loop turns

    resp = await bridge_client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = _families(await resp.text())  # an independent parser checks the text format
    assert _sample(fams, "pixart_jobs", "pixart_jobs", state="completed") == 1
    assert _sample(fams, "pixart_jobs", "pixart_jobs", state="queued") == 0
    assert _sample(fams, "pixart_queue_depth", "pixart_queue_depth") == 0
    assert _sample(fams, "pixart_backend_up", "pixart_backend_up", backend=comfy_double.url.rstrip("/")) == 1
    hist = fams["pixart_job_duration_seconds"]
    assert hist.type == "histogram"
    count = _sample(fams, "pixart_job_duration_seconds", "pixart_job_duration_seconds_count",
                    workflow="txt2img", status="completed")
    assert count == 1
    total = _sample(fams, "pixart_job_duration_seconds", "pixart_job_duration_seconds_sum", workflow="txt2img")
    assert total == pytest.approx(done.finished_at - done.started_at, abs=1e-6)
    inf = _sample(fams, "pixart_job_duration_seconds", "pixart_job_duration_seconds_bucket", le="+Inf")
    assert inf == 1
    health_hits = _sample(fams, "pixart_http_requests", "pixart_http_requests_total", route="/health",
                          status="200", method="GET")
    assert health_hits >= 1


# ----------------------------------------------------------------------------------------------- openapi


class ThingIn(BaseModel):
    size: int


class ThingOut(BaseModel):
    """The new thing."""

    id: str


def _extra_routes(app: web.Application) -> None:
    @endpoint(body=ThingIn, responses={201: ThingOut}, tags=["things"])
    async def make_thing(request: web.Request, body: ThingIn) -> web.Response:
        """Create a thing.

        Longer text for the description."""
        return web.json_response({"id": "1"}, status=201)

    async def get_thing(request: web.Request) -> web.Response:
        """Read one thing by id."""
        return web.json_response({"id": request.match_info["thing_id"]})

    async def boom(request: web.Request) -> web.Response:
        """Always fails."""
        raise RuntimeError("secret internal detail")

    async def bad_param(request: web.Request) -> web.Response:
        """Raises an engine error."""
        raise InvalidParameter("width", "must be a multiple of 8")

    async def full(request: web.Request) -> web.Response:
        """Queue full."""
        raise QueueFull(12.3)

    async def dialect(request: web.Request) -> web.Response:
        """An adapter's own error dialect."""
        return web.json_response({"detail": "Not Found"}, status=404)

    async def dialect_raised(request: web.Request) -> web.Response:
        """An adapter's own error raised as an HTTPException with a JSON body."""
        raise web.HTTPUnprocessableEntity(text=json.dumps({"detail": [{"loc": ["body"]}]}),
                                          content_type="application/json")

    async def echo(request: web.Request) -> web.Response:
        """Echo the body size."""
        data = await request.read()
        return web.json_response({"size": len(data)})

    app.router.add_post("/things", make_thing)
    app.router.add_get("/things/{thing_id}", get_thing)
    app.router.add_get("/boom", boom)
    app.router.add_get("/bad", bad_param)
    app.router.add_get("/full", full)
    app.router.add_get("/dialect", dialect)
    app.router.add_get("/dialect-raised", dialect_raised)
    app.router.add_post("/echo", echo)


async def test_openapi_describes_every_route(bridge_factory: Any) -> None:
    client = await bridge_factory(adapters=["a1111"], routes=_extra_routes)
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    assert spec["openapi"].startswith("3.")
    # the bridge's own description, not the last workflow operation's (the loop over them reused its name)
    assert spec["info"]["description"].startswith("Pixel art, A1111, Pico, AleaArt, jobs and any shared workflow")
    # Every (method, path) of the router, HEAD twins aside, is described.
    expected = set()
    hidden = set()
    for route in client.app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info()
        key = (route.method.lower(), info.get("path") or info.get("formatter"))
        # The documentation pages themselves are left out, as FastAPI leaves out its /docs.
        (hidden if getattr(route.handler, "__openapi_hidden__", False) else expected).add(key)
    described = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= described
    assert hidden == {("get", "/"), ("get", "/docs"), ("get", "/docs/assets/{name}")} and not hidden & described
    assert {("get", "/health"), ("get", "/metrics"), ("get", "/events"), ("get", "/openapi.json"),
            ("post", "/sdapi/v1/txt2img")} <= described

    thing = spec["paths"]["/things/{thing_id}"]["get"]
    assert thing["summary"] == "Read one thing by id."
    assert thing["parameters"] == [{"name": "thing_id", "in": "path", "required": True,
                                    "schema": {"type": "string"}}]
    make = spec["paths"]["/things"]["post"]
    assert make["summary"] == "Create a thing."
    assert make["description"] == "Longer text for the description."
    schemas = spec["components"]["schemas"]
    assert make["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ThingIn"}
    assert schemas["ThingIn"]["properties"]["size"]["type"] == "integer" and schemas["ThingIn"]["required"] == ["size"]
    assert make["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ThingOut"}
    assert schemas["ThingOut"]["properties"]["id"]["type"] == "string"
    assert make["tags"] == ["things"]
    assert spec["paths"]["/health"]["get"]["summary"].startswith("Bridge and backend health")
    assert spec["paths"]["/events"]["get"]["parameters"][0]["name"] == "job"
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    assert "securitySchemes" not in spec["components"]  # no keys configured


# ----------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("headers", [{"X-API-Key": "right"}, {"Authorization": "Bearer right"},
                                     {"Authorization": "bearer  second "}])
async def test_auth_accepts_both_header_styles(bridge_factory: Any, headers: dict[str, str]) -> None:
    client = await bridge_factory(api_keys=["right", "second"], routes=_extra_routes)
    resp = await client.get("/things/7", headers=headers)
    assert resp.status == 200
    assert (await resp.json()) == {"id": "7"}


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "unauthorized"),
    ({"X-API-Key": "wrong"}, "invalid_api_key"),
    ({"Authorization": "Bearer wrong"}, "invalid_api_key"),
    ({"Authorization": "Basic cmlnaHQ6"}, "unauthorized"),
    ({"X-API-Key": "righ"}, "invalid_api_key"),
])
async def test_auth_refuses_missing_or_wrong_key(bridge_factory: Any, headers: dict[str, str], code: str) -> None:
    client = await bridge_factory(api_keys=["right"], routes=_extra_routes)
    resp = await client.get("/things/7", headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["error"] == code and body["field"] == "X-API-Key"
    assert "X-API-Key" in body["message"] or "not valid" in body["message"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # Unknown routes are refused before they are revealed.
    assert (await client.get("/does-not-exist", headers=headers)).status == 401


async def test_auth_exempt_paths_and_openapi_security(bridge_factory: Any) -> None:
    client = await bridge_factory(api_keys=["right"])
    assert (await client.get("/health")).status in (200, 503)  # exempt: no 401
    assert (await client.get("/metrics")).status == 200
    # The spec and the docs page are public (the docs page loads the spec before anyone can type a key).
    resp = await client.get("/openapi.json")
    spec = await resp.json()
    assert resp.status == 200 and (await client.get("/docs")).status == 200
    assert set(spec["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerAuth"}
    assert spec["paths"]["/health"]["get"]["security"] == []
    assert "security" not in spec["paths"]["/events"]["get"]
    assert (await client.get("/events")).status == 401


async def test_auth_exemption_is_configurable(bridge_factory: Any) -> None:
    client = await bridge_factory(api_keys=["right"], auth_exempt=["/things/*"], routes=_extra_routes)
    assert (await client.get("/things/1")).status == 200
    assert (await client.get("/metrics")).status == 401


# ----------------------------------------------------------------------------------------------- CORS


async def test_cors_preflight_echoes_allowed_origin_with_credentials(bridge_factory: Any) -> None:
    client = await bridge_factory(cors_origins=["https://app.example"], cors_credentials=True,
                                  api_keys=["right"], routes=_extra_routes)
    resp = await client.options("/things", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-api-key"})
    assert resp.status == 204  # preflight needs no key
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "x-api-key" in resp.headers["Access-Control-Allow-Headers"].lower()
    assert "Origin" in resp.headers["Vary"]

    resp = await client.get("/things/3", headers={"Origin": "https://app.example", "X-API-Key": "right"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Origin" in resp.headers["Vary"]
    # Error responses carry the headers too, so the browser can read the error.
    resp = await client.get("/things/3", headers={"Origin": "https://app.example"})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"


async def test_cors_refuses_other_origins(bridge_factory: Any) -> None:
    client = await bridge_factory(cors_origins=["https://app.example"], cors_credentials=True,
                                  routes=_extra_routes)
    resp = await client.options("/things", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert resp.status == 403
    assert (await resp.json())["field"] == "Origin"
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.get("/things/3", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_wildcard_only_without_credentials(bridge_factory: Any, bridge_settings: Any) -> None:
    client = await bridge_factory(cors_origins=["*"], routes=_extra_routes)
    resp = await client.get("/things/3", headers={"Origin": "https://any.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    from bridge.config import SettingsError

    with pytest.raises(SettingsError):
        bridge_settings(cors_origins=["*"], cors_credentials=True)


async def test_no_cors_headers_when_not_configured(bridge_factory: Any) -> None:
    client = await bridge_factory(routes=_extra_routes)
    resp = await client.get("/things/3", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


# ----------------------------------------------------------------------------------------------- body limit


async def test_body_limit_413_with_json_error(bridge_factory: Any) -> None:
    client = await bridge_factory(max_body_mb=1 / 1024, routes=_extra_routes)  # 1 KiB
    ok = await client.post("/echo", data=b"x" * 1000)
    assert ok.status == 200 and (await ok.json()) == {"size": 1000}
    resp = await client.post("/echo", data=b"x" * 5000)
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "payload_too_large" and body["field"] == "body"
    assert "1024" in body["message"]

    async def chunks() -> Any:  # no Content-Length: aiohttp's own limit fires while reading
        for _ in range(10):
            yield b"y" * 500

    resp = await client.post("/echo", data=chunks())
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "payload_too_large" and body["field"] == "body"


@pytest.mark.parametrize("encoding,body", [
    ("deflate", b"xxxx"),  # aiohttp's inflate error was a 500
    ("gzip", b"\x1f\x8b\x08\x00garbage"),  # read as an empty body: a job of defaults
    ("gzip", gzip.compress(b" " * (8 << 20))),  # 8 MiB of spaces in 8 KB
])
async def test_a_compressed_body_is_refused_before_it_is_read(bridge_factory: Any, encoding: str,
                                                             body: bytes) -> None:
    client = await bridge_factory(adapters=["a1111", "jobs_api"])
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    for path in ("/workflows/txt2img", "/sdapi/v1/txt2img"):
        resp = await client.post(path, data=body, headers=headers)
        err = await resp.json()
        assert resp.status == 415 and err["field"] == "body" and encoding in err["message"], err
    assert await client.server.app[ENGINE].list() == []  # no job of defaults
    ok = await client.post("/workflows/txt2img", json={"parameters": {"prompt": "x"}},
                           headers={"Content-Encoding": "identity"})
    assert ok.status == 202, await ok.text()
    # a request without a body is not refused for the header
    assert (await client.get("/health", headers={"Content-Encoding": encoding})).status == 200


# ----------------------------------------------------------------------------------------------- rate limit


async def test_an_answer_with_images_and_long_texts_is_its_json_written_in_pieces(aiohttp_client: Any,
                                                                                     monkeypatch: Any) -> None:
    monkeypatch.setattr(images, "B64_PIECE", 8)
    blobs = [bytes(range(n)) for n in (0, 1, 2, 3, 100, 255)]
    with_images = {"images": [images.Base64(b) for b in blobs], "nested": {"n": [1, None, 2.5, True], "s": "ok"},
                   "url": images.Base64(blobs[4], "data:image/png;base64,")}
    # long texts, a key among them, go in pieces too; their length shows only once escaped: the answer is chunked
    with_texts = {**with_images, "text": 'pixart-long- "quoted" \\ caf\u00e9 \u2028',
                  "comments": {"caf\u00e9 " * 5: "\u00e9\n" * 50}}

    async def handler(request: web.Request) -> web.Response:
        body = with_texts if request.query.get("texts") else with_images
        return await json_answer(body, status=201, headers={"X-Pico-Cache": "miss"})

    app = web.Application()
    app.router.add_get("/", handler)
    client = await aiohttp_client(app)
    for query, body in (("", with_images), ("?texts=1", with_texts)):
        resp = await client.get("/" + query)
        raw = await resp.read()
        assert raw == json.dumps(body, default=str).encode()
        assert resp.status == 201 and resp.headers["X-Pico-Cache"] == "miss"
        assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
        if body is with_images:
            assert int(resp.headers["Content-Length"]) == len(raw)
        else:
            assert "Content-Length" not in resp.headers and resp.headers["Transfer-Encoding"] == "chunked"
    assert (await client.head("/")).status == 201


async def test_token_bucket_refills_at_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.acquire("a") == pytest.approx(0.5)  # one token needs 1/rate s
    assert bucket.acquire("b") == 0.0  # buckets are per client
    now[0] += 0.5
    assert bucket.acquire("a") == 0.0
    assert bucket.acquire("a") == pytest.approx(0.5)
    now[0] += 100
    assert [bucket.acquire("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refill caps at burst
    assert bucket.acquire("a") > 0


async def test_token_bucket_forgets_oldest_clients() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, max_clients=2, clock=lambda: 0.0)
    for client in ("a", "b", "c"):
        assert bucket.acquire(client) == 0.0
    assert bucket.acquire("c") > 0  # kept
    assert bucket.acquire("a") == 0.0  # forgotten, so full again


async def test_rate_limit_429_per_key(bridge_factory: Any) -> None:
    client = await bridge_factory(api_keys=["k1", "k2"], rate_limit=0.5, rate_burst=2, routes=_extra_routes)
    k1 = {"X-API-Key": "k1"}
    assert (await client.get("/things/1", headers=k1)).status == 200
    assert (await client.get("/things/1", headers=k1)).status == 200
    resp = await client.get("/things/1", headers=k1)
    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) == 2  # (1 - 0 tokens) / 0.5 per s
    body = await resp.json()
    assert body["error"] == "rate_limited" and "API key" in body["message"]
    assert (await client.get("/things/1", headers={"Authorization": "Bearer k2"})).status == 200
    assert (await client.get("/health")).status != 429  # exempt by default


# ----------------------------------------------------------------------------------------------- errors


async def test_error_shape_for_unknown_route_and_method(bridge_client: Any) -> None:
    resp = await bridge_client.get("/no/such/route")
    assert resp.status == 404
    assert (await resp.json()) == {"error": "not_found", "message": "no route for GET /no/such/route",
                                   "field": "path"}
    resp = await bridge_client.delete("/health")
    assert resp.status == 405
    body = await resp.json()
    assert body["error"] == "method_not_allowed" and body["field"] == "method"
    assert "GET" in resp.headers["Allow"]


async def test_raising_handler_gives_500_without_trace(bridge_factory: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    client = await bridge_factory(routes=_extra_routes)
    with caplog.at_level(logging.ERROR, logger="bridge.http"):
        resp = await client.get("/boom")
    assert resp.status == 500
    text = await resp.text()
    body = json.loads(text)
    assert body["error"] == "internal_error" and body["field"] is None
    assert "secret internal detail" not in text and "Traceback" not in text
    logged = [r for r in caplog.records if r.name == "bridge.http"]
    assert logged and logged[0].exc_info is not None
    assert "secret internal detail" in str(logged[0].exc_info[1])


async def test_engine_errors_use_their_status_code_and_field(bridge_factory: Any) -> None:
    client = await bridge_factory(routes=_extra_routes)
    resp = await client.get("/bad")
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "invalid_parameter" and body["field"] == "width"
    assert "width" in body["message"]
    resp = await client.get("/full")
    assert resp.status == 503 and resp.headers["Retry-After"] == "12"
    assert (await resp.json())["error"] == "queue_full"


async def test_adapter_responses_are_not_rewritten(bridge_factory: Any) -> None:
    client = await bridge_factory(routes=_extra_routes)
    resp = await client.get("/dialect")
    assert resp.status == 404 and (await resp.json()) == {"detail": "Not Found"}
    resp = await client.get("/dialect-raised")
    assert resp.status == 422 and (await resp.json()) == {"detail": [{"loc": ["body"]}]}


# ----------------------------------------------------------------------------------------------- SSE


async def _read_events(resp: Any, until: Any = None) -> list[tuple[str, dict[str, Any]]]:
    """Parse SSE frames until the stream ends or `until(kind, payload)` is true."""
    events: list[tuple[str, dict[str, Any]]] = []
    kind, data = "message", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            events.append((kind, json.loads(data)))
            if until is not None and until(kind, events[-1][1]):
                break
            kind, data = "message", ""
    return events


async def test_events_stream_relays_a_jobs_progress(bridge_client: Any, comfy_double: Any) -> None:
    await wait_healthy(bridge_client)
    engine = bridge_client.app[ENGINE]
    job = await engine.submit("txt2img", {**SMALL_JOB, "steps": 4})
    resp = await bridge_client.get("/events", params={"job": job.id})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = await asyncio.wait_for(_read_events(resp), timeout=30)  # the stream ends with the job

    assert all(payload["job"]["id"] == job.id for _, payload in events)
    assert all(kind == payload["type"] for kind, payload in events)
    statuses = [p["job"]["status"] for k, p in events if k == "status"]
    assert statuses[-1] == "completed"
    progress = [p["job"]["progress"] for k, p in events if k == "progress"]
    assert progress, f"no progress event among {[k for k, _ in events]}"
    assert progress == sorted(progress) and 0 < progress[-1] <= 100
    steps = [p["job"]["step"] for k, p in events if k == "progress" and p["job"].get("steps") == 4]
    assert steps and max(steps) == 4
    assert events[-1][1]["job"]["outputs"]["images"]


async def test_each_event_is_encoded_once_for_every_stream(bridge_client: Any, comfy_double: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # every stream encoded the whole job record of every step again: with 200 streams a 1-second job took 8.5 s (4 s
    # with one encoding)
    from bridge import events as events_mod

    encoded: list[str] = []
    original = events_mod.format_event

    def counted(event: dict[str, Any], *args: Any) -> bytes:
        encoded.append(event["type"])
        return original(event, *args)

    monkeypatch.setattr(events_mod, "format_event", counted)
    await wait_healthy(bridge_client)
    streams = [await bridge_client.get("/events") for _ in range(3)]
    done = lambda k, p: p["job"]["status"] == "completed"  # noqa: E731
    readers = [asyncio.ensure_future(_read_events(resp, until=done)) for resp in streams]
    await asyncio.sleep(0.1)
    await bridge_client.app[ENGINE].submit("txt2img", {**SMALL_JOB, "steps": 4})
    relayed = await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
    for resp in streams:
        resp.close()
    assert relayed[0] == relayed[1] == relayed[2] and len(encoded) == len(relayed[0])


async def test_a_stream_whose_client_does_not_read_holds_a_bounded_buffer() -> None:
    # The engine's subscription drops old progress for a slow reader; the stream's own buffer must not take every
    # event in its place (it grew with each event of every job for a client that never read).
    from bridge import events as events_mod

    made = 0

    async def source():
        nonlocal made
        for n in range(10_000):
            made += 1
            yield {"type": "progress", "n": n}

    streams = events_mod.EventStreams()
    queue = streams.open()
    pump = asyncio.create_task(events_mod._pump(source(), queue))
    for _ in range(50):
        await asyncio.sleep(0)
    assert queue.qsize() == events_mod.STREAM_BUFFER and made <= events_mod.STREAM_BUFFER + 1
    await streams.shutdown()  # told to end even with a full buffer
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    assert items[-1] is None and len(items) == events_mod.STREAM_BUFFER
    pump.cancel()
    # a subscription that ends (a job's last state) ends its stream after every event, none dropped for the end
    queue = streams.open()
    pump = asyncio.create_task(events_mod._pump(source(), queue))
    got = []
    while (event := await queue.get()) is not None:
        got.append(event["n"])
    assert got == list(range(10_000))
    await pump


async def test_events_stream_all_jobs_and_unknown_job(bridge_client: Any) -> None:
    await wait_healthy(bridge_client)
    resp = await bridge_client.get("/events", params={"job": "nope"})
    assert resp.status == 404
    assert (await resp.json())["field"] == "job"
    resp = await bridge_client.get("/events?job=")  # a client's empty id is not every job's stream
    assert resp.status == 400 and (await resp.json())["field"] == "job"

    engine = bridge_client.app[ENGINE]
    resp = await bridge_client.get("/events")
    assert resp.status == 200
    ids: list[str] = []
    reader = asyncio.ensure_future(_read_events(
        resp, until=lambda k, p: p["job"]["id"] in ids and p["job"]["status"] == "completed"))
    await asyncio.sleep(0.1)
    job = await engine.submit("txt2img", SMALL_JOB)
    ids.append(job.id)
    events = await asyncio.wait_for(reader, timeout=30)
    resp.close()
    seen = [(k, p["job"]["status"]) for k, p in events if p["job"]["id"] == job.id]
    assert seen[-1] == ("status", "completed")
    assert ("progress", "running") in seen


async def test_settings_and_engine_keys(bridge_client: Any) -> None:
    app = bridge_client.app
    assert app[SETTINGS].comfyui_urls and app[ENGINE].backend_urls == app[SETTINGS].comfyui_urls


async def test_enabled_adapters_load_and_document_their_routes(bridge_factory: Any) -> None:
    from bridge.adapters import ENABLED

    client = await bridge_factory(adapters=list(ENABLED))
    spec = await (await client.get("/openapi.json")).json()
    core = {"/health", "/metrics", "/openapi.json", "/events"}
    assert set(spec["paths"]) > core
    undocumented = [f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m, op in ops.items()
                    if op["summary"] == f"{m.upper()} {p}"]
    assert not undocumented, f"handlers without a docstring summary: {undocumented}"


async def test_broken_adapter_is_named() -> None:
    from bridge.adapters import AdapterLoadError, setup_all

    app = web.Application()
    with pytest.raises(AdapterLoadError, match="'no_such_adapter'"):
        setup_all(app, ["no_such_adapter"])
    with pytest.raises(AdapterLoadError, match="not a module name"):
        setup_all(app, ["../etc"])


async def test_shutdown_ends_open_event_streams(bridge_client: Any) -> None:
    from bridge.app import STREAMS

    resp = await bridge_client.get("/events")
    assert resp.status == 200
    reader = asyncio.ensure_future(_read_events(resp))
    await asyncio.sleep(0.05)
    assert len(bridge_client.app[STREAMS]) == 1
    await bridge_client.app[STREAMS].shutdown()
    # Without this the server's graceful stop would wait its whole shutdown timeout on the stream.
    assert await asyncio.wait_for(reader, timeout=5) == []
    await asyncio.sleep(0.05)
    assert len(bridge_client.app[STREAMS]) == 0


async def test_a_client_that_stops_reading_is_cut_off(aiohttp_server: Any, monkeypatch: Any) -> None:
    # a stream whose client never reads waited on its write for good, holding the connection and the handler
    import socket

    from bridge import events as events_mod

    monkeypatch.setattr(events_mod, "WRITE_TIMEOUT", 0.5)
    ended = asyncio.Event()

    class Engine:
        async def subscribe(self, job_id):
            n = 0
            while True:
                n += 1
                yield {"type": "progress", "n": n, "pad": "x" * 65536}
                await asyncio.sleep(0)

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await events_mod.stream_events(request, Engine(), events_mod.EventStreams(), None,
                                                  on_unknown_job=lambda job: web.Response(status=404))
        finally:
            ended.set()

    app = web.Application()
    app.router.add_get("/events", handler)
    server = await aiohttp_server(app, host="127.0.0.1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")  # and never a read
    try:
        await asyncio.wait_for(ended.wait(), 30)  # the handler gave up on the write
        sock.settimeout(5)  # and the connection went with it: what was sent, then its end (a socket.timeout fails)
        with pytest.raises(ConnectionResetError):
            while await asyncio.to_thread(sock.recv, 1 << 20):
                pass
            raise ConnectionResetError("closed by the bridge")
    finally:
        sock.close()
