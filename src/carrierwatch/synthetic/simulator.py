"""The feed simulator: realistic raw partner payloads with labelled incidents (``carrierwatch simulate``).

For each partner, packages are shipped over the simulated days (business hours, fewer at weekends,
``--packages-per-day`` on average), each lives the story drawn by
:func:`carrierwatch.synthetic.lifecycle.simulate_package`, and the partner's feed makes its scans
visible and sends them the way that partner does, rendered by the partner's own renderer
(``carrierwatch.synthetic.formats.<partner_id>``):

- **webhook** partners whose renderer carries one package per payload send one payload per newly
  visible scan, repeating the package's visible history (``1.5 %`` are delivered twice, ``1 %``
  fail first and are retried with back-off 5 minutes to 8 hours later, so they arrive out of
  order; FedEx pushes a second
  "delivered" notice for most deliveries); webhook partners whose renderer carries several
  packages (a courier batching its updates) post the updates that became visible during each
  minute, each update once;
- **poll** partners are polled every :attr:`FeedProfile.poll_interval` hours; a poll stores one
  response per in-flight package whose visible history changed since the previous poll (all its
  visible scans), up to ``MAX_PACKAGES_PER_PAYLOAD`` packages per response; a package is no
  longer polled once a terminal scan (delivered, returned, cancelled) was fetched;
- **batch** partners drop one file a day at :attr:`FeedProfile.batch_minute` (contract zone) with the
  scans that became visible since the previous drop, split into files of at most
  ``MAX_PACKAGES_PER_PAYLOAD`` packages.

Incidents (see :mod:`carrierwatch.synthetic.incidents`): ``feed_outage`` — nothing is received from
the partner inside the window; webhooks sent during it are queued by the partner and delivered
right after it, the polls and batch drops inside it fail and the next one returns everything;
``exception_spike``, ``codebook_change``, ``latency_drift`` and the volume and transit slowdown of
``peak_day`` act on the packages (see :mod:`carrierwatch.synthetic.lifecycle`).

The simulation covers ``[start, start + days)`` (UTC, from midnight of ``start``); payloads
received before or after it are not written. Packages are shipped from ``warmup_days`` before the
start, so the feeds are in their steady state from the first day (packages in flight at the start
show up with their history where the feed repeats it; batching feeds send only what is new).
Same seed and arguments give the same bytes: every random draw comes from
:class:`random.Random` instances seeded from the seed, the partner and the package, and nothing
reads the clock.

Output (``out_dir``): ``<partner_id>.rawlog.jsonl`` per partner (see
:mod:`carrierwatch.synthetic.rawlog`), ``incidents.json`` (the labels) and ``manifest.json``
(seed, arguments, counts per partner, sha256 of every other file).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import orjson

from carrierwatch.core.errors import EXIT_USAGE, CarrierwatchError
from carrierwatch.core.model import ms_to_iso
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.core.timeutil import to_ms
from carrierwatch.synthetic.incidents import (
    Incident,
    IncidentSpecError,
    PartnerIncidents,
    parse_incident,
)
from carrierwatch.synthetic.lifecycle import (
    HOUR,
    MINUTE,
    PartnerProfile,
    _at,
    simulate_package,
)
from carrierwatch.synthetic.model import SimPackage, SimScan
from carrierwatch.synthetic.rawlog import encode_record, rawlog_name

__all__ = [
    "DEFAULT_PACKAGES_PER_DAY",
    "DEFAULT_PARTNER_ORDER",
    "DEFAULT_START",
    "DEFAULT_WARMUP_DAYS",
    "FeedProfile",
    "Manifest",
    "PartnerCounts",
    "SimulationError",
    "resolve_partners",
    "simulate",
    "simulate_cli",
]

DEFAULT_PARTNER_ORDER = ("easypost", "fedex", "ups", "aftership", "dhl", "shippo", "usps",
                         "metro_courier", "valley_express")
DEFAULT_PACKAGES_PER_DAY = 1500
DEFAULT_WARMUP_DAYS = 2
DEFAULT_START = date(2026, 3, 2)  # a Monday; fixed so that runs never depend on the clock
DAY = 24 * HOUR
#: Relative shipping volume Monday..Sunday (mean 1).
WEEKDAY_VOLUME = tuple(w * 7 / 6.7 for w in (1.2, 1.15, 1.1, 1.1, 1.15, 0.65, 0.35))
_TERMINAL = frozenset({"delivered", "returned", "cancelled"})


class SimulationError(CarrierwatchError, ValueError):
    """Arguments the simulator cannot run with (unknown partner, incident outside the run...).

    On the command line (``simulate``, ``demo``) a usage error: exit 2.
    """

    exit_code = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class FeedProfile:
    """How a partner's feed delivers what it makes visible (beyond the partner's metadata)."""

    poll_interval: float = 2.0         # hours between polls (poll partners)
    batch_minute: int = 5 * 60 + 30    # local minute of the daily drop (batch partners)
    duplicate_share: float = 0.015     # webhooks delivered twice
    retry_share: float = 0.01          # webhooks that fail first and arrive late
    double_delivered: float = 0.0      # share of deliveries pushed twice (FedEx SPOD/PPOD)
    flush_seconds: int = 60            # batching webhooks: updates gathered per POST
    user_agent: str = "carrierwatch-simulator"
    #: share of polls that fail during a peak_day incident (an API patchy on peak days); a
    #: failed poll is taken at the next interval
    peak_poll_failure: float = 0.0


FEED_PROFILES: Mapping[str, FeedProfile] = {
    "easypost": FeedProfile(user_agent="EasyPost WebHook Agent 1.0"),
    "fedex": FeedProfile(double_delivered=0.8, user_agent="FedEx-Tracking-Webhook/1.0"),
    "aftership": FeedProfile(duplicate_share=0.02, user_agent="AfterShip-Webhook/2025-01"),
    "shippo": FeedProfile(user_agent="Shippo-Webhook/1.0"),
    "metro_courier": FeedProfile(user_agent="metro-courier-notify/2.3"),
    "ups": FeedProfile(poll_interval=2.0),
    "dhl": FeedProfile(poll_interval=3.0),
    "usps": FeedProfile(poll_interval=4.0),
    "carrier_b": FeedProfile(poll_interval=0.25, peak_poll_failure=0.5),
    "valley_express": FeedProfile(batch_minute=5 * 60 + 30),
}


@dataclass(slots=True)
class PartnerCounts:
    """What the simulator generated for one partner."""

    delivery: str
    packages: int = 0                  # shipped inside the simulated days
    warmup_packages: int = 0           # shipped before, still in flight at the start
    scans: int = 0
    payloads: int = 0
    duplicates: int = 0
    retried_late: int = 0
    queued_by_outage: int = 0
    unknown_code_scans: int = 0
    first_received: int | None = None
    last_received: int | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a simulation wrote: its arguments, counts per partner and the sha256 of each file."""

    seed: int
    arguments: Mapping[str, Any]
    partners: Mapping[str, PartnerCounts]
    files: Mapping[str, str]
    incidents: tuple[Incident, ...] = field(default=())

    def to_json_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "arguments": dict(self.arguments),
                "partners": {pid: asdict(c) for pid, c in sorted(self.partners.items())},
                "files": dict(sorted(self.files.items()))}


