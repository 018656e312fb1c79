"""Synthetic deliveries (heartbeats): what one heartbeat sends and how the monitor judges it.

A **heartbeat** is one synthetic package lifecycle (``info_received`` → ``picked_up`` →
``in_transit`` → ``out_for_delivery`` → ``delivered``, one second apart, ending a second before
it is sent) of one partner, in that partner's own format (its renderer in
:mod:`carrierwatch.synthetic.formats`), under a tracking number that starts with the partner's
``synthetic_tracking_prefix`` — which is what marks its canonical events ``synthetic`` on every
ingest path (a dropped file carries no header), so that they count in no SLA metric. The
partner's own transformer reads the payload before it is sent: the canonical event ids it
yields are the ones the monitor waits for.

The **monitor** (:class:`HeartbeatMonitor`, pure: every time is an argument) learns of each
heartbeat from its announcement (a ``pending`` row of the ``heartbeats`` table, sent by
``carrierwatch heartbeat`` on the sink topic), sees the synthetic events the sink stored, and
decides each heartbeat once:

============  ======================================================================  ===========
status        when                                                                    integration
============  ======================================================================  ===========
``seen``      every expected event stored within ``slow_seconds`` of the send time     healthy
``slow``      … within the deadline, but after ``slow_seconds``                        slow
``missing``   the deadline passed first                                                silent
``late``      a ``missing`` heartbeat whose events were stored after all               slow
``rejected``  the ingest path refused it (the sender's error, e.g. a 401)              silent
============  ======================================================================  ===========

An integration's state is that of its most recently *sent* decided heartbeat (an old
heartbeat arriving late does not hide a newer one's verdict), and ``silent`` when no
heartbeat was sent for ``interval + deadline`` (the sender itself stopped: no proof of life).
Latency is end to end: send time → the sink's write of the last expected event returned.

Examples
--------
>>> monitor = HeartbeatMonitor()
>>> sent = 1_780_000_000_000
>>> monitor.announce({"heartbeat_id": "h1", "partner_id": "fedex", "integration": "webhook",
...                   "package_id": "fedex:CWSYN1", "sent_at": sent, "expected_events": 2,
...                   "deadline_at": sent + 60_000, "slow_ms": 10_000, "interval_ms": 120_000,
...                   "status": "pending"}, now_ms=sent)
[]
>>> [r["status"] for r in monitor.stored([("fedex:CWSYN1", "e1")], sent + 2_000)]
[]
>>> [(r["status"], r["state"], r["latency_ms"])
...  for r in monitor.stored([("fedex:CWSYN1", "e2")], sent + 3_000)]
[('seen', 'healthy', 3000.0)]
>>> monitor.state("fedex", "webhook")
'healthy'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from carrierwatch.core.partner import PartnerSpec

__all__ = ["INTEGRATIONS", "LIFECYCLE", "STATES", "HeartbeatMonitor", "HeartbeatPayload",
           "IntegrationStatus", "announcement", "integration_of", "lifecycle", "match_key",
           "render_heartbeat",
           "synthetic_tracking_number"]

#: integration kind of each ``delivery`` of a partner file
INTEGRATIONS = {"webhook": "webhook", "poll": "poll", "batch": "drop"}
STATES = ("healthy", "slow", "silent")
State = Literal["healthy", "slow", "silent"]

#: the statuses of a heartbeat's lifecycle, oldest first
LIFECYCLE = ("info_received", "picked_up", "in_transit", "out_for_delivery", "delivered")
_STATE_OF = {"seen": "healthy", "slow": "slow", "late": "slow", "missing": "silent",
             "rejected": "silent"}
#: decided heartbeats are kept this long for a late arrival of their events
_KEEP_MS = 6 * 3_600_000
#: synthetic arrivals without an announcement (yet) are kept this long
_ORPHAN_MS = 600_000


def integration_of(spec: PartnerSpec) -> str:
    """``webhook``, ``poll`` or ``drop``: how the partner's data comes in."""
    return INTEGRATIONS[spec.delivery]


