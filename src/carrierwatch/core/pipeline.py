"""The pure pipeline core: canonical events in; package outcomes and SLA window rows out.

Both drivers (the in-process replay and the Faust worker) call the same object::

    pipeline = Pipeline(contracts, granularities=("5m", "1h", "1d"),
                        allowed_lateness_ms=2 * DAY_MS, shard=partition)
    out = pipeline.process(batch)          # PipelineOutput
    out = pipeline.advance_watermark(ms)   # e.g. from processing time when a partition is idle
    out = pipeline.flush()                 # end of input: decide what the data allows, emit

**Watermark.** ``watermark = max(event_time seen) - allowed_lateness``, updated after every
accepted event (so the result depends on the arrival order of the partition, never on how it is
cut into batches), and moved further by :meth:`Pipeline.advance_watermark`; it drives the
decisions that depend on time passing and retention. Which events are *too late* depends on
``lateness_scope``: ``"shard"`` (the default here) compares an event's ``event_time`` with that
watermark; ``"package"`` (what both drivers use, see :func:`carrierwatch.replay.pipeline_for`)
with the newest event time applied to the event's own package minus ``allowed_lateness``, so that
the result depends only on each package's own arrival order, which every driver, shard count and
interleaving of partners preserves (docs/metrics.md §3). A too-late event is not applied, it is
returned as a :class:`TooLateRecord` and counted (``too_late_events`` of its window) — unless it
is a copy of an event already applied to a package still held, which is a duplicate (webhooks
repeat a package's whole history). The order of checks is: duplicate of an applied event below
the bound, too late, package closed, duplicate, applied.

**Corrections.** A package's contributions to the windows are a function of its event set and of
the *decision watermark* (the watermark at the end of the previous call). When an event changes a
package, its old facts are retracted and its new facts added; at the end of every call each
window that changed is re-emitted with its full totals and a higher version
(:class:`~carrierwatch.core.windows.MetricWindowRow`), and each package that changed gets a new
:class:`PackageOutcomeRow`. Every contribution (an event's, a fact added or retracted) is
dated in a 5-minute window and added, as it happens, to the window of that time in every
configured granularity (the aggregates a 5-minute window feeds are looked up once per call), so
coarse rows equal the rollup of fine rows exactly. A duplicate leaves right after the check of
its packed key against the package's sorted keys, before any other work.

**Shards.** Each Kafka partition owns a disjoint set of packages and runs its own pipeline with
its partition number as ``shard``; rows carry the shard in their key and queries sum over shards.

**Checkpoints.** :meth:`Pipeline.to_bytes` serialises the whole state; :meth:`Pipeline.take_changes`
serialises only what changed since the previous :meth:`~Pipeline.take_changes` or
:meth:`~Pipeline.clear_changes` (packages, windows, tombstones and deadline buckets that were
created, changed or dropped, plus the small scalar state), and :meth:`Pipeline.apply_changes`
replays such a delta onto a pipeline restored from the state it was taken against. A chain
``from_bytes(full)`` + ``apply_changes(d1)`` + ... + ``apply_changes(dn)`` continues exactly as
the pipeline that took them would (same outputs, same row versions), at a cost proportional to
the changes instead of the whole state.

**Retention.** A package is forgotten ``package_retention_ms`` of event time after its last event
and deadlines passed the decision watermark; later events for it are too late
(``package_closed``). Window aggregates are kept until ``window_retention_ms`` after their end;
a correction to a window already dropped is counted in ``stats["dropped_corrections"]`` instead.

Examples
--------
>>> from carrierwatch.core.model import CanonicalEvent, event_id
>>> from carrierwatch.core.partner import SlaContract
>>> def ev(status, t, pkg="p1"):
...     return CanonicalEvent(event_id("demo", pkg, status, t), "demo", pkg, "1", status, 1.0,
...                           "x", t, t + 60_000, promised_by=1_772_452_800_000)
>>> pipe = Pipeline({"demo": SlaContract(required_milestones=())}, granularities=("1h",))
>>> noon = 1_772_452_800_000
>>> out = pipe.process([ev("picked_up", noon - 3_600_000), ev("delivered", noon - 60_000),
...                     ev("delivered", noon - 60_000)])
>>> len(out.events), pipe.stats["duplicates"], out.outcomes[0].on_time
(2, 1, True)
>>> [(r.window_start == noon - 3_600_000, r.events, r.packages_on_time) for r in out.windows]
[(True, 2, 1)]
"""

from __future__ import annotations

import gc
import heapq
import math
import pickle
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from carrierwatch.core.metrics import (
    C_CLAG_N,
    C_CLAG_SUM,
    C_EVENTS,
    C_GAPS,
    C_ILAG_N,
    C_ILAG_SUM,
    C_LAT_N,
    C_LAT_SUM,
    C_SYNTHETIC,
    C_TOO_LATE,
    FACT_DELIVERED,
    FACT_ON_TIME,
    FACT_PICKUP,
    H_CARRIER_LAG,
    H_INGEST_LAG,
    H_LATENCY,
    Fact,
    apply_fact,
    package_facts,
)
from carrierwatch.core.model import CanonicalEvent
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.sketch import GAMMA, MAX_BUCKET, bucket_of
from carrierwatch.core.state import (
    I_DELIV_KEY,
    I_EXC_OPEN,
    I_FA_KEY,
    I_PICKUP,
    I_PICKUP_DUE,
    I_PROMISED_BY,
    N_FIELDS,
    NONE,
    RANK_STATUS,
    STATUS_RANK,
    ContractRules,
    PackageState,
    event_key,
    key_rank,
    key_time,
)
from carrierwatch.core.windows import (
    GRANULARITY_MS,
    MetricWindowRow,
    WindowAgg,
    WindowKey,
    window_start,
)

