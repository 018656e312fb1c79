"""Heartbeat senders (``carrierwatch heartbeat``): one synthetic package lifecycle per
integration, on each partner's schedule, through the partner's real ingest path.

One small interface per integration kind (:class:`Sender`):

``webhook`` (:class:`WebhookSender`)
    POSTs the heartbeat to the gateway's ``/ingest/<partner>``, signed exactly as the partner
    signs (:func:`carrierwatch.ingest.auth.sign_request` with the partner's current secret,
    from ``CARRIERWATCH_SECRET_<ID>`` or the secrets file, as the gateway reads them). Anything
    but 202 is a *rejected* heartbeat, with the gateway's answer as the reason.
``drop`` (:class:`DropSender`)
    Writes the heartbeat file into the watched drop folder's ``<partner>/`` sub-folder under a
    partial name (``.heartbeat-….csv.part``) and renames it when complete, as an uploader
    should; ``carrierwatch watch`` takes it like any other file.
``poll`` (:class:`PollSender`)
    Registers the canary tracking number with the pollers' tracking registry, so that the next
    poll asks the partner's API for it (``carrierwatch.ingest.trackings.add_trackings``; see
    docs/ingest.md "Heartbeats").

Before a heartbeat goes out it is announced — a ``pending`` row of the ``heartbeats`` table,
sent on the sink topic (``cw.sink``) as a JSON sink batch, acknowledged by Kafka
(``acks=all``) — so the monitor in the sink knows what to expect; a refused heartbeat is
announced again as ``rejected``. A heartbeat that cannot be announced (Kafka away) is not sent:
the monitor sees no heartbeat and calls the integration ``silent`` (no proof of life).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.sink import SinkBatch
from carrierwatch.synthetic.heartbeat import HeartbeatPayload, announcement, integration_of

__all__ = ["DropSender", "HeartbeatRunner", "HeartbeatSettings", "PollSender", "SendResult",
           "Sender", "WebhookSender", "poll_registry_available"]

log = logging.getLogger(__name__)


class HeartbeatSettings(BaseSettings):
    """Settings of ``carrierwatch heartbeat`` (``CARRIERWATCH_HEARTBEAT_*``; options win)."""

    model_config = SettingsConfigDict(env_prefix="CARRIERWATCH_HEARTBEAT_", extra="ignore")

    gateway_url: str = Field("http://127.0.0.1:8470",
                             description="The webhook gateway the webhook heartbeats go through.")
    drop_dir: Path | None = Field(None, description="The folder `carrierwatch watch` watches "
                                                    "(batch heartbeats go to <dir>/<partner>/).")
    secrets_file: Path | None = Field(None, description="The gateway's secrets file "
                                                        "[CARRIERWATCH_GATEWAY_SECRETS_FILE].")
    request_timeout: float = Field(10.0, gt=0, description="Seconds to wait for the gateway.")
    announce_timeout: float = Field(10.0, gt=0, description="Seconds to wait for Kafka to "
                                                            "acknowledge an announcement.")


@dataclass(frozen=True)
class SendResult:
    """What the ingest path answered: ``ok`` (taken) or the reason it was not."""

    ok: bool
    detail: str = ""


class Sender(Protocol):
    """Sends one heartbeat of one partner through its ingest path."""

    integration: str

    async def send(self, spec: PartnerSpec, payload: HeartbeatPayload,
                   heartbeat_id: str) -> SendResult: ...

    async def close(self) -> None: ...


class WebhookSender:
    """POST through the gateway, signed with the partner's own scheme and current secret."""

    integration = "webhook"

    def __init__(self, gateway_url: str, secrets: Mapping[str, tuple[SecretStr, ...]],
                 timeout: float = 10.0) -> None:
        self.url = gateway_url.rstrip("/")
        self.secrets = secrets
        self.timeout = timeout
        self._session: Any = None

    async def send(self, spec: PartnerSpec, payload: HeartbeatPayload,
                   heartbeat_id: str) -> SendResult:
        import aiohttp

        from carrierwatch.ingest.auth import sign_request

        active = self.secrets.get(spec.id)
        if not active:
            return SendResult(False, f"no secret for {spec.id} (set CARRIERWATCH_SECRET_"
                                     f"{spec.id.upper()} or the secrets file)")
        headers, query = sign_request(spec.auth, active[0].get_secret_value(), payload.body,
                                      webhook_id=f"msg_{heartbeat_id}")
        headers["Content-Type"] = payload.content_type
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(f"{self.url}/ingest/{spec.id}", data=payload.body,
                                          headers=headers, params=query) as response:
                if response.status == 202:
                    return SendResult(True)
                try:
                    code = (await response.json()).get("code", "")
                except (aiohttp.ContentTypeError, ValueError):
                    code = ""
                return SendResult(False, f"gateway answered {response.status} {code}".strip())
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return SendResult(False, f"gateway {self.url} unreachable: "
                                     f"{type(exc).__name__}: {exc}"[:300])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class DropSender:
    """A file in the watched drop folder (written under a partial name, then renamed)."""

    integration = "drop"

    def __init__(self, drop_dir: Path) -> None:
        self.drop_dir = drop_dir

    async def send(self, spec: PartnerSpec, payload: HeartbeatPayload,
                   heartbeat_id: str) -> SendResult:
        folder = self.drop_dir / spec.id
        name = f"heartbeat-{payload.tracking_number}{payload.suffix}"
        partial = folder / f".{name}.part"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as handle:
                handle.write(payload.body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, folder / name)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            return SendResult(False, f"cannot write {folder / name}: {exc.strerror or exc}")
        return SendResult(True)

    async def close(self) -> None:
        return None