def synthetic_tracking_number(spec: PartnerSpec, sent_at_ms: int, sequence: int = 0) -> str:
    """A heartbeat's tracking number: the partner's prefix, the send time and a sequence.

    >>> from carrierwatch.core.partner import PartnerSpec
    >>> synthetic_tracking_number(PartnerSpec(id="fedex", display_name="F",
    ...                                       transformer="fedex"), 1_780_000_000_123, 4)
    'CWSYN1780000000123004'
    """
    return f"{spec.synthetic_tracking_prefix}{sent_at_ms:013d}{sequence % 1000:03d}"


def lifecycle(spec: PartnerSpec, tracking_number: str, sent_at_ms: int) -> tuple[Any, list[Any]]:
    """The simulator's package and scans of one heartbeat (see the module docstring)."""
    from carrierwatch.synthetic.model import SimPackage, SimScan

    zone = spec.contract.timezone if spec.contract.timezone != "UTC" else "America/Chicago"
    count = len(LIFECYCLE)
    first = sent_at_ms - 1000 * count
    package = SimPackage(spec.id, tracking_number, spec.contract.default_service_level,
                         ship_time=first - 60_000, promised_by=sent_at_ms + 86_400_000,
                         shipment_id=f"SYN-{tracking_number}", synthetic=True)
    scans = [SimScan(status, first + 1000 * i, zone, country="US", region="IL",
                     city="Chicago", postal_code="60607",
                     attempt_number=1 if status == "delivered" else None,
                     proof_of_delivery="signature" if status == "delivered" else None,
                     visible_at=first + 1000 * i)
             for i, status in enumerate(LIFECYCLE)]
    return package, scans


@dataclass(frozen=True)
class HeartbeatPayload:
    """One heartbeat, rendered: the bytes to send and what the store must receive."""

    partner_id: str
    integration: str
    tracking_number: str
    package_id: str
    body: bytes
    content_type: str
    suffix: str
    event_ids: tuple[str, ...]
    sent_at_ms: int


@dataclass
class _Heartbeat:
    heartbeat_id: str
    partner_id: str
    integration: str
    package_id: str
    sent_at: int
    deadline_ms: int
    slow_ms: int
    interval_ms: int
    expected: int
    status: str = "pending"
    seen_ids: set[str] = field(default_factory=set)
    seen_at: int | None = None
    detail: str = ""


@dataclass
class IntegrationStatus:
    """What the monitor knows of one partner's integration."""

    partner_id: str
    integration: str
    state: str = "silent"
    #: send time of the heartbeat whose verdict the state is (0: none decided yet)
    decided_sent_at: int = 0
    last_sent_at: int = 0
    last_success_ms: int | None = None
    interval_ms: int = 0
    deadline_ms: int = 0


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    return int(value)


def match_key(package_id: str) -> str:
    """What the monitor matches stored events by: ``<partner>:<tracking number>`` (a package id
    without the discriminator some formats add, so that a canary answered by a partner's API
    in its own shape still matches).

    >>> match_key("ups:CWSYN1:SYN-1"), match_key("fedex:CWSYN2")
    ('ups:CWSYN1', 'fedex:CWSYN2')
    """
    return ":".join(package_id.split(":", 2)[:2])


def _from_row(row: Mapping[str, Any]) -> _Heartbeat:
    sent_at = _ms(row["sent_at"])
    deadline_at = row.get("deadline_at")
    return _Heartbeat(
        str(row["heartbeat_id"]), str(row["partner_id"]), str(row.get("integration") or ""),
        str(row.get("package_id") or ""), sent_at,
        _ms(deadline_at) - sent_at if deadline_at is not None else 0,
        int(row.get("slow_ms") or 0), int(row.get("interval_ms") or 0),
        int(row.get("expected_events") or 0), status=str(row.get("status") or "pending"),
        seen_at=None if row.get("seen_at") is None else _ms(row["seen_at"]),
        detail=str(row.get("detail") or ""))


