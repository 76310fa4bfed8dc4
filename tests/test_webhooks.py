"""Webhooks over the protocol double: signed Standard Webhooks messages verified with the `standardwebhooks`
package, retries after failures, delivery resumed after a restart, progress throttled, a slow receiver that holds
up neither jobs nor other receivers, every attempt listed at /jobs/{id}/webhooks, and the request field on each
dialect that takes it."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge.app import create_app
from bridge.keys import ENGINE
from tests.support.waiting import until, wait_healthy

pytestmark = pytest.mark.asyncio

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(autouse=True)
def loopback_receivers_allowed(request, monkeypatch):
    # The receivers here listen on 127.0.0.1, which the outbound policy refuses unless allowed (one test checks
    # exactly that refusal and opts out).
    if "refused" not in request.node.name:
        monkeypatch.setenv("BRIDGE_OUTBOUND_ALLOW", "127.0.0.1")


class Receiver:
    """A webhook receiver on a loopback port: records what it got; `answers` scripts its statuses."""

    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []
        self.answers: list[int] = []
        self.delay = 0.0
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.got.append({"headers": dict(request.headers), "body": body, "at": time.monotonic(),
                         "path": request.path})
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.answers.pop(0) if self.answers else 204)

    async def wait_for(self, n: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            assert time.monotonic() < deadline, f"only {len(self.got)} of {n} messages arrived"
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))


@pytest_asyncio.fixture
async def receiver(aiohttp_server):
    r = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", r.handle)
    server = await aiohttp_server(app)
    r.url = str(server.make_url("/hook"))
    r.server = server
    return r


def verified(message: dict[str, Any]) -> dict[str, Any]:
    """What a receiver does with the package: verify the signature and timestamp, get the payload."""
    return Webhook(SECRET).verify(message["body"], message["headers"])


async def finished(client, job_id: str) -> dict[str, Any]:
    for _ in range(500):
        job = await (await client.get(f"/jobs/{job_id}")).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("job did not finish")


async def settled(client, job_id: str, attempts: int) -> list[dict[str, Any]]:
    """The job's delivery log once its first delivery has `attempts` attempts recorded: the receiver has a message
    a moment before the bridge has written down the answer it got."""
    for _ in range(500):
        deliveries = (await (await client.get(f"/jobs/{job_id}/webhooks")).json())["deliveries"]
        if deliveries and len(deliveries[0]["attempts"]) >= attempts:
            return deliveries
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {attempts} attempts recorded: {deliveries}")


async def test_signed_completion_message_with_result_links(bridge_factory, receiver):
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET,
                                  public_url="https://pixart.example.com")
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 2,
                                                         "webhook": receiver.url})
    assert resp.status == 202, await resp.text()
    job_id = (await resp.json())["id"]
    await receiver.wait_for(1)
    message = receiver.got[0]
    payload = verified(message)
    assert payload["type"] == "job.completed" and payload["data"]["id"] == job_id
    assert message["headers"]["webhook-id"].startswith("msg_")
    link = payload["data"]["outputs"]["images"][0]
    assert link == f"https://pixart.example.com/jobs/{job_id}/outputs/images/0"
    img = await client.get(link.removeprefix("https://pixart.example.com"))
    assert img.status == 200 and img.content_type == "image/png" and (await img.read())[:4] == b"\x89PNG"
    # a tampered body fails verification: the signature covers id, timestamp and body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(message["body"].replace(b"completed", b"failed"), message["headers"])
    deliveries = await settled(client, job_id, 1)
    assert [(d["event"], d["status"], len(d["attempts"])) for d in deliveries] == [("job.completed", "delivered", 1)]
    assert deliveries[0]["attempts"][0]["status"] == 204


async def test_failed_attempts_are_retried_with_back_off(bridge_factory, receiver):
    receiver.answers = [500, 503]
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET, webhook_retry_base=0.2)
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                         "webhook": {"url": receiver.url,
                                                                     "events": ["job.completed"]}})
    job_id = (await resp.json())["id"]
    await receiver.wait_for(3)
    ids = {m["headers"]["webhook-id"] for m in receiver.got}
    assert len(ids) == 1  # the same message each time, so the receiver can de-duplicate
    gaps = [b["at"] - a["at"] for a, b in zip(receiver.got, receiver.got[1:])]
    assert gaps[0] >= 0.15 and gaps[1] >= gaps[0] * 1.2  # 0.2 s then about 0.4 s, with jitter
    deliveries = await settled(client, job_id, 3)
    assert [a["status"] for a in deliveries[0]["attempts"]] == [500, 503, 204]
    assert deliveries[0]["status"] == "delivered"


async def test_delivery_resumes_after_a_restart(bridge_settings, comfy_double, receiver, aiohttp_client):
    settings = bridge_settings(webhook_secret=SECRET, webhook_retry_base=0.3)
    receiver.answers = [500]
    first = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    resp = await first.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                        "webhook": receiver.url})
    job_id = (await resp.json())["id"]
    await receiver.wait_for(1)
    await first.close()  # the bridge stops with the delivery still pending
    await asyncio.sleep(0.4)
    assert len(receiver.got) == 1
    second = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    await receiver.wait_for(2)
    assert verified(receiver.got[1])["data"]["id"] == job_id
    deliveries = await settled(second, job_id, 2)
    assert deliveries[0]["status"] == "delivered" and len(deliveries[0]["attempts"]) == 2


async def test_slow_receiver_holds_up_neither_jobs_nor_other_receivers(bridge_factory, receiver, aiohttp_server):
    fast = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", fast.handle)
    fast_url = str((await aiohttp_server(app)).make_url("/fast"))
    receiver.delay = 3.0
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET, webhook_timeout=5)
    # the clock starts once the bridge has its backend: what is timed is the receivers, not the start-up (a full
    # run once took 3.1 s before the first job ran, with no message sent yet)
    await wait_healthy(client)
    started = time.monotonic()
    slow_ids = []
    for _ in range(3):
        resp = await client.post("/generate/text2img", json={"prompt": "a", "width": 64, "height": 64, "steps": 1,
                                                             "webhook": receiver.url})
        slow_ids.append((await resp.json())["id"])
    resp = await client.post("/generate/text2img", json={"prompt": "b", "width": 64, "height": 64, "steps": 1,
                                                         "webhook": fast_url})
    fast_id = (await resp.json())["id"]
    for job_id in [*slow_ids, fast_id]:
        assert (await finished(client, job_id))["status"] == "completed"
    jobs_done = time.monotonic() - started
    await fast.wait_for(1, timeout=5)
    # neither the jobs nor the other receiver waited for the slow one's 3 s, counted from the moment it had its
    # first message (the jobs after it ran meanwhile); the timeline says which waited if one did
    slow_from = receiver.got[0]["at"] - started
    timeline = (f"jobs done at {jobs_done:.3f} s, fast message at {fast.got[0]['at'] - started:.3f} s, slow ones "
                f"at {[round(g['at'] - started, 3) for g in receiver.got]}")
    assert jobs_done - slow_from < 2.5, timeline
    assert fast.got[0]["at"] - receiver.got[0]["at"] < 2.5, timeline
    assert time.monotonic() - started < 10, timeline


async def test_progress_events_are_throttled(bridge_factory, receiver, comfy_double):
    comfy_double.step_delay = 0.05
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET, webhook_progress_interval=0.2)
    resp = await client.post("/generate/text2img", json={"prompt": "a", "width": 64, "height": 64, "steps": 30,
                                                         "webhook": {"url": receiver.url,
                                                                     "events": ["job.progress", "job.completed"]}})
    job_id = (await resp.json())["id"]
    await finished(client, job_id)
    await asyncio.sleep(0.5)
    kinds = [verified(m)["type"] for m in receiver.got]
    progress = kinds.count("job.progress")
    assert kinds[-1] == "job.completed" and 2 <= progress <= 12  # 1.5 s of 30 steps at most every 0.2 s
    assert all(k in ("job.progress", "job.completed") for k in kinds)


async def test_global_receiver_hears_every_dialect(bridge_factory, receiver):
    from tests.support.imaging import solid_png_b64

    client = await bridge_factory(adapters=["jobs_api", "pixart_editor", "aleaart"], webhook_secret=SECRET,
                                  webhook_url=receiver.url)
    await client.post("/workflows/txt2img?wait=30", json={"parameters": {"width": 64, "height": 64, "steps": 1}})
    resp = await client.post("/api/pixel-generation/generate", json={
        "id": "hooked", "sketchData": solid_png_b64(32, 32), "width": 16, "height": 16, "useAI": False})
    assert resp.status == 200, await resp.text()
    await client.post("/generate-image", json={"prompt": "a cat", "steps": 1, "width": 64, "height": 64})
    await receiver.wait_for(3)
    dialects = sorted(verified(m)["data"]["meta"].get("dialect") or "" for m in receiver.got)
    assert len(dialects) == 3


async def test_editor_and_aleaart_requests_name_their_own_receiver(bridge_factory, receiver):
    from tests.support.imaging import solid_png_b64

    client = await bridge_factory(adapters=["pixart_editor", "aleaart"], webhook_secret=SECRET)
    resp = await client.post("/api/pixel-generation/generate", json={
        "id": "own-hook", "sketchData": solid_png_b64(32, 32), "width": 16, "height": 16, "useAI": False,
        "webhook": receiver.url + "/editor"})
    assert resp.status == 200, await resp.text()
    art = await client.post("/generate-image", json={"prompt": "a cat", "steps": 1, "width": 64, "height": 64,
                                                     "tokenId": "5", "webhook": {"url": receiver.url + "/alea",
                                                                                 "events": ["job.completed"]}})
    assert art.status == 200, await art.text()
    await receiver.wait_for(2)
    by_path = {m["path"]: verified(m) for m in receiver.got}
    assert set(by_path) == {"/hook/editor", "/hook/alea"}
    assert by_path["/hook/editor"]["type"] == "job.completed"
    assert by_path["/hook/editor"]["data"]["meta"]["client_id"] == "own-hook"
    assert by_path["/hook/alea"]["data"]["outputs"]["images"][0].endswith("/outputs/images/0")
    # the same checks as every dialect's: a private receiver is refused before any job exists
    bad = await client.post("/generate-image", json={"prompt": "a cat", "webhook": "http://10.0.0.1/x"})
    assert bad.status == 400 and (await bad.json())["field"] == "webhook"
    bad = await client.post("/api/pixel-generation/generate", json={
        "id": "bad-hook", "sketchData": solid_png_b64(8, 8), "width": 8, "height": 8, "webhook": "http://10.0.0.1/x"})
    assert bad.status == 400 and (await bad.json())["field"] == "webhook"


@pytest.mark.parametrize("path,body", [
    ("/generate/text2img", {"prompt": "a", "webhook": "ftp://x.example/y"}),
    ("/generate/text2img", {"prompt": "a", "webhook": {"url": "https://x.example/y", "events": ["job.nope"]}}),
    ("/workflows/txt2img", {"parameters": {}, "webhook": {"uri": "https://x.example/y"}}),
])
async def test_bad_webhook_field_is_400_naming_it(bridge_factory, path, body):
    client = await bridge_factory(adapters=["jobs_api"])
    resp = await client.post(path, json=body)
    assert resp.status == 400 and "webhook" in await resp.text()
    json.loads(await resp.text())


@pytest.mark.parametrize("tail", ["/hook\x00", ":0/hook"])
async def test_a_receiver_url_no_server_takes_is_400_naming_the_field(bridge_factory, comfy_double, receiver, tail):
    """A NUL in a receiver's URL passed the field's pattern: on PostgreSQL, which keeps no NUL in text, the write of
    the job's end failed on every try, so the job never ended in the store and each listing waited for it. Port 0
    was retried for BRIDGE_WEBHOOK_RETRY_FOR."""
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET)
    url = f"http://127.0.0.1{tail}" if tail.startswith(":") else receiver.url + tail
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                         "webhook": url})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "webhook", body
    assert comfy_double.prompts == []


async def test_secret_made_once_is_the_one_used_and_printed(bridge_settings, receiver, aiohttp_client, capsys):
    from bridge.__main__ import webhook_secret

    settings = bridge_settings()
    client = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    await client.post("/generate/text2img", json={"prompt": "a", "width": 64, "height": 64, "steps": 1,
                                                  "webhook": receiver.url})
    await receiver.wait_for(1)
    await client.close()
    secret = await asyncio.to_thread(webhook_secret, settings)  # the command line reads it, outside any loop
    assert secret.startswith("whsec_")
    assert Webhook(secret).verify(receiver.got[0]["body"], receiver.got[0]["headers"])["type"] == "job.completed"


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://10.1.2.3/hook",
                                 "http://169.254.169.254/latest", "http://[::1]:9/hook", "http://[::ffff:127.0.0.1]/"])
async def test_a_job_whose_receiver_is_on_a_refused_address_is_not_accepted(bridge_factory, comfy_double, url):
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET)
    before = len(comfy_double.prompts)
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                         "webhook": url})
    body = await resp.json()
    assert resp.status == 400 and body["field"] == "webhook", body
    assert "BRIDGE_OUTBOUND_ALLOW" in body["error"]
    assert len(comfy_double.prompts) == before  # nothing ran


async def test_a_global_receiver_on_a_refused_address_fails_its_delivery_at_once(bridge_factory, receiver):
    # The operator's own setting is not a request to refuse: the check happens where it always does, at delivery.
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET, webhook_url=receiver.url)
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1})
    job_id = (await resp.json())["id"]
    await finished(client, job_id)
    for _ in range(200):
        deliveries = (await (await client.get(f"/jobs/{job_id}/webhooks")).json())["deliveries"]
        if deliveries and deliveries[0]["status"] == "failed":
            break
        await asyncio.sleep(0.02)
    assert deliveries[0]["status"] == "failed" and len(deliveries[0]["attempts"]) == 1  # no retries
    error = deliveries[0]["attempts"][0]["error"]
    assert "127.0.0.1" in error and "BRIDGE_OUTBOUND_ALLOW" in error
    assert receiver.got == []  # nothing reached the loopback receiver


async def test_generate_request_webhook_covers_each_image_job(bridge_factory, receiver):
    client = await bridge_factory(adapters=["unified"], webhook_secret=SECRET, UNIFIED_BACKEND="sd15")
    resp = await client.post("/generate", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                "batch_size": 2, "webhook": receiver.url})
    answer = await resp.json()
    assert resp.status == 200, answer
    await receiver.wait_for(2)
    got = sorted(verified(m)["data"]["id"] for m in receiver.got)
    assert got == sorted(answer["job_ids"])
    bad = await client.post("/generate", json={"prompt": "a", "webhook": "ftp://x.example/y"})
    assert bad.status == 400 and (await bad.json())["field"].startswith("webhook")


async def test_the_message_about_a_jobs_end_is_written_in_the_transaction_that_writes_the_end(bridge_factory,
                                                                                               receiver):
    """Both or neither: a write of the end that fails after the message went in leaves no message behind, and the
    write tried again carries the same message (same id, so a receiver that saw nothing sees it once)."""
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET)
    store = client.app[ENGINE].store
    failures: list[list[str]] = []
    original_insert = store.save_delivery

    async def save_delivery(d):
        await original_insert(d)
        if not failures:
            failures.append([d.id])
            raise OSError("disk full")  # after the message is in: the transaction is rolled back

    store.save_delivery = save_delivery
    seen: list[tuple[str, list[str], list[str]]] = []
    original = store.save

    async def save(job, **kwargs):
        if not job.done:
            return await original(job, **kwargs)
        try:
            return await original(job, **kwargs)
        finally:
            stored = [d.id for d in await store.deliveries_for(job.id)]
            seen.append(((await store.load(job.id)).status, [d.id for d in kwargs["deliveries"]], stored))

    store.save = save
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                         "webhook": receiver.url})
    job_id = (await resp.json())["id"]
    await receiver.wait_for(1)
    (first_id,) = failures[0]
    assert seen[0] == ("running", [first_id], [])  # rolled back: neither the end nor its message
    assert seen[1] == ("completed", [first_id], [first_id])  # tried again: both, the same message
    assert verified(receiver.got[0])["data"]["id"] == job_id and receiver.got[0]["headers"]["webhook-id"] == first_id
    await asyncio.sleep(0.2)
    assert len(receiver.got) == 1


async def test_no_message_is_written_for_an_end_the_store_did_not_take(bridge_factory, receiver):
    """The store refuses the end (another replica owns the job now): its messages, which describe an end that was
    not written, are not written either, and nothing is sent."""
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET)
    store = client.app[ENGINE].store
    original = store.save
    refused: list[tuple[bool, int]] = []

    async def save(job, **kwargs):
        if job.done and not refused:
            await store._execute("UPDATE jobs SET owner = 'another-replica' WHERE id = ?", (job.id,))
            ok = await original(job, **kwargs)
            refused.append((ok, len(kwargs["deliveries"])))
            return ok
        return await original(job, **kwargs)

    store.save = save
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                         "webhook": receiver.url})
    body = await resp.json()
    assert resp.status == 202, body
    await until(lambda: bool(refused), 15, "the end's write")
    assert refused[0] == (False, 1)  # one message made, the end refused
    assert await store.deliveries_for(body["id"]) == []
    await asyncio.sleep(0.3)
    assert receiver.got == []


async def test_the_message_about_a_jobs_end_is_sent_after_the_end_is_written(bridge_factory, receiver):
    """A receiver that looks the job up when the message arrives finds it ended, however slow the write (here
    held back 0.2 s): the bridge sends the end message once the end is in the store."""
    client = await bridge_factory(adapters=["jobs_api"], webhook_secret=SECRET)
    store = client.app[ENGINE].store
    written: dict[str, float] = {}
    original = store.save

    async def save(job, **kwargs):
        if job.done:
            await asyncio.sleep(0.2)
        ok = await original(job, **kwargs)
        if job.done:
            written.setdefault(job.id, time.monotonic())
        return ok

    store.save = save
    resp = await client.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                         "webhook": receiver.url})
    job_id = (await resp.json())["id"]
    await receiver.wait_for(1)
    assert job_id in written and receiver.got[0]["at"] >= written[job_id]
    assert (await store.load(job_id)).status == "completed"


async def test_an_end_message_cut_off_by_a_stop_goes_out_at_the_next_start(bridge_settings, comfy_double, receiver,
                                                                          aiohttp_client):
    """A bridge stopped while it sends a job's end message leaves it due at once for the next start (not when its
    hold of an attempt's time plus 30 s runs out)."""
    settings = bridge_settings(webhook_secret=SECRET)
    receiver.delay = 5.0  # the first attempt is still waiting for an answer when the bridge stops
    first = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    resp = await first.post("/generate/text2img", json={"prompt": "a cat", "width": 64, "height": 64, "steps": 1,
                                                        "webhook": receiver.url})
    job_id = (await resp.json())["id"]
    await receiver.wait_for(1)
    await first.close()
    receiver.delay = 0.0
    second = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    await receiver.wait_for(2, timeout=8)  # the hold would have kept it back for 40 s
    assert verified(receiver.got[1])["data"]["id"] == job_id
    deliveries = await settled(second, job_id, 1)
    assert deliveries[0]["status"] == "delivered" and deliveries[0]["attempts"][-1]["status"] == 204