def poll_registry_available() -> bool:
    """Whether the pollers' tracking registry (``ingest/trackings.py``) is installed."""
    import importlib.util

    return importlib.util.find_spec("carrierwatch.ingest.trackings") is not None


class PollSender:
    """A canary tracking number registered with the pollers' tracking registry
    (``carrierwatch.ingest.trackings.add_trackings(partner, [number], source="canary")``, in the
    same data directory as ``carrierwatch poll``): the poller asks the partner's API for it,
    and the (simulated) API answers the canary's lifecycle. The heartbeat counts as arrived
    with the canary's first canonical event.
    """

    integration = "poll"

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir

    async def send(self, spec: PartnerSpec, payload: HeartbeatPayload,
                   heartbeat_id: str) -> SendResult:
        import importlib

        try:
            trackings: Any = importlib.import_module("carrierwatch.ingest.trackings")
        except ImportError:
            return SendResult(False, "the pollers' tracking registry "
                                     "(carrierwatch.ingest.trackings) is not installed")
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: trackings.add_trackings(
                    spec.id, [payload.tracking_number], source="canary",
                    data_dir=self.data_dir, specs={spec.id: spec}))
        except Exception as exc:  # TrackingError (not polled, ...) or the registry's file
            return SendResult(False, f"cannot register canary {payload.tracking_number}: "
                                     f"{type(exc).__name__}: {exc}"[:300])
        return SendResult(True)

    async def close(self) -> None:
        return None