class HeartbeatMonitor:
    """Decides heartbeats and integration states (see the module docstring). Not thread-safe:
    one owner (the sink's loop) calls it."""

    def __init__(self) -> None:
        self.heartbeats: dict[str, _Heartbeat] = {}
        self.by_package: dict[str, str] = {}
        self.integrations: dict[tuple[str, str], IntegrationStatus] = {}
        #: package id -> (latest stored at, event ids) of synthetic events not announced (yet)
        self.orphans: dict[str, tuple[int, set[str]]] = {}
        #: (partner, integration, status, latency in seconds) decided since take_decided()
        self.decided: list[tuple[str, str, str, float | None]] = []

    # -- input ----------------------------------------------------------------------------------

    def announce(self, row: Mapping[str, Any], now_ms: int) -> list[dict[str, Any]]:
        """A heartbeat row from the sender (``pending``, or ``rejected`` by the ingest path).

        The row travels as a ``heartbeats`` table row plus ``expected_events``,
        ``deadline_ms``, ``slow_ms``, ``interval_ms`` and ``integration``. Returns rows to
        write (the verdict, when the announcement decides it at once).
        """
        heartbeat_id = str(row["heartbeat_id"])
        known = self.heartbeats.get(heartbeat_id)
        if known is not None:  # a redelivered announcement, or the sender's "rejected" update
            if str(row.get("status")) == "rejected" and known.status == "pending":
                known.detail = str(row.get("detail") or "")
                return [self._decide(known, "rejected", now_ms)]
            return []
        beat = _from_row(row)
        sent_at = beat.sent_at
        self.heartbeats[heartbeat_id] = beat
        status = self._integration(beat.partner_id, beat.integration)
        status.last_sent_at = max(status.last_sent_at, sent_at)
        status.interval_ms, status.deadline_ms = beat.interval_ms, beat.deadline_ms
        if str(row.get("status")) == "rejected":
            return [self._decide(beat, "rejected", now_ms)]
        if beat.package_id:
            key = match_key(beat.package_id)
            self.by_package[key] = heartbeat_id
            orphan = self.orphans.pop(key, None)
            if orphan is not None:
                beat.seen_ids |= orphan[1]
                return self._check(beat, orphan[0])
        return []

    def restore(self, rows: Iterable[Mapping[str, Any]], now_ms: int) -> None:
        """Rebuild from the ``heartbeats`` table after a restart (latest row per heartbeat)."""
        for row in sorted(rows, key=lambda r: _ms(r["sent_at"])):
            beat = _from_row(row)
            heartbeat_id, sent_at = beat.heartbeat_id, beat.sent_at
            if now_ms - sent_at > _KEEP_MS:
                continue
            self.heartbeats[heartbeat_id] = beat
            if beat.package_id:
                self.by_package[match_key(beat.package_id)] = heartbeat_id
            status = self._integration(beat.partner_id, beat.integration)
            status.last_sent_at = max(status.last_sent_at, sent_at)
            status.interval_ms = beat.interval_ms or status.interval_ms
            status.deadline_ms = beat.deadline_ms or status.deadline_ms
            if beat.status != "pending" and sent_at >= status.decided_sent_at:
                status.decided_sent_at = sent_at
                status.state = _STATE_OF.get(beat.status, "silent")
            if beat.status in ("seen", "slow", "late") and beat.seen_at is not None:
                status.last_success_ms = max(status.last_success_ms or 0, beat.seen_at)

    def stored(self, events: Iterable[tuple[str, str]], stored_ms: int) -> list[dict[str, Any]]:
        """(``<partner>:<tracking number>``, event id) of synthetic events the sink just wrote
        (see :func:`match_key`); rows to write."""
        out: list[dict[str, Any]] = []
        touched: dict[str, _Heartbeat] = {}
        for package_id, event_id in events:
            heartbeat_id = self.by_package.get(package_id)
            if heartbeat_id is None:
                ids = self.orphans.get(package_id, (stored_ms, set()))[1]
                ids.add(event_id)
                self.orphans[package_id] = (stored_ms, ids)  # when the latest was stored
                continue
            beat = self.heartbeats[heartbeat_id]
            beat.seen_ids.add(event_id)
            touched[heartbeat_id] = beat
        for beat in touched.values():
            out.extend(self._check(beat, stored_ms))
        return out

    def tick(self, now_ms: int) -> list[dict[str, Any]]:
        """Deadlines that passed and staleness; rows to write. Also forgets old entries."""
        out = [self._decide(beat, "missing", now_ms) for beat in list(self.heartbeats.values())
               if beat.status == "pending" and beat.deadline_ms
               and now_ms >= beat.sent_at + beat.deadline_ms]
        for status in self.integrations.values():
            if status.last_sent_at and status.interval_ms and status.state != "silent" \
                    and now_ms > status.last_sent_at + status.interval_ms + status.deadline_ms:
                status.state = "silent"  # the sender stopped: no proof of life
        for heartbeat_id in [h for h, beat in self.heartbeats.items()
                             if beat.status != "pending" and now_ms - beat.sent_at > _KEEP_MS]:
            beat = self.heartbeats.pop(heartbeat_id)
            self.by_package.pop(match_key(beat.package_id), None)
        for package_id in [p for p, (at, _) in self.orphans.items()
                           if now_ms - at > _ORPHAN_MS]:
            del self.orphans[package_id]
        return out

    # -- state ----------------------------------------------------------------------------------

    def state(self, partner_id: str, integration: str) -> str:
        status = self.integrations.get((partner_id, integration))
        return status.state if status is not None else "silent"

    def take_decided(self) -> list[tuple[str, str, str, float | None]]:
        """(partner, integration, status, latency in seconds) of the heartbeats decided since
        the last call (for exporters)."""
        decided, self.decided = self.decided, []
        return decided

    def _integration(self, partner_id: str, integration: str) -> IntegrationStatus:
        key = (partner_id, integration)
        status = self.integrations.get(key)
        if status is None:
            status = self.integrations[key] = IntegrationStatus(partner_id, integration)
        return status

    def _check(self, beat: _Heartbeat, stored_ms: int) -> list[dict[str, Any]]:
        if len(beat.seen_ids) < max(1, beat.expected) or beat.status not in ("pending",
                                                                              "missing"):
            return []
        latency = stored_ms - beat.sent_at
        if beat.status == "missing":
            verdict = "late"
        else:
            verdict = "slow" if beat.slow_ms and latency > beat.slow_ms else "seen"
        beat.seen_at = stored_ms
        return [self._decide(beat, verdict, stored_ms)]

    def _decide(self, beat: _Heartbeat, verdict: str, now_ms: int) -> dict[str, Any]:
        beat.status = verdict
        status = self._integration(beat.partner_id, beat.integration)
        if beat.sent_at >= status.decided_sent_at:
            status.decided_sent_at = beat.sent_at
            status.state = _STATE_OF[verdict]
        latency = None if beat.seen_at is None else float(beat.seen_at - beat.sent_at)
        if verdict in ("seen", "slow", "late") and beat.seen_at is not None:
            status.last_success_ms = max(status.last_success_ms or 0, beat.seen_at)
        self.decided.append((beat.partner_id, beat.integration, verdict,
                             None if latency is None else latency / 1000))
        return self.row(beat, now_ms, status.state)

    @staticmethod
    def row(beat: _Heartbeat, now_ms: int, state: str) -> dict[str, Any]:
        """The ``heartbeats`` table row of ``beat`` as decided at ``now_ms``."""
        return {
            "partner_id": beat.partner_id, "heartbeat_id": beat.heartbeat_id,
            "package_id": beat.package_id or None, "sent_at": _dt(beat.sent_at),
            "deadline_at": _dt(beat.sent_at + beat.deadline_ms) if beat.deadline_ms else None,
            "seen_at": _dt(beat.seen_at),
            "latency_ms": None if beat.seen_at is None else float(beat.seen_at - beat.sent_at),
            "status": beat.status, "updated_at": _dt(now_ms), "integration": beat.integration,
            "state": state, "expected_events": beat.expected,
            "seen_events": len(beat.seen_ids), "slow_ms": beat.slow_ms,
            "interval_ms": beat.interval_ms, "detail": beat.detail[:500],
        }


