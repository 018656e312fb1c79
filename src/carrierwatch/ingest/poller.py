"""``carrierwatch poll``: ask each polled partner's tracking API about the numbers it must follow.

One process, one event loop, one :class:`PartnerPoller` per partner with a ``poll:`` block
(:class:`~carrierwatch.core.partner.PollSpec`): httpx for HTTP (REST and Carrier B's GraphQL),
aiolimiter for the partner's request rate, a semaphore for its concurrency, tenacity for
retries (exponential backoff with full jitter; a ``Retry-After`` header wins, up to
``max_retry_after_seconds``), purgatory for the circuit breaker (``breaker_threshold``
consecutive failed requests open it for ``breaker_reset_seconds``; then requests go through
half-open, and the first failure re-opens it, the first success closes it). A 429 is retried
after its ``Retry-After`` but does not count against the breaker (the partner answered).

Tokens: ``oauth2_client_credentials`` partners exchange their client id and secret for a bearer
token, renewed ``refresh_margin_seconds`` before it expires and at once after a 401 (the request
is then sent again once with the new token).

Durability and the cursor: a response is produced to ``raw.<partner>`` only when the part of a
number in it changed since the last durable one (:mod:`carrierwatch.ingest.trackings`), in the
gateway's raw-message shape (body = the API's bytes; ``carrierwatch-received-time``,
``carrierwatch-partner``, ``carrierwatch-request-id``, ``content-type``, plus
``carrierwatch-integration: poll`` and ``carrierwatch-tracking-numbers``), with the gateway's
:class:`~carrierwatch.ingest.kafka.RawProducer` (``acks=all``, delivery report awaited) or, while
Kafka is away, its write-ahead :class:`~carrierwatch.ingest.spool.Spool` drained exactly once by
:class:`~carrierwatch.ingest.kafka.Drainer`. The request id is a hash of the partner and the new
digests, so the same news polled again after a crash carries the same id, and the pending-row
protocol of the registry settles a kill -9 between the produce and the cursor's update.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiolimiter import AsyncLimiter
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from carrierwatch.core.errors import CarrierwatchError
from carrierwatch.core.partner import PartnerSpec, PollSpec
from carrierwatch.ingest.kafka import (
    REQUEST_ID_HEADER,
    Drainer,
    RawProducer,
    read_request_ids,
)
from carrierwatch.ingest.pollapis import ApiRequest, ResponseError, build_request, split_response
from carrierwatch.ingest.spool import Spool, SpoolEntry, SpoolFull
from carrierwatch.ingest.trackings import TERMINAL_STATUSES, TrackingRegistry
from carrierwatch.streams.records import RECEIVED_TIME_HEADER
from carrierwatch.transformers.base import SYNTHETIC_HEADER

__all__ = ["BREAKER_STATES", "PartnerPoller", "PollFailure", "PollSettings", "Poller",
           "PollerMetrics", "base_url_env", "credentials_id", "metrics_app", "open_poller"]

log = logging.getLogger(__name__)

PARTNER_HEADER = "carrierwatch-partner"
INTEGRATION_HEADER = "carrierwatch-integration"
NUMBERS_HEADER = "carrierwatch-tracking-numbers"
#: the breaker states exported by ``carrierwatch_poller_breaker_state``
BREAKER_STATES = ("closed", "half_open", "open")
_PURGATORY_STATES = {"closed": "closed", "opened": "open", "half-opened": "half_open"}


def credentials_id(partner: str) -> str:
    """The secrets key of a partner's API credentials: ``<id>_api``, i.e. the environment
    variable ``CARRIERWATCH_SECRET_<ID>_API`` (apart from a webhook partner's signing secret).

    >>> credentials_id("fedex")
    'fedex_api'
    """
    return f"{partner}_api"


def base_url_env(partner: str) -> str:
    """>>> base_url_env("ups")
    'CARRIERWATCH_POLL_UPS_BASE_URL'
    """
    return f"CARRIERWATCH_POLL_{partner.upper()}_BASE_URL"


class PollSettings(BaseSettings):
    """Settings of ``carrierwatch poll`` (``CARRIERWATCH_POLL_*``; options win)."""

    model_config = SettingsConfigDict(env_prefix="CARRIERWATCH_POLL_", extra="ignore")

    trackings: Path | None = Field(None, description="Tracking registry [<data dir>/poll/"
                                                     "trackings.sqlite3].")
    spool_dir: Path | None = Field(None, description="Write-ahead spool [<data dir>/poll/spool].")
    spool_max_bytes: int = Field(512 * 2**20, gt=0)
    delivery_timeout: float = Field(10.0, gt=0)
    secrets_file: Path | None = None
    host: str = "127.0.0.1"
    metrics_port: int = Field(8472, ge=0, le=65535)
    declare_topics: bool = True
    #: seconds between two looks at a partner's due numbers when none is due
    idle_seconds: float = Field(1.0, gt=0)
    #: how long recorded high watermarks are reused (any earlier watermark is a correct start)
    watermark_ttl: float = Field(30.0, gt=0)


class PollFailure(CarrierwatchError):
    """A request that did not get a usable answer. ``outcome`` is its metric label;
    ``retry_after`` the seconds the partner asked to wait (429, 503)."""

    def __init__(self, outcome: str, message: str, *, retry_after: float | None = None,
                 transient: bool = True) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.retry_after = retry_after
        self.transient = transient


class _RateLimited(PollFailure):
    """429: retried after Retry-After; not a breaker failure (the partner answered)."""


class _ClientError(PollFailure):
    """A 4xx other than 401/404/429: our request is wrong; neither retried nor a breaker
    failure."""


class PollerMetrics:
    """The poller's Prometheus metrics (its own registry, served on ``/metrics``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("carrierwatch_poller_requests", "Tracking API requests by "
                                "partner and outcome (ok, not_found, rate_limited, timeout, "
                                "connection_error, server_error, client_error, unauthorized, "
                                "bad_response, breaker_open).", ["partner", "outcome"], registry=r)
        self.breaker = Gauge("carrierwatch_poller_breaker_state", "1 for the circuit breaker's "
                             "current state (closed, half_open, open), 0 for the others.",
                             ["partner", "state"], registry=r)
        self.transitions = Counter("carrierwatch_poller_breaker_transitions", "Circuit breaker "
                                   "state changes, by the state entered.", ["partner", "state"],
                                   registry=r)
        self.tracked = Gauge("carrierwatch_poller_tracked_numbers", "Tracking numbers followed "
                             "(active in the registry).", ["partner"], registry=r)
        self.produced = Counter("carrierwatch_poller_produced", "Responses made durable, by "
                                "store (kafka or spool).", ["partner", "store"], registry=r)
        self.unchanged = Counter("carrierwatch_poller_unchanged_responses", "Responses with no "
                                 "news for any of their numbers (not produced).", ["partner"],
                                 registry=r)
        self.duration = Histogram("carrierwatch_poller_request_duration_seconds", "Tracking API "
                                  "request latency (one attempt).", ["partner"], registry=r)
        self.retries = Counter("carrierwatch_poller_retries", "Attempts retried, by reason.",
                               ["partner", "outcome"], registry=r)
        self.tokens = Counter("carrierwatch_poller_token_refreshes", "Bearer tokens fetched, by "
                              "reason (initial, expiry, unauthorized).", ["partner", "reason"],
                              registry=r)
        self.dead_letters = Counter("carrierwatch_dead_letters", "Dead letters by stage.",
                                    ["partner", "stage"], registry=r)
        self.kafka_up = Gauge("carrierwatch_kafka_up", "1 while Kafka answers.", registry=r)
        self.spool_depth = Gauge("carrierwatch_poller_spool_depth", "Responses in the spool.",
                                 registry=r)

    def set_breaker(self, partner: str, state: str) -> None:
        for name in BREAKER_STATES:
            self.breaker.labels(partner, name).set(1 if name == state else 0)