async def test_outcomes_are_written_together_and_a_read_or_a_stop_writes_them_at_once(tmp_path, monkeypatch):
    """Attempts that end close together are recorded in one transaction; the log read meanwhile, or a stop, writes
    what is queued first, so neither shows a delivered message as pending."""
    from bridge import webhooks as wh
    from bridge.store import Job, open_store

    monkeypatch.setattr(wh, "SETTLE_DELAY", 0.5)
    store = open_store(str(tmp_path / "jobs.sqlite3"), tmp_path)
    await store.open()
    batches: list[list[str]] = []
    original = store.settle_deliveries

    async def settle(deliveries):
        batches.append(sorted(d.job_id for d in deliveries))
        await original(deliveries)

    store.settle_deliveries = settle
    sent: list[str] = []

    async def send(url, body, headers, timeout):
        sent.append(json.loads(body)["data"]["id"])
        return 204

    async def describe(job):
        return {"id": job.id}

    hooks = wh.Webhooks(store, SECRET, send, describe=describe, everyone=wh.Receiver("http://r.example/hook"))

    async def end(i: int) -> str:
        j = Job(id=f"j{i}", workflow="w", workflow_version=1, params={})
        await store.insert(j, owner="me", lease=30)
        j.status = "completed"
        assert await store.save(j, owner="me", lease=30, deliveries=await hooks.end_messages(j))
        hooks.end_written(j, True)
        return j.id

    try:
        ids = [await end(i) for i in range(4)]
        await until(lambda: len(sent) == 4, 5, "four messages")
        assert batches == []  # queued, not yet written
        assert [d["status"] for d in await hooks.deliveries("j0")] == ["delivered"]  # a read writes them first
        assert batches == [ids]
        later = [await end(i) for i in range(4, 7)]
        await until(lambda: len(sent) == 7, 5, "three more")
        await hooks.stop()
        assert batches[1:] == [later]
        assert {(await store.deliveries_for(i))[0].status for i in later} == {"delivered"}
    finally:
        await hooks.stop()
        await store.close()