__all__ = [
    "DAY_MS",
    "HOUR_MS",
    "LATENESS_SCOPES",
    "FlaggedTransition",
    "PackageOutcomeRow",
    "Pipeline",
    "PipelineOutput",
    "TooLateRecord",
    "arrival_order",
]

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
#: What an event's lateness is measured against (see the module docstring, "Watermark").
LATENESS_SCOPES = ("shard", "package")
#: Format of :meth:`Pipeline.take_changes` deltas.
_CHANGES_FORMAT = 1
#: What a delta carries in full (the large containers travel as their changed entries).
_CONTAINERS = ("packages", "windows", "tombstones", "_deadline_buckets", "_bucket_heap")
#: Transient attributes: never serialised.
_TRANSIENT = ("observer", "_out", "_targets", "_dirty", "_touched", "_rules", "_window_specs",
              "_tracking", "_changed_packages", "_changed_windows", "_changed_tombstones",
              "_changed_buckets")
_MIN_WATERMARK = -(1 << 63)
_UNKNOWN_RANK = STATUS_RANK["unknown"]
_DELIVERED_RANK = STATUS_RANK["delivered"]
_FIVE_MIN = GRANULARITY_MS["5m"]
_MINUTE = 60_000
_MAX_TIME = (1 << 43) - 1
_LOG_GAMMA = math.log(GAMMA)


_BY_EVENT_TIME = attrgetter("event_time")


def arrival_order(events: list[CanonicalEvent]) -> list[CanonicalEvent]:
    """Events that arrived together, in the order the drivers hand them to the pipeline.

    What arrives at one instant (one payload; in replay, also every payload of one received
    millisecond and a batch of loose files) has no order of its own: a partner lists a history
    newest first, or an export sorts it by order id. The drivers apply such events in event-time
    order (ties keep the order given), so the watermark of a history or an export never runs
    ahead of its own older entries (docs/metrics.md, "Arrival order").

    >>> from carrierwatch.core.model import CanonicalEvent, event_id
    >>> def ev(status, t):
    ...     return CanonicalEvent(event_id("demo", "p1", status, t), "demo", "p1", "1", status,
    ...                           1.0, "x", t, t + 60_000)
    >>> [e.status for e in arrival_order([ev("delivered", 3), ev("picked_up", 1),
    ...                                   ev("in_transit", 2)])]
    ['picked_up', 'in_transit', 'delivered']
    """
    if len(events) < 2:
        return events
    return sorted(events, key=_BY_EVENT_TIME)


def _window_specs(granularities: tuple[str, ...]) -> tuple[tuple[str, int, int], ...]:
    """``(granularity, length, alignment offset)`` per granularity: the window of ``t`` starts
    at ``t - (t - offset) % length`` (:func:`~carrierwatch.core.windows.window_start`)."""
    return tuple((g, GRANULARITY_MS[g], window_start(0, g) % GRANULARITY_MS[g])
                 for g in granularities)


@dataclass(frozen=True, slots=True)
class TooLateRecord:
    """An event that was not applied: older than the watermark, for a closed package, or with an
    event time outside the representable range. The side output of the pipeline."""

    event: CanonicalEvent
    watermark: int
    reason: str  # "beyond_allowed_lateness" | "package_closed" | "invalid_time"


@dataclass(frozen=True, slots=True)
class FlaggedTransition:
    """An illegal or backward transition, kept (not dropped) and reported.

    ``kind`` is ``after_terminal`` (anything after delivered/returned/cancelled) or ``backward``
    (``info_received`` after pickup, ``picked_up`` after the package moved on). Reported when the
    event that forms the pair arrives; the authoritative count is ``PackageOutcomeRow.flags``.
    """

    partner_id: str
    package_id: str
    from_status: str | None
    from_time: int | None
    to_status: str
    to_time: int
    kind: str


@dataclass(slots=True)
class PackageOutcomeRow:
    """One package's outcome: the ``package_outcomes`` row (latest version wins)."""

    partner_id: str
    package_id: str
    shard: int
    version: int
    region: str
    service_level: str
    synthetic: bool
    status: str
    events: int
    first_event_time: int | None
    last_event_time: int | None
    promised_by: int | None
    promise_source: str | None
    pickup_due: int | None
    picked_up_at: int | None
    pickup_on_time: bool | None
    delivered_at: int | None
    proof_of_delivery: str | None
    on_time: bool | None
    decided_at: int | None
    attempts: int
    first_attempt_success: bool | None
    first_attempt_reason: str | None
    exceptions: int
    open_exception_since: int | None
    flags: int
    last_eta: int | None

    def to_row(self) -> dict[str, Any]:
        """The ClickHouse row: keys are the ``package_outcomes`` column names; times are aware
        UTC datetimes (``DateTime64(3, 'UTC')``) or None."""
        row = dict(zip(_OUTCOME_NAMES, _outcome_values(self), strict=True))
        for name in _OUTCOME_TIMES:
            value = row[name]
            if value is not None:
                row[name] = _fromtimestamp(value / 1000, UTC)
        return row