class SenderMetrics:
    """The sender's own metrics (Prometheus job ``heartbeat``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.sent = Counter("carrierwatch_heartbeat_sent",
                            "Heartbeats by outcome: sent (taken by the ingest path), rejected "
                            "(refused by it), unannounced (Kafka did not take the announcement)",
                            ["partner", "integration", "outcome"], registry=self.registry)


@dataclass
class _Plan:
    partner: Any  # the registry's Partner
    sender: Sender
    interval: float
    deadline: float
    slow: float
    next_at: float = 0.0
    sequence: int = 0


@dataclass
class HeartbeatRunner:
    """Sends every planned heartbeat when it is due; announces each on the sink topic."""

    partners: list[Any]
    senders: dict[str, Sender]
    sink_topic: str
    producer: Any  # carrierwatch.ingest.kafka.RawProducer
    settings: HeartbeatSettings = field(default_factory=HeartbeatSettings)
    interval: float | None = None
    deadline: float | None = None
    slow: float | None = None
    metrics: SenderMetrics = field(default_factory=SenderMetrics)
    plans: list[_Plan] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from carrierwatch.synthetic.heartbeat import render_heartbeat

        for partner in self.partners:
            spec: PartnerSpec = partner.spec
            integration = integration_of(spec)
            sender = self.senders.get(integration)
            if sender is None:
                self.skipped[spec.id] = f"no {integration} sender configured"
                continue
            try:  # the partner's renderer and transformer agree on a heartbeat
                render_heartbeat(partner, time.time_ns() // 1_000_000)
            except ConfigurationError as exc:
                self.skipped[spec.id] = str(exc)
                continue
            beat = spec.heartbeat
            interval = self.interval if self.interval is not None else beat.interval_seconds
            deadline = self.deadline if self.deadline is not None else beat.deadline_seconds
            slow = self.slow if self.slow is not None else min(beat.slow_seconds, deadline)
            if deadline > interval or slow > deadline:
                raise ConfigurationError(
                    f"{spec.id}: heartbeat slow ({slow:g} s) <= deadline ({deadline:g} s) <= "
                    f"interval ({interval:g} s) is required")
            self.plans.append(_Plan(partner, sender, interval, deadline, slow))

    async def announce(self, row: dict[str, Any]) -> bool:
        from carrierwatch.ingest.kafka import DeliveryFailed

        body = SinkBatch(rows={"heartbeats": [row]}).to_json()
        try:
            await self.producer.send(self.sink_topic, str(row["partner_id"]).encode(), body, [])
        except DeliveryFailed as exc:
            log.warning("heartbeat %s of %s not announced (%s): not sent", row["heartbeat_id"],
                        row["partner_id"], exc)
            return False
        return True

    async def beat(self, plan: _Plan) -> str:
        """Send one heartbeat of ``plan``; the outcome (sent, rejected, unannounced)."""
        from carrierwatch.synthetic.heartbeat import render_heartbeat

        spec: PartnerSpec = plan.partner.spec
        sent_at = time.time_ns() // 1_000_000
        payload = render_heartbeat(plan.partner, sent_at, plan.sequence)
        plan.sequence += 1
        heartbeat_id = f"hb-{spec.id}-{uuid.uuid4().hex[:16]}"
        def row(**extra: Any) -> dict[str, Any]:
            return announcement(payload, heartbeat_id, spec, interval_seconds=plan.interval,
                                deadline_seconds=plan.deadline, slow_seconds=plan.slow, **extra)

        if not await self.announce(row()):
            outcome = "unannounced"
        else:
            result = await plan.sender.send(spec, payload, heartbeat_id)
            if result.ok:
                outcome = "sent"
                log.info("heartbeat %s %s (%s) sent", heartbeat_id, spec.id, payload.integration)
            else:
                outcome = "rejected"
                log.warning("heartbeat %s %s (%s) rejected: %s", heartbeat_id, spec.id,
                            payload.integration, result.detail)
                await self.announce(row(status="rejected", detail=result.detail,
                                        now_ms=time.time_ns() // 1_000_000))
        self.metrics.sent.labels(spec.id, payload.integration, outcome).inc()
        return outcome

    async def run(self, *, once: bool = False, stop: asyncio.Event | None = None,
                  max_seconds: float | None = None) -> dict[str, int]:
        """Send heartbeats until ``stop`` (or one round with ``once``); outcomes counted."""
        stop = stop or asyncio.Event()
        counts: dict[str, int] = {}
        started = time.monotonic()
        for index, plan in enumerate(self.plans):  # spread the first round over a second
            plan.next_at = started + index * min(1.0, plan.interval) / max(1, len(self.plans))
        while not stop.is_set():
            now = time.monotonic()
            if max_seconds is not None and now - started >= max_seconds:
                break
            due = [plan for plan in self.plans if plan.next_at <= now]
            for plan in due:
                plan.next_at += plan.interval
                if plan.next_at < now:  # fell behind (a slow gateway): skip, do not burst
                    plan.next_at = now + plan.interval
            if due:
                outcomes = await asyncio.gather(*(self.beat(plan) for plan in due))
                for outcome in outcomes:
                    counts[outcome] = counts.get(outcome, 0) + 1
                if once:
                    remaining = [p for p in self.plans if p.sequence == 0]
                    if not remaining:
                        break
            wait = min((plan.next_at for plan in self.plans), default=now + 1.0) - now
            if max_seconds is not None:
                wait = min(wait, started + max_seconds - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, wait))
        return counts

    async def close(self) -> None:
        for sender in self.senders.values():
            await sender.close()
        left = self.producer.close()
        if left:
            log.warning("heartbeat: %d announcements still unacknowledged at shutdown", left)


def select_partners(registry: Iterable[Any], wanted: Iterable[str] = ()) -> list[Any]:
    """The partners to send heartbeats for: ``wanted`` (all known) or every partner whose
    ``heartbeat.enabled`` is true."""
    partners = {p.id: p for p in registry}
    chosen = list(dict.fromkeys(wanted))
    unknown = [p for p in chosen if p not in partners]
    if unknown:
        raise ConfigurationError(f"unknown partner(s) {', '.join(unknown)} (known: "
                                 f"{', '.join(sorted(partners))})")
    if chosen:
        return [partners[p] for p in chosen]
    return [p for p in partners.values() if p.spec.heartbeat.enabled]