async def _webhooks(tmp_path, send, policy, database: str = ""):
    """A store (`database`, or an SQLite file) and the webhooks of a bridge that sends with `send` (no HTTP), for
    tests of the delivery itself."""
    from bridge import webhooks as wh
    from bridge.store import open_store

    store = open_store(database or str(tmp_path / "jobs.sqlite3"), tmp_path)
    await store.open()

    async def describe(job):
        return {"id": job.id}

    return store, wh.Webhooks(store, SECRET, send, describe=describe, policy=policy)


async def _ended(store, hooks, job_id: str, url: str, client: str | None = None) -> None:
    """A job with its own receiver ends here: its message is written with the end and sent."""
    from bridge.store import Job

    j = Job(id=job_id, workflow="w", workflow_version=1, params={}, meta={"webhook": url, "client": client})
    await store.insert(j, owner="me", lease=30)
    j.status = "completed"
    assert await store.save(j, owner="me", lease=30, deliveries=await hooks.end_messages(j))
    hooks.end_written(j, True)


def _hanging_receivers():
    """(answer, sent, send): `send` records each URL and, for a host named "hangs...", waits until `answer` is set."""
    answer = asyncio.Event()
    sent: list[str] = []

    async def send(url, body, headers, timeout):
        sent.append(url)
        if "hangs" in url.lower():
            await answer.wait()
        return 204

    return answer, sent, send