_OUTCOME_NAMES = tuple(f.name for f in fields(PackageOutcomeRow))
_outcome_values = attrgetter(*_OUTCOME_NAMES)
_OUTCOME_TIMES = ("first_event_time", "last_event_time", "promised_by", "pickup_due",
                  "picked_up_at", "delivered_at", "decided_at", "open_exception_since",
                  "last_eta")
_fromtimestamp = datetime.fromtimestamp


@dataclass(slots=True)
class PipelineOutput:
    """What one call produced.

    ``events``: newly accepted unique events (for the canonical events table); ``outcomes``: one
    replacement row per package that changed; ``windows``: full replacement rows of every window
    that changed; ``too_late``: the side output; ``flagged``: transitions flagged by this call's
    events; ``watermark``: the decision watermark after the call.

    Only while :attr:`Pipeline.observer` is set: ``decisions``, one
    ``(partner, service_level, fact kind, good)`` per package outcome *decided* in this call (a
    fact kind :data:`~carrierwatch.core.metrics.FACT_ON_TIME` … ``FACT_DELIVERED`` the package
    did not have before; ``good`` is the fact's verdict: on time, first attempt successful,
    picked up on time, tracking compliant), and ``corrections``, one
    ``(partner, service_level, fact kind)`` per such outcome retracted or reversed by a later
    event. Synthetic packages decide nothing. These feed the Prometheus SLI counters
    (:mod:`carrierwatch.outputs.metrics`), which only go up.
    """

    events: list[CanonicalEvent] = field(default_factory=list)
    outcomes: list[PackageOutcomeRow] = field(default_factory=list)
    windows: list[MetricWindowRow] = field(default_factory=list)
    too_late: list[TooLateRecord] = field(default_factory=list)
    flagged: list[FlaggedTransition] = field(default_factory=list)
    watermark: int = _MIN_WATERMARK
    decisions: list[tuple[str, str, int, int]] = field(default_factory=list)
    corrections: list[tuple[str, str, int]] = field(default_factory=list)


