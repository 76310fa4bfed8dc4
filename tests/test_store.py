"""The job store, on SQLite and on a real PostgreSQL alike (every test runs on both): jobs, limits counted in the
insert, ownership with fenced writes and leases, claims, shared rate limits, deliveries, previews, schema upgrades in
place; and the local blob store of result and input images."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.storage import BlobNotFound
from bridge.storage.local import LocalBlobs
from bridge.store import Delivery, Job, LimitReached, check_id, input_key, open_store, output_key
from bridge.store.schema import LATEST, STEPS, SchemaTooNew, table_sql

pytestmark = pytest.mark.asyncio


def job(i: int, **kw) -> Job:
    return Job(id=f"j{i}", workflow=kw.pop("workflow", "txt2img"), workflow_version=1, params={"seed": i},
               created_at=1000.0 + i, **kw)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> str:
    """A fresh database of either kind, as BRIDGE_DATABASE names it."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.sqlite3")
    return request.getfixturevalue("pg_url")


@pytest_asyncio.fixture
async def store(database, tmp_path):
    s = open_store(database, tmp_path)
    await s.open()
    yield s
    await s.close()


async def test_round_trip_every_field(store, database, tmp_path):
    j = job(1, status="completed", progress=100.0, step=3, steps=3, started_at=1001.5, finished_at=1003.0,
            backend="http://b", prompt_id="p-1", error=None, outputs={"images": ["outputs/j1/images_0.png"],
                                                                     "colors": [[1, 2]]},
            meta={"dialect": "a1111", "nested": {"x": [1, None]}, "client": "key:abc"},
            inputs={"image": "inputs/j1/image.png"}, attempts=2, timeout=30.0, wanted=["images"],
            reruns=[{"prompt_id": "p-0", "reason": "lost", "at": 1002.0}], node_ms={"3": 12.5})
    await store.insert(j, owner="r1", lease=30)
    await store.close()
    again = open_store(database, tmp_path)
    await again.open()
    try:
        assert await again.load("j1") == j
        loaded = (await again.load("j1")).to_dict()
        assert loaded["outputs"] == j.outputs and "inputs" not in loaded
        assert await again.load("nope") is None
    finally:
        await again.close()


async def test_query_filters_order_and_counts(store):
    for i in range(6):
        await store.insert(job(i, status="completed" if i % 2 else "queued",
                               workflow="img2img" if i < 2 else "txt2img",
                               started_at=1000.0 + i if i % 2 else None, finished_at=1002.0 + i if i % 2 else None),
                           owner="r1", lease=30)
    assert [j.id for j in await store.query()] == ["j5", "j4", "j3", "j2", "j1", "j0"]
    assert [j.id for j in await store.query(status="queued")] == ["j4", "j2", "j0"]
    assert [j.id for j in await store.query(workflow="img2img")] == ["j1", "j0"]
    assert [j.id for j in await store.query(limit=2, offset=1)] == ["j4", "j3"]
    assert [j.id for j in await store.unfinished()] == ["j0", "j2", "j4"]  # oldest first
    assert await store.counts() == {"queued": 3, "running": 0, "completed": 3, "failed": 0, "cancelled": 0}
    assert await store.duration_stats() == (3, 6.0)
    assert [i for i, _ in await store.finished_jobs()] == ["j1", "j3", "j5"]
    failed = job(4, status="failed")
    assert await store.save(failed, owner="r1", lease=30)  # an update replaces the row
    assert (await store.counts())["failed"] == 1 and (await store.counts())["queued"] == 2


async def _other_jobs(store, first: int, count: int) -> None:
    """`count` finished jobs of another dialect, newer than `job`'s, written in one statement."""
    await store._execute(
        f"WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n WHERE i < {first + count - 1}) "
        "INSERT INTO jobs (id, workflow, workflow_version, params, status, created_at, meta) "
        "SELECT 'a1111_' || i, 'txt2img', 1, '{}', 'completed', 2000.0 + i, '{\"dialect\": \"a1111\"}' FROM n")
    if store.kind == "postgresql":
        await store._execute("ANALYZE jobs")  # what autovacuum does to a table that grew