async def test_messages_waiting_for_a_hanging_receiver_leave_the_bridges_slots_to_the_others(tmp_path):
    """Messages to a receiver that never answers wait for a slot of their host without holding one of the bridge's
    slots meanwhile: with 12 of them and 8 slots, another receiver's message still goes out at once (it waited for
    the hanging one's timeouts, 28.9 s measured with 130 messages and a 2 s timeout)."""
    from bridge.webhooks import Policy

    answer, sent, send = _hanging_receivers()
    store, hooks = await _webhooks(tmp_path, send, Policy(concurrency=8, per_host=4))
    try:
        for i in range(12):
            await _ended(store, hooks, f"h{i}", "http://hangs.example/hook")
        await _ended(store, hooks, "other", "http://answers.example/hook")
        await until(lambda: "http://answers.example/hook" in sent, 3, "the other receiver's message")
        assert sent.count("http://hangs.example/hook") == 4  # the rest wait for their host
    finally:
        answer.set()
        await hooks.stop()
        await store.close()


async def test_the_bound_per_host_counts_every_port_of_a_host_name(tmp_path):
    """One client naming 16 ports of one server has 4 attempts in flight to it, not 16 (which would take a quarter
    of the bridge's slots, and with more ports all of them)."""
    from bridge.webhooks import Policy

    answer, sent, send = _hanging_receivers()
    store, hooks = await _webhooks(tmp_path, send, Policy())
    try:
        for port in range(8000, 8016):
            await _ended(store, hooks, f"p{port}", f"http://Hangs.example:{port}/hook")
        await _ended(store, hooks, "other", "http://answers.example/hook")
        # the attempts start in order: once the last one is sent, each earlier one has sent or waits for its host
        await until(lambda: "http://answers.example/hook" in sent, 3, "the other receiver's message")
        assert len(sent) - 1 == 4, sent
    finally:
        answer.set()
        await hooks.stop()
        await store.close()


async def test_the_bound_per_client_counts_every_host_it_names_and_holds_no_slot_for_an_idle_one(tmp_path):
    """One client naming 12 hanging host names has 4 attempts in flight (per_client), not 12 (each host has a bound
    of its own: made-up names took every one of the bridge's slots, and another client's message waited for their
    timeouts), whether the message is sent as its job ends or claimed from the store (a retry, another replica's, a
    restart's: the client read from the job's row); another client's messages go out at once. Once nothing waits,
    no slot of a host or a client is kept (one per name ever seen grew with each name made up)."""
    import time

    from bridge.store import Delivery, Job
    from bridge.webhooks import Policy

    answer, sent, send = _hanging_receivers()
    store, hooks = await _webhooks(tmp_path, send, Policy(concurrency=8, per_host=4, per_client=4))
    try:
        for i in range(6):
            await _ended(store, hooks, f"h{i}", f"http://hangs{i}.example/hook", client="mallory")
        for i in range(6, 12):  # recorded, then claimed by the delivery loop
            await store.insert(Job(id=f"h{i}", workflow="w", workflow_version=1, params={}, meta={"client": "mallory"}),
                               owner="me", lease=30)
            await store.save_delivery(Delivery(id=f"d{i}", job_id=f"h{i}", url=f"http://hangs{i}.example/hook",
                                               event="job.completed", payload="{}", created_at=time.time(),
                                               next_at=time.time()))
        await _ended(store, hooks, "other", "http://answers.example/hook", client="alice")
        loop = asyncio.create_task(hooks.run())
        await until(lambda: sent.count("http://answers.example/hook") == 1, 3, "the other client's message")
        await until(lambda: hooks._clients.held.get("mallory", (None, [0]))[1][0] == 12, 3,
                    "mallory's twelve messages in flight or waiting")
        assert sum("hangs" in u for u in sent) == 4, sent
        answer.set()
        await until(lambda: sum("hangs" in u for u in sent) == 12, 5, "every hanging message once answered")
        await until(lambda: not hooks._clients.held and not hooks._hosts.held, 3, "no slot kept")
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    finally:
        answer.set()
        await hooks.stop()
        await store.close()


@contextlib.asynccontextmanager
async def _slow_receiver(tmp_path):
    """Webhooks (progress every event) whose one receiver takes each message and answers none while the test runs:
    (store, hooks, the types of the messages sent)."""
    from bridge.webhooks import Policy

    answer = asyncio.Event()
    sent: list[str] = []

    async def send(url, body, headers, timeout):
        sent.append(json.loads(body)["type"])
        await answer.wait()
        return 204

    store, hooks = await _webhooks(tmp_path, send, Policy(progress_interval=0))
    loop = asyncio.create_task(hooks.run())
    try:
        yield store, hooks, sent
    finally:
        answer.set()
        await hooks.stop()
        await loop
        await store.close()


@contextlib.asynccontextmanager
async def _backlog(tmp_path, count: int, database: str = "", *, spread: bool = False, times_out: bool = False):
    """(hooks, store, answer, sent): `count` messages to a receiver that hangs until `answer` is set, due in the
    store of webhooks whose delivery loop runs (its first round not yet run). `spread`: each message the end of a
    job of its own, to a host and for a client of its own (default policy); else progress of one job, 4 per host.
    `times_out`: each attempt gives up after 0.3 s until `answer` is set, as the bridge's sender does after
    BRIDGE_WEBHOOK_TIMEOUT (retried 0.2 s after, doubling)."""
    from bridge import webhooks as wh
    from bridge.store import Delivery, Job

    answer, sent, send = _hanging_receivers()
    if times_out:
        hangs = send

        async def send(url, body, headers, timeout):
            return await asyncio.wait_for(hangs(url, body, headers, timeout), 0.3)

    policy = wh.Policy() if spread else wh.Policy(per_host=4, retry_base=0.2 if times_out else 5.0)
    store, hooks = await _webhooks(tmp_path, send, policy, database)
    loop = None
    try:
        for i in range(count if spread else 1):
            await store.insert(Job(id=f"h{i}" if spread else "h", workflow="w", workflow_version=1, params={},
                                   meta={"client": f"c{i}"} if spread else {}), owner="me", lease=30)
        for i in range(count):
            await store.save_delivery(Delivery(
                id=f"d{i}", job_id=f"h{i}" if spread else "h",
                url=f"http://hangs{i}.example/hook" if spread else "http://hangs.example/hook",
                event="job.completed" if spread else "job.progress", payload="{}", created_at=time.time(),
                next_at=time.time()))
        loop = asyncio.create_task(hooks.run())
        yield hooks, store, answer, sent
    finally:
        answer.set()
        if loop is not None:
            loop.cancel()
        await hooks.stop()
        await store.close()


async def _until_delivered(hooks, store, count: int, timeout: float) -> None:
    async def delivered() -> int:
        await hooks.write_settled()
        return sum(d.status == "delivered" for d in await store.deliveries_for("h"))

    deadline = time.monotonic() + timeout
    while await delivered() < count:
        assert time.monotonic() < deadline, f"{await delivered()} of {count} delivered"
        await asyncio.sleep(0.1)