class Pipeline:
    """Package state machine + windowed SLA metrics for one shard (see module docstring).

    Parameters
    ----------
    contracts
        SLA contract per partner id; partners not listed use ``default_contract``.
    granularities
        Window granularities to maintain and emit (``"5m"``, ``"1h"``, ``"1d"``, ``"1w"``).
    allowed_lateness_ms
        How far behind the newest event time an event may be and still be applied.
    lateness_scope
        Whose newest event time that is: ``"shard"`` (every event of this pipeline) or
        ``"package"`` (the event's own package; the drivers' choice, independent of sharding
        and of how the partners' feeds interleave).
    shard
        This pipeline's shard (Kafka partition); part of every row key.
    eta_tolerance_ms
        ETA accuracy tolerance around the ETA window (default 2 hours).
    package_retention_ms, window_retention_ms, tombstone_retention_ms
        How long finished packages, window aggregates and the ids of forgotten packages are
        kept (event time).
    sweep_interval_ms
        How often (in watermark time) the retention sweep runs; every ``flush`` sweeps too.
    version_base
        Added to every row version (a replay into a store that holds rows of an earlier run
        passes e.g. its start time in ms × 1000 so its rows supersede the old ones).
    """

    def __init__(self, contracts: Mapping[str, SlaContract], *,
                 granularities: Iterable[str] = ("5m", "1h", "1d"),
                 allowed_lateness_ms: int = 2 * DAY_MS, shard: int = 0,
                 eta_tolerance_ms: int = 2 * HOUR_MS,
                 package_retention_ms: int = 7 * DAY_MS,
                 window_retention_ms: int = 35 * DAY_MS,
                 tombstone_retention_ms: int = 30 * DAY_MS,
                 sweep_interval_ms: int = 6 * HOUR_MS,
                 default_contract: SlaContract | None = None,
                 version_base: int = 0, lateness_scope: str = "shard") -> None:
        self.granularities = tuple(granularities)
        for granularity in self.granularities:
            if granularity not in GRANULARITY_MS:
                raise ValueError(f"unknown granularity {granularity!r}")
        if allowed_lateness_ms < 0:
            raise ValueError("allowed_lateness_ms must be >= 0")
        if lateness_scope not in LATENESS_SCOPES:
            raise ValueError(f"lateness_scope must be one of {LATENESS_SCOPES}, "
                             f"got {lateness_scope!r}")
        self.lateness_scope = lateness_scope
        self.contracts = dict(contracts)
        self.default_contract = default_contract or SlaContract()
        self.allowed_lateness_ms = allowed_lateness_ms
        self.shard = shard
        self.eta_tolerance_ms = eta_tolerance_ms
        self.package_retention_ms = package_retention_ms
        self.window_retention_ms = window_retention_ms
        self.tombstone_retention_ms = tombstone_retention_ms
        self.sweep_interval_ms = sweep_interval_ms
        self.version_base = version_base
        self.packages: dict[str, PackageState] = {}
        self.windows: dict[WindowKey, WindowAgg] = {}
        self.tombstones: dict[str, int] = {}
        self._rules: dict[str, ContractRules] = {}
        self._default_rules = ContractRules.from_contract(self.default_contract)
        self._watermark = _MIN_WATERMARK
        self._decision_watermark = _MIN_WATERMARK
        self._max_event_time = _MIN_WATERMARK
        self._closed_before = _MIN_WATERMARK
        self._last_sweep = _MIN_WATERMARK
        # deadlines (promise + grace, pickup due) per minute bucket: bucket -> package ids
        self._deadline_buckets: dict[int, list[str]] = {}
        self._bucket_heap: list[int] = []
        self._seq = 0
        self._window_specs = _window_specs(self.granularities)
        self._tracking = False  # see clear_changes
        #: called with every output (transient: not saved); while set, outputs carry
        #: ``decisions`` and ``corrections`` (see :class:`PipelineOutput`)
        self.observer: Callable[[PipelineOutput], None] | None = None
        self._reset_changes()
        self.stats: dict[str, int] = {
            "received": 0, "accepted": 0, "duplicates": 0, "too_late": 0,
            "package_closed": 0, "invalid_time": 0, "flagged": 0, "evicted_packages": 0,
            "dropped_corrections": 0,
        }
        self._reset_call()

    # ------------------------------------------------------------------ public API
    @property
    def watermark(self) -> int:
        """The current watermark (ms)."""
        return self._watermark

    def process(self, events: Iterable[CanonicalEvent]) -> PipelineOutput:
        """Apply a batch of canonical events (in arrival order) and emit what changed.

        The cyclic garbage collector is paused during the call: the pipeline allocates many
        long-lived, acyclic objects (package states, window aggregates, rows), which would
        otherwise trigger collections that rescan the whole state again and again (about 40 %
        of the call's time on a large state). Reference counting still frees everything the
        call drops; cycles made elsewhere are collected once the collector runs again.
        """
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._process(events)
        finally:
            if enabled:
                gc.enable()

    def _process(self, events: Iterable[CanonicalEvent]) -> PipelineOutput:
        out = self._out
        packages = self.packages
        stats = self.stats
        targets = self._targets
        touched = self._touched
        lateness = self.allowed_lateness_ms
        watermark = self._watermark
        decision_wm = self._decision_watermark
        tolerance = self.eta_tolerance_ms
        max_time = self._max_event_time
        status_rank = STATUS_RANK
        log = math.log
        n_fields = N_FIELDS
        rules_of = self._rules
        received = accepted = duplicates = 0
        per_package = self.lateness_scope == "package"
        for event in events:
            received += 1
            etime = event.event_time
            package_id = event.package_id
            if per_package:
                # the package's own watermark: its newest applied event time - lateness
                held = packages.get(package_id)
                bound = (held.fields[n_fields + held.n - 1] >> 20) - lateness \
                    if held is not None and held.n else _MIN_WATERMARK
            else:
                held = None
                bound = watermark
            if etime < bound:
                # a copy of an event applied already (a webhook repeating history) is a
                # duplicate, not a late arrival: it changes nothing, so it is not "too late"
                if held is None:
                    held = packages.get(package_id)
                if held is not None and 0 <= etime <= _MAX_TIME and held.has(
                        event_key(etime, event.status, event.event_id)):
                    duplicates += 1
                    continue
                self._too_late(event, bound, "beyond_allowed_lateness")
                continue
            state = held if per_package else packages.get(package_id)
            if state is None:
                if package_id in self.tombstones:
                    self._too_late(event, watermark, "package_closed")
                    continue
                state = packages[package_id] = PackageState(event.partner_id, package_id)
                if self._tracking:
                    self._changed_packages[package_id] = None
            if etime > _MAX_TIME or etime < 0:
                self._too_late(event, watermark, "invalid_time")
                if not state.n:
                    del packages[package_id]
                continue
            event_id_ = event.event_id
            try:
                low = int(event_id_[:4], 16)
            except ValueError:
                low = zlib.crc32(event_id_.encode()) & 0xFFFF
            key = etime << 20 | status_rank.get(event.status, _UNKNOWN_RANK) << 16 | low
            fields_ = state.fields
            # duplicates (half of a webhook feed's events) leave here, before any other work
            n = state.n
            if n and key <= fields_[n_fields + n - 1]:
                index = bisect_left(fields_, key, n_fields, n_fields + n)
                if fields_[index] == key:
                    duplicates += 1
                    continue
            rules = rules_of.get(state.partner_id)
            if rules is None:
                rules = self._rules_for(state.partner_id)
            region, level, synthetic = state.region, state.service_level, state.synthetic
            promised, due = fields_[I_PROMISED_BY], fields_[I_PICKUP_DUE]
            flagged = state.add(event, rules, key)
            if flagged is None:
                duplicates += 1
                continue
            accepted += 1
            out.events.append(event)
            touched[package_id] = state
            if flagged:
                self._report_flags(state, flagged)
            # event contributions
            partner = event.partner_id
            location = event.location
            event_region = location.region if location is not None and location.region \
                else "unknown"
            event_level = event.service_level or rules.default_service_level
            dkey = (partner, event_region, event_level, etime - etime % _FIVE_MIN)
            aggs = targets.get(dkey)
            if aggs is None:
                aggs = self._aggs_for(dkey)
            if event.synthetic:
                for agg in aggs:
                    agg.counts[C_SYNTHETIC] += 1
            else:
                status = event.status
                gap = (key >> 16) & 0xF == _UNKNOWN_RANK
                if gap:
                    status = "unknown"
                latency = event.received_time - etime
                # inline sketch.bucket_of (same expression, so the same bucket)
                bucket = 0 if latency < 1000 else \
                    min(int(log(latency / 1000) / _LOG_GAMMA) + 1, MAX_BUCKET)
                partner_received = event.partner_received_time
                for agg in aggs:
                    counts = agg.counts
                    counts[C_EVENTS] += 1
                    if gap:
                        counts[C_GAPS] += 1
                    by_status = agg.by_status
                    by_status[status] = by_status.get(status, 0) + 1
                    counts[C_LAT_N] += 1
                    counts[C_LAT_SUM] += latency
                    hist = agg.hists[H_LATENCY]
                    hist[bucket] = hist.get(bucket, 0) + 1
                if partner_received is not None:
                    carrier_lag = partner_received - etime
                    carrier_bucket = bucket_of(carrier_lag)
                    ingest_lag = event.received_time - partner_received
                    ingest_bucket = bucket_of(ingest_lag)
                    for agg in aggs:
                        counts = agg.counts
                        counts[C_CLAG_N] += 1
                        counts[C_CLAG_SUM] += carrier_lag
                        hist = agg.hists[H_CARRIER_LAG]
                        hist[carrier_bucket] = hist.get(carrier_bucket, 0) + 1
                        counts[C_ILAG_N] += 1
                        counts[C_ILAG_SUM] += ingest_lag
                        hist = agg.hists[H_INGEST_LAG]
                        hist[ingest_bucket] = hist.get(ingest_bucket, 0) + 1
            # package facts (only when something they depend on may have changed)
            if state.changed:
                new_facts = package_facts(state, rules, decision_wm, tolerance)
                if new_facts != state.facts or region != state.region \
                        or level != state.service_level or synthetic != state.synthetic:
                    self._apply_facts(state, (region, level, synthetic), new_facts)
            if fields_[I_PROMISED_BY] != promised or fields_[I_PICKUP_DUE] != due:
                self._push_deadlines(state, rules)
            if etime > max_time:
                max_time = etime
                if etime - lateness > watermark:
                    watermark = etime - lateness
        self._max_event_time = max_time
        self._watermark = watermark
        stats["received"] += received
        stats["accepted"] += accepted
        stats["duplicates"] += duplicates
        return self._finish()

    def advance_watermark(self, watermark_ms: int) -> PipelineOutput:
        """Move the watermark forward (never back) and emit the decisions it causes."""
        if watermark_ms > self._watermark:
            self._watermark = watermark_ms
        return self._finish()

    def flush(self) -> PipelineOutput:
        """End of input: the watermark moves to the newest event time seen (no more events will
        come, so the lateness allowance is over), deadlines up to it are decided, and every
        changed row is emitted."""
        if self._max_event_time > self._watermark:
            self._watermark = self._max_event_time
        enabled = gc.isenabled()
        gc.disable()  # as in process
        try:
            return self._finish(sweep=True)
        finally:
            if enabled:
                gc.enable()

    def window_rows(self) -> list[MetricWindowRow]:
        """Current full totals of every window held in memory (sorted by key)."""
        return [agg.to_row(key, self.shard, self.version_base + agg.version)
                for key, agg in sorted(self.windows.items())]

    def outcome(self, package_id: str) -> PackageOutcomeRow | None:
        """The current outcome row of a package held in memory."""
        state = self.packages.get(package_id)
        if state is None:
            return None
        return self._outcome_row(state, self.version_base + self._seq)

    def to_bytes(self) -> bytes:
        """Serialise the whole state (pickle, protocol 5). Call between ``process`` calls.

        The changes tracked for :meth:`take_changes` are left as they are: call
        :meth:`clear_changes` when this state becomes the base of a chain of deltas.
        """
        return pickle.dumps(self, protocol=5)

    def clear_changes(self) -> None:
        """Forget the changes tracked so far and track them from here on: the state now saved
        (or just restored) is the base of the next :meth:`take_changes`. Change tracking is off
        until the first call (a replay, which never checkpoints, does not pay for it), and off
        again in a pipeline restored by :meth:`from_bytes`."""
        self._reset_changes()
        self._tracking = True

    def _reset_changes(self) -> None:
        self._changed_packages: dict[str, None] = {}
        self._changed_windows: dict[WindowKey, None] = {}
        self._changed_tombstones: dict[str, None] = {}
        #: bucket -> its length when it first changed (it only grew since), -1: replaced
        self._changed_buckets: dict[int, int] = {}

    def pending_changes(self) -> int:
        """How many packages, windows, tombstones and deadline buckets changed since the last
        :meth:`take_changes` or :meth:`clear_changes`."""
        return (len(self._changed_packages) + len(self._changed_windows)
                + len(self._changed_tombstones) + len(self._changed_buckets))

    def take_changes(self) -> bytes:
        """Serialise the changes since the previous :meth:`take_changes` or
        :meth:`clear_changes` (a *delta*), and forget them. Call between ``process`` calls.

        A delta holds the current value of every package, window aggregate and tombstone that
        was created or changed (``None`` for one dropped), in the order they first changed; of
        every deadline bucket (a list of package ids, which deadlines only append to until the
        watermark reaches it) the ids appended, or the whole list when it was replaced; and
        every scalar attribute (watermarks, version sequence, statistics, configuration).
        :meth:`apply_changes` replays it.

        >>> from carrierwatch.core.model import CanonicalEvent, event_id
        >>> pipe = Pipeline({}, granularities=("1h",))
        >>> def ev(pkg, t):
        ...     return CanonicalEvent(event_id("d", pkg, "picked_up", t), "d", pkg, "1",
        ...                           "picked_up", 1.0, "x", t, t + 1)
        >>> _ = pipe.process([ev("a", 1_772_452_800_000)])
        >>> pipe.pending_changes()   # nothing is tracked before the first clear_changes()
        0
        >>> base = pipe.to_bytes(); pipe.clear_changes()
        >>> _ = pipe.process([ev("b", 1_772_452_860_000)])
        >>> pipe.pending_changes()   # package b, its 1-hour window, its pickup deadline
        3
        >>> copy = Pipeline.from_bytes(base)
        >>> copy.apply_changes(pipe.take_changes())
        >>> sorted(copy.packages), copy.stats == pipe.stats, pipe.pending_changes()
        (['a', 'b'], True, 0)
        """
        if not self._tracking:
            raise RuntimeError("change tracking is off: call clear_changes() when the state "
                               "that deltas build on is saved or restored")
        packages, windows = self.packages, self.windows
        tombstones, buckets = self.tombstones, self._deadline_buckets
        scalars = {k: v for k, v in self.__dict__.items()
                   if k not in _CONTAINERS and k not in _TRANSIENT}
        delta = (
            _CHANGES_FORMAT, scalars,
            [(k, packages.get(k)) for k in self._changed_packages],
            [(k, windows.get(k)) for k in self._changed_windows],
            [(k, tombstones.get(k)) for k in self._changed_tombstones],
            [(k, buckets.get(k) if start < 0 else buckets[k][start:], start)
             for k, start in self._changed_buckets.items()],
        )
        data = pickle.dumps(delta, protocol=5)
        self.clear_changes()
        return data

    def apply_changes(self, data: bytes) -> None:
        """Replay a delta of :meth:`take_changes` (deltas in the order they were taken, onto
        the state they were taken against). ValueError if ``data`` is not a delta."""
        delta = pickle.loads(data)
        if not (isinstance(delta, tuple) and len(delta) == 6 and delta[0] == _CHANGES_FORMAT):
            raise ValueError(f"not a pipeline delta (format {_CHANGES_FORMAT})")
        _, scalars, packages, windows, tombstones, buckets = delta
        target: dict[Any, Any]
        for target, changes in ((self.packages, packages), (self.windows, windows),
                                (self.tombstones, tombstones)):
            for key, value in changes:
                if value is None:
                    target.pop(key, None)
                else:
                    target[key] = value
        deadlines = self._deadline_buckets
        for bucket, ids, start in buckets:
            if start >= 0:
                deadlines.setdefault(bucket, []).extend(ids)
            elif ids is None:
                deadlines.pop(bucket, None)
            else:
                deadlines[bucket] = ids
        self.__dict__.update(scalars)
        # the heap holds exactly the buckets' keys; any heap order pops them alike
        self._bucket_heap = sorted(self._deadline_buckets)
        self._rules = {}
        self._window_specs = _window_specs(self.granularities)

    @staticmethod
    def from_bytes(data: bytes) -> Pipeline:
        """Restore a pipeline serialised by :meth:`to_bytes`."""
        pipeline = pickle.loads(data)
        if not isinstance(pipeline, Pipeline):
            raise TypeError("not a Pipeline")
        return pipeline

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for transient in _TRANSIENT:
            state.pop(transient, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("lateness_scope", "shard")  # checkpoints from before the option
        self._rules = {}
        self._window_specs = _window_specs(self.granularities)
        self._tracking = False
        self.observer = None
        self._reset_changes()
        self._reset_call()

    # ------------------------------------------------------------------ internals
    def _reset_call(self) -> None:
        self._out = PipelineOutput()
        # (partner, region, level, 5-minute start) -> the open window aggregates (one per
        # granularity) that a contribution to it goes into; the windows changed in this call
        self._targets: dict[tuple[str, str, str, int], tuple[WindowAgg, ...]] = {}
        self._dirty: dict[WindowKey, WindowAgg] = {}
        self._touched: dict[str, PackageState] = {}

    def _aggs_for(self, dkey: tuple[str, str, str, int]) -> tuple[WindowAgg, ...]:
        """The window aggregates of every granularity that contributions dated in the 5-minute
        window ``dkey`` go into (created when new, marked changed); windows already dropped by
        retention are left out and the correction counted in ``dropped_corrections``."""
        partner, region, level, start5 = dkey
        windows = self.windows
        dirty = self._dirty
        closed_before = self._closed_before
        aggs = []
        for granularity, size, offset in self._window_specs:
            start = start5 - (start5 - offset) % size  # window_start(start5, granularity)
            if start + size <= closed_before:
                self.stats["dropped_corrections"] += 1
                continue
            wkey = (partner, region, level, granularity, start)
            agg = windows.get(wkey)
            if agg is None:
                agg = windows[wkey] = WindowAgg()
            dirty[wkey] = agg
            aggs.append(agg)
        found = self._targets[dkey] = tuple(aggs)
        return found

    def _rules_for(self, partner_id: str) -> ContractRules:
        rules = self._rules.get(partner_id)
        if rules is None:
            contract = self.contracts.get(partner_id)
            rules = self._default_rules if contract is None \
                else ContractRules.from_contract(contract)
            self._rules[partner_id] = rules
        return rules

    def _too_late(self, event: CanonicalEvent, watermark: int, reason: str) -> None:
        self._out.too_late.append(TooLateRecord(event, watermark, reason))
        self.stats["too_late" if reason == "beyond_allowed_lateness" else reason] += 1
        if reason == "invalid_time":
            return
        etime = event.event_time
        location = event.location
        region = location.region if location is not None and location.region else "unknown"
        level = event.service_level or self._rules_for(event.partner_id).default_service_level
        dkey = (event.partner_id, region, level, etime - etime % _FIVE_MIN)
        aggs = self._targets.get(dkey)
        if aggs is None:
            aggs = self._aggs_for(dkey)
        for agg in aggs:
            agg.counts[C_TOO_LATE] += 1

    def _report_flags(self, state: PackageState, flagged: list[tuple[int, int, str]]) -> None:
        for before, after, kind in flagged:
            self._out.flagged.append(FlaggedTransition(
                state.partner_id, state.package_id,
                RANK_STATUS[key_rank(before)] if before >= 0 else None,
                key_time(before) if before >= 0 else None,
                RANK_STATUS[key_rank(after)], key_time(after), kind))
        self.stats["flagged"] += len(flagged)

    def _apply_facts(self, state: PackageState,
                     old_key: tuple[str | None, str | None, bool],
                     new_facts: tuple[Fact, ...]) -> None:
        """Retract the package's previous facts and add the new ones (synthetic packages keep
        their facts for the outcome row but contribute nothing to the windows)."""
        old_facts = () if old_key[2] else state.facts
        state.facts = new_facts
        if state.synthetic:
            new_facts = ()
        rules_level = self._rules_for(state.partner_id).default_service_level
        old_region = old_key[0] or "unknown"
        old_level = old_key[1] or rules_level
        new_region = state.region or "unknown"
        new_level = state.service_level or rules_level
        partner = state.partner_id
        if self.observer is not None:
            self._record_decisions(partner, new_level, old_level, old_facts, new_facts)
        if old_region == new_region and old_level == new_level:
            remaining = list(new_facts)
            for fact in old_facts:
                if fact in remaining:
                    remaining.remove(fact)
                else:
                    self._delta_fact(partner, old_region, old_level, fact, -1)
            for fact in remaining:
                self._delta_fact(partner, new_region, new_level, fact, 1)
        else:
            for fact in old_facts:
                self._delta_fact(partner, old_region, old_level, fact, -1)
            for fact in new_facts:
                self._delta_fact(partner, new_region, new_level, fact, 1)

    def _record_decisions(self, partner: str, level: str, old_level: str,
                          old_facts: tuple[Fact, ...], new_facts: tuple[Fact, ...]) -> None:
        """Outcomes decided (a kind the package did not have) and corrected (retracted or
        reversed) between the package's old and new facts (see :class:`PipelineOutput`)."""
        before = {fact[0]: fact[2] for fact in old_facts if fact[0] <= FACT_DELIVERED}
        out = self._out
        for fact in new_facts:
            kind = fact[0]
            if kind > FACT_DELIVERED:
                continue
            verdict = before.pop(kind, None)
            if verdict is None:
                out.decisions.append((partner, level, kind, fact[2]))
            elif verdict != fact[2]:
                out.corrections.append((partner, old_level, kind))
        for kind in before:
            out.corrections.append((partner, old_level, kind))

    def _delta_fact(self, partner: str, region: str, level: str, fact: Fact, sign: int) -> None:
        when = fact[1]
        dkey = (partner, region, level, when - when % _FIVE_MIN)
        aggs = self._targets.get(dkey)
        if aggs is None:
            aggs = self._aggs_for(dkey)
        for agg in aggs:
            apply_fact(agg, fact, sign)

    def _push_deadlines(self, state: PackageState, rules: ContractRules) -> None:
        fields_ = state.fields
        decided = self._decision_watermark
        promised = fields_[I_PROMISED_BY]
        due = fields_[I_PICKUP_DUE]
        for deadline in (promised + rules.grace_ms if promised != NONE else NONE, due):
            if deadline != NONE and deadline > decided:
                bucket = deadline // _MINUTE
                ids = self._deadline_buckets.get(bucket)
                if ids is None:
                    ids = self._deadline_buckets[bucket] = []
                    heapq.heappush(self._bucket_heap, bucket)
                if self._tracking and bucket not in self._changed_buckets:
                    self._changed_buckets[bucket] = len(ids)  # it only grows from here
                ids.append(state.package_id)

    def _pending_in(self, state: PackageState, bucket: int, watermark: int) -> bool:
        fields_ = state.fields
        promised = fields_[I_PROMISED_BY]
        due = fields_[I_PICKUP_DUE]
        grace = self._rules_for(state.partner_id).grace_ms
        for deadline in (promised + grace if promised != NONE else NONE, due):
            if deadline != NONE and deadline // _MINUTE == bucket and deadline > watermark:
                return True
        return False

    def _decide_deadlines(self, watermark: int) -> None:
        """Re-evaluate the packages whose deadlines the watermark reached."""
        heap = self._bucket_heap
        buckets = self._deadline_buckets
        while heap and heap[0] * _MINUTE <= watermark:
            bucket = heap[0]
            complete = (bucket + 1) * _MINUTE - 1 <= watermark
            keep: list[str] = []
            for package_id in buckets[bucket]:
                state = self.packages.get(package_id)
                if state is None:
                    continue
                rules = self._rules_for(state.partner_id)
                facts = package_facts(state, rules, watermark, self.eta_tolerance_ms)
                if facts != state.facts:
                    self._apply_facts(state, (state.region, state.service_level,
                                              state.synthetic), facts)
                    self._touched[package_id] = state
                if not complete and self._pending_in(state, bucket, watermark):
                    keep.append(package_id)
            if complete or not keep:
                heapq.heappop(heap)
                del buckets[bucket]
            else:
                buckets[bucket] = keep
            if self._tracking:
                self._changed_buckets[bucket] = -1  # replaced or dropped: travels whole
            if not complete:
                break

    def _finish(self, *, sweep: bool = False) -> PipelineOutput:
        out = self._out
        new_wm = self._watermark
        if new_wm > self._decision_watermark:
            self._decision_watermark = new_wm
            self._decide_deadlines(new_wm)
        seq, shard, base = self._seq, self.shard, self.version_base
        if self._tracking:
            self._changed_windows.update(dict.fromkeys(self._dirty))
            self._changed_packages.update(dict.fromkeys(self._touched))
        append = out.windows.append
        for wkey, agg in self._dirty.items():
            seq += 1
            agg.version = seq
            append(agg.to_row(wkey, shard, base + seq))
        append_outcome = out.outcomes.append
        for state in self._touched.values():
            seq += 1
            append_outcome(self._outcome_row(state, base + seq))
        self._seq = seq
        out.watermark = self._decision_watermark
        if self.observer is not None:
            self.observer(out)
        if sweep or self._decision_watermark - self._last_sweep >= self.sweep_interval_ms:
            self._sweep()
        self._reset_call()
        return out

    def _sweep(self) -> None:
        """Forget finished packages, old windows and old tombstones (event-time retention)."""
        watermark = self._decision_watermark
        self._last_sweep = watermark
        if watermark == _MIN_WATERMARK:
            return
        limit = watermark - self.package_retention_ms
        evict = []
        graces: dict[str, int] = {}
        for package_id, state in self.packages.items():
            fields_ = state.fields
            if not state.n:
                continue
            newest = fields_[N_FIELDS + state.n - 1] >> 20
            if newest > limit:
                continue
            grace = graces.get(state.partner_id)
            if grace is None:
                grace = graces[state.partner_id] = self._rules_for(state.partner_id).grace_ms
            promised = fields_[I_PROMISED_BY]
            if promised != NONE and promised + grace > limit:
                continue
            due = fields_[I_PICKUP_DUE]
            if due != NONE and due > limit:
                continue
            evict.append(package_id)
        tracking = self._tracking
        changed_packages = self._changed_packages
        changed_tombstones = self._changed_tombstones
        for package_id in evict:
            del self.packages[package_id]
            self.tombstones[package_id] = watermark
            if tracking:
                changed_packages[package_id] = None
                changed_tombstones[package_id] = None
        self.stats["evicted_packages"] += len(evict)
        tomb_limit = watermark - self.tombstone_retention_ms
        for package_id in [p for p, t in self.tombstones.items() if t <= tomb_limit]:
            del self.tombstones[package_id]
            if tracking:
                changed_tombstones[package_id] = None
        horizon = watermark - self.window_retention_ms
        if horizon > self._closed_before:
            self._closed_before = horizon
            for wkey in [k for k in self.windows
                         if k[4] + GRANULARITY_MS[k[3]] <= horizon]:
                del self.windows[wkey]
                if tracking:
                    self._changed_windows[wkey] = None

    def _outcome_row(self, state: PackageState, version: int) -> PackageOutcomeRow:
        on_time: bool | None = None
        decided_at: int | None = None
        pickup_on_time: bool | None = None
        for fact in state.facts:
            if fact[0] == FACT_ON_TIME:
                on_time, decided_at = fact[2] == 1, fact[1]
            elif fact[0] == FACT_PICKUP:
                pickup_on_time = fact[2] == 1
        f = state.fields
        n = state.n
        first_key = f[I_FA_KEY]
        deliv_key = f[I_DELIV_KEY]
        exc_open = f[I_EXC_OPEN]
        eta = state.last_eta() if len(f) > N_FIELDS + n else None
        return PackageOutcomeRow(
            state.partner_id, state.package_id, self.shard, version, state.region or "unknown",
            state.service_level or self._rules_for(state.partner_id).default_service_level,
            state.synthetic, state.status, n,
            f[N_FIELDS] >> 20 if n else None, f[N_FIELDS + n - 1] >> 20 if n else None,
            None if f[I_PROMISED_BY] == NONE else f[I_PROMISED_BY], state.promise_source,
            None if f[I_PICKUP_DUE] == NONE else f[I_PICKUP_DUE],
            None if f[I_PICKUP] == NONE else f[I_PICKUP], pickup_on_time,
            None if deliv_key == NONE else deliv_key >> 20, state.proof, on_time, decided_at,
            state.attempts,
            None if first_key == NONE else (first_key >> 16) & 0xF == _DELIVERED_RANK,
            None if first_key == NONE else state.fa_reason,
            state.exc_count, None if exc_open == NONE else exc_open, state.flags,
            None if eta is None else eta[1])
