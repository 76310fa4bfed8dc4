"""Webhooks: the bridge tells an app's server when its jobs end (and, if asked, how they progress).

A job carries its receivers in `meta["webhook"]` (`{"url", "events"}`, from the request's `webhook` field), and
the `BRIDGE_WEBHOOK_URL` setting names one receiver for every job. Each event becomes a delivery row in the job
store before anything is sent, so delivery is at least once and survives a restart; the rows about a job's end are
written in the transaction that writes the end. A job's end is sent by the bridge that ended the job, once the end
is written; progress messages, retries and messages left by a stopped or dead bridge are posted by a background
loop. Each attempt is its own task with a timeout and bounds per client and per host, so a slow or dead receiver
never delays a job or another receiver: an attempt waits for its job's client's slot (the job quota's identity; one
client naming many hanging hosts would otherwise hold every slot; a client's messages waiting for a host hold only
its own slots), then its host's, before it takes one of the global slots (one hanging host would otherwise hold
them all with messages that wait for it), and a host is its name whatever the port (one client naming many ports of
one server would otherwise have a bound per port). Progress is lossy: at most one
progress message per job and receiver waits to be sent, holding the newest state, and none is left once the end's
messages are recorded. Failures are retried with exponential back-off and jitter until BRIDGE_WEBHOOK_RETRY_FOR
has passed. Every attempt is recorded (`GET /jobs/{id}/webhooks`), the outcomes of attempts close together in one
transaction.

Messages follow the Standard Webhooks specification (the `standardwebhooks` package signs them): headers
`webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` with the
secret), body `{"type": "job.completed", "timestamp": ..., "data": {...job...}}`. docs/api/webhooks.md shows how a
receiver verifies one.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

from bridge import images as image_io
from bridge import jsontext
from bridge.outbound import OutboundRefused
from bridge.store import Delivery, Job, JobStore

log = logging.getLogger("bridge.webhooks")

EVENTS = ("job.completed", "job.failed", "job.cancelled", "job.progress")
DEFAULT_EVENTS = ("job.completed", "job.failed", "job.cancelled")
# Attempts' outcomes are written to the store together, this long after the first of them (seconds).
SETTLE_DELAY = 0.05
# A receiver answering 410 asks not to be called again for this message (Standard Webhooks).
GONE = 410
# Messages held in memory waiting for their slots, per client and per host, and in all. One past these is left in
# the store: a client naming a hanging receiver had every due message of its jobs held here (5,000: 42.6 MB,
# tracemalloc). 256 keep a host answering within a second busy for longer than a hold.
WAITING_PER_KEY = 256
WAITING_IN_ALL = 4096
# A message passed over by those bounds is given back, due again this long after (seconds): its claim kept it from
# every replica, unsent, for the whole hold. Not at once: the delivery loop would claim and pass over the same
# messages every round. While no receiver behind the bound answers, the delay grows with that time (up to a hold):
# every 5 s a 2,000-message backlog for a hanging receiver was claimed and given back whole. Not with a shared store:
# another replica may have room for them, and takes them only as they come due. Once every bound that held them has
# had an answer (their receiver's host answering; another host of the same client answering is not enough), those
# given back with a longer delay are due PASS_BACK_DELAY after it.
PASS_BACK_DELAY = 5.0
# With a shared store the delivery loop reads it at least this often (seconds): another replica may have recorded a
# message due sooner. A replica leaves the messages it gave back to the others for as long after they come due: it
# woke when they came due as the others did, and won them back about every other time.
SHARED_POLL = 2.0
# Jobs whose end was recorded here, and (job, receiver) pairs' last progress message, are remembered this many each,
# the oldest forgotten first: a job deleted or lost before its end left its entries for good.
REMEMBERED = 10_000

# (url, body, headers, timeout) -> HTTP status; raises TimeoutError when no answer came within the timeout
Send = Callable[[str, bytes, dict[str, str], float], Awaitable[int]]
Describe = Callable[[Job], Awaitable[dict[str, Any]]]


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@dataclass(frozen=True)
class Receiver:
    url: str
    events: tuple[str, ...] = DEFAULT_EVENTS

    @classmethod
    def of(cls, spec: Any) -> Receiver | None:
        if not spec:
            return None
        if isinstance(spec, str):
            return cls(spec)
        return cls(spec["url"], tuple(spec.get("events") or DEFAULT_EVENTS))


@dataclass
class Policy:
    timeout: float = 10.0           # seconds for one attempt
    retry_for: float = 24 * 3600.0  # seconds after the event during which failed attempts are retried
    retry_base: float = 5.0         # first back-off; doubles per attempt, with +-25 % jitter
    retry_max: float = 3600.0       # longest back-off
    progress_interval: float = 1.0  # at most one progress message per job and receiver per interval
    concurrency: int = 64           # attempts in flight in all
    per_host: int = 4               # attempts in flight to one host name (all its ports together)
    per_client: int = 16            # attempts in flight for the jobs of one client


@dataclass
class WebhookConfig:
    """What the engine needs to run webhooks (from the BRIDGE_WEBHOOK_* and BRIDGE_PUBLIC_URL settings)."""

    secret: str = ""                  # empty: made once and kept in the job store
    everyone: Receiver | None = None  # BRIDGE_WEBHOOK_URL
    policy: Policy | None = None
    public_url: str = ""              # prefix of result links; empty: paths
    link_lifetime: float = 3600.0     # presigned result links (S3) stay valid this long


class _Slots:
    """At most ``limit`` holders per key at once. A key's semaphore lives only while it is held or waited for: one
    kept for every host name or client ever seen would grow with each new name a client makes up."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> Any:
        if key not in self.held:
            self.held[key] = (asyncio.Semaphore(self.limit), [0])
        sem, users = self.held[key]
        users[0] += 1
        try:
            async with sem:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self.held[key]