def announcement(payload: HeartbeatPayload, heartbeat_id: str, spec: PartnerSpec, *,
                 status: str = "pending", detail: str = "", now_ms: int | None = None,
                 interval_seconds: float | None = None, deadline_seconds: float | None = None,
                 slow_seconds: float | None = None) -> dict[str, Any]:
    """The ``heartbeats`` row announcing a sent heartbeat (``pending``) or one the ingest path
    refused (``rejected``, with the answer in ``detail``); the overrides replace the partner's
    ``heartbeat:`` settings."""
    beat = spec.heartbeat
    deadline = deadline_seconds if deadline_seconds is not None else beat.deadline_seconds
    slow = slow_seconds if slow_seconds is not None else beat.slow_seconds
    interval = interval_seconds if interval_seconds is not None else beat.interval_seconds
    # a poll heartbeat is proven by the canary's first event: the partner's API unfolds the
    # canary's lifecycle over time (the simulated APIs: one scan per canary step)
    expected = 1 if payload.integration == "poll" else len(payload.event_ids)
    row = HeartbeatMonitor.row(_Heartbeat(
        heartbeat_id, spec.id, payload.integration, payload.package_id, payload.sent_at_ms,
        round(deadline * 1000), round(slow * 1000), round(interval * 1000),
        expected, status=status, detail=detail),
        payload.sent_at_ms if now_ms is None else now_ms, "")
    return row