async def test_a_message_that_waited_for_its_slot_past_its_claim_is_still_sent(tmp_path, monkeypatch):
    """A message waiting for a hanging host's slot longer than its claim's hold (BRIDGE_WEBHOOK_TIMEOUT + 30 s, 40 s
    by default: the 17th message to a host that never answers) was claimed again by the delivery loop, which passed
    over it as in flight here; when its slot came its own claim had moved on, it took itself for another replica's
    and gave up, and stayed "in flight" for good: never sent by this bridge."""
    from bridge import webhooks as wh

    monkeypatch.setattr(wh.Webhooks, "_hold", property(lambda self: 0.5))
    async with _backlog(tmp_path, 12) as (hooks, store, answer, sent):
        await until(lambda: sent.count("http://hangs.example/hook") == 4, 3, "four messages sent")
        await asyncio.sleep(1.5)  # the claims of the eight waiting ran out and were taken again
        answer.set()
        await _until_delivered(hooks, store, 12, 10)


async def test_messages_for_a_hanging_receiver_wait_in_the_store_past_a_bound(tmp_path, monkeypatch):
    """Due messages for a receiver that never answers are held in memory up to WAITING_PER_KEY (every one of them
    was: 5,000 took 42.6 MB); the others are given back to the store, due again a moment later, and all go out once
    the receiver answers. Another receiver's message goes out meanwhile."""
    from bridge import webhooks as wh

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 16)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.3)
    monkeypatch.setattr(wh.Webhooks, "_hold", property(lambda self: 1.0))  # claims run out after a second
    async with _backlog(tmp_path, 100) as (hooks, store, answer, sent):
        await until(lambda: len(hooks._tasks) == 16, 3, "16 messages in memory")
        await asyncio.sleep(1.5)  # claims ran out and were taken again meanwhile
        assert len(hooks._tasks) == 16 and sent.count("http://hangs.example/hook") == 4
        await _ended(store, hooks, "other", "http://answers.example/hook")
        await until(lambda: "http://answers.example/hook" in sent, 3, "the other receiver's message")
        answer.set()
        await _until_delivered(hooks, store, 100, 20)
        assert sent.count("http://hangs.example/hook") == 100  # each once


def _counting_claims(store) -> dict[str, int]:
    """How often the store's delivery claims have taken each message, from now on."""
    claims: dict[str, int] = {}
    claim = store.claim_deliveries

    async def counted(now, limit, hold, skip=()):
        found = await claim(now, limit, hold=hold, skip=skip)
        for d in found:
            claims[d.id] = claims.get(d.id, 0) + 1
        return found

    store.claim_deliveries = counted
    return claims


@pytest.mark.parametrize("job_database", ["sqlite", "postgresql"], indirect=True)
async def test_messages_past_the_bound_are_given_back_soon_and_not_claimed_every_round(tmp_path, monkeypatch,
                                                                                       job_database):
    """A message past the bound on waiting stayed claimed by this bridge for its whole hold (BRIDGE_WEBHOOK_TIMEOUT
    + 30 s, 40 s by default), unsent and kept from every other replica, then was claimed and passed over again. It
    is given back, due again PASS_BACK_DELAY later: not at once, or the delivery loop would claim and pass over the
    same messages every round (each 50 ms)."""
    from bridge import webhooks as wh

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 4)
    async with _backlog(tmp_path, 10, job_database) as (hooks, store, answer, sent):
        claims = _counting_claims(store)
        await until(lambda: len(sent) == 4, 3, "four messages sent")
        await asyncio.sleep(1.0)
        passed = [d for d in await store.deliveries_for("h") if d.id not in hooks._in_flight]
        assert len(passed) == 6 and all(claims[d.id] == 1 for d in passed), {d.id: claims[d.id] for d in passed}
        now = time.time()
        assert all(now < d.next_at <= now + wh.PASS_BACK_DELAY for d in passed), [d.next_at - now for d in passed]


def _give_backs(store, hooks) -> list[tuple[float, float]]:
    """(when, due again at) of each give-back from now on (not an attempt's taking its own message again)."""
    given: list[tuple[float, float]] = []
    give_back = store.reclaim_deliveries

    async def recorded(held, due):
        if not any(i in hooks._in_flight for i, _ in held):
            given.append((time.time(), due))
        return await give_back(held, due)

    store.reclaim_deliveries = recorded
    return given


def _delays(given: list[tuple[float, float]]) -> list[float]:
    return [due - at for at, due in given]


def _counting_give_backs(store) -> list[int]:
    """The rows each statement that moves messages' due times on (a give-back) changes, from now on."""
    counts: list[int] = []
    execute = store._execute

    async def counted(sql, args=()):
        changed = await execute(sql, args)
        if sql.startswith("UPDATE webhook_deliveries SET next_at = ?") and "AND id IN" in sql:  # not an advance
            counts.append(changed)
        return changed

    store._execute = counted
    return counts


@pytest.mark.parametrize("job_database", ["sqlite", "postgresql"], indirect=True)
async def test_a_rounds_passed_over_messages_are_given_back_in_one_statement(tmp_path, monkeypatch, job_database):
    """Each message past the bound was given back with an UPDATE of its own, every few seconds for as long as its
    receiver hangs: 5,232 writes in 12 s for a backlog of 2,000. A round's are given back together."""
    from bridge import webhooks as wh

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 4)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.3)
    async with _backlog(tmp_path, 60, job_database) as (hooks, store, answer, sent):
        counts = _counting_give_backs(store)
        await until(lambda: len(counts) >= 2, 3, "two rounds given back")
        assert counts[:2] == [56, 56], counts  # all but the four in memory, each time in one statement


async def test_a_receiver_that_stays_away_is_asked_about_less_and_less_often(tmp_path, monkeypatch):
    """While a receiver hangs, its messages past the bound came back due every PASS_BACK_DELAY, each claimed and given
    back again for as long as it hung; the delay grows with the time the bound has held without an answer, up to a
    claim's hold, and the messages all go out, once each, soon after the receiver answers. Attempts that time out
    are no answer: their ends, which leave room under the bound for a moment, reset the delay each time when it
    followed the bound alone (it never passed 0.72 s of a 2 s hold with a sender giving up after 0.6 s)."""
    from bridge import webhooks as wh

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 4)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.2)
    monkeypatch.setattr(wh.Webhooks, "_hold", property(lambda self: 2.0))
    async with _backlog(tmp_path, 30, times_out=True) as (hooks, store, answer, sent):
        claims, given = _counting_claims(store), _give_backs(store, hooks)
        await until(lambda: len(sent) == 4, 3, "four messages sent")
        await asyncio.sleep(3.0)
        passed = [d for d in await store.deliveries_for("h") if not d.attempts and d.id not in hooks._in_flight]
        # at every PASS_BACK_DELAY each was claimed 15 times in these 3 s; growing: 0.2, 0.2, 0.4, 0.8, 1.6 s apart
        assert len(passed) >= 10 and max(claims[d.id] for d in passed) <= 7, sorted(claims.values())
        delays = _delays(given)
        assert delays[0] < 0.25 and 1.0 < max(delays) <= 2.0, delays  # up to a hold
        answer.set()
        # an answer resets the delay: with it grown to the hold while the host answered, four messages went out per
        # hold (24 in 10 s here); reset, the 30 take about 1.4 s once those given back last are due
        await _until_delivered(hooks, store, 30, 10)
        assert all([a["status"] for a in d.attempts].count(204) == 1 for d in await store.deliveries_for("h"))


