"""The webhook gateway (``carrierwatch gateway``): aiohttp, per-partner auth, durable hand-off.

Routes
------
``POST /ingest/{partner}``
    For every partner whose ``partners/<id>.yaml`` says ``delivery: webhook``. In order: the
    partner is known (404) and configured with secrets (503); the content type is one of the
    partner's ``webhook.content_types`` (415); the body is within ``webhook.max_body_bytes``
    (413); the request verifies under the partner's ``auth.scheme``
    (:mod:`carrierwatch.ingest.auth`: 401, 403, 400, 408); a Standard Webhooks ``webhook-id`` is
    not a replay (400); the partner's token bucket has a token (429 with ``Retry-After``; only
    authenticated requests spend the partner's tokens, so nobody else can exhaust them). Then the
    raw body and its headers are made durable — produced to ``raw.<partner>`` with ``acks=all``
    and the delivery report received, or, while Kafka is unreachable (or the spool still holds
    older requests), appended to the write-ahead spool and fsynced — and only then 202. A full
    spool is 503 with ``Retry-After``.
``GET /healthz``
    200 while the process serves.
``GET /readyz``
    200 when Kafka answers or the spool can take requests; 503 otherwise.
``GET /metrics``
    Prometheus metrics (a registry of the app's own).

Every error is JSON ``{"code": ..., "message": ..., "request_id": ...}`` with a stable ``code``.
Each request is logged once (request id, partner, status, code, where it was stored, latency),
never with its body, its query string or a credential; aiohttp's access log is off for that
reason (Shippo's token travels in the query string).

The raw message: the key and header ``carrierwatch-request-id`` are the gateway's request id; the
body is the request body byte for byte; the headers are the partner's HTTP headers (lower-case,
without credentials, cookies, hop-by-hop and client-address headers) plus
``carrierwatch-received-time`` (epoch ms, what the worker uses as received time),
``carrierwatch-partner``, ``carrierwatch-verification`` (``<scheme>;key=<0|1>``: which active
secret matched) — the worker reads them with
:func:`carrierwatch.streams.records.received_time_of` and ``headers_to_dict``, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.ingest.auth import Verifier
from carrierwatch.ingest.kafka import REQUEST_ID_HEADER, DeliveryFailed, Drainer, RawProducer, entry_headers
from carrierwatch.ingest.limits import ReplayCache, TokenBucket
from carrierwatch.ingest.secrets import PartnerSecrets, load_secrets
from carrierwatch.ingest.spool import Spool, SpoolEntry, SpoolFull
from carrierwatch.ingest.tracking_api import add_tracking_routes
from carrierwatch.streams.records import RECEIVED_TIME_HEADER
from carrierwatch.transformers.base import SYNTHETIC_HEADER

__all__ = ["GATEWAY", "Gateway", "GatewayMetrics", "GatewaySettings", "create_app",
           "webhook_partners"]

log = logging.getLogger(__name__)

PARTNER_HEADER = "carrierwatch-partner"
VERIFICATION_HEADER = "carrierwatch-verification"

#: request headers never stored with the raw message (the synthetic marker too: a partner must
#: not exempt its own packages from its SLA; heartbeats are marked by their tracking prefix)
_DROPPED_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "host", "connection",
    "keep-alive", "transfer-encoding", "te", "upgrade", "content-length", "expect",
    "x-forwarded-for", "x-real-ip", "forwarded", "via", SYNTHETIC_HEADER})


class GatewaySettings(BaseSettings):
    """Settings of ``carrierwatch gateway`` (``CARRIERWATCH_GATEWAY_*``; options override them).

    The broker (``CARRIERWATCH_KAFKA_BOOTSTRAP``), the data directory and the topic namespace
    (``CARRIERWATCH_STREAM_NAMESPACE``) are the stream driver's.
    """

    model_config = SettingsConfigDict(env_prefix="CARRIERWATCH_GATEWAY_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8470, ge=0, le=65535, description="Port to listen on (0: any free one).")
    secrets_file: Path | None = Field(
        None, description="YAML file: partner id -> secret, or [current, previous] during a "
                          "rotation; CARRIERWATCH_SECRET_<ID>[_PREVIOUS] win over it.")
    spool_dir: Path | None = Field(
        None, description="Write-ahead spool directory [<data dir>/gateway/spool].")
    spool_max_bytes: int = Field(
        512 * 2**20, gt=0, description="Spool size at which requests are refused (503).")
    spool_segment_bytes: int = Field(16 * 2**20, gt=0)
    replay_cache: Path | None = Field(
        None, description="Standard Webhooks webhook-id cache [<data dir>/gateway/"
                          "webhook-ids.sqlite3].")
    delivery_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for Kafka's acknowledgement before the request "
                               "goes to the spool instead.")
    probe_interval: float = Field(2.0, gt=0, description="Seconds between two Kafka probes "
                                                         "while it is unreachable.")
    drain_batch: int = Field(500, ge=1, description="Spooled requests per drain batch.")
    retry_after: int = Field(30, ge=1, description="Retry-After (s) of 503 answers.")
    declare_topics: bool = Field(True, description="Create missing raw.<partner> topics.")
    operator_token: SecretStr | None = Field(
        None, description="Bearer token of POST /v1/trackings (registrations for the "
                          "pollers); without it the route answers 503.")


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("carrierwatch_gateway_requests",
                                "Webhook requests by partner and outcome (the response code)",
                                ["partner", "outcome"], registry=r)
        self.verification_failures = Counter(
            "carrierwatch_gateway_verification_failures",
            "Requests refused by verification (401/403/400/408) by partner and reason",
            ["partner", "reason"], registry=r)
        self.stored = Counter("carrierwatch_gateway_stored",
                              "Accepted requests by where they were made durable (kafka, spool)",
                              ["partner", "store"], registry=r)
        self.latency = Histogram(
            "carrierwatch_gateway_request_duration_seconds",
            "Time from the request's arrival to its answer, by partner", ["partner"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r)
        self.spool_depth = Gauge("carrierwatch_gateway_spool_depth",
                                 "Accepted requests waiting in the spool for Kafka", registry=r)
        self.spool_bytes = Gauge("carrierwatch_gateway_spool_bytes", "Bytes in the spool",
                                 registry=r)
        self.spool_age = Gauge("carrierwatch_gateway_spool_oldest_age_seconds",
                               "Age of the oldest spooled request (0: the spool is empty)",
                               registry=r)
        self.drained = Counter("carrierwatch_gateway_spool_drained",
                               "Spooled requests moved into Kafka", registry=r)
        #: carrierwatch_kafka_up (every Kafka-using process exports it; same value as above)
        from carrierwatch.outputs.metrics import ProcessMetrics

        self.process = ProcessMetrics(r)
        self.kafka_up = Gauge("carrierwatch_gateway_kafka_up",
                              "1 while the gateway can produce to Kafka", registry=r)


def webhook_partners(registry: Any) -> dict[str, PartnerSpec]:
    """The partners the gateway serves: those delivering by webhook."""
    return {partner.id: partner.spec for partner in registry if partner.spec.delivery == "webhook"}


def _error(status: int, code: str, message: str, request_id: str,
           retry_after: float | None = None) -> web.Response:
    headers = {"X-Request-Id": request_id}
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return web.Response(status=status, headers=headers, content_type="application/json",
                        body=orjson.dumps({"code": code, "message": message,
                                           "request_id": request_id}))


@dataclass
class _Outcome:
    status: int
    code: str
    store: str = ""


class _SpoolWriter:
    """Group commit: concurrent appends share one write and one fsync (in a thread of its own)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._queue: list[tuple[SpoolEntry, asyncio.Future[int]]] = []
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, "gateway-spool")
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def append(self, entry: SpoolEntry) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((entry, future))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            try:
                seqs = await loop.run_in_executor(self._executor, self.spool.append,
                                                  [entry for entry, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), seq in zip(batch, seqs, strict=True):
                if not future.done():
                    future.set_result(seq)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)