class Webhooks:
    """The delivery of a bridge's webhook messages. ``send`` must keep to the timeout it is given (raising
    TimeoutError): attempts hold no timer of their own (the bridge's sender, ``Outbound.post``, does)."""

    def __init__(self, store: JobStore, secret: str, send: Send, *, describe: Describe,
                 everyone: Receiver | None = None, policy: Policy | None = None) -> None:
        self.store = store
        self.signer = Webhook(secret)
        self.send = send
        self.describe = describe
        self.everyone = everyone
        self.policy = policy or Policy()
        self._wake = asyncio.Event()
        # Python 3.11's wait_for can swallow a cancellation that arrives as the wake-up does, so the loop also
        # ends on this flag rather than on cancellation alone.
        self._stopped = False
        self._in_flight: dict[str, Delivery] = {}  # by id: being sent, waiting for a slot, or being recorded
        self._waiting: dict[str, int] = {}  # attempts in memory per "client <id>" and "host <name>"
        # end messages recorded (held from the other replicas) and waiting for their job's end to be written
        self._held: dict[str, list[Delivery]] = {}
        self._interrupted: list[Delivery] = []  # attempts cut short by stop()
        self._passed_over: list[Delivery] = []  # claimed, but past the bounds on waiting: to give back
        # "all" and the keys of `_waiting`: since when a message was passed over for them with no answer since
        self._bound_since: dict[str, float] = {}
        # due times more than PASS_BACK_DELAY ahead that passed-over messages were given back with (`_pass_back`) ->
        # those of their keys that have had no answer since; once none is left the due time moves (`_advance`)
        self._given_back: dict[float, set[str]] = {}
        self._advance: set[float] = set()
        # shared store: due times of messages given back, each left to the other replicas until SHARED_POLL after it
        self._handed_off: dict[float, None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._global = asyncio.Semaphore(self.policy.concurrency)
        self._hosts = _Slots(self.policy.per_host)
        self._clients = _Slots(self.policy.per_client)
        self._last_progress: dict[tuple[str, str], float] = {}
        self._ended: dict[str, None] = {}  # jobs whose end is recorded (a job's end is written once, mostly)
        self._pending_events: set[asyncio.Task[Any]] = set()
        self._settling: list[Delivery] = []  # attempts' outcomes waiting to be written together
        self._settler: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ events in
    def receivers(self, job: Job) -> list[Receiver]:
        out = [r for r in (Receiver.of((job.meta or {}).get("webhook")), self.everyone) if r is not None]
        return list(dict.fromkeys(out))

    def on_event(self, kind: str, job: Job) -> None:
        """EventHub listener: called for every status and progress change, on the loop. A job's end is recorded
        by `record_end` instead, before the end itself is written (see there)."""
        if kind != "progress":
            return
        event = "job.progress"
        now = time.monotonic()
        wanted = [r for r in self.receivers(job) if event in r.events
                  and now - self._last_progress.get((job.id, r.url), -1e9) >= self.policy.progress_interval]
        if not wanted:
            return
        for r in wanted:
            self._last_progress.pop((job.id, r.url), None)  # set again at the end: the newest is forgotten last
            self._last_progress[(job.id, r.url)] = now
        while len(self._last_progress) > REMEMBERED:
            self._last_progress.pop(next(iter(self._last_progress)))
        task = asyncio.get_running_loop().create_task(self._record_progress(job, wanted))
        self._pending_events.add(task)
        task.add_done_callback(self._pending_events.discard)

    async def end_messages(self, job: Job) -> list[Delivery]:
        """The messages about a job's end. The job table writes them in the transaction that writes the end: a
        bridge that dies before has written neither, and whoever takes the job up again ends it again and records
        its messages then; an end the store refuses (another replica owns the job now) leaves none behind. At least
        once, never none."""
        held = self._held.get(job.id)
        if held is not None:
            return held  # the write failed and is tried again: the same messages
        if job.id in self._ended:
            return []
        event = f"job.{job.status}"
        receivers = self.receivers(job)
        wanted = [r for r in receivers if event in r.events]
        self._ended[job.id] = None
        while len(self._ended) > REMEMBERED:
            self._ended.pop(next(iter(self._ended)))
        for r in receivers:  # a receiver of progress only too: no message of the end, but the job is over
            self._last_progress.pop((job.id, r.url), None)
        if not wanted:
            return []
        data = await self._data(job)
        now = time.time()
        # This bridge sends them as soon as the end is written (`end_written`): they are written as already claimed
        # (held like a claimed one, so another replica, or this one after a crash, sends them only if this bridge
        # never did), which spares the delivery loop a claim and a look-up per message.
        payload = await self._body(event, data, now)
        messages = [self._message(job, r.url, event, payload, now, now + self._hold) for r in wanted]
        self._held[job.id] = messages
        return messages

    async def _data(self, job: Job) -> dict[str, Any]:
        try:
            return await self.describe(job)
        except Exception as exc:  # noqa: BLE001 - a description failure must not lose the event
            log.warning("webhook for job %s: describing the job failed (%s); sending its state only", job.id, exc)
            return {"id": job.id, "status": job.status, "error": job.error}

    def _message(self, job: Job, url: str, event: str, payload: str, now: float, due: float) -> Delivery:
        msg_id = "msg_" + uuid.uuid4().hex
        return Delivery(id=msg_id, job_id=job.id, url=url, event=event, payload=payload,
                        created_at=now, next_at=due, client=job.meta.get("client") or "")

    async def _record_progress(self, job: Job, receivers: list[Receiver]) -> None:
        """Progress messages go through the delivery loop, where a stale one still waiting is replaced."""
        event = "job.progress"
        data = await self._data(job)
        now = time.time()
        payload = await self._body(event, data, now)
        for r in receivers:
            pending = await self.store.pending_delivery(job.id, r.url, event)
            if job.id in self._ended:
                # ended: progress is stale now, and the end's write drops any still pending. Asked after the read,
                # just before the write: the end may have been written while the read waited (PostgreSQL)
                return
            if pending is None:
                await self.store.save_delivery(self._message(job, r.url, event, payload, now, now))
            elif pending.id not in self._in_flight:
                # Only its body, and only while it is due and as it was read: the whole row written back undid a
                # claim made meanwhile (due again: sent twice at once) or an outcome (delivered: sent again).
                await self.store.replace_payload(pending, payload, now)
            # Being sent (here, or claimed by another replica): not replaced (the log would show it delivered
            # with a body never sent), nor joined by a newer one: a slow receiver would pile them up, each retried
            # for BRIDGE_WEBHOOK_RETRY_FOR. A later event, or the end, carries the state on.
        self._wake.set()

    def end_written(self, job: Job, written: bool) -> None:
        """The job table wrote the job's end and its messages (``written``): send them now, so a receiver that
        looks the job up finds it ended. Not written (another replica owns the job now, or it was deleted): neither
        are the messages; the replica that ends the job records its own."""
        held = self._held.pop(job.id, [])
        if not written:
            self._ended.pop(job.id, None)
            return
        for d in held:
            if self._stopped:
                self._interrupted.append(d)
            else:
                self._start(d)
        if self._passed_over:
            self._wake.set()  # the loop gives them back

    @staticmethod
    async def _body(event: str, data: dict[str, Any], now: float) -> str:
        stamp = datetime.fromtimestamp(now, timezone.utc).isoformat().replace("+00:00", "Z")
        body = {"type": event, "timestamp": stamp, "data": data}
        if not jsontext.has_long(body):
            return json.dumps(body, separators=(",", ":"))
        # A job's value outputs can be megabytes (sixteen 1024x1024 RGB565 frames: 44 MB of base64), which one
        # json.dumps wrote holding the event loop 93 ms: their long strings are escaped a piece at a time instead.
        pieces = jsontext.split(body, separators=(",", ":"))
        return await image_io.run_in_pool(lambda: b"".join(pieces).decode())

    async def flush(self) -> None:
        """Wait until every event seen so far is recorded (tests, shutdown)."""
        while self._pending_events:
            await asyncio.gather(*list(self._pending_events), return_exceptions=True)

    # ------------------------------------------------------------------ delivery loop
    async def run(self) -> None:
        while not self._stopped:
            self._wake.clear()
            delay = 1.0
            try:
                # Claimed: each due message is held for one attempt's time from the replicas sharing the store.
                room = WAITING_IN_ALL - len(self._in_flight)
                now = time.time()
                self._handed_off = {due: None for due in self._handed_off if due + SHARED_POLL > now}
                if room > 0:
                    for d in await self.store.claim_deliveries(now, min(200, room), hold=self._hold,
                                                               skip=list(self._handed_off)):
                        self._start(d)
                await self._pass_back()
                if room > 0:
                    next_at = await self.store.next_delivery_at(skip=list(self._handed_off))
                    # and when this replica takes those it handed off again
                    ends = [due + SHARED_POLL for due in self._handed_off]
                    next_at = min([t for t in (next_at, *ends) if t is not None], default=None)
                    delay = 30.0 if next_at is None else min(30.0, max(0.05, next_at - time.time()))
            except Exception as exc:  # noqa: BLE001 - the store is away: deliveries wait in it
                log.warning("webhook deliveries not read: %s", exc)
            if self.store.shared:
                delay = min(delay, SHARED_POLL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    @property
    def _hold(self) -> float:
        # how long a claimed message is kept from the other replicas: one attempt's time and a margin
        return self.policy.timeout + 30

    def _start(self, d: Delivery) -> None:
        waiting = self._in_flight.get(d.id)
        if waiting is not None:
            # Claimed again by this bridge (it waited for its slot past its hold): its hold is the new one, or it
            # takes itself for another replica's message when its slot comes.
            waiting.next_at = d.next_at
            return
        keys = self._keys(d)
        bound = [k for k in self._bounds_of(d) if self._waiting_for(k) >= self._bound(k)]
        if bound:
            if not self.store.shared:  # see PASS_BACK_DELAY
                now = time.time()
                for k in bound:
                    self._bound_since.setdefault(k, now)
            self._passed_over.append(d)
            return
        for k in keys:
            self._waiting[k] = self._waiting.get(k, 0) + 1
        self._in_flight[d.id] = d
        task = asyncio.create_task(self._attempt(d), name=f"webhook-{d.id}")
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            for k in keys:
                self._waiting[k] -= 1
                if not self._waiting[k]:
                    del self._waiting[k]

        task.add_done_callback(done)

    @staticmethod
    def _host(d: Delivery) -> str:
        # a host is its name, lowercased, without the port or credentials
        return urlsplit(d.url).hostname or ""

    def _keys(self, d: Delivery) -> list[str]:
        return [f"host {self._host(d)}"] + ([f"client {d.client}"] if d.client else [])

    def _bounds_of(self, d: Delivery) -> list[str]:
        return ["all", *self._keys(d)]

    def _waiting_for(self, key: str) -> int:
        return len(self._in_flight) if key == "all" else self._waiting.get(key, 0)

    @staticmethod
    def _bound(key: str) -> int:
        return WAITING_IN_ALL if key == "all" else WAITING_PER_KEY

    async def _pass_back(self) -> None:
        now = time.time()
        # kept while messages of the key wait here (their attempts time out one slot's worth at a time: no answer),
        # and at least a hold from when it was set; dropped after that once none of them is left here
        self._bound_since = {k: t for k, t in self._bound_since.items()
                             if self._waiting_for(k) or now - t <= self._hold}
        soon = now + PASS_BACK_DELAY
        self._given_back = {t: keys for t, keys in self._given_back.items() if t > soon}
        if self._advance:
            advance, self._advance = self._advance, set()
            try:
                await self.store.advance_deliveries(advance, soon)
            except Exception as exc:  # noqa: BLE001 - the store is away: they come due in their own time
                log.warning("webhook: messages given back for a receiver that answered again not due sooner: %s", exc)
        if not self._passed_over:
            return
        passed, self._passed_over = self._passed_over, []
        # due again after as long as its bounds have held without an answer, at least PASS_BACK_DELAY and at most a
        # hold: a receiver that stays away is asked about less and less often
        since = dict(self._bound_since)  # an answer while a group is written back pops its key: due sooner then
        by_due: dict[tuple[float, frozenset[str]], list[Delivery]] = {}
        for d in passed:
            keys = frozenset(k for k in self._bounds_of(d) if k in since)
            due = now + min(self._hold, max([PASS_BACK_DELAY, *(now - since[k] for k in keys)]))
            by_due.setdefault((due, keys), []).append(d)
        # one due time per group of keys, so that one receiver's answer moves its own messages and no other's (two
        # hanging receivers both at a hold came out at the same time)
        groups = [(due + n * 1e-6, keys, given) for n, ((due, keys), given) in enumerate(by_due.items())]
        for n, (due, keys, given) in enumerate(groups):
            try:
                # only while the claim is still this replica's: one another replica made since stays its own
                await self.store.reclaim_deliveries([(d.id, d.next_at) for d in given], due)
                if self.store.shared:
                    self._handed_off[due] = None
                    if len(self._handed_off) > 64:  # each is a parameter of every claim; rounds can be many a second
                        self._handed_off.pop(next(iter(self._handed_off)))
                elif due > soon and keys:
                    owed = {k for k in keys if self._bound_since.get(k) == since[k]}
                    if owed:
                        self._given_back[due] = owed
                    else:  # all answered while this was written
                        self._advance.add(due)
                        self._wake.set()
            except BaseException as exc:
                left = [d for _, _, ds in groups[n:] for d in ds]
                self._passed_over[:0] = left  # given back next round, or released by stop()
                if not isinstance(exc, Exception):
                    raise
                log.warning("webhook: %d passed-over messages not given back yet: %s", len(left), exc)
                return

    async def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._settler is not None:
            self._settler.cancel()
            await asyncio.gather(self._settler, return_exceptions=True)
        await self.write_settled()
        # Messages this bridge held and did not finish sending are due at once for whoever runs next, rather than
        # when their hold runs out: claimed ones only while the claim is still this bridge's (one waiting for its slot
        # may have outlived its hold and been claimed, or even delivered, by another replica: written whole, it went
        # out twice); held ones whose end's write failed are stored whole, since the engine clears `before_end`
        # before this and writes those ends later without them (at least once, never none).
        claimed, held = self._interrupted + self._passed_over, [d for ds in self._held.values() for d in ds]
        self._interrupted, self._passed_over, self._held = [], [], {}
        now = time.time()
        try:
            await self.store.reclaim_deliveries([(d.id, d.next_at) for d in claimed], now)
        except Exception as exc:  # noqa: BLE001 - the store is away: the holds run out instead
            log.warning("webhook: %d claimed messages not released for the next start (%s)", len(claimed), exc)
        for d in held:  # never written: the end's write failed
            try:
                d.next_at = now
                await self.store.save_delivery(d)
            except Exception as exc:  # noqa: BLE001 - the store is away: the hold runs out instead
                log.warning("webhook %s: not released for the next start (%s)", d.id, exc)

    async def _attempt(self, d: Delivery) -> None:
        settled = False  # this bridge's part is over: the attempt is recorded, or another replica has the message
        try:
            # a job without a client (none asked over HTTP) has no bound of its own
            client = self._clients.slot(d.client) if d.client else contextlib.nullcontext()
            async with client, self._hosts.slot(self._host(d)), self._global:
                if time.time() > d.next_at - self.policy.timeout - 1:
                    # the hold ran nearly out while this waited for a free slot: take it again, unless another
                    # replica already has (it claimed the message once the hold had run out)
                    again = time.time() + self._hold
                    if not await self.store.reclaim_deliveries([(d.id, d.next_at)], again):
                        settled = True  # another replica's now: its loop may give it back here later
                        self._in_flight.pop(d.id, None)
                        return
                    d.next_at = again
                started = time.time()
                stamp = datetime.fromtimestamp(int(started), timezone.utc)
                # signed and encoded in one go on the loop, a 44 MB message held it 80 ms
                signature, body = await image_io.run_small(
                    lambda: (self.signer.sign(d.id, stamp, d.payload), d.payload.encode()), len(d.payload))
                headers = {"content-type": "application/json", "webhook-id": d.id,
                           "webhook-timestamp": str(int(started)), "webhook-signature": signature,
                           "user-agent": "pixart-bridge-webhooks"}
                status, error, refused = None, None, False
                try:
                    # `send` keeps the time limit itself (the bridge's Poster does): no second timer per message
                    status = await self.send(d.url, body, headers, self.policy.timeout)
                except asyncio.TimeoutError:
                    error = f"no answer within {self.policy.timeout:g} s"
                except OutboundRefused as exc:
                    # a receiver the policy forbids stays forbidden: no retries
                    error, refused = f"refused: {exc}", True
                except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
                    error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                ended = time.time()
                if status is not None:
                    # an answer: its bounds are being worked off, and later give-backs wait PASS_BACK_DELAY again, as
                    # those given back with a longer delay do from now once no other bound holds them (the loop
                    # moves them)
                    answered = self._bounds_of(d)
                    for k in answered:
                        self._bound_since.pop(k, None)
                    for due, owed in list(self._given_back.items()):
                        owed.difference_update(answered)
                        if not owed:
                            del self._given_back[due]
                            self._advance.add(due)
                    if self._advance:
                        self._wake.set()
                d.attempts.append({"at": started, "duration_ms": round((ended - started) * 1000, 1),
                                   "status": status, "error": error})
                # a copy: the hold may run out while the outcome waits to be written, and the loop's new claim, which
                # moves the message's hold on (`_start`), must not move a retry's time
                if status is not None and 200 <= status < 300:
                    outcome = replace(d, status="delivered", next_at=None)
                elif status == GONE or refused or ended - d.created_at >= self.policy.retry_for:
                    outcome = replace(d, status="failed", next_at=None)
                    log.warning("webhook %s to %s for job %s given up after %d attempts (%s)", d.id, d.url,
                                d.job_id, len(d.attempts), error or f"HTTP {status}")
                else:
                    backoff = min(self.policy.retry_max, self.policy.retry_base * 2 ** (len(d.attempts) - 1))
                    outcome = replace(d, next_at=ended + backoff * random.uniform(0.75, 1.25))
                self._settle(outcome)
                settled = True
        finally:
            if not settled:
                self._in_flight.pop(d.id, None)
                if self._stopped:
                    self._interrupted.append(d)

    def _settle(self, d: Delivery) -> None:
        """Queue an attempt's outcome for the store. Outcomes are written together a moment later, one transaction
        for many messages: a bridge that dies meanwhile sends those messages again when their hold runs out (at
        least once). The message stays in flight here until then, so no newer progress replaces it unsent."""
        self._settling.append(d)
        if self._settler is None and not self._stopped:  # a stopping bridge writes them in stop()
            self._settler = asyncio.get_running_loop().create_task(self._settle_later())

    async def _settle_later(self) -> None:
        try:
            await asyncio.sleep(SETTLE_DELAY)
            await self.write_settled()
        finally:
            self._settler = None
            if self._settling and not self._stopped:  # queued while this one wrote
                self._settler = asyncio.get_running_loop().create_task(self._settle_later())

    async def write_settled(self) -> None:
        """Write the attempts' outcomes queued so far (also before a read of the log and at a stop)."""
        batch, self._settling = self._settling, []
        if not batch:
            return
        try:
            await self.store.settle_deliveries(batch)
        except asyncio.CancelledError:
            self._settling[:0] = batch  # a stop cut the write short: it writes them itself
            raise
        except Exception as exc:  # noqa: BLE001 - the store is away: the holds run out and the messages go again
            log.warning("webhook attempts of %d messages not recorded: %s", len(batch), exc)
        for d in batch:
            self._in_flight.pop(d.id, None)
        if any(d.status == "pending" for d in batch):
            self._wake.set()  # a retry is due later: the loop's next wake-up time may have moved

    # ------------------------------------------------------------------ reads
    async def deliveries(self, job_id: str) -> list[dict[str, Any]]:
        await self.write_settled()
        return [d.to_dict() for d in await self.store.deliveries_for(job_id)]


__all__ = ["EVENTS", "DEFAULT_EVENTS", "Receiver", "Policy", "WebhookConfig", "Webhooks", "new_secret"]