async def test_messages_given_back_while_a_receiver_hung_are_due_soon_once_it_answers(tmp_path, monkeypatch):
    """Messages given back with a grown delay kept it once their receiver answered again: the backlog waited out up
    to a claim's hold (40 s by default) with the receiver back. The first answer moves the due times they were given
    back with to PASS_BACK_DELAY after it."""
    from bridge import webhooks as wh

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 4)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.2)
    monkeypatch.setattr(wh.Webhooks, "_hold", property(lambda self: 4.0))
    async with _backlog(tmp_path, 30, times_out=True) as (hooks, store, answer, sent):
        give_backs = _give_backs(store, hooks)
        await until(lambda: any(due - at > 1.5 for at, due in give_backs), 8, "a give-back 1.5 s ahead")
        answer.set()
        await until(lambda: "host hangs.example" not in hooks._bound_since, 5, "an answer")
        answered = time.time()
        assert max(due for _, due in give_backs) > answered + 1.0, give_backs  # without the move, due after that
        waiting = await _due_within(hooks, store, wh.PASS_BACK_DELAY, 0.8, untried=True)
        assert waiting, "no message given back was left waiting"
        await _until_delivered(hooks, store, 30, 10)
        assert all([a["status"] for a in d.attempts].count(204) == 1 for d in await store.deliveries_for("h"))


async def _due_within(hooks, store, limit: float, timeout: float, *, untried: bool = False) -> list[float]:
    """Wait until no pending message of job "h" that waits in the store (never attempted, with `untried`) is due more
    than `limit` seconds ahead; returns how far ahead each is then."""
    deadline = time.monotonic() + timeout
    while True:
        await hooks.write_settled()
        waiting = [d.next_at - time.time() for d in await store.deliveries_for("h") if d.status == "pending"
                   and d.id not in hooks._in_flight and not (untried and d.attempts)]
        if max(waiting, default=0) <= limit:
            return waiting
        assert time.monotonic() < deadline, waiting
        await asyncio.sleep(0.05)


async def test_an_answer_while_a_give_back_is_written_moves_it_too(tmp_path, monkeypatch):
    """A receiver that answers while the loop writes a long give-back back: the key was gone by the time the group
    was recorded, so those messages kept the long delay (up to a hold) with the receiver back."""
    from bridge import webhooks as wh
    from bridge.store import Delivery, Job

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 1)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.2)
    monkeypatch.setattr(wh.Webhooks, "_hold", property(lambda self: 4.0))
    answer, sent, send = _hanging_receivers()
    store, hooks = await _webhooks(tmp_path, send, wh.Policy(per_host=1))
    await store.insert(Job(id="h", workflow="w", workflow_version=1, params={}), owner="me", lease=30)
    for i in range(6):
        await store.save_delivery(Delivery(id=f"d{i}", job_id="h", url="http://hangs.example/hook",
                                           event="job.progress", payload="{}", created_at=time.time(),
                                           next_at=time.time()))
    give_back = store.reclaim_deliveries

    async def answered_meanwhile(held, due):
        if not any(i in hooks._in_flight for i, _ in held) and due - time.time() > 1.5 and not answer.is_set():
            answer.set()
            await asyncio.sleep(0.05)  # a store's round trip, during which the attempt gets its answer
        return await give_back(held, due)

    store.reclaim_deliveries = answered_meanwhile
    loop = asyncio.create_task(hooks.run())
    try:
        await until(answer.is_set, 10, "a give-back 1.5 s ahead")
        await _due_within(hooks, store, wh.PASS_BACK_DELAY, 0.8)  # or sent already
    finally:
        answer.set()
        await hooks.stop()
        await loop
        await store.close()


async def test_another_host_of_the_client_answering_leaves_a_hanging_hosts_backlog_waiting(tmp_path, monkeypatch):
    """A give-back's due time was remembered under every bound of its messages, the client's too: each answer from
    another, healthy host of the same client moved the hanging host's whole backlog to PASS_BACK_DELAY ahead, to be
    claimed and given back again (306-364 give-backs of its messages in 6 s against 59-130 without that host). Only
    once no bound that held them is left unanswered do they move."""
    from bridge import webhooks as wh
    from bridge.store import Delivery, Job

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 4)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.2)
    monkeypatch.setattr(wh.Webhooks, "_hold", property(lambda self: 4.0))

    async def send(url, body, headers, timeout):
        if "hangs" in url:
            await asyncio.sleep(0.3)
            raise asyncio.TimeoutError
        return 204

    store, hooks = await _webhooks(tmp_path, send, wh.Policy(per_host=4, retry_base=0.2))
    await store.insert(Job(id="h", workflow="w", workflow_version=1, params={}, meta={"client": "cX"}), owner="me",
                       lease=30)
    for i in range(40):
        await store.save_delivery(Delivery(id=f"a{i}", job_id="h", url="http://hangs.example/hook",
                                           event="job.progress", payload="{}", created_at=time.time(),
                                           next_at=time.time()))
    gone_back = _give_backs(store, hooks)
    loop = asyncio.create_task(hooks.run())
    try:
        await until(lambda: any(due - at > 1.5 for at, due in gone_back), 8, "a give-back 1.5 s ahead")
        # the client's bound has room again (as when one of its attempts ends): its message to a healthy host goes
        monkeypatch.setattr(wh.Webhooks, "_bound", staticmethod(lambda key: 4 if key.startswith("host") else 10**6))
        await store.save_delivery(Delivery(id="b", job_id="h", url="http://ok.example/hook", event="job.progress",
                                           payload="{}", created_at=time.time(), next_at=time.time()))
        hooks._wake.set()

        async def delivered() -> bool:
            await hooks.write_settled()
            return any(d.id == "b" and d.status == "delivered" for d in await store.deliveries_for("h"))

        deadline = time.monotonic() + 5
        while not await delivered():
            assert time.monotonic() < deadline, "the healthy host's message was not delivered"
            await asyncio.sleep(0.05)
        later = [d.next_at - time.time() for d in await store.deliveries_for("h")
                 if d.id.startswith("a") and d.status == "pending" and not d.attempts and d.id not in hooks._in_flight]
        assert later and max(later) > 1.0, later  # still waiting the delay their own host's silence earned
    finally:
        await hooks.stop()
        await loop
        await store.close()


async def test_one_receivers_answer_moves_its_own_given_back_messages_only():
    """Give-backs were grouped by due time alone: two receivers silent for a hold or more both came out at now + hold,
    one due time remembered for both, and when one answered its messages kept waiting for the other's. Each group of
    keys now has a due time of its own."""
    from bridge import webhooks as wh
    from bridge.store import Delivery

    class Store:  # what the give-back and an attempt's outcome need of a store
        shared = False
        advanced: list[list[float]] = []

        async def reclaim_deliveries(self, held, due):
            return len(held)

        async def advance_deliveries(self, due, to):
            self.advanced.append(sorted(due))
            return len(due)

        async def settle_deliveries(self, batch):
            pass

    async def send(url, body, headers, timeout):
        return 204

    async def describe(job):
        return {}

    store = Store()
    hooks = wh.Webhooks(store, SECRET, send, describe=describe)
    now = time.time()

    def message(i: str, host: str) -> Delivery:
        return Delivery(id=i, job_id="j", url=f"http://{host}/hook", event="job.progress", payload="{}",
                        created_at=now, next_at=now + hooks._hold)

    for host in ("a.example", "b.example"):
        hooks._bound_since[f"host {host}"] = now - 3 * hooks._hold  # both silent past a hold: the same delay
        hooks._waiting[f"host {host}"] = wh.WAITING_PER_KEY  # their bounds still full
    hooks._passed_over = [message("a1", "a.example"), message("b1", "b.example")]
    await hooks._pass_back()
    (due_a,) = [t for t, keys in hooks._given_back.items() if keys == {"host a.example"}]
    (due_b,) = [t for t, keys in hooks._given_back.items() if keys == {"host b.example"}]
    assert due_a != due_b
    await hooks._attempt(message("a2", "a.example"))  # host a answers
    await hooks._pass_back()
    assert store.advanced == [[due_a]] and list(hooks._given_back) == [due_b]
    await hooks.stop()