@dataclass
class Gateway:
    """Everything one gateway app holds."""

    partners: dict[str, PartnerSpec]
    topics: dict[str, str]
    verifier: Verifier
    spool: Spool
    producer: RawProducer
    replay_cache: ReplayCache
    settings: GatewaySettings
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    #: TEST/BENCH ONLY: answer 202 without verification or Kafka (the benchmark's ceiling)
    bare: bool = False
    #: TEST/BENCH ONLY: always take the spool path
    force_spool: bool = False
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    topic_specs: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.writer = _SpoolWriter(self.spool)
        self.drainer = Drainer(self.spool, self.producer, batch=self.settings.drain_batch,
                               executor=ThreadPoolExecutor(1, "gateway-drain"))
        self._drain_wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._topics_declared = False
        for partner, spec in self.partners.items():
            self.buckets[partner] = TokenBucket(spec.webhook.rate_per_second, spec.webhook.burst)

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.writer.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._drain_loop())]
        self._update_gauges()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.writer.stop()
        left = self.producer.close()
        if left:
            log.warning("gateway: %d messages still unacknowledged at shutdown", left)
        self.spool.close()
        self.replay_cache.close()

    async def _declare_topics(self) -> None:
        if self._topics_declared or not self.settings.declare_topics or not self.topic_specs:
            return
        from carrierwatch.streams.topology import ensure_topics

        try:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: ensure_topics(self.producer.bootstrap, self.topic_specs,
                                            timeout=10.0))
            self._topics_declared = True
        except Exception as exc:
            log.warning("gateway: cannot declare the raw topics yet: %s", exc)

    async def _drain_loop(self) -> None:
        """Probe Kafka while it is away, drain the spool when it is back, purge old ids."""
        purged_at = 0.0
        while True:
            try:
                if time.monotonic() - purged_at > 60:
                    self.replay_cache.purge()
                    purged_at = time.monotonic()
                if not self.producer.up and \
                        not await self.producer.probe(min(2.0, self.settings.probe_interval)):
                    self._update_gauges()
                    await self._sleep(self.settings.probe_interval)
                    continue
                await self._declare_topics()
                if self.spool.depth and not self.force_spool:
                    moved = await self.drainer.drain_once()
                    self.metrics.drained.inc(moved)
                    self._update_gauges()
                    if moved:
                        if not self.spool.depth:
                            log.info("gateway: spool drained into Kafka")
                        continue
                self._update_gauges()
                await self._sleep(self.settings.probe_interval, wake=True)
            except asyncio.CancelledError:
                raise
            except DeliveryFailed as exc:
                log.warning("gateway: spool drain paused: %s", exc)
                self.producer.up = False
                await self._sleep(self.settings.probe_interval)
            except Exception:
                log.exception("gateway: spool drain failed; retrying")
                await self._sleep(self.settings.probe_interval)

    async def _sleep(self, seconds: float, *, wake: bool = False) -> None:
        if not wake:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain_wakeup.wait(), seconds)
        self._drain_wakeup.clear()

    def _update_gauges(self) -> None:
        metrics = self.metrics
        metrics.spool_depth.set(self.spool.depth)
        metrics.spool_bytes.set(self.spool.size_bytes)
        oldest = self.spool.oldest_received_ms()
        metrics.spool_age.set(0 if oldest is None else max(0.0, time.time() - oldest / 1000))
        metrics.kafka_up.set(1 if self.producer.up else 0)
        metrics.process.kafka_up.set(1 if self.producer.up else 0)

    # -- one request ----------------------------------------------------------------------------

    async def ingest(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        received_ms = time.time_ns() // 1_000_000
        request_id = uuid.uuid4().hex
        partner = request.match_info["partner"]
        spec = self.partners.get(partner)
        label = partner if spec is not None else "unknown"
        try:
            response, outcome = await self._ingest(request, partner, spec, request_id,
                                                   received_ms)
        except Exception:  # a fault of ours: logged, answered 500 as JSON, never a traceback
            log.exception("request %s partner=%s failed", request_id, label)
            response = _error(500, "internal_error", "internal error", request_id)
            outcome = _Outcome(500, "internal_error")
        elapsed = time.perf_counter() - started
        self.metrics.requests.labels(label, outcome.code).inc()
        self.metrics.latency.labels(label).observe(elapsed)
        log.info("request %s partner=%s status=%d outcome=%s%s %.1f ms", request_id, label,
                 outcome.status, outcome.code, f" store={outcome.store}" if outcome.store else "",
                 elapsed * 1000)
        return response

    async def _ingest(self, request: web.Request, partner: str, spec: PartnerSpec | None,
                      request_id: str, received_ms: int) -> tuple[web.Response, _Outcome]:
        def refuse(status: int, code: str, message: str,
                   retry_after: float | None = None) -> tuple[web.Response, _Outcome]:
            return _error(status, code, message, request_id, retry_after), _Outcome(status, code)

        if spec is None:
            return refuse(404, "unknown_partner", "no webhook partner with this id")
        if self.bare:
            await request.read()
            return web.json_response({"status": "accepted", "request_id": request_id},
                                     status=202), _Outcome(202, "accepted")
        if not self.verifier.serves(partner):
            return refuse(503, "partner_not_configured",
                          "this partner's webhook secret is not configured",
                          self.settings.retry_after)
        limits = spec.webhook
        if request.content_type.lower() not in limits.content_types:
            return refuse(415, "unsupported_media_type",
                          f"content type must be one of {', '.join(limits.content_types)}")
        if request.content_length is not None and request.content_length > limits.max_body_bytes:
            return refuse(413, "body_too_large",
                          f"body exceeds {limits.max_body_bytes} bytes")
        chunks = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limits.max_body_bytes:
                return refuse(413, "body_too_large",
                              f"body exceeds {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        headers = {key.lower(): value for key, value in request.headers.items()}
        verdict = self.verifier.verify(partner, headers, request.query, body)
        if not verdict.ok:
            self.metrics.verification_failures.labels(partner, verdict.code).inc()
            return refuse(verdict.status, verdict.code, verdict.message)
        webhook_id = verdict.webhook_id
        if webhook_id is not None and not self.replay_cache.reserve(partner, webhook_id):
            self.metrics.verification_failures.labels(partner, "replayed_id").inc()
            return refuse(400, "replayed_id", "this webhook-id was already accepted")
        try:
            wait = self.buckets[partner].take()
            if wait > 0:
                return refuse(429, "rate_limited", "too many requests for this partner", wait)
            scheme = self.verifier.scheme_of(partner)
            stored = self._raw_headers(headers, spec, request_id, received_ms,
                                       verdict.describe(scheme))
            entry = SpoolEntry(request_id, partner, self.topics[partner], received_ms,
                               stored, body)
            try:
                store = await self._persist(entry)
            except SpoolFull:
                return refuse(503, "spool_full", "Kafka is unreachable and the local spool is "
                                                 "full; retry later", self.settings.retry_after)
            if webhook_id is not None:
                expires = (verdict.webhook_timestamp or 0) + limits.timestamp_tolerance_seconds
                self.replay_cache.remember(partner, webhook_id, expires=expires + 60)
        finally:
            if webhook_id is not None:
                self.replay_cache.release(partner, webhook_id)
        self.metrics.stored.labels(partner, store).inc()
        body_out = orjson.dumps({"status": "accepted", "request_id": request_id})
        return (web.Response(status=202, body=body_out, content_type="application/json",
                             headers={"X-Request-Id": request_id}),
                _Outcome(202, "accepted", store))

    @staticmethod
    def _raw_headers(headers: dict[str, str], spec: PartnerSpec, request_id: str,
                     received_ms: int, verification: str) -> tuple[tuple[str, str], ...]:
        credential = (spec.auth.header or "").lower() \
            if spec.auth.scheme in ("token", "api_key", "basic") else ""
        kept = [(key, value) for key, value in headers.items()
                if key not in _DROPPED_HEADERS and key != credential
                and not key.startswith("carrierwatch-")]
        kept += [(RECEIVED_TIME_HEADER, str(received_ms)), (PARTNER_HEADER, spec.id),
                 (REQUEST_ID_HEADER, request_id), (VERIFICATION_HEADER, verification)]
        return tuple(kept)

    async def _persist(self, entry: SpoolEntry) -> str:
        """Make ``entry`` durable: Kafka when it is up and nothing older waits in the spool,
        else the spool. Returns where it went."""
        if self.producer.up and not self.force_spool and not self.spool.depth \
                and not self.writer.pending:
            try:
                await self.producer.send(entry.topic, entry.request_id.encode(), entry.body,
                                         entry_headers(entry))
                return "kafka"
            except DeliveryFailed as exc:
                log.warning("request %s partner=%s: Kafka did not acknowledge (%s); spooling",
                            entry.request_id, entry.partner, exc)
        if not self.spool.fits(len(entry.body)):
            raise SpoolFull("spool full")
        await self.writer.append(entry)
        self.metrics.spool_depth.set(self.spool.depth)
        self._drain_wakeup.set()
        return "spool"

    # -- health ---------------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        kafka = self.producer.up
        spool = self.spool.writable()
        body = {"kafka": kafka, "spool_writable": spool, "spool_depth": self.spool.depth}
        return web.json_response({"ready": kafka or spool, **body},
                                 status=200 if kafka or spool else 503)

    async def metrics_view(self, request: web.Request) -> web.Response:
        self._update_gauges()
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)


@web.middleware
async def _json_errors(request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                       ) -> web.StreamResponse:
    """aiohttp's own errors (no such route, wrong method) as JSON with a stable code too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return web.Response(status=exc.status, content_type="application/json",
                            body=orjson.dumps({"code": code, "message": exc.reason}))


def create_app(*, settings: Any, gateway_settings: GatewaySettings | None = None,
               registry: Any = None, namespace: str | None = None,
               secrets: PartnerSecrets | None = None, bare: bool = False,
               force_spool: bool = False) -> web.Application:
    """The gateway's aiohttp application.

    ``settings`` is a :class:`carrierwatch.settings.Settings` (broker, data dir, home);
    ``secrets`` default to :func:`~carrierwatch.ingest.secrets.load_secrets` from the
    environment and the settings' secrets file. Kafka and the spool are opened on startup.
    """
    from carrierwatch.streams.topology import StreamConfig, TopicSpec, Topology
    from carrierwatch.transformers.registry import load_registry

    gateway_settings = gateway_settings or GatewaySettings()
    registry = registry if registry is not None else load_registry(settings.home)
    partners = webhook_partners(registry)
    config = StreamConfig()
    if namespace is not None:
        config = config.model_copy(update={"namespace": namespace})
    topology = Topology(config, registry.ids())
    if secrets is None:
        secrets = load_secrets(partners, secrets_file=gateway_settings.secrets_file)
    unsecured = [p for p, spec in partners.items() if spec.auth.scheme == "none"]
    if unsecured:
        log.error("webhook partners without an auth scheme are not served: %s", unsecured)
    usable = {p: s for p, s in secrets.items() if p in partners and p not in unsecured}
    missing = sorted(set(partners) - set(usable) - set(unsecured))
    if missing:
        log.warning("no webhook secret configured for %s (set %s): their requests get 503",
                    ", ".join(missing), ", ".join(f"CARRIERWATCH_SECRET_{p.upper()}"
                                                  for p in missing))
    try:
        verifier = Verifier({p: spec.auth for p, spec in partners.items()}, usable,
                            {p: spec.webhook.timestamp_tolerance_seconds
                             for p, spec in partners.items()})
    except ConfigurationError:
        raise
    data_dir = Path(settings.data_dir).expanduser()
    app = web.Application(middlewares=[_json_errors],
                          client_max_size=max([s.webhook.max_body_bytes
                                               for s in partners.values()] or [1]) + 1)

    async def on_startup(app: web.Application) -> None:
        spool = Spool(gateway_settings.spool_dir or data_dir / "gateway" / "spool",
                      max_bytes=gateway_settings.spool_max_bytes,
                      segment_bytes=gateway_settings.spool_segment_bytes)
        gateway = Gateway(
            partners=partners, topics={p: topology.raw(p) for p in partners},
            verifier=verifier, spool=spool,
            producer=RawProducer(settings.kafka_bootstrap,
                                 delivery_timeout=gateway_settings.delivery_timeout),
            replay_cache=ReplayCache(gateway_settings.replay_cache
                                     or data_dir / "gateway" / "webhook-ids.sqlite3"),
            settings=gateway_settings, bare=bare, force_spool=force_spool,
            topic_specs=[TopicSpec(topology.raw(p), config.raw_partitions, {})
                         for p in partners])
        app[GATEWAY] = gateway
        await gateway.producer.probe(min(2.0, gateway_settings.delivery_timeout))
        await gateway.start()

    async def on_cleanup(app: web.Application) -> None:
        if GATEWAY in app:
            await app[GATEWAY].stop()

    def route(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            view: Callable[[web.Request], Awaitable[web.Response]] = \
                getattr(request.app[GATEWAY], name)
            return await view(request)
        return handler

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/ingest/{partner}", route("ingest"))
    app.router.add_get("/healthz", route("healthz"))
    app.router.add_get("/readyz", route("readyz"))
    app.router.add_get("/metrics", route("metrics_view"))
    add_tracking_routes(app, specs={p.id: p.spec for p in registry}, data_dir=data_dir,
                        token=gateway_settings.operator_token)
    return app