# --- partners and arguments ------------------------------------------------------------------

def _renderer(partner_id: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"carrierwatch.synthetic.formats.{partner_id}")
    except ModuleNotFoundError as exc:
        if exc.name == f"carrierwatch.synthetic.formats.{partner_id}":
            return None
        raise


def resolve_partners(partners: int | Sequence[str], registered: Iterable[str]) -> list[str]:
    """The partners to simulate: the first N of :data:`DEFAULT_PARTNER_ORDER` that are registered
    and have a renderer, or exactly the ids given.

    >>> resolve_partners(2, ["ups", "fedex", "easypost"])
    ['easypost', 'fedex']
    """
    known = set(registered)
    if isinstance(partners, int):
        if partners < 1:
            raise SimulationError("--partners must be at least 1")
        order = [p for p in DEFAULT_PARTNER_ORDER if p in known]
        order += sorted(known - set(order))
        chosen = [p for p in order if _renderer(p) is not None][:partners]
        if len(chosen) < partners:
            raise SimulationError(f"only {len(chosen)} partners are registered with a renderer "
                                  f"({', '.join(chosen)}); asked for {partners}")
        return chosen
    chosen = list(dict.fromkeys(partners))
    for partner_id in chosen:
        if partner_id not in known:
            raise SimulationError(f"unknown partner {partner_id!r} (known: "
                                  f"{', '.join(sorted(known))})")
        if _renderer(partner_id) is None:
            raise SimulationError(f"partner {partner_id!r} has no renderer "
                                  f"carrierwatch.synthetic.formats.{partner_id}")
    return chosen