async def test_what_the_delivery_loop_remembers_per_job_and_key_is_bounded(tmp_path, monkeypatch):
    """Per (job, receiver) last progress times and per key bound times are forgotten in time: a job deleted before
    its end left its progress time for good (at most REMEMBERED kept, the oldest forgotten first), and a key's
    bound time goes once none of its messages waits here and a hold has passed (one still waiting keeps it)."""
    from bridge import webhooks as wh
    from bridge.store import Job

    monkeypatch.setattr(wh, "REMEMBERED", 3)
    store, hooks = await _webhooks(tmp_path, _hanging_receivers()[2], wh.Policy())
    try:
        for i in range(5):
            hooks.on_event("progress", Job(id=f"j{i}", workflow="w", workflow_version=1, params={}, status="running",
                                           meta={"webhook": {"url": "http://r.example/hook",
                                                             "events": ["job.progress"]}}))
        await hooks.flush()
        assert [job for job, _ in hooks._last_progress] == ["j2", "j3", "j4"]
        old = time.time() - hooks._hold - 1
        hooks._waiting["host busy.example"] = 1
        hooks._bound_since = {"host gone.example": old, "host busy.example": old, "host new.example": time.time()}
        await hooks._pass_back()
        assert sorted(hooks._bound_since) == ["host busy.example", "host new.example"]
    finally:
        await hooks.stop()
        await store.close()


@pytest.mark.parametrize("job_database", ["postgresql"], indirect=True)
async def test_messages_past_the_bound_go_out_through_another_replica(tmp_path, monkeypatch, job_database):
    """Another replica sharing the store sends what this one passed over, rather than waiting for this one's
    claims to run out; with a shared store (replicas share PostgreSQL, never SQLite) the give-back's delay does not
    grow, since the other replica takes the messages only as they come due. The replica that gave them back leaves
    them to the others a while (SHARED_POLL) after they come due: it woke then as they did and won them back about
    every other time, and every time from a replica a moment slower (here its claims 0.15 s late): that one never
    got them. Alone, it takes them again after that while, without spinning meanwhile."""
    from bridge import webhooks as wh
    from bridge.store import open_store

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 4)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.3)
    monkeypatch.setattr(wh, "SHARED_POLL", 0.5)
    async with _backlog(tmp_path, 10, job_database) as (hooks, store, answer, sent):
        given, claims = _give_backs(store, hooks), _counting_claims(store)
        rounds = []
        next_due = store.next_delivery_at

        async def counted(skip=()):
            rounds.append(time.monotonic())
            return await next_due(skip=skip)

        store.next_delivery_at = counted
        await until(lambda: len(sent) == 4, 3, "four messages sent")
        passed = [f"d{i}" for i in range(10) if f"d{i}" not in hooks._in_flight]
        # alone: claimed again after 0.3 + 0.5 s, not every round meanwhile (every 0.3 s, as they came due)
        await until(lambda: all(claims.get(i, 0) >= 2 for i in passed), 5, "each passed-over message claimed again")
        await asyncio.sleep(0.4)
        assert len(passed) == 6 and all(claims[i] == 2 for i in passed), claims
        assert len(rounds) <= 10, len(rounds)  # a round at most every SHARED_POLL, and one at each due time
        other_sent: list[str] = []

        async def send(url, body, headers, timeout):
            other_sent.append(headers["webhook-id"])
            return 204

        async def describe(job):
            return {"id": job.id}

        other_store = open_store(job_database, tmp_path)
        await other_store.open()
        claim = other_store.claim_deliveries

        async def later(now, limit, hold, skip=()):
            await asyncio.sleep(0.15)
            return await claim(now, limit, hold=hold, skip=skip)

        other_store.claim_deliveries = later
        other = wh.Webhooks(other_store, SECRET, send, describe=describe, policy=wh.Policy(per_host=4))
        loop = asyncio.create_task(other.run())
        try:
            await until(lambda: len(other_sent) == 6, 5, "the six passed over, sent by the other replica")
        finally:
            await other.stop()
            await loop
            await other_store.close()
        assert len(sent) == 4 and len(set(other_sent)) == 6
        assert max(claims[i] for i in passed) <= 3, claims  # not won back from the other replica
        assert given and max(_delays(given)) <= 0.3, given


async def test_messages_wait_in_memory_up_to_a_bound_in_all(tmp_path, monkeypatch):
    """WAITING_IN_ALL bounds the messages held in memory whatever their hosts and clients (each under its own
    bound), claimed by the delivery loop or sent as their job's end is written alike; the others are given back to
    the store and go out, once each, when there is room."""
    from bridge import webhooks as wh

    monkeypatch.setattr(wh, "WAITING_IN_ALL", 8)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.3)
    async with _backlog(tmp_path, 10, spread=True) as (hooks, store, answer, sent):  # each its own host and client
        await until(lambda: len(sent) >= 8, 3, "eight messages sent")
        for i in range(10, 13):
            await _ended(store, hooks, f"h{i}", f"http://hangs{i}.example/hook", client=f"c{i}")
        await asyncio.sleep(0.5)
        assert len(sent) == 8 and len(hooks._in_flight) == 8, sent
        answer.set()
        await until(lambda: len(sent) == 13, 5, "every message once there was room")
        await asyncio.sleep(0.5)
        assert sorted(sent) == sorted(f"http://hangs{i}.example/hook" for i in range(13))


async def test_the_bound_per_key_holds_for_messages_sent_as_their_jobs_end_is_written(tmp_path, monkeypatch):
    """Messages sent as their job's end is written, not claimed by the delivery loop, count against
    WAITING_PER_KEY too: past it they are given back to the store, and go out, once each, when the host answers."""
    from bridge import webhooks as wh

    monkeypatch.setattr(wh, "WAITING_PER_KEY", 4)
    monkeypatch.setattr(wh, "PASS_BACK_DELAY", 0.3)
    answer, sent, send = _hanging_receivers()
    store, hooks = await _webhooks(tmp_path, send, wh.Policy(per_host=2))
    loop = asyncio.create_task(hooks.run())
    try:
        for i in range(10):
            await _ended(store, hooks, f"h{i}", "http://hangs.example/hook")
        await until(lambda: len(sent) >= 2, 3, "two messages sent")
        await asyncio.sleep(0.5)
        assert len(hooks._in_flight) == 4 and len(sent) == 2, sent  # two sent, two waiting for the host
        answer.set()
        await until(lambda: len(sent) == 10, 5, "every message once the host answered")
        await hooks.write_settled()
        for i in range(10):
            assert [(d.status, len(d.attempts)) for d in await store.deliveries_for(f"h{i}")] == [("delivered", 1)]
    finally:
        answer.set()
        loop.cancel()
        await hooks.stop()
        await store.close()