async def _work(store, call) -> int:
    """What the database does for the one statement `call` runs: SQLite's virtual machine steps (in tens), or
    PostgreSQL's buffer pages (EXPLAIN ANALYZE of the same statement)."""
    statements = []
    fetch = store._fetch

    async def recorded(sql, args=()):
        statements.append((sql, args))
        return await fetch(sql, args)

    store._fetch = recorded
    try:
        await call()
    finally:
        del store._fetch
    ((sql, args),) = statements
    if store.kind == "sqlite":
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        store.db.set_progress_handler(step, 10)
        try:
            await fetch(sql, args)
        finally:
            store.db.set_progress_handler(None, 0)
        return steps[0]
    ((plan,),) = await fetch("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, args)
    return plan[0]["Plan"]["Shared Hit Blocks"] + plan[0]["Plan"]["Shared Read Blocks"]


async def test_listing_one_apis_jobs_reads_none_of_the_other_jobs(store):
    """GET /jobs lists the jobs API's own jobs: the store finds them through the API written as a column of its own
    (an index), so listing them costs the same however many jobs other dialects have. Filtered on meta's JSON
    instead, every job was read: 171 ms of the event loop a request on SQLite with 150,000 of them."""
    for i in range(12):
        await store.insert(job(i, meta={"api": "aleaart"} if i % 3 == 0 else {"api": "jobs", "type": f"t{i % 2}"},
                               status="running" if i > 8 else "queued"), owner="r1", lease=30)
    await _other_jobs(store, 0, 2_000)
    small = await _work(store, lambda: store.query(meta={"api": "jobs"}, limit=5))
    await _other_jobs(store, 2_000, 18_000)
    grown = await _work(store, lambda: store.query(meta={"api": "jobs"}, limit=5))
    assert grown < 2 * small, f"listing 5 jobs took {small} with 2,000 other jobs and {grown} with 20,000"
    assert [j.id for j in await store.query(meta={"api": "jobs"}, limit=5)] == ["j11", "j10", "j8", "j7", "j5"]
    assert [j.id for j in await store.query(meta={"api": "jobs"}, limit=3, offset=5)] == ["j4", "j2", "j1"]
    assert [j.id for j in await store.query(status="queued", meta={"api": "jobs", "type": "t0"})] == ["j8", "j4",
                                                                                                      "j2"]
    assert [j.id for j in await store.query(status="running", meta={"api": "aleaart"})] == ["j9"]
    assert len(await store.query(meta={"dialect": "a1111"}, limit=1000)) == 1000


async def test_claimed_messages_carry_their_jobs_client(store):
    """The webhooks' bound per client reads each claimed message's client from its job's row (a retry, a restart's
    message, another replica's); a job with no client, or one deleted meanwhile, has none."""
    await store.insert(job(1, meta={"client": "key:abc"}), owner="r1", lease=30)
    await store.insert(job(2), owner="r1", lease=30)
    for i, job_id in enumerate(("j1", "j2", "j1", "gone")):
        await store.save_delivery(Delivery(id=f"d{i}", job_id=job_id, url="http://r", event="job.completed",
                                           payload="{}", created_at=1.0 + i, next_at=1.0 + i))
    claimed = await store.claim_deliveries(10.0, 10, hold=30)
    assert sorted((d.id, d.client) for d in claimed) == [("d0", "key:abc"), ("d1", ""), ("d2", "key:abc"),
                                                         ("d3", "")]


async def test_due_times_given_back_are_skipped_by_claims_and_moved_by_advance(store):
    """A replica leaves the messages it gave back to the others a while (their due times skipped by its claims and by
    its next wake-up), and a receiver answering again after a long silence has the due times its messages were given
    back with moved forward: only pending messages due at exactly those times, and only those later than the new
    time, move."""
    for i, (due, status) in enumerate(((50.0, "pending"), (50.0, "pending"), (60.0, "pending"), (70.0, "pending"),
                                       (50.0, "delivered"), (8.0, "pending"))):
        await store.save_delivery(Delivery(id=f"d{i}", job_id="j", url="http://r", event="job.completed",
                                           payload="{}", created_at=1.0, next_at=due, status=status))
    assert await store.next_delivery_at(skip=[8.0, 50.0]) == 60.0
    assert await store.next_delivery_at() == 8.0
    assert [d.id for d in await store.claim_deliveries(100.0, 10, hold=30, skip=[50.0, 8.0])] == ["d2", "d3"]
    # 130.0: d2 and d3 claimed until then (a bridge of its own calls this for the times it gave messages back with)
    assert await store.advance_deliveries([50.0, 130.0, 7.0], 9.0) == 4
    got = {d.id: d.next_at for d in await store.deliveries_for("j")}
    assert got == {"d0": 9.0, "d1": 9.0, "d2": 9.0, "d3": 9.0, "d4": 50.0, "d5": 8.0}
    assert await store.advance_deliveries([9.0], 9.0) == 0  # not later than the new time: left


async def test_the_pending_message_of_a_kind_found_is_the_newest(store):
    """Progress replaces the payload of the pending message `pending_delivery` finds: where several wait (another
    replica was sending one), that is the newest, not whichever the database reads first."""
    for i, (at, status) in enumerate(((1.0, "pending"), (2.0, "pending"), (3.0, "delivered"))):
        await store.save_delivery(Delivery(id=f"d{i}", job_id="j1", url="http://r", event="job.progress",
                                           payload="{}", status=status, created_at=at, next_at=at))
    assert (await store.pending_delivery("j1", "http://r", "job.progress")).id == "d1"
    assert await store.pending_delivery("j1", "http://r", "job.completed") is None


async def test_an_ends_messages_drop_the_jobs_progress_messages_still_pending(store):
    """Once a job's end is written with its messages, a progress message still waiting (a slow receiver's, retried
    for a day) says nothing worth sending; one sent is kept in the log, and an end the store refuses drops nothing."""
    await store.insert(job(1), owner="r1", lease=30)
    await store.insert(job(2), owner="r1", lease=30)
    for i, (job_id, url, status) in enumerate((("j1", "http://a", "delivered"), ("j1", "http://a", "pending"),
                                               ("j1", "http://b", "pending"), ("j2", "http://a", "pending"))):
        await store.save_delivery(Delivery(id=f"p{i}", job_id=job_id, url=url, event="job.progress", payload="{}",
                                           status=status, created_at=1.0 + i, next_at=1.0 + i))
    end = Delivery(id="e1", job_id="j1", url="http://a", event="job.completed", payload="{}", created_at=9.0,
                   next_at=9.0)
    done = job(1, status="completed")
    assert not await store.save(done, owner="r2", lease=30, deliveries=[end])
    assert [d.id for d in await store.deliveries_for("j1")] == ["p0", "p1", "p2"]
    assert await store.save(done, owner="r1", lease=30, deliveries=[end])
    assert [(d.id, d.status) for d in await store.deliveries_for("j1")] == [("p0", "delivered"), ("e1", "pending")]
    assert [d.id for d in await store.deliveries_for("j2")] == ["p3"]


async def test_text_neither_database_keeps_is_written_alike_and_meta_filters_read_past_it(store):
    """PostgreSQL refuses NUL in text, and neither driver encodes a lone surrogate: a backend's error message (or a
    receiver's URL) carrying one failed the end's write on every try, so the job never ended in the store. Both
    stores write U+FFFD in their place. A NUL in meta's JSON (a prompt's, echoed) failed PostgreSQL's every filter
    on a meta key; it is read past now."""
    await store.insert(job(1, meta={"api": "jobs", "type": "text2img", "request": {"prompt": "a\x00b"}}),
                       owner="r1", lease=30)
    await store.insert(job(2, meta={"api": "jobs", "type": "img2img"}), owner="r1", lease=30)
    ended = job(1, status="failed", error="boom\x00 \ud800 \u00e9", meta={"request": {"prompt": "a\x00b"}})
    message = Delivery(id="m1", job_id="j1", url="http://r.example/\x00", event="job.failed", payload="{}",
                       created_at=1.0, next_at=1.0)
    assert await store.save(ended, owner="r1", lease=30, deliveries=[message])
    kept = await store.load("j1")
    assert kept.error == "boom\ufffd \ufffd \u00e9" and kept.meta == {"request": {"prompt": "a\x00b"}}
    assert [d.url for d in await store.deliveries_for("j1")] == ["http://r.example/\ufffd"]
    await store.save(job(1, meta={"api": "jobs", "type": "text2img", "note": "\x00"}), owner="r1", lease=30)
    assert [j.id for j in await store.query(meta={"api": "jobs", "type": "text2img"})] == ["j1"]
    assert [j.id for j in await store.query(meta={"api": "jobs", "type": "img2img"})] == ["j2"]


async def test_a_lone_surrogate_in_meta_fails_no_filter_and_both_databases_answer_filters_alike(store):
    """json.dumps writes a lone surrogate (a `json` parameter's string, which the jobs API echoes in meta) as the
    escape \\ud800, which PostgreSQL's JSON refuses: one such job made every listing filtered on a meta key (GET
    /jobs?type=...) a 500 there. And the databases answered the same filter differently: PostgreSQL's `->>` read
    the number 3 as "3" and true as "true", SQLite's json_extract an object as its JSON text, and SQLite read the key
    "a.b" as a path. Filters now match strings only, read NUL and lone surrogates as U+FFFD on both, and take only
    keys that are names."""
    metas = {
        "number": {"k": 3}, "text": {"k": "3"}, "true": {"k": True}, "object": {"k": {"b": "x"}},
        "list": {"k": ["x"]}, "nul": {"k": "a\x00b"}, "lone": {"k": "a\ud800b"}, "low": {"k": "a\udc00b"},
        "pair": {"k": "a\U0001F600b"}, "escaped": {"k": "\\ud800 \\u0000"}, "quote": {"k": "it's \"x\""},
        "empty": {"k": ""},
    }
    for i, (name, meta) in enumerate(metas.items()):
        await store.insert(Job(id=name, workflow="w", workflow_version=1, params={}, created_at=1000.0 + i,
                               meta={"api": "jobs", **meta}), owner="r1", lease=30)

    async def found(value: str) -> list[str]:
        return sorted(j.id for j in await store.query(meta={"api": "jobs", "k": value}))

    assert await found("3") == ["text"]
    assert await found("true") == [] and await found("1") == []
    assert await found('{"b":"x"}') == [] and await found('{"b": "x"}') == [] and await found('["x"]') == []
    assert await found("a\ufffdb") == ["lone", "low", "nul"]
    assert await found("a\x00b") == ["lone", "low", "nul"]  # the value is read as the stores keep text
    assert await found("a\ud800b") == ["lone", "low", "nul"]
    assert await found("a\U0001F600b") == ["pair"]
    assert await found("\\ud800 \\u0000") == ["escaped"]
    assert await found("it's \"x\"") == ["quote"] and await found("x' OR '1'='1") == []
    assert await found("") == ["empty"]
    assert [j.id for j in await store.query(meta={"api": "jobs"}, limit=2)] == ["empty", "quote"]
    for key in ("a.b", "", "[0]", 'k"', "k' OR 1=1 --"):
        with pytest.raises(ValueError):
            await store.query(meta={key: "x"})
    # the other filters take such text too, and find nothing
    assert await store.query(status="queued\x00", workflow="w\ud800") == []


async def test_the_queue_bound_and_the_client_quota_are_checked_in_the_insert(store):
    await store.insert(job(1, meta={"client": "a"}), owner="r1", lease=30, max_active=3, max_per_client=1)
    with pytest.raises(LimitReached) as full:
        await store.insert(job(2, meta={"client": "a"}), owner="r1", lease=30, max_active=3, max_per_client=1)
    assert full.value.which == "client" and full.value.active == 1
    await store.insert(job(3, meta={"client": "b"}), owner="r1", lease=30, max_active=3, max_per_client=1)
    await store.insert(job(4), owner=None, lease=30, max_active=3)
    with pytest.raises(LimitReached) as full:
        await store.insert(job(5), owner=None, lease=30, max_active=3)
    assert full.value.which == "queue" and full.value.active == 3
    assert await store.load("j5") is None and await store.active_for("a") == 1


async def test_concurrent_inserts_never_pass_the_bound(database, tmp_path):
    # Three stores on one database (three replicas): fifty inserts at once, at most ten get in.
    stores = [open_store(database, tmp_path) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        async def one(i: int) -> bool:
            try:
                await stores[i % 3].insert(job(i), owner=f"r{i % 3}", lease=30, max_active=10)
                return True
            except LimitReached:
                return False
        accepted = await asyncio.gather(*(one(i) for i in range(50)))
        assert sum(accepted) == 10 and (await stores[0].counts())["queued"] == 10
    finally:
        for s in stores:
            await s.close()


async def test_writes_are_fenced_on_the_owner_and_leases_hand_jobs_over(store):
    a = job(1)
    await store.insert(a, owner="r1", lease=30)
    await store.insert(job(2), owner=None, lease=30)  # released: free for anyone
    a.status, a.progress = "running", 40.0
    assert await store.save(a, owner="r1", lease=30)
    assert not await store.save(a, owner="r2", lease=30)  # not r2's
    assert [j.id for j in await store.claim("r2", 30, 10)] == ["j2"]  # j1's lease still runs
    assert await store.renew("r1", 30, ["j1"]) == {"j1"} and await store.renew("r2", 30, ["j2", "j1"]) == {"j2"}
    assert await store.save(a, owner="r1", lease=-1)  # r1 stalls: its lease runs out
    taken = await store.claim("r2", 30, 10)
    assert [j.id for j in taken] == ["j1"] and taken[0].progress == 40.0
    assert not await store.save(a, owner="r1", lease=30)  # r1 can no longer write it (nor post it anywhere)
    assert await store.renew("r1", 30, ["j1"]) == set()
    owner, left = await store.owner_of("j1")
    assert owner == "r2" and 25 < left <= 30
    # a release hands a job back, saved as it is
    a.status = "queued"
    assert await store.release(a, "r2") and (await store.owner_of("j1"))[0] is None
    assert not await store.release(a, "r2")


async def test_claims_take_only_what_the_replica_can_carry_on(store):
    await store.insert(job(1, workflow="txt2img"), owner=None, lease=30)
    await store.insert(job(2, workflow="axera_txt2img"), owner=None, lease=30)
    await store.insert(job(3, status="running", backend="http://b1", prompt_id="p3"), owner=None, lease=30)
    await store.insert(job(4, status="running", backend="http://b2", prompt_id="p4"), owner=None, lease=30)
    got = await store.claim("r1", 30, 10, workflows=["txt2img"], backends=["http://b1"])
    assert [j.id for j in got] == ["j1", "j3"]
    assert await store.claim("r1", 30, 10, workflows=[], backends=[]) == []
    assert [j.id for j in await store.claim("r2", 30, 10, job_id="j4")] == ["j4"]
    assert [j.id for j in await store.claim("r3", 30, 10, every=True)] == ["j1", "j2", "j3", "j4"]


async def test_concurrent_claims_never_take_one_job_twice(database, tmp_path):
    stores = [open_store(database, tmp_path) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        for i in range(40):
            await stores[0].insert(job(i), owner=None, lease=30)
        got = await asyncio.gather(*(stores[k % 4].claim(f"r{k % 4}", 30, 7) for k in range(12)))
        ids = [j.id for batch in got for j in batch]
        assert sorted(ids) == sorted(f"j{i}" for i in range(40)) and len(ids) == len(set(ids))
    finally:
        for s in stores:
            await s.close()


async def test_cancel_requests_and_deletes(store):
    await store.insert(job(1), owner="r1", lease=30)
    assert await store.request_cancel("j1") and (await store.load("j1")).cancel_requested
    await store.save_preview("j1", "image/jpeg", b"\xff\xd8preview")
    assert await store.load_preview("j1") == ("image/jpeg", b"\xff\xd8preview")
    await store.save_delivery(Delivery(id="d1", job_id="j1", url="http://r", event="job.completed", payload="{}",
                                       created_at=1.0, next_at=1.0))
    await store.delete("j1")
    assert await store.load("j1") is None and await store.load_preview("j1") is None
    assert await store.deliveries_for("j1") == [] and not await store.request_cancel("j1")


async def test_a_cancel_asked_stays_asked_whatever_the_owner_writes(store):
    # the owner's copy was read before the request: writing it (a progress save, a release) must not undo it
    copy = job(1, status="running")
    await store.insert(copy, owner="r1", lease=30)
    assert await store.request_cancel("j1")
    assert await store.save(copy, owner="r1", lease=30) and (await store.load("j1")).cancel_requested
    assert await store.release(copy, "r1") and (await store.load("j1")).cancel_requested
    # and a copy that carries the request writes it
    other = job(2, status="running", cancel_requested=True)
    await store.insert(job(2, status="running"), owner="r1", lease=30)
    assert await store.save(other, owner="r1", lease=30) and (await store.load("j2")).cancel_requested


async def test_deliveries_are_claimed_by_one_sender_at_a_time(database, tmp_path):
    a, b = open_store(database, tmp_path), open_store(database, tmp_path)
    await a.open()
    await b.open()
    try:
        now = time.time()
        for i in range(5):
            await a.save_delivery(Delivery(id=f"d{i}", job_id="j", url="http://r", event="job.completed",
                                           payload=json.dumps({"i": i}), created_at=now, next_at=now - 1))
        first, second = await asyncio.gather(a.claim_deliveries(now, 3, hold=30), b.claim_deliveries(now, 3, hold=30))
        assert len(first) + len(second) == 5 and not {d.id for d in first} & {d.id for d in second}
        assert await a.claim_deliveries(now, 10, hold=30) == []  # held for an attempt's time
        assert await a.claim_deliveries(now + 31, 10, hold=30)  # a sender that died leaves them due again
        d = first[0]
        d.status, d.attempts = "delivered", [{"status": 204}]
        await a.save_delivery(d)
        assert (await b.pending_delivery(d.job_id, d.url, d.event)).id != d.id
        assert [x.status for x in await b.deliveries_for("j")].count("delivered") == 1
    finally:
        await a.close()
        await b.close()


async def test_end_messages_go_in_with_the_end_and_outcomes_are_settled_together(store):
    """A job's end and its webhook messages are written together, only where the write is the owner's; attempts'
    outcomes are recorded in one call and change only rows still there (a deleted job's log stays gone)."""
    await store.insert(job(1), owner="r1", lease=30)
    await store.insert(job(2), owner="r1", lease=30)
    ends = [Delivery(id=f"m{i}", job_id="j1", url=f"http://r{i}", event="job.completed", payload=f'{{"i":{i}}}',
                     created_at=5.0, next_at=45.0) for i in range(2)]
    done = job(1, status="completed", finished_at=1003.0)
    assert not await store.save(done, owner="r2", lease=30, deliveries=ends)  # not r2's: neither is written
    assert await store.deliveries_for("j1") == [] and (await store.load("j1")).status == "queued"
    assert await store.save(done, owner="r1", lease=30, deliveries=ends)
    assert [(d.id, d.status, d.next_at) for d in await store.deliveries_for("j1")] == [("m0", "pending", 45.0),
                                                                                      ("m1", "pending", 45.0)]
    other = Delivery(id="m2", job_id="j2", url="http://r", event="job.completed", payload="{}", created_at=5.0,
                     next_at=45.0)
    await store.save_delivery(other)
    await store.delete("j2")
    ends[0].status, ends[0].next_at, ends[0].attempts = "delivered", None, [{"status": 204}]
    ends[1].next_at, ends[1].attempts = 50.0, [{"status": 500}]
    other.status = "delivered"
    await store.settle_deliveries([ends[0], ends[1], other])
    got = {d.id: d for d in await store.deliveries_for("j1")}
    assert (got["m0"].status, got["m0"].next_at, got["m0"].attempts) == ("delivered", None, [{"status": 204}])
    assert (got["m1"].status, got["m1"].next_at, got["m1"].attempts) == ("pending", 50.0, [{"status": 500}])
    assert got["m0"].payload == '{"i":0}' and await store.deliveries_for("j2") == []


async def test_a_held_message_is_taken_again_only_while_nobody_else_has_it(database, tmp_path):
    """A replica whose hold on a message ran out while it waited for a free sending slot takes it again with a
    compare-and-set on the hold; once another replica has claimed it, the first one's attempt is off."""
    a, b = open_store(database, tmp_path), open_store(database, tmp_path)
    await a.open()
    await b.open()
    try:
        now = time.time()
        await a.save_delivery(Delivery(id="h1", job_id="j", url="http://r", event="job.completed", payload="{}",
                                       created_at=now, next_at=now - 1))
        (held,) = await a.claim_deliveries(now, 10, hold=30)
        assert await a.reclaim_deliveries([("h1", held.next_at)], now + 60) == 1  # nobody else has it: held again
        assert await a.reclaim_deliveries([("h1", held.next_at)], now + 90) == 0  # the hold it knew is gone
        (taken,) = await b.claim_deliveries(now + 61, 10, hold=30)  # its hold ran out: another replica claims it
        assert await a.reclaim_deliveries([("h1", now + 60)], now + 120) == 0
        taken.status = "delivered"
        await b.save_delivery(taken)
        assert await b.reclaim_deliveries([("h1", taken.next_at)], now + 200) == 0  # delivered: no longer pending
    finally:
        await a.close()
        await b.close()


async def test_held_messages_are_given_back_together_each_only_while_still_held(store):
    """A round's claims are given back in one statement (a hanging receiver's backlog wrote one per message every
    few seconds), and the compare-and-set holds for each: one another replica claimed since, or one delivered,
    stays as it is; holds that differ are each matched to their own."""
    now = time.time()
    for i in range(1202):
        await store.save_delivery(Delivery(id=f"m{i}", job_id="j", url="http://r", event="job.completed",
                                           payload="{}", created_at=now, next_at=now - 1))
    round_one = await store.claim_deliveries(now, 1200, hold=30)
    (late,) = await store.claim_deliveries(now, 1, hold=31)  # a later round's claim: a hold of its own
    moved, done = round_one[0], round_one[1]
    await store.save_delivery(replace(moved, next_at=now + 99))  # claimed again by another replica
    await store.save_delivery(replace(done, status="delivered", next_at=None))
    statements = []
    execute = store._execute

    async def counted(sql, args=()):
        statements.append(sql)
        return await execute(sql, args)

    store._execute = counted
    given = [(d.id, d.next_at) for d in round_one + [late]]
    assert await store.reclaim_deliveries(given, now + 5) == 1199
    assert len(statements) == 4  # 1,200 of one hold in three statements of up to 500, one of the other
    got = {d.id: d for d in await store.deliveries_for("j")}
    assert (got[moved.id].next_at, got[done.id].status) == (now + 99, "delivered")
    assert all(got[d.id].next_at == now + 5 for d in round_one[2:] + [late])
    assert sum(d.next_at == now - 1 for d in got.values()) == 1  # the one nobody claimed stays due


async def test_a_messages_hold_is_matched_whatever_float_digits_the_server_writes(pg_url, tmp_path):
    """The compare-and-sets on a message's due time match the float a read gave back. A server set to write floats
    with 15 digits (`extra_float_digits = 0`, as servers before PostgreSQL 12 did by default) gave it back rounded,
    and nothing matched: a passed-over message was never given back, an attempt that waited for its slot took its
    own message for another replica's and gave up, and a newer progress never replaced a waiting one."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        name = conn.execute("SELECT current_database()").fetchone()[0]
        conn.execute(f'ALTER DATABASE "{name}" SET extra_float_digits = 0')
    store = open_store(pg_url, tmp_path)
    await store.open()
    try:
        now = time.time()
        for i in range(2):
            await store.save_delivery(Delivery(id=f"m{i}", job_id="j", url="http://r", event="job.progress",
                                               payload="{}", created_at=now, next_at=now - 1 / 3))
        waiting = await store.pending_delivery("j", "http://r", "job.progress")
        assert await store.replace_payload(waiting, '{"newer":1}', now)
        held = await store.claim_deliveries(now, 10, hold=30 + 1 / 7)
        assert len(held) == 2 and await store.reclaim_deliveries([(d.id, d.next_at) for d in held], now + 60) == 2
    finally:
        await store.close()


async def test_rate_buckets_and_failed_logins_are_shared(database, tmp_path):
    a, b = open_store(database, tmp_path), open_store(database, tmp_path)
    await a.open()
    await b.open()
    try:
        # one bucket of 3, rate 1/s, taken from two replicas in turn
        waits = [await (a if i % 2 else b).take_token("addr:1", 1.0, 3) for i in range(5)]
        assert waits[:3] == [0.0, 0.0, 0.0] and all(0.5 < w <= 1.0 for w in waits[3:])
        assert await a.take_token("addr:2", 1.0, 3) == 0.0  # another client has its own
        assert [await (a if i % 2 else b).auth_failed("ip", 3, 60, 30) for i in range(3)] == [False, False, True]
        assert 25 < await b.auth_locked_for("ip") <= 30 and await a.auth_locked_for("other") == 0.0
    finally:
        await a.close()
        await b.close()


async def test_values_made_once_agree_across_replicas(store):
    first = await store.set_value("webhook_secret", "whsec_a", only_new=True)
    assert first == "whsec_a" and await store.set_value("webhook_secret", "whsec_b", only_new=True) == "whsec_a"
    assert await store.set_value("webhook_secret", "whsec_c") == "whsec_c"
    client = await store.client_id()
    assert client.startswith("pixart-") and await store.client_id() == client


# ------------------------------------------------------------------------------------------- schema versions
OLD_SQLITE = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, workflow TEXT NOT NULL, workflow_version INTEGER NOT NULL, params TEXT NOT NULL,
    status TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0, step INTEGER, steps INTEGER, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, backend TEXT, prompt_id TEXT, error TEXT, outputs TEXT NOT NULL DEFAULT '{}',
    meta TEXT NOT NULL DEFAULT '{}', inputs TEXT NOT NULL DEFAULT '{}', attempts INTEGER NOT NULL DEFAULT 0,
    timeout REAL);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO jobs (id, workflow, workflow_version, params, status, created_at, meta) VALUES ('old-1', 'txt2img', 1,
    '{"seed": 7}', 'queued', 1.0, '{"api": "jobs", "client": "key:a"}');
INSERT INTO kv (key, value) VALUES ('client_id', 'pixart-kept');
"""


async def test_a_database_of_the_first_release_is_upgraded_in_place(tmp_path):
    # What the first release wrote: no version table, no webhook table, none of the later columns.
    db = sqlite3.connect(tmp_path / "pixart.sqlite3")
    db.executescript(OLD_SQLITE)
    db.close()
    s = open_store("", tmp_path)
    await s.open()
    try:
        assert await s.schema_version() == LATEST
        old = await s.load("old-1")
        assert old.params == {"seed": 7} and old.wanted is None and old.reruns == [] and not old.cancel_requested
        assert await s.client_id() == "pixart-kept"  # a restarted bridge still hears its prompts
        # the columns copied from meta at insert are filled in for the jobs written before them
        assert [j.id for j in await s.query(meta={"api": "jobs"})] == ["old-1"] and await s.active_for("key:a") == 1
        assert [j.id for j in await s.claim("r1", 30, 10, every=True)] == ["old-1"]
        old.reruns.append({"prompt_id": "p", "reason": "r", "at": 2.0})
        assert await s.save(old, owner="r1", lease=30) and (await s.load("old-1")).reruns == old.reruns
    finally:
        await s.close()


async def test_a_postgres_database_of_an_earlier_version_is_upgraded_in_place(pg_url, tmp_path):
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for step in STEPS[:3]:
            for body in step.tables:
                conn.execute(table_sql(body, "postgres"))
            for col in step.columns:
                conn.execute(f"ALTER TABLE {col.table} ADD COLUMN {col.declaration('postgres')}")
        conn.execute("INSERT INTO schema_version VALUES (3)")
        conn.execute("INSERT INTO jobs (id, workflow, workflow_version, params, status, created_at, meta) VALUES "
                     "('old-1', 'txt2img', 1, '{\"seed\": 7}', 'running', 1.0, "
                     "'{\"api\": \"jobs\", \"client\": \"key:a\"}')")
        # json.dumps's escape of a lone surrogate, which PostgreSQL's JSON refuses: the fill of the columns failed
        conn.execute("INSERT INTO jobs (id, workflow, workflow_version, params, status, created_at, meta) VALUES "
                     "('old-2', 'txt2img', 1, '{}', 'completed', 0.5, %s)",
                     (json.dumps({"api": "jobs", "request": {"extra": "a\ud800"}}),))
    s = open_store(pg_url, tmp_path)
    await s.open()
    try:
        assert await s.schema_version() == LATEST
        old = await s.load("old-1")
        assert old.status == "running" and old.params == {"seed": 7} and not old.cancel_requested
        assert [j.id for j in await s.query(meta={"api": "jobs"})] == ["old-1", "old-2"]
        assert await s.active_for("key:a") == 1
        assert [j.id for j in await s.claim("r1", 30, 10)] == ["old-1"]  # no owner: anyone may take it
    finally:
        await s.close()


async def test_a_database_newer_than_the_code_is_refused(database, tmp_path):
    s = open_store(database, tmp_path)
    await s.open()
    await s._execute("UPDATE schema_version SET version = ?", (LATEST + 1,))
    await s.close()
    newer = open_store(database, tmp_path)
    with pytest.raises(SchemaTooNew, match="upgrade the bridge"):
        await newer.open()
    await newer.close()


async def test_where_the_database_setting_points(tmp_path):
    assert open_store("", tmp_path).path == tmp_path / "pixart.sqlite3"
    assert open_store(str(tmp_path / "x.db"), tmp_path).path == tmp_path / "x.db"
    assert open_store(str(tmp_path), Path("/elsewhere")).path == tmp_path / "pixart.sqlite3"
    assert open_store("postgresql://u:p@db:5432/pixart", tmp_path).shared


# ------------------------------------------------------------------------------------------- the blob store
async def test_blobs_stay_inside_the_data_dir(tmp_path):
    blobs = LocalBlobs(tmp_path)
    key = output_key("j1", "images", 0)
    await blobs.put(key, b"\x89PNGdata")
    assert key == "outputs/j1/images_0.png" and await blobs.get(key) == b"\x89PNGdata"
    await blobs.put(input_key("j1", "mask"), b"m")
    assert await blobs.get(input_key("j1", "mask")) == b"m"
    assert await blobs.delete_prefix("inputs/j1/") == 1
    assert not (tmp_path / "inputs" / "j1").exists() and (tmp_path / key).exists()
    assert output_key("j1", "../../evil", 0).startswith("outputs/j1/")
    for bad in ("../outside.png", "/etc/passwd", "a//b", "outputs/../x"):
        with pytest.raises(ValueError):
            await blobs.get(bad)
    with pytest.raises(BlobNotFound):
        await blobs.get("outputs/j1/none.png")
    assert [b.key async for b in blobs.list("outputs/")] == [key]
    for bad in ("../x", "a/b", "", ".", "x" * 200):
        with pytest.raises(ValueError):
            check_id(bad)
    with pytest.raises(ValueError):
        output_key("../x", "images", 0)


async def test_concurrent_writers_of_one_key_never_clash(tmp_path):
    blobs = LocalBlobs(tmp_path)
    await asyncio.gather(*(blobs.put("inputs/j/a.png", bytes([i]) * 1000) for i in range(20)))
    data = await blobs.get("inputs/j/a.png")
    assert len(data) == 1000 and len(set(data)) == 1
    assert not list((tmp_path / "inputs" / "j").glob("*.tmp"))