def _start_ms(start: date | str | None) -> tuple[date, int]:
    if start is None:
        day = DEFAULT_START
    elif isinstance(start, str):
        try:
            day = date.fromisoformat(start)
        except ValueError:
            raise SimulationError(f"start must be a date YYYY-MM-DD, got {start!r}") from None
    else:
        day = start
    return day, to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))


# --- shipping volume -------------------------------------------------------------------------

def _ship_minutes(rng: random.Random) -> float:
    """Local minute of the day a label is created: business hours, evenings, a few at night."""
    point = rng.random()
    if point < 0.72:
        return rng.triangular(8 * 60, 17.5 * 60, 11 * 60)
    if point < 0.94:
        return rng.uniform(17.5 * 60, 22 * 60)
    return rng.uniform(22 * 60, 32 * 60)


def _tracking_number(partner_id: str, index: int, base: int) -> str:
    """A partner-shaped tracking number, unique per index (never a heartbeat prefix)."""
    def digits(width: int) -> str:
        return f"{(base + index * 7919) % 10 ** width:0{width}d}"

    shapes = {
        "fedex": lambda: "7946" + digits(8),
        "aftership": lambda: "7712" + digits(8),
        "ups": lambda: "1Z5R89W1" + "03" + digits(8),
        "usps": lambda: "9400111899" + digits(12),
        "easypost": lambda: "9405511899" + digits(12),
        "shippo": lambda: "9205590164" + digits(12),
        "dhl": lambda: "00340434" + digits(10),
        "metro_courier": lambda: "MC-" + digits(8),
        "valley_express": lambda: "VX" + digits(8),
        "carrier_b": lambda: "CB" + digits(13),
    }
    shape = shapes.get(partner_id)
    return shape() if shape else partner_id[:3].upper() + digits(10)


def _ship_times(rng: random.Random, profile: PartnerProfile, incidents: PartnerIncidents,
                start_day: date, first_offset: int, days: int, per_day: float, sim_start: int,
                sim_end: int) -> list[tuple[int, int]]:
    """(ship time, origin index) of every package, by thinning for peak-day windows."""
    origins = profile.network.origins
    weights = [p.weight for p in origins]
    shipped: list[tuple[int, int]] = []
    earliest = sim_start + first_offset * DAY
    for offset in range(first_offset, days):
        day = start_day + timedelta(days=offset)
        day_ms = sim_start + offset * DAY
        ceiling = incidents.max_volume_factor(day_ms - DAY, day_ms + 2 * DAY)
        expected = per_day * WEEKDAY_VOLUME[day.weekday()] * ceiling
        count = int(expected) + (1 if rng.random() < expected - int(expected) else 0)
        for _ in range(count):
            origin = rng.choices(range(len(origins)), weights)[0]
            moment = _at(day, _ship_minutes(rng), origins[origin].zone)
            keep = rng.random() * ceiling < incidents.volume_factor(moment)
            if keep and earliest <= moment < sim_end:
                shipped.append((moment, origin))
    shipped.sort()
    return shipped


# --- payload schedules -----------------------------------------------------------------------

@dataclass(slots=True)
class _Payload:
    """One payload to render: which scans of which packages, when sent and received."""

    received: int
    sequence: int
    sent_at: int
    parts: list[tuple[int, int, int]]  # (package index, visible after, visible up to)
    attempt: int = 1