@dataclass
class _Token:
    value: str
    expires_at: float


class TokenSource:
    """An OAuth 2.0 client-credentials bearer token for one partner (see the module
    docstring)."""

    def __init__(self, partner: str, spec: PollSpec, base_url: str, secret: SecretStr,
                 metrics: PollerMetrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.partner = partner
        self.spec = spec
        url = spec.auth.token_url or ""
        self.url = url if url.startswith(("http://", "https://")) else base_url + url
        client_id, sep, client_secret = secret.get_secret_value().partition(":")
        if not sep:
            raise CarrierwatchError(f"{partner}: the API credentials must be "
                                    "'<client id>:<client secret>'")
        self._id = client_id
        self._secret = SecretStr(client_secret)
        self.metrics = metrics
        self.clock = clock
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self.fetched = 0

    def invalidate(self, value: str | None = None) -> None:
        if self._token is not None and (value is None or self._token.value == value):
            self._token = None

    def _fresh(self) -> bool:
        return self._token is not None and \
            self.clock() < self._token.expires_at - self.spec.auth.refresh_margin_seconds

    async def get(self, client: httpx.AsyncClient, reason: str = "expiry") -> str:
        if self._fresh():
            assert self._token is not None
            return self._token.value
        async with self._lock:
            if self._fresh():
                assert self._token is not None
                return self._token.value
            why = "initial" if self.fetched == 0 else reason
            data = {"grant_type": "client_credentials"}
            extra: dict[str, Any] = {}
            if self.spec.auth.client_auth == "basic":
                extra["auth"] = httpx.BasicAuth(self._id, self._secret.get_secret_value())
            else:
                data.update(client_id=self._id, client_secret=self._secret.get_secret_value())
            try:
                response = await client.post(self.url, data=data,
                                              timeout=self.spec.timeout_seconds, **extra)
            except httpx.TimeoutException as exc:
                raise PollFailure("timeout", f"token request timed out: {exc}") from None
            except httpx.HTTPError as exc:
                raise PollFailure("connection_error", f"token request failed: {exc}") from None
            if response.status_code != 200:
                transient = response.status_code >= 500 or response.status_code == 429
                raise PollFailure("unauthorized" if not transient else "server_error",
                                  f"token request answered {response.status_code}",
                                  retry_after=_retry_after(response), transient=transient)
            try:
                doc = orjson.loads(response.content)
                value = str(doc["access_token"])
                lifetime = float(doc.get("expires_in", 3600))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                raise PollFailure("bad_response", "token response has no access_token") from None
            self._token = _Token(value, self.clock() + lifetime)
            self.fetched += 1
            self.metrics.tokens.labels(self.partner, why).inc()
            return value


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class PartnerPoller:
    """Requests to one partner's API: rate, concurrency, retries, breaker, token."""

    def __init__(self, spec: PartnerSpec, base_url: str, secret: SecretStr | None,
                 metrics: PollerMetrics, client: httpx.AsyncClient,
                 breakers: Any, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        assert spec.poll is not None
        self.spec = spec
        self.poll = spec.poll
        self.partner = spec.id
        self.base_url = base_url.rstrip("/")
        self.metrics = metrics
        self.client = client
        self.breakers = breakers
        self._sleep = sleep
        # aiolimiter's leaky bucket of capacity 1: requests spaced by 1/rate (no burst)
        self.limiter = AsyncLimiter(1, 1.0 / self.poll.rate_per_second)
        self.semaphore = asyncio.Semaphore(self.poll.concurrency)
        self.secret = secret
        self.token: TokenSource | None = None
        scheme = self.poll.auth.scheme
        if scheme != "none" and secret is None:
            raise CarrierwatchError(
                f"{self.partner}: no API credentials (set CARRIERWATCH_SECRET_"
                f"{credentials_id(self.partner).upper()} or the secrets file's "
                f"{credentials_id(self.partner)} entry)")
        if scheme == "oauth2_client_credentials":
            assert secret is not None
            self.token = TokenSource(self.partner, self.poll, self.base_url, secret, metrics)
        self.breaker_state = "closed"
        metrics.set_breaker(self.partner, "closed")
        #: monotonic time before which no request goes out (the partner's Retry-After)
        self.paused_until = 0.0

    async def _auth_headers(self, reason: str = "expiry") -> dict[str, str]:
        auth = self.poll.auth
        if auth.scheme == "none":
            return {}
        if self.token is not None:
            return {auth.header: auth.prefix + await self.token.get(self.client, reason)}
        assert self.secret is not None
        return {auth.header: auth.prefix + self.secret.get_secret_value()}

    async def _send(self, request: ApiRequest) -> tuple[int, bytes]:
        """One attempt (after the rate limiter); a 401 gets one new token and a second try."""
        for attempt in (1, 2):
            headers = dict(request.headers)
            headers.update(await self._auth_headers("unauthorized" if attempt == 2 else "expiry"))
            started = time.perf_counter()
            try:
                response = await self.client.request(
                    request.method, self.base_url + request.path, params=request.params or None,
                    json=request.json, headers=headers, timeout=self.poll.timeout_seconds)
            except httpx.TimeoutException as exc:
                raise PollFailure("timeout", f"timed out after {self.poll.timeout_seconds} s "
                                  f"({type(exc).__name__})") from None
            except httpx.HTTPError as exc:
                raise PollFailure("connection_error", f"{type(exc).__name__}: {exc}") from None
            finally:
                self.metrics.duration.labels(self.partner).observe(time.perf_counter() - started)
            status = response.status_code
            if status == 401 and self.token is not None and attempt == 1:
                self.token.invalidate()
                continue
            if status == 401 or status == 403:
                raise PollFailure("unauthorized", f"answered {status}", transient=False)
            retry_after = _retry_after(response) if status in (429, 503) else None
            if retry_after is not None:  # holds every request of the partner, from now on
                self.paused_until = max(self.paused_until, time.monotonic() + min(
                    retry_after, self.poll.max_retry_after_seconds))
            if status == 429:
                raise _RateLimited("rate_limited", "answered 429", retry_after=retry_after)
            if status >= 500:
                raise PollFailure("server_error", f"answered {status}", retry_after=retry_after)
            if status == 404:
                return status, response.content
            if status >= 400:
                raise _ClientError("client_error", f"answered {status}: "
                                   f"{response.text[:200]!r}", transient=False)
            return status, response.content
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int, failure: PollFailure) -> float:
        if failure.retry_after is not None:
            wait = min(failure.retry_after, self.poll.max_retry_after_seconds)
            self.paused_until = max(self.paused_until, time.monotonic() + wait)
            return wait
        ceiling = min(self.poll.backoff_max_seconds,
                      self.poll.backoff_initial_seconds * 2 ** (attempt - 1))
        return random.uniform(0, ceiling)  # full jitter

    async def _attempt(self, request: ApiRequest) -> tuple[int, bytes]:
        breaker = await self.breakers.get_breaker(
            self.partner, self.poll.breaker_threshold, self.poll.breaker_reset_seconds,
            exclude=[_RateLimited, _ClientError, asyncio.CancelledError])
        try:
            # the breaker raises purgatory's OpenedState while open; entered inside the
            # semaphore, so that at most `concurrency` requests probe a half-open breaker
            async with self.semaphore, breaker:
                # the partner asked every request to wait (Retry-After of a 429/503)
                while (pause := self.paused_until - time.monotonic()) > 0:
                    await self._sleep(pause)
                await self.limiter.acquire()
                return await self._send(request)
        finally:
            self._note_breaker(breaker.context.state)

    def _note_breaker(self, purgatory_state: str) -> None:
        state = _PURGATORY_STATES.get(purgatory_state, "closed")
        if state != self.breaker_state:
            log.warning("poll: %s circuit breaker %s -> %s", self.partner, self.breaker_state,
                        state)
            self.breaker_state = state
            self.metrics.set_breaker(self.partner, state)
            self.metrics.transitions.labels(self.partner, state).inc()

    async def fetch(self, request: ApiRequest) -> tuple[int, bytes]:
        """The answer to ``request``, retried with backoff (tenacity) while transient.

        Raises
        ------
        PollFailure
            No usable answer after ``max_attempts`` (or a permanent failure); ``outcome``
            ``breaker_open`` when the breaker refused the request.
        """
        from purgatory.domain.model import OpenedState
        from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, PollFailure) and exc.transient

        def wait(state: RetryCallState) -> float:
            assert state.outcome is not None
            failure = state.outcome.exception()
            assert isinstance(failure, PollFailure)
            self.metrics.retries.labels(self.partner, failure.outcome).inc()
            return self._wait(state.attempt_number, failure)

        try:
            async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.poll.max_attempts), wait=wait,
                    retry=retry_if_exception(retryable), reraise=True, sleep=self._sleep):
                with attempt:
                    try:
                        return await self._attempt(request)
                    except OpenedState:
                        raise PollFailure("breaker_open", f"{self.partner}: circuit breaker "
                                          "open", transient=False) from None
        except PollFailure as failure:
            self.metrics.requests.labels(self.partner, failure.outcome).inc()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def breaker_wait(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.breaker_state != "open":
            return 0.0
        return self.poll.breaker_reset_seconds


class Poller:
    """Every polled partner of the registry, the tracking registry and the raw hand-off."""

    def __init__(self, *, partners: Mapping[str, Any], topics: Mapping[str, str],
                 trackings: TrackingRegistry, producer: RawProducer, spool: Spool,
                 settings: PollSettings, secrets: Mapping[str, tuple[SecretStr, ...]],
                 base_urls: Mapping[str, str] | None = None,
                 metrics: PollerMetrics | None = None,
                 topic_specs: list[Any] | None = None) -> None:
        from purgatory import AsyncCircuitBreakerFactory

        self.partners = {p: partner for p, partner in partners.items()
                         if partner.spec.poll is not None}
        self.topics = dict(topics)
        self.trackings = trackings
        self.producer = producer
        self.spool = spool
        self.drainer = Drainer(spool, producer)
        self.settings = settings
        self.metrics = metrics or PollerMetrics()
        self.topic_specs = topic_specs or []
        self.client = httpx.AsyncClient(follow_redirects=False,
                                        headers={"user-agent": "carrierwatch-poller"})
        self.breakers = AsyncCircuitBreakerFactory()
        self.breakers.add_listener(self._breaker_event)
        overrides = dict(base_urls or {})
        self.pollers: dict[str, PartnerPoller] = {}
        for pid, partner in sorted(self.partners.items()):
            spec = partner.spec
            url = overrides.get(pid) or os.environ.get(base_url_env(pid)) or spec.poll.base_url
            found = secrets.get(credentials_id(pid))
            self.pollers[pid] = PartnerPoller(spec, url, found[0] if found else None,
                                              self.metrics, self.client, self.breakers)
        self._watermarks: dict[str, tuple[float, dict[str, dict[str, int]]]] = {}
        self._topics_declared = False
        self.produced = 0

    def _breaker_event(self, name: str, kind: str, event: Any) -> None:
        """purgatory's hook: every state change (half-open included, which a request enters
        and leaves within one call)."""
        if kind == "state_changed" and name in self.pollers:
            self.pollers[name]._note_breaker(event.state)

    # -- Kafka ----------------------------------------------------------------------------------

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    async def connect(self) -> bool:
        up = await self.producer.probe(min(5.0, self.settings.delivery_timeout))
        if up and not self._topics_declared and self.settings.declare_topics and self.topic_specs:
            from carrierwatch.streams.topology import ensure_topics

            try:
                await self._run(lambda: ensure_topics(self.producer.bootstrap, self.topic_specs,
                                                      timeout=10.0))
                self._topics_declared = True
            except Exception as exc:
                log.warning("poll: cannot declare the raw topics yet: %s", exc)
        self.metrics.kafka_up.set(1 if self.producer.up else 0)
        return self.producer.up

    async def recover(self) -> bool:
        """Settle the produces a crash left pending (see the module docstring); whether all
        are settled (False: Kafka is needed and away)."""
        pending = self.trackings.pending()
        if not pending:
            return True
        spooled = {e.request_id for e in await self._run(self.spool.head,
                                                          max(1, self.spool.depth))}
        starts: dict[str, dict[str, int]] = {}
        for _rid, _partner, offsets in pending:
            for topic, partitions in (offsets or {}).items():
                for partition, offset in partitions.items():
                    known = starts.setdefault(topic, {})
                    known[partition] = min(offset, known.get(partition, offset))
        found: set[str] = set()
        if starts:
            if not await self.connect():
                return False
            try:
                found = await self._run(read_request_ids, self.producer.bootstrap, starts)
            except Exception as exc:
                log.warning("poll: cannot read %s to settle %d pending produces: %s",
                            sorted(starts), len(pending), exc)
                return False
        for rid, partner, _offsets in pending:
            if rid in spooled or rid in found:
                log.warning("poll: %s response %s was durable before a crash; cursor moved",
                            partner, rid)
                self.trackings.commit(rid)
            else:
                self.trackings.abandon(rid)
        return True

    async def _offsets(self, topic: str) -> dict[str, dict[str, int]] | None:
        if not self.producer.up:
            return None
        cached = self._watermarks.get(topic)
        if cached is not None and time.monotonic() - cached[0] < self.settings.watermark_ttl:
            return cached[1]
        try:
            offsets: dict[str, dict[str, int]] = await self._run(self.drainer._watermarks,
                                                                  [topic])
        except Exception as exc:
            log.warning("poll: cannot read the watermarks of %s: %s", topic, exc)
            self.producer.up = False
            return None
        self._watermarks[topic] = (time.monotonic(), offsets)
        return offsets

    async def _persist(self, entry: SpoolEntry) -> str:
        return str(await self.drainer.persist(entry, "poll"))

    async def drain(self) -> int:
        """Move the spool into Kafka (as far as it goes); return the number moved."""
        moved = await self.drainer.drain_all("poll")
        self.metrics.spool_depth.set(self.spool.depth)
        return moved

    # -- one batch ------------------------------------------------------------------------------

    def _terminal(self, partner: str, body: bytes, received_ms: int) -> set[str]:
        result = self.partners[partner].transform(body, received_ms)
        return {e.tracking_number for e in result.events if e.status in TERMINAL_STATUSES}

    async def poll_batch(self, partner: str, numbers: list[str]) -> bool:
        """Ask about ``numbers``; produce the answer if it has news; whether it was answered."""
        poller = self.pollers[partner]
        request = build_request(poller.poll.api, numbers)
        try:
            status, body = await poller.fetch(request)
        except PollFailure as failure:
            log.warning("poll: %s request for %d numbers failed: %s (%s)", partner,
                        len(numbers), failure, failure.outcome)
            return False
        received_ms = time.time_ns() // 1_000_000
        try:
            parts = split_response(poller.poll.api, body, numbers)
        except ResponseError as exc:
            self.metrics.requests.labels(partner, "bad_response").inc()
            self.metrics.dead_letters.labels(partner, "poll").inc()
            log.error("poll: %s answered %d with an unreadable body (%d bytes): %s; not "
                      "produced", partner, status, len(body), exc)
            return False
        self.metrics.requests.labels(partner, "ok" if status < 400 else "not_found").inc()
        known = self.trackings.digests(partner, numbers)
        changed = {n: d for n, d in parts.items() if d is not None and d != known.get(n)}
        if not changed:
            self.metrics.unchanged.labels(partner).inc()
            self.trackings.mark_polled(partner, numbers)
            return True
        rid = "poll-" + hashlib.sha256(orjson.dumps([partner, sorted(changed.items())])
                                       ).hexdigest()[:32]
        topic = self.topics[partner]
        headers: tuple[tuple[str, str], ...] = (
            (RECEIVED_TIME_HEADER, str(received_ms)), (PARTNER_HEADER, partner),
            (REQUEST_ID_HEADER, rid), ("content-type", "application/json"),
            (INTEGRATION_HEADER, "poll"), (NUMBERS_HEADER, ",".join(sorted(changed))))
        if all(n.startswith(poller.spec.synthetic_tracking_prefix) for n in numbers):
            headers += ((SYNTHETIC_HEADER, "true"),)
        entry = SpoolEntry(rid, partner, topic, received_ms, headers, body)
        self.trackings.begin(rid, partner, changed, await self._offsets(topic))
        try:
            store = await self._persist(entry)
        except (SpoolFull, OSError) as exc:
            self.trackings.abandon(rid)
            log.error("poll: %s: Kafka is unreachable and the spool cannot take the "
                      "response: %s", partner, exc)
            return False
        self.trackings.commit(rid, received_ms)
        self.trackings.mark_polled(partner, numbers)
        self.metrics.produced.labels(partner, store).inc()
        self.produced += 1
        finished = self._terminal(partner, body, received_ms) & set(changed)
        if finished:
            self.trackings.close_numbers(partner, finished)
        return True

    # -- the loops ------------------------------------------------------------------------------

    async def run_partner(self, partner: str, stop: asyncio.Event) -> None:
        poller = self.pollers[partner]
        spec = poller.poll
        interval_ms = round(spec.interval_seconds * 1000)
        failures = 0
        while not stop.is_set():
            self.trackings.expire(partner, spec.max_age_days)
            numbers = self.trackings.due(partner, interval_ms,
                                         spec.batch_size * spec.concurrency * 2,
                                         canary_interval_ms=round(
                                             spec.canary_interval_seconds * 1000))
            if not numbers:
                await _wait(stop, self.settings.idle_seconds)
                continue
            # canaries travel apart: their raw message carries the synthetic header
            prefix = poller.spec.synthetic_tracking_prefix
            batches = []
            for group in ([n for n in numbers if not n.startswith(prefix)],
                          [n for n in numbers if n.startswith(prefix)]):
                batches += [group[i:i + spec.batch_size]
                            for i in range(0, len(group), spec.batch_size)]
            results = await asyncio.gather(*(self.poll_batch(partner, b) for b in batches))
            if any(results):
                failures = 0
                continue
            failures += 1
            pause = poller.breaker_wait() or min(spec.backoff_max_seconds,
                                                 spec.backoff_initial_seconds * 2 ** failures)
            await _wait(stop, pause)

    def refresh_gauges(self) -> None:
        """Followed numbers per partner, Kafka's state and the spool depth."""
        active = self.trackings.count_active()
        for partner in self.pollers:
            self.metrics.tracked.labels(partner).set(active.get(partner, 0))
        self.metrics.kafka_up.set(1 if self.producer.up else 0)
        self.metrics.spool_depth.set(self.spool.depth)

    async def housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.refresh_gauges()
            if (not self.producer.up or self.spool.depth) and await self.connect():
                await self.drain()
            self.refresh_gauges()
            await _wait(stop, 2.0)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop``. Kafka is probed, and the spool drained, by the housekeeping
        task; until Kafka answers, responses go to the spool. Only produces left pending by a
        crash wait for Kafka (they must be looked up in the topic before polling resumes)."""
        while not await self.recover():
            log.warning("poll: waiting for Kafka to settle the produces pending before a crash")
            if await _wait(stop, 2.0):
                return
        tasks = [asyncio.create_task(self.run_partner(p, stop), name=f"poll-{p}")
                 for p in self.pollers]
        tasks.append(asyncio.create_task(self.housekeeping(stop), name="poll-housekeeping"))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def close(self) -> None:
        await self.client.aclose()
        left = self.producer.close()
        if left:
            log.warning("poll: %d messages still unacknowledged at shutdown", left)
        self.spool.close()
        self.trackings.close()


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds`` or until ``stop``; whether stop is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def open_poller(*, settings: Any, poll_settings: PollSettings, registry: Any,
                namespace: str | None = None, base_urls: Mapping[str, str] | None = None,
                partners: list[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Poller:
    """A :class:`Poller` from the configuration (the CLI's and the tests' way in).

    Raises
    ------
    ConfigurationError
        A polled partner lacks its API credentials, or the secrets file is bad.
    """
    from carrierwatch.core.errors import ConfigurationError
    from carrierwatch.ingest.secrets import load_secrets
    from carrierwatch.ingest.trackings import default_path
    from carrierwatch.streams.topology import StreamConfig, TopicSpec, Topology

    config = StreamConfig()
    if namespace is not None:
        config = config.model_copy(update={"namespace": namespace})
    topology = Topology(config, registry.ids())
    polled = {p.id: p for p in registry if p.spec.poll is not None}
    if partners:
        unknown = sorted(set(partners) - set(polled))
        if unknown:
            raise ConfigurationError(f"not polled partners: {', '.join(unknown)} (polled: "
                                     f"{', '.join(sorted(polled)) or 'none'})")
        polled = {p: polled[p] for p in partners}
    secrets = load_secrets([credentials_id(p) for p in polled], environ=environ,
                           secrets_file=poll_settings.secrets_file)
    if not partners:  # every polled partner that can authenticate; the others are named
        ready = {p: x for p, x in polled.items() if credentials_id(p) in secrets
                 or x.spec.poll.auth.scheme == "none"}
        skipped = sorted(set(polled) - set(ready))
        if not ready:
            raise ConfigurationError(
                "no polled partner has API credentials: set " + ", ".join(
                    f"CARRIERWATCH_SECRET_{credentials_id(p).upper()}" for p in skipped)
                + " (or the secrets file's <partner>_api entries)")
        if skipped:
            log.warning("poll: not polling %s: no API credentials (CARRIERWATCH_SECRET_"
                        "<ID>_API)", ", ".join(skipped))
        polled = ready
    data_dir = Path(settings.data_dir).expanduser()
    trackings = TrackingRegistry(poll_settings.trackings or default_path(data_dir))
    spool = Spool(poll_settings.spool_dir or data_dir / "poll" / "spool",
                  max_bytes=poll_settings.spool_max_bytes)
    producer = RawProducer(settings.kafka_bootstrap,
                           delivery_timeout=poll_settings.delivery_timeout)
    try:
        return Poller(partners=polled, topics={p: topology.raw(p) for p in polled},
                      trackings=trackings, producer=producer, spool=spool,
                      settings=poll_settings, secrets=secrets, base_urls=base_urls,
                      topic_specs=[TopicSpec(topology.raw(p), config.raw_partitions, {})
                                   for p in sorted(polled)])
    except CarrierwatchError as exc:
        trackings.close()
        spool.close()
        producer.close(0)
        raise ConfigurationError(str(exc)) from None


def metrics_app(poller: Poller) -> Any:
    """The poller's HTTP side: ``/metrics``, ``/healthz`` (aiohttp)."""
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics(_request: web.Request) -> web.Response:
        poller.refresh_gauges()
        return web.Response(body=generate_latest(poller.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({
            "kafka": poller.producer.up, "spool_depth": poller.spool.depth,
            "breakers": {p: pp.breaker_state for p, pp in poller.pollers.items()}})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