async def test_a_retry_keeps_its_time_when_its_message_is_claimed_again_before_the_outcome_is_written(tmp_path,
                                                                                                    monkeypatch):
    """A failed attempt's hold can run out before its outcome is written (a slow store; a big message signed in a
    busy pool): the delivery loop claimed the message again, and that claim's hold replaced the retry's time in the
    outcome, so the retry came when the hold ran out (here after 40 s rather than a back-off of about 1,000 s)."""
    from bridge import webhooks as wh
    from bridge.store import Delivery, Job

    monkeypatch.setattr(wh, "SETTLE_DELAY", 30)  # the outcome waits, written below

    async def send(url, body, headers, timeout):
        return 500

    store, hooks = await _webhooks(tmp_path, send, wh.Policy(retry_base=1000))
    try:
        await store.insert(Job(id="h", workflow="w", workflow_version=1, params={}), owner="me", lease=30)
        await store.save_delivery(Delivery(id="d", job_id="h", url="http://fails.example/hook", event="job.completed",
                                           payload="{}", created_at=time.time(), next_at=time.time()))
        (claimed,) = await store.claim_deliveries(time.time(), 10, hold=hooks._hold)
        hooks._start(claimed)
        await until(lambda: hooks._settling, 3, "the failed attempt's outcome")
        # the hold runs out meanwhile, and the loop claims the message again
        (again,) = await store.claim_deliveries(time.time() + hooks._hold + 1, 10, hold=hooks._hold)
        hooks._start(again)
        await hooks.write_settled()
        (d,) = await store.deliveries_for("h")
        assert d.status == "pending" and d.next_at > time.time() + 500, d.next_at - time.time()
    finally:
        await hooks.stop()
        await store.close()


async def test_progress_waiting_for_a_receiver_that_wants_no_end_is_dropped_at_the_end(tmp_path):
    """A receiver of progress only: the end has no message of its own, and its write drops the waiting progress
    all the same (it was left to be retried for a day). Nor does it keep the time of the job's last progress
    message (kept for every such job the bridge ever ran: memory that grew with each)."""
    from bridge.store import Job

    j = Job(id="j2", workflow="w", workflow_version=1, params={}, status="running",
            meta={"webhook": {"url": "http://slow.example/hook", "events": ["job.progress"]}})
    async with _slow_receiver(tmp_path) as (store, hooks, sent):
        await store.insert(j, owner="me", lease=30)
        hooks.on_event("progress", j)
        await hooks.flush()
        await until(lambda: sent == ["job.progress"], 5, "the first progress message on its way")
        j.progress = 50.0
        hooks.on_event("progress", j)
        await hooks.flush()
        assert [d.status for d in await store.deliveries_for("j2") if d.status == "pending"] == ["pending"]
        j.status = "completed"
        deliveries = await hooks.end_messages(j)
        assert deliveries == [] and hooks._last_progress == {}
        assert await store.save(j, owner="me", lease=30, deliveries=deliveries)
        assert [d for d in await store.deliveries_for("j2") if d.status == "pending"] == []


async def test_a_slow_receiver_has_one_progress_message_waiting_and_none_once_the_job_ended(tmp_path):
    """Progress is lossy: while a progress message is on its way to a slow receiver, newer progress neither joins
    it (each one was retried for BRIDGE_WEBHOOK_RETRY_FOR: 18 left by an 8 s job measured) nor replaces it (the log
    would show a body never sent); the end's messages drop what progress still waits, and none is recorded after."""
    from bridge.store import Job

    j = Job(id="j1", workflow="w", workflow_version=1, params={}, status="running",
            meta={"webhook": {"url": "http://slow.example/hook", "events": ["job.progress", "job.completed"]}})
    async with _slow_receiver(tmp_path) as (store, hooks, sent):
        await store.insert(j, owner="me", lease=30)
        hooks.on_event("progress", j)
        await hooks.flush()
        await until(lambda: sent == ["job.progress"], 5, "the first progress message on its way")
        for step in range(1, 6):
            j.progress = step * 10.0
            hooks.on_event("progress", j)
            await hooks.flush()
        pending = [d for d in await store.deliveries_for("j1") if d.status == "pending"]
        assert [d.event for d in pending] == ["job.progress"]
        j.status = "completed"
        assert await store.save(j, owner="me", lease=30, deliveries=await hooks.end_messages(j))
        hooks.end_written(j, True)
        hooks.on_event("progress", j)  # late: recorded after the end, it would wait behind it for a day
        await hooks.flush()
        assert [(d.event, d.status) for d in await store.deliveries_for("j1")] == [("job.completed", "pending")]


@pytest.mark.parametrize("job_database", ["sqlite", "postgresql"], indirect=True)
async def test_newer_progress_replaces_only_a_waiting_body_never_another_replicas_claim(tmp_path, job_database):
    """Newer progress wrote the whole pending row it had read back: a claim another replica made between the read
    and the write was undone (the message due again at once, so sent twice together), and an outcome written
    there too (a delivered message pending again, sent again)."""
    from bridge.store import Job
    from bridge.webhooks import Policy

    async def send(url, body, headers, timeout):
        raise AssertionError("nothing is sent: no delivery loop runs here")

    store, hooks = await _webhooks(tmp_path, send, Policy(progress_interval=0), job_database)
    read = store.pending_delivery
    meanwhile: list = []  # what another replica does between this one's read and its write

    async def read_then_others(*args):
        found = await read(*args)
        for step in meanwhile:
            await step()
        return found

    store.pending_delivery = read_then_others
    try:
        j = Job(id="p1", workflow="w", workflow_version=1, params={}, status="running",
                meta={"webhook": {"url": "http://r.example/hook", "events": ["job.progress"]}})
        await store.insert(j, owner="me", lease=30)

        async def progress() -> list:
            hooks.on_event("progress", j)
            await hooks.flush()
            return await store.deliveries_for("p1")

        [first] = await progress()
        await asyncio.sleep(0.01)  # the body carries its time: a newer one differs
        [waiting] = await progress()
        assert waiting.id == first.id and waiting.payload != first.payload  # still waiting: its body replaced
        claimed: list = []

        async def claim() -> None:
            claimed.extend(await store.claim_deliveries(time.time(), 10, hold=40))

        meanwhile[:] = [claim]
        [after] = await progress()
        assert len(claimed) == 1 and (after.next_at, after.payload) == (claimed[0].next_at, claimed[0].payload)

        async def deliver() -> None:
            await store.settle_deliveries([dataclasses.replace(claimed[0], status="delivered", next_at=None)])

        meanwhile[:] = [deliver]
        [after] = await progress()
        assert after.status == "delivered"  # not pending again (the next progress has a message of its own)
        # claimed before the read (another replica sends it): its body stays the one being sent
        meanwhile[:] = []
        [newest] = [d for d in await progress() if d.status == "pending"]
        [claimed_first] = await store.claim_deliveries(time.time(), 10, hold=40)
        await asyncio.sleep(0.01)
        [kept] = [d for d in await progress() if d.status == "pending"]
        assert claimed_first.id == newest.id == kept.id and kept.payload == claimed_first.payload
    finally:
        await hooks.stop()
        await store.close()


@pytest.mark.parametrize("job_database", ["sqlite", "postgresql"], indirect=True)
async def test_a_stop_releases_only_the_messages_this_bridge_still_holds(tmp_path, job_database):
    """A stopping bridge makes the messages it held due at once for the next start. It wrote each whole: one that
    had waited for its slot past its hold, been claimed by another replica and delivered there, was pending again
    and went out twice."""
    async with _backlog(tmp_path, 6, job_database) as (hooks, store, answer, sent):
        await until(lambda: len(sent) == 4 and len(hooks._in_flight) == 6, 5, "4 sent, 2 waiting for a slot")
        rows = {d.id: d for d in await store.deliveries_for("h")}
        waiting = "d5"  # held here: another replica claims and delivers it (its hold as if run out)
        await store.settle_deliveries([dataclasses.replace(rows[waiting], status="delivered", next_at=None)])
        await hooks.stop()
        after = {d.id: d for d in await store.deliveries_for("h")}
        assert after[waiting].status == "delivered"
        others = [d for i, d in after.items() if i != waiting]
        assert [d.status for d in others] == ["pending"] * 5 and all(d.next_at <= time.time() for d in others)