class _Schedule:
    """Collects payloads; applies network latency, duplicates, retries and outages."""

    def __init__(self, rng: random.Random, feed: FeedProfile, incidents: PartnerIncidents,
                 counts: PartnerCounts) -> None:
        self.rng = rng
        self.feed = feed
        self.incidents = incidents
        self.counts = counts
        self.payloads: list[_Payload] = []

    def _add(self, received: int, sent_at: int, parts: list[tuple[int, int, int]],
             attempt: int = 1) -> None:
        outage = self.incidents.outage(received)
        if outage is not None:  # nothing gets through an outage: delivered right after it
            received = outage[1] + self.rng.randint(50, 400)
        self.payloads.append(_Payload(received, len(self.payloads), sent_at, parts, attempt))

    def push(self, sent_at: int, parts: list[tuple[int, int, int]]) -> None:
        """A webhook sent at ``sent_at``: queued through outages, maybe duplicated or retried."""
        rng = self.rng
        received = sent_at + rng.randint(80, 900)
        outage = self.incidents.outage(sent_at)
        if outage is not None:
            self.counts.queued_by_outage += 1
            # the partner's queue drains in order right after the outage (an hour in 72 s)
            received = outage[1] + (sent_at - outage[0]) // 50 + rng.randint(50, 400)
            self._add(received, sent_at, parts, attempt=2)
            return
        if rng.random() < self.feed.retry_share:
            # retried with back-off: minutes to hours later (log-uniform 5 min .. 8 h)
            received = sent_at + int(5 * MINUTE * math.exp(rng.uniform(0, math.log(96))))
            retry_outage = self.incidents.outage(received)
            if retry_outage is not None:
                received = retry_outage[1] + rng.randint(50, 400)
            self.counts.retried_late += 1
            self._add(received, sent_at, parts, attempt=2)
            return
        self._add(received, sent_at, parts)
        if rng.random() < self.feed.duplicate_share:
            again = received + rng.randint(30_000, 30 * MINUTE)
            if self.incidents.outage(again) is None:
                self.counts.duplicates += 1
                self._add(again, sent_at, parts, attempt=2)

    def store(self, received: int, sent_at: int, parts: list[tuple[int, int, int]]) -> None:
        """A poll response or batch file stored as received."""
        self._add(received, sent_at, parts)


def _webhook_single(schedule: _Schedule, packages: Sequence[tuple[SimPackage, list[SimScan]]],
                    feed: FeedProfile) -> None:
    rng = schedule.rng
    for index, (_, scans) in enumerate(packages):
        for scan in sorted(scans, key=lambda s: (s.visible_at, s.event_time)):
            sent_at = scan.visible_at + rng.randint(0, 3000)
            schedule.push(sent_at, [(index, -1, sent_at)])
            if scan.status == "delivered" and rng.random() < feed.double_delivered:
                again = sent_at + rng.randint(MINUTE, 10 * MINUTE)
                schedule.counts.duplicates += 1
                schedule.push(again, [(index, -1, again)])