def render_heartbeat(partner: Any, sent_at_ms: int, sequence: int = 0) -> HeartbeatPayload:
    """One heartbeat of a registered partner (a :class:`~carrierwatch.transformers.registry.
    Partner`), rendered in its own format and read back by its own transformer.

    Raises
    ------
    ConfigurationError
        The partner has no renderer, or its transformer does not read the rendered lifecycle
        back as synthetic events without dead letters (a renderer or codebook bug).
    """
    import importlib

    from carrierwatch.core.errors import ConfigurationError

    spec: PartnerSpec = partner.spec
    try:
        renderer = importlib.import_module(f"carrierwatch.synthetic.formats.{spec.id}")
    except ModuleNotFoundError as exc:
        if exc.name != f"carrierwatch.synthetic.formats.{spec.id}":
            raise
        raise ConfigurationError(
            f"partner {spec.id!r} has no renderer carrierwatch.synthetic.formats.{spec.id}: "
            f"no heartbeat can speak its format") from None
    tracking = synthetic_tracking_number(spec, sent_at_ms, sequence)
    package, scans = lifecycle(spec, tracking, sent_at_ms)
    body: bytes = renderer.render([(package, scans)], sent_at_ms)
    result = partner.transform(body, sent_at_ms, {})
    events = [e for e in result.events if e.tracking_number == tracking]
    if result.dead_letters or not events or not all(e.synthetic for e in events):
        problem = (result.dead_letters[0].error if result.dead_letters
                   else "no synthetic event for the heartbeat's tracking number")
        raise ConfigurationError(f"partner {spec.id!r}: its transformer does not read a "
                                 f"heartbeat back cleanly ({problem})")
    csv = spec.format == "csv"
    return HeartbeatPayload(spec.id, integration_of(spec), tracking, events[0].package_id, body,
                            "text/csv" if csv else "application/json",
                            ".csv" if csv else ".json", expected_ids(events), sent_at_ms)


def expected_ids(events: Sequence[Any]) -> tuple[str, ...]:
    """The distinct canonical event ids of a heartbeat, in order."""
    return tuple(dict.fromkeys(e.event_id for e in events))