def _webhook_batched(schedule: _Schedule, packages: Sequence[tuple[SimPackage, list[SimScan]]],
                     feed: FeedProfile, per_payload: int) -> None:
    flush = feed.flush_seconds * 1000
    buckets: dict[int, set[int]] = defaultdict(set)
    for index, (_, scans) in enumerate(packages):
        for scan in scans:
            buckets[scan.visible_at // flush].add(index)
    for bucket in sorted(buckets):
        sent_at = (bucket + 1) * flush
        members = sorted(buckets[bucket])
        for first in range(0, len(members), per_payload):
            schedule.push(sent_at, [(i, sent_at - flush - 1, sent_at - 1)
                                    for i in members[first:first + per_payload]])


def _polls(schedule: _Schedule, packages: Sequence[tuple[SimPackage, list[SimScan]]],
           feed: FeedProfile, per_payload: int, sim_start: int, sim_end: int) -> None:
    rng, incidents = schedule.rng, schedule.incidents
    interval = int(feed.poll_interval * HOUR)
    offset = 7 * MINUTE
    due: dict[int, list[int]] = defaultdict(list)  # poll number -> packages with news
    for index, (_, scans) in enumerate(packages):
        seen = 0
        for scan in sorted(scans, key=lambda s: s.visible_at):
            number = -(-(scan.visible_at - sim_start - offset) // interval)
            while incidents.outage(sim_start + offset + number * interval) is not None or (
                    feed.peak_poll_failure
                    and incidents.volume_factor(sim_start + offset + number * interval) > 1
                    and rng.random() < feed.peak_poll_failure):
                number += 1
            poll_time = sim_start + offset + number * interval
            if poll_time <= seen:
                continue
            seen = poll_time
            due[number].append(index)
            visible = [s for s in scans if s.visible_at <= poll_time]
            if any(s.status in _TERMINAL for s in visible):
                break
    for number in sorted(due):
        poll_time = sim_start + offset + number * interval
        if poll_time >= sim_end:
            break
        members = sorted(due[number], key=lambda i: packages[i][0].tracking_number)
        received = poll_time
        for first in range(0, len(members), per_payload):
            received += rng.randint(120, 450)
            schedule.store(received, poll_time,
                           [(i, -1, poll_time) for i in members[first:first + per_payload]])


def _batches(schedule: _Schedule, packages: Sequence[tuple[SimPackage, list[SimScan]]],
             feed: FeedProfile, per_payload: int, zone: str, start_day: date, first_offset: int,
             days: int) -> None:
    rng, incidents = schedule.rng, schedule.incidents
    visible: list[tuple[int, int]] = sorted(
        (scan.visible_at, index) for index, (_, scans) in enumerate(packages) for scan in scans)
    last_drop = -1
    cursor = 0
    for offset in range(first_offset, days + 1):
        drop = _at(start_day + timedelta(days=offset), feed.batch_minute, zone)
        if incidents.outage(drop) is not None:
            continue
        members: set[int] = set()
        while cursor < len(visible) and visible[cursor][0] <= drop:
            members.add(visible[cursor][1])
            cursor += 1
        ordered = sorted(members)
        received = drop + rng.randint(MINUTE, 5 * MINUTE)
        for first in range(0, len(ordered), per_payload):
            schedule.store(received, drop,
                           [(i, last_drop, drop) for i in ordered[first:first + per_payload]])
            received += rng.randint(5_000, 60_000)
        last_drop = drop


# --- one partner -----------------------------------------------------------------------------

def _headers(partner_id: str, delivery: str, payload: _Payload, feed: FeedProfile,
             body: bytes, csv: bool) -> dict[str, str]:
    request_id = hashlib.blake2b(body + payload.sent_at.to_bytes(8, "big"),
                                 digest_size=12).hexdigest()
    headers = {"content-type": "text/csv; charset=utf-8" if csv else "application/json",
               "x-carrierwatch-ingest": delivery, "x-request-id": request_id}
    if delivery == "webhook":
        headers["user-agent"] = feed.user_agent
        headers["x-delivery-attempt"] = str(payload.attempt)
    elif delivery == "batch":
        stamp = datetime.fromtimestamp(payload.sent_at / 1000, UTC).strftime("%Y%m%dT%H%MZ")
        headers["x-batch-file"] = f"{partner_id}_{stamp}_{payload.sequence:05d}.csv"
    return headers


def _simulate_partner(spec: PartnerSpec, seed: int, start_day: date, days: int,
                      packages_per_day: float, incidents: Sequence[Incident], out_dir: str,
                      warmup_days: int) -> tuple[str, PartnerCounts, str]:
    partner_id = spec.id
    renderer = _renderer(partner_id)
    if renderer is None:  # pragma: no cover - resolve_partners checked it
        raise SimulationError(f"partner {partner_id!r} has no renderer")
    per_payload = int(renderer.MAX_PACKAGES_PER_PAYLOAD)
    feed = FEED_PROFILES.get(partner_id, FeedProfile())
    profile = PartnerProfile.build(partner_id, spec.contract)
    effects = PartnerIncidents([i for i in incidents if i.partner == partner_id])
    sim_start = to_ms(datetime(start_day.year, start_day.month, start_day.day, tzinfo=UTC))
    sim_end = sim_start + days * DAY
    counts = PartnerCounts(delivery=spec.delivery)

    volume_rng = random.Random(f"{seed}:{partner_id}:volume")
    shipped = _ship_times(volume_rng, profile, effects, start_day, -warmup_days, days,
                          packages_per_day, sim_start, sim_end)
    base = volume_rng.randrange(10 ** 12)
    packages: list[tuple[SimPackage, list[SimScan]]] = []
    for index, (ship_time, origin) in enumerate(shipped):
        rng = random.Random(f"{seed}:{partner_id}:package:{index}")
        packages.append(simulate_package(rng, profile, _tracking_number(partner_id, index, base),
                                         ship_time, effects, profile.network.origins[origin]))

    schedule = _Schedule(random.Random(f"{seed}:{partner_id}:feed"), feed, effects, counts)
    if spec.delivery == "poll":
        _polls(schedule, packages, feed, per_payload, sim_start, sim_end)
    elif spec.delivery == "batch":
        _batches(schedule, packages, feed, per_payload, profile.contract_zone, start_day,
                 -warmup_days, days)
    elif per_payload == 1:
        _webhook_single(schedule, packages, feed)
    else:
        _webhook_batched(schedule, packages, feed, per_payload)

    payloads = sorted((p for p in schedule.payloads if sim_start <= p.received < sim_end),
                      key=lambda p: (p.received, p.sequence))
    path = Path(out_dir) / rawlog_name(partner_id)
    digest = hashlib.sha256()
    render = renderer.render
    csv = spec.format == "csv"
    with path.open("wb") as out:
        for payload in payloads:
            items = [(packages[i][0], [s for s in packages[i][1] if low < s.visible_at <= high])
                     for i, low, high in payload.parts]
            body = render(items, payload.sent_at)
            line = encode_record(partner_id, payload.received,
                                 _headers(partner_id, spec.delivery, payload, feed, body, csv),
                                 body)
            digest.update(line)
            out.write(line)
    counts.packages = sum(1 for package, _ in packages if package.ship_time >= sim_start)
    counts.warmup_packages = len(packages) - counts.packages
    counts.scans = sum(len(scans) for _, scans in packages)
    counts.unknown_code_scans = sum(1 for _, scans in packages for s in scans if s.raw_code)
    counts.payloads = len(payloads)
    counts.first_received = payloads[0].received if payloads else None
    counts.last_received = payloads[-1].received if payloads else None
    return partner_id, counts, digest.hexdigest()


# --- the public API --------------------------------------------------------------------------

def _parse_incidents(incidents: Iterable[Incident | str], sim_start: int, sim_end: int,
                     partners: Sequence[str]) -> list[Incident]:
    parsed: list[Incident] = []
    for item in incidents:
        incident = parse_incident(item, sim_start) if isinstance(item, str) else item
        if incident.partner not in partners:
            raise SimulationError(f"incident {incident.spec or incident.kind!r}: partner "
                                  f"{incident.partner!r} is not simulated "
                                  f"({', '.join(partners)})")
        if incident.end <= sim_start or incident.start >= sim_end:
            raise SimulationError(f"incident {incident.spec or incident.kind!r}: window "
                                  f"{incident.start_iso}..{incident.end_iso} is outside the "
                                  f"simulation {ms_to_iso(sim_start)}..{ms_to_iso(sim_end)}")
        parsed.append(incident)
    return sorted(parsed, key=lambda i: (i.start, i.partner, i.kind, i.end))


def simulate(partners: int | Sequence[str], days: int, seed: int,
             incidents: Iterable[Incident | str] = (), out_dir: str | Path = "simulation",
             packages_per_day: float = DEFAULT_PACKAGES_PER_DAY,
             start: date | str | None = None, *, warmup_days: int = DEFAULT_WARMUP_DAYS,
             home: Path | None = None, workers: int = 1) -> Manifest:
    """Simulate ``days`` days of the partners' feeds into ``out_dir``; return the manifest.

    ``partners`` is a count (the first N of :data:`DEFAULT_PARTNER_ORDER` registered) or a list
    of ids; ``incidents`` are :class:`Incident` objects or specs (offsets count from ``start``,
    midnight UTC; :data:`DEFAULT_START` when None). Packages are shipped from ``warmup_days``
    before the start, so that the feeds are in their steady state from the first simulated day
    (only what is received inside the simulated days is written). ``workers`` > 1 simulates
    partners in parallel processes (the output is identical). ``home`` is the project root
    holding ``partners/`` and ``codebooks/`` (the configured one by default). Raw logs of other
    partners left in ``out_dir`` by an earlier run are removed, so that the directory holds one
    simulation.
    """
    from carrierwatch.transformers.registry import load_registry

    if days < 1:
        raise SimulationError("days must be at least 1")
    if packages_per_day <= 0:
        raise SimulationError("packages per day must be positive")
    if warmup_days < 0:
        raise SimulationError("warm-up days cannot be negative")
    registry = load_registry(home)
    registry.require(None if isinstance(partners, int) else partners)
    chosen = resolve_partners(partners, registry.ids())
    start_day, sim_start = _start_ms(start)
    sim_end = sim_start + days * DAY
    labelled = _parse_incidents(incidents, sim_start, sim_end, chosen)
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)

    jobs = [(registry.get(pid).spec, seed, start_day, days, float(packages_per_day), labelled,
             str(target), warmup_days) for pid in chosen]
    for stale in sorted(target.glob("*" + rawlog_name(""))):
        if stale.name not in {rawlog_name(pid) for pid in chosen}:
            stale.unlink()
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            results = list(pool.map(_simulate_partner_job, jobs))
    else:
        results = [_simulate_partner(*job) for job in jobs]

    files = {rawlog_name(pid): digest for pid, _, digest in results}
    incidents_bytes = orjson.dumps([i.to_json_dict() for i in labelled],
                                   option=orjson.OPT_INDENT_2) + b"\n"
    (target / "incidents.json").write_bytes(incidents_bytes)
    files["incidents.json"] = hashlib.sha256(incidents_bytes).hexdigest()
    arguments = {"partners": chosen, "days": days, "packages_per_day": packages_per_day,
                 "warmup_days": warmup_days,
                 "start": start_day.isoformat(), "start_ms": sim_start, "end_ms": sim_end,
                 "incidents": [i.spec or i.kind for i in labelled]}
    manifest = Manifest(seed=seed, arguments=arguments,
                        partners={pid: counts for pid, counts, _ in results}, files=files,
                        incidents=tuple(labelled))
    (target / "manifest.json").write_bytes(
        orjson.dumps(manifest.to_json_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def _simulate_partner_job(job: tuple[Any, ...]) -> tuple[str, PartnerCounts, str]:
    return _simulate_partner(*job)


# --- command line ----------------------------------------------------------------------------

def _partners_option(value: str) -> int | list[str]:
    text = value.strip()
    if text.isdigit():
        return int(text)
    ids = [p.strip() for p in text.split(",") if p.strip()]
    if not ids:
        raise click.BadParameter("expected a count or a comma-separated list of partner ids")
    return ids


def _incident_specs(values: Sequence[str], start: date | None) -> Iterator[Incident]:
    _, sim_start = _start_ms(start)
    for value in values:
        try:
            yield parse_incident(value, sim_start)
        except IncidentSpecError as exc:
            raise click.BadParameter(str(exc), param_hint="'--incident'") from None


@click.command("simulate")
@click.option("--partners", "partners_text", default="5", show_default=True,
              help="how many partners (first N of the default order) or a comma list of ids")
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True,
              help="simulated days")
@click.option("--seed", type=int, default=1, show_default=True,
              help="same seed and arguments, same bytes")
@click.option("--incident", "incident_specs", multiple=True, metavar="KIND@PARTNER:START+DURATION",
              help="inject a labelled incident (repeatable), e.g. feed_outage@fedex:2d12h+6h. "
                   "KIND: feed_outage, exception_spike, codebook_change, latency_drift, "
                   "peak_day; START: an ISO date/time (UTC unless it has an offset) or an "
                   "offset from --start like 3d or 2d12h; DURATION like 6h or 1d. Optional "
                   "parameters after commas: factor=N (exception_spike: 30, peak_day: 3 by default), "
                   "max=6h "
                   "(latency_drift), statuses=in_transit/out_for_delivery (codebook_change), "
                   "slowdown=0.4 (peak_day)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="simulation",
              show_default=True, help="output directory")
@click.option("--packages-per-day", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_PACKAGES_PER_DAY, show_default=True,
              help="mean packages shipped per day and partner")
@click.option("--start", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
              help=f"first simulated day (UTC midnight) [default: {DEFAULT_START.isoformat()}]")
@click.option("--warmup-days", type=click.IntRange(min=0), default=DEFAULT_WARMUP_DAYS,
              show_default=True, help="days of shipping before the start (packages in flight)")
@click.option("--workers", type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1),
              show_default=True, help="partners simulated in parallel processes")
def simulate_cli(partners_text: str, days: int, seed: int, incident_specs: tuple[str, ...],
                 out_dir: str, packages_per_day: float, start: datetime | None,
                 warmup_days: int, workers: int) -> None:
    """Write realistic raw partner payloads with labelled incidents (the demo's input).

    Files: OUT/<partner>.rawlog.jsonl (one payload per line, by received time), OUT/incidents.json
    (the labels) and OUT/manifest.json (arguments, counts, sha256). Same seed, same bytes.
    """
    start_day = start.date() if start is not None else None
    try:
        partners = _partners_option(partners_text)
    except click.BadParameter as exc:
        exc.param_hint = "'--partners'"
        raise
    incidents = list(_incident_specs(incident_specs, start_day))
    try:
        manifest = simulate(partners, days, seed, incidents, out_dir, packages_per_day,
                            start_day, warmup_days=warmup_days, workers=workers)
    except SimulationError as exc:
        raise click.UsageError(str(exc)) from None
    for partner_id, counts in sorted(manifest.partners.items()):
        click.echo(f"{partner_id:>15}: {counts.packages:>7} packages {counts.scans:>8} scans "
                   f"{counts.payloads:>8} payloads ({counts.delivery})")
    click.echo(f"wrote {len(manifest.files) + 1} files to {out_dir}")
