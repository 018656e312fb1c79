"""The anomaly monitor: per partner and metric stream, online, on 5-minute windows (pure).

:class:`AnomalyMonitor` is what both drivers (replay and the Faust worker) call. It takes what
the core pipeline emits, never touches Kafka, ClickHouse or Prometheus, and returns rows::

    monitor = AnomalyMonitor(**monitor_options_for(specs))       # or AnomalyMonitor.from_bytes(b)
    result = monitor.observe(output.windows, dead_letters,       # after every pipeline call
                             arrivals=output.events)             # optional: received_* streams
    sink.add_rows("anomalies", result.anomalies)                 # rows of the anomalies table
    sink.add_rows("alerts", result.alerts)                       # rows of the alerts table
    exporter.update(result)                                      # Prometheus (outputs/prometheus)
    state = monitor.to_bytes()                                   # checkpoint with the pipeline

**Input.** ``observe`` takes :class:`~carrierwatch.core.windows.MetricWindowRow` objects of any
granularity and shard (only ``5m`` rows are used) and the dead letters of the same batch
(:class:`~carrierwatch.core.model.DeadLetter` or ``(partner_id, received_time_ms)`` pairs).
Rows are *replacement* rows: per key ``(partner, region, service level, window, shard)`` the row
with the highest ``version`` wins, whatever order rows arrive in, so re-emissions and corrections
never double count; a partner's window is the sum of its latest rows over regions, service levels
and shards. Dead letters have no event time: they count in the 5-minute window of their received
time.

**When a window is scored.** Event time drives everything (no wall clock, so a replay and a live
run agree). A partner's *clock* is the start of the newest 5-minute window in which it had an
event; the *global clock* is the newest partner clock (or ``now_ms`` when a driver passes one,
e.g. an idle worker). When arrivals are passed, a partner's clock moves only as far as the
newest event time among its arrivals that the received clock has passed by
``received_delay_ms``: a poll processed in several pipeline calls is then scored once it is all
in, not from its first part. Partner ``p``'s window ``[s, s + 5 min)`` is scored once

* ``clock(p) >= s + 5 min + scoring_delay_ms`` (default 15 min of event time: the feed has moved
  on, the window is final enough; the 2-day lateness watermark is far too slow for detection),
* or ``global clock >= s + 5 min + silence_delay(p)``: the others moved on and ``p`` stayed
  silent. ``silence_delay(p)`` is ``max(silence_floor_ms, silence_factor × q90)`` of the gaps
  after which ``p``'s data used to arrive (learned per partner, at most ``silence_cap_ms``), so a
  partner polled every 2 hours is not declared silent every 2 hours.

Every window from the partner's first one on is scored, in order, exactly once: a window without
rows scores as **zero volume** (a silent feed looks anomalous). Rows that arrive for a window
already scored are counted (``stats["late_rows"]``) and do not change the verdict.

**Long silences.** After ``max_silent_windows`` consecutive empty windows (default two days) a
stream stops scoring empty windows and jumps to its next window with data (or to the clock):
the outage has long been alerted (its alert stays firing, since no normal window resolves it),
and scoring each empty window of a months-long gap (a backfill followed by live traffic, sample
files years apart) would cost time in proportion to the gap while telling nothing new. The
skipped windows are counted (``stats["silent_windows_skipped"]``); both event-time and received
streams follow the rule.

**Streams** (:data:`METRICS`); rates with a denominator below ``min_support`` pool the preceding
windows (up to ``pool_windows`` of them) so that a quiet night does not read 1 exception in 2
events as a 50 % exception rate; a stream with no support at all is not scored for that window.

==================  ====================================================================
metric              value of the window (summed over regions, service levels, shards)
==================  ====================================================================
``volume``          partner events (synthetic excluded); 0 when nothing arrived
``exception_rate``  events with canonical status ``exception`` / events
``latency_p95``     event latency (received − event time) p95 in minutes, merged histogram
``on_time_rate``    packages decided on time / packages decided in the window
``dead_letter_rate`` dead letters / (dead letters + events)
``unmapped_rate``   codebook-gap events (unmapped partner codes) / events
``received_volume``  events *received* in the 5-minute window (``arrivals``, by received time)
``received_new_packages`` received labels (``info_received``): labels so far today (daily model)
``received_*_rate``  exception / unmapped (status ``unknown``) share of the events received
                    (not for a feed we poll: a received window is one poll)
``received_age_p95`` p95 of received − event time of the events received, in minutes
``heartbeat_latency`` p95 of received − event time of the *synthetic* events received (the
                    heartbeats of synthetic deliveries, ``CanonicalEvent.synthetic``), in minutes:
                    the integration's end-to-end latency; synthetic events count in no other
                    stream
==================  ====================================================================

The ``received_*`` streams exist for partners whose arrivals are passed (``arrivals=``: the
pipeline call's newly accepted events). A received window is complete as soon as the received
clock (newest arrival, or ``now_ms``) passes its end by ``received_delay_ms``, so a feed outage
and a latency drift show in them at once, while event-time windows are still filling up.

``heartbeat_latency`` is fed by the synthetic events among the arrivals (only
:class:`~carrierwatch.core.model.CanonicalEvent` arrivals carry the flag): it scores a window
that received heartbeats, with the latency model (share above the learned 90th percentile). A
heartbeat that does not come at all is the heartbeat monitor's deadline, not this stream's.

**Scoring.** By default (``detector="count_model"``) each ``(partner, metric)`` stream has a
count model of :mod:`carrierwatch.anomaly.counts` chosen by the stream's kind: volumes are
quasi-Poisson counts against a seasonal expectation (with a run-of-empty-windows test), rates
are quasi-binomial (``x`` of ``n``, so 1 exception in 3 events is weak evidence), latencies are
the share above the learned 90th percentile; each over trailing horizons of 1, 6 and 24
windows (a polled feed's event-time latency not per window: its window arrives in one poll).
New packages (``received_new_packages``) are a daily model: labels so far in the
partner's day against the same point of past days of the same type. Seasons (hour of day, hour
of week, the day) follow each partner's local time (``time_zones``, from its contract; see
:func:`monitor_options_for`), except the received count streams of feeds we poll (UTC: our
poller's schedule). The score is
``ln(q)/ln(1e-10)`` of the Bonferroni-corrected tail probability ``q``.
Any registered detector name (e.g. ``"ensemble"``) instead feeds each window's value to one
detector per stream, seeded from ``seed`` and the stream name, built with
``flag_threshold = threshold``.

**Alerts.** Per stream: the first anomalous window fires ``PartnerMetricAnomalous``
(``starts_at`` = that window's start); ``resolve_after`` consecutive *recovered* windows resolve
it (``ends_at`` = end of the last anomalous window). A window is recovered when it scores normal
and its value is back at least halfway from the last anomalous value to the last normal one:
detectors damp their scores after an alarm (one incident, one alarm), and a feed that stays
silent must keep its alert firing. Row times are event times, so a replay writes
identical rows (``updated_at`` is the end of the window that caused the state).

Examples
--------
A partner with a steady 100 events per window that suddenly sends 400:

>>> from carrierwatch.core.windows import MetricWindowRow
>>> monitor = AnomalyMonitor(metrics=("volume",), detector="ew_zscore")
>>> base = 1_772_409_600_000
>>> def row(i, events):
...     return MetricWindowRow("demo", "US", "ground", "5m", base + i * 300_000, 0, i + 1,
...                            events=events)
>>> out = monitor.observe([row(i, 100 + i % 3) for i in range(60)])
>>> out = monitor.observe([row(60, 400)] + [row(i, 100) for i in range(61, 66)])
>>> [(r["window_start"].minute, r["value"]) for r in out.anomalies if r["is_anomaly"]]
[(0, 400.0)]
>>> out.alerts[0]["name"], out.alerts[0]["state"], out.alerts[0]["labels"]["metric"]
('PartnerMetricAnomalous', 'firing', 'volume')
"""

from __future__ import annotations

import hashlib
import pickle
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from carrierwatch.anomaly.base import Detector, make_detector
from carrierwatch.anomaly.counts import (
    RATE_HORIZONS,
    CountModel,
    DailyCountModel,
    RateModel,
    TailShareModel,
)
from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.model import CanonicalEvent, DeadLetter
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.core.sketch import add_into, bucket_of, quantile
from carrierwatch.core.windows import MetricWindowRow

__all__ = [
    "ALERT_NAME",
    "COUNT_MODEL",
    "DEFAULT_METRICS",
    "METRICS",
    "METRIC_MODEL_PARAMS",
    "NEW_PACKAGE_STATUSES",
    "RUNBOOK_URL",
    "AnomalyMonitor",
    "MetricSpec",
    "MonitorOutput",
    "ScoredPoint",
    "WindowTotals",
    "local_seconds",
    "monitor_options_for",
]

WINDOW_MS = 300_000
MINUTE_MS = 60_000
ALERT_NAME = "PartnerMetricAnomalous"
RUNBOOK_URL = "runbooks/anomaly.md"
_FORMAT = b"carrierwatch-monitor/12\n"  # 12: whole polls' variance, heartbeat totals
NEW_PACKAGE_STATUSES = frozenset({"info_received"})
"""Canonical statuses that start a package's life: the ``received_new_packages`` stream counts
them (a peak day shows first as labels created, hours before the extra parcels move through
the network). Labels only: a pickup is the same package a second time, and the pickups of a
peak day's evening labels come the next day (measured: counting them raised false alarms the
day after each peak)."""
COUNT_MODEL = "count_model"
"""The default ``detector``: the count models of :mod:`carrierwatch.anomaly.counts` (one per
stream, by the stream's kind) instead of a registered detector fed the window's value."""
@dataclass(slots=True)
class WindowTotals:
    """One partner's 5-minute window summed over regions, service levels and shards."""

    events: int = 0
    exception_events: int = 0
    codebook_gap_events: int = 0
    packages_decided: int = 0
    packages_on_time: int = 0
    dead_letters: int = 0
    latency_hist: dict[int, int] = field(default_factory=dict)
    new_packages: int = 0  # first-life scans (label created, pickup): received windows only
    # received - event time of synthetic (heartbeat) events: received windows only
    heartbeat_hist: dict[int, int] = field(default_factory=dict)

    def add(self, other: WindowTotals) -> None:
        """Add ``other`` into these totals (exact)."""
        self.events += other.events
        self.exception_events += other.exception_events
        self.codebook_gap_events += other.codebook_gap_events
        self.packages_decided += other.packages_decided
        self.packages_on_time += other.packages_on_time
        self.dead_letters += other.dead_letters
        self.new_packages += other.new_packages
        add_into(self.latency_hist, other.latency_hist)
        add_into(self.heartbeat_hist, other.heartbeat_hist)

    @classmethod
    def of_row(cls, row: MetricWindowRow) -> WindowTotals:
        """The part of a metric row the monitor reads."""
        return cls(row.events, row.events_by_status.get("exception", 0), row.codebook_gap_events,
                   row.packages_decided, row.packages_on_time, 0, dict(row.latency_hist))


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _p95_minutes(histogram: Mapping[int, int]) -> float | None:
    value = quantile(histogram, 0.95)
    return None if value is None else value / MINUTE_MS


def _latency_p95_minutes(totals: WindowTotals) -> float | None:
    return _p95_minutes(totals.latency_hist)


def _late_packages(totals: WindowTotals) -> tuple[float, float]:
    return float(totals.packages_decided - totals.packages_on_time), float(totals.packages_decided)


@dataclass(frozen=True)
class MetricSpec:
    """One metric stream: how to read its value and its evidence from window totals.

    ``value`` returns the reported value (``None`` when undefined for the totals); ``support``
    gives the window's denominator for pooling the reported value (``None``: no pooling).
    ``kind`` names the count model that scores the stream (:mod:`carrierwatch.anomaly.counts`):
    ``count`` (``evidence`` returns a count), ``daily`` (a count, summed over the partner's
    day: :class:`~carrierwatch.anomaly.counts.DailyCountModel`), ``rate``
    (``(successes, trials)``, upper tail) or
    ``tail`` (a latency histogram: share above the learned 90th percentile). ``source`` is
    ``window`` (event-time 5-minute rows) or ``received`` (arrivals by received time).
    """

    name: str
    value: Callable[[WindowTotals], float | None]
    support: Callable[[WindowTotals], int] | None = None
    kind: str = "count"
    evidence: Callable[[WindowTotals], Any] | None = None
    source: str = "window"


METRIC_SPECS: Mapping[str, MetricSpec] = {
    spec.name: spec for spec in (
        MetricSpec("volume", lambda t: float(t.events), None, "count", lambda t: t.events),
        MetricSpec("exception_rate", lambda t: _ratio(t.exception_events, t.events),
                   lambda t: t.events, "rate", lambda t: (t.exception_events, t.events)),
        MetricSpec("latency_p95", _latency_p95_minutes, lambda t: sum(t.latency_hist.values()),
                   "tail", lambda t: t.latency_hist),
        MetricSpec("on_time_rate", lambda t: _ratio(t.packages_on_time, t.packages_decided),
                   lambda t: t.packages_decided, "rate", _late_packages),
        MetricSpec("dead_letter_rate",
                   lambda t: _ratio(t.dead_letters, t.dead_letters + t.events),
                   lambda t: t.dead_letters + t.events, "rate",
                   lambda t: (t.dead_letters, t.dead_letters + t.events)),
        MetricSpec("unmapped_rate", lambda t: _ratio(t.codebook_gap_events, t.events),
                   lambda t: t.events, "rate", lambda t: (t.codebook_gap_events, t.events)),
        MetricSpec("received_volume", lambda t: float(t.events), None, "count",
                   lambda t: t.events, "received"),
        MetricSpec("received_new_packages", lambda t: float(t.new_packages), None, "daily",
                   lambda t: t.new_packages, "received"),
        MetricSpec("received_exception_rate", lambda t: _ratio(t.exception_events, t.events),
                   lambda t: t.events, "rate", lambda t: (t.exception_events, t.events),
                   "received"),
        MetricSpec("received_unmapped_rate", lambda t: _ratio(t.codebook_gap_events, t.events),
                   lambda t: t.events, "rate", lambda t: (t.codebook_gap_events, t.events),
                   "received"),
        MetricSpec("received_age_p95", _latency_p95_minutes,
                   lambda t: sum(t.latency_hist.values()), "tail", lambda t: t.latency_hist,
                   "received"),
        MetricSpec("heartbeat_latency", lambda t: _p95_minutes(t.heartbeat_hist),
                   lambda t: sum(t.heartbeat_hist.values()), "tail", lambda t: t.heartbeat_hist,
                   "received"),
    )
}
METRIC_MODEL_PARAMS: Mapping[str, Mapping[str, Any]] = {}
"""Count-model parameters of particular streams (over the kind's defaults; ``model_params``
of the monitor keyed by the metric name override them)."""
METRICS: tuple[str, ...] = tuple(METRIC_SPECS)
"""The metric streams scored per partner, in output order (``received_*`` streams only for
partners whose arrivals are passed to :meth:`AnomalyMonitor.observe`)."""
DEFAULT_METRICS: tuple[str, ...] = METRICS
"""The streams scored by default: all of them (``received_new_packages``, scored by
:class:`~carrierwatch.anomaly.counts.DailyCountModel`, found 3 of 3 injected peak days on both
seeds without a false alarm; docs/anomaly.md)."""


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    """One scored window of one stream (also what the Prometheus exporter reads)."""

    partner_id: str
    metric: str
    window_start: int
    value: float
    score: float
    is_anomaly: bool
    active: bool  # the stream's alert is firing after this point


@dataclass(slots=True)
class MonitorOutput:
    """What one :meth:`AnomalyMonitor.observe` call produced.

    ``anomalies`` and ``alerts`` are rows for the ``anomalies`` and ``alerts`` tables (column
    names of ``0002_monitoring.sql``); ``points`` are the scored windows in scoring order.
    """

    anomalies: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    points: list[ScoredPoint] = field(default_factory=list)


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


@lru_cache(maxsize=4096)
def _utc_offset_seconds(zone: str, utc_hour: int) -> int:
    """UTC offset of ``zone`` during the UTC hour ``utc_hour`` (epoch hours; every zone's
    offset changes on a whole quarter hour, and the tz database's switches on the hour)."""
    offset = datetime.fromtimestamp(utc_hour * 3600, tz=ZoneInfo(zone)).utcoffset()
    return 0 if offset is None else int(offset.total_seconds())


def local_seconds(start_ms: int, zone: str | None) -> float:
    """A window start (epoch ms, UTC) as epoch seconds of the partner's local wall clock.

    The count models index their seasons (hour of day, hour of week, the daily model's day)
    with ``timestamp // 3600``: fed local wall-clock seconds, a partner's 09:00 stays its 09:00
    across a switch to or from summer time, and its day starts at its own midnight, not at
    UTC's. On the spring switch one local hour is skipped; on the autumn switch the repeated
    hour has the same hour key twice (12 more windows of the same hour), which the models
    fold as one longer hour.

    >>> local_seconds(1_772_949_600_000, "America/New_York") - 1_772_949_600  # 03-08 06:00Z
    -18000.0
    >>> local_seconds(1_772_953_200_000, "America/New_York") - 1_772_953_200  # 07:00Z: EDT
    -14400.0
    >>> local_seconds(1_772_953_200_000, None) - 1_772_953_200
    0.0
    """
    seconds = start_ms / 1000.0
    if zone is None or zone == "UTC":
        return seconds
    return seconds + _utc_offset_seconds(zone, start_ms // 3_600_000)


def monitor_options_for(specs: Iterable[PartnerSpec]) -> dict[str, Any]:
    """The :class:`AnomalyMonitor` keyword arguments that come from the partners' specs:
    ``time_zones`` (each contract's ``timezone``) and ``polled_partners`` (``delivery: poll``).

    Pass ``partner.spec for partner in registry``:
    ``AnomalyMonitor(**monitor_options_for(p.spec for p in registry))``.
    """
    specs = list(specs)
    return {"time_zones": {spec.id: spec.contract.timezone for spec in specs},
            "polled_partners": sorted(spec.id for spec in specs if spec.delivery == "poll")}


def _shard_clocks(state: _Partner) -> dict[int, int]:
    try:
        return state.shard_clocks
    except AttributeError:  # a partner state saved before shard clocks existed
        state.shard_clocks = {}
        return state.shard_clocks


def _slowest_near(clocks: Mapping[int, int], lag_ms: int, expected: int = 1,
                  floor: int | None = None) -> int:
    """The slowest of the shard clocks that are at most ``lag_ms`` behind the newest one;
    of ``expected`` shards, those not heard from yet count as standing at ``floor``.

    >>> _slowest_near({0: 600_000, 1: 300_000, 2: 0}, 400_000)
    300000
    >>> _slowest_near({0: 600_000}, 0)
    600000
    >>> _slowest_near({0: 600_000}, 400_000, expected=3, floor=300_000)
    300000
    """
    values = list(clocks.values())
    if floor is not None and len(values) < expected:
        values += [floor] * (expected - len(values))
    newest = max(values)
    return min(c for c in values if c >= newest - lag_ms)


def _stream_seed(seed: int, partner: str, metric: str) -> int:
    return (seed + zlib.crc32(f"{partner}/{metric}".encode())) % (1 << 31)


@dataclass(slots=True)
class _Alert:
    firing: bool = False
    starts_at: int = 0
    last_anomalous_end: int = 0
    normal_run: int = 0
    peak_score: float = 0.0
    last_value: float = 0.0
    extreme: float = 0.0  # the anomalous value farthest from normal_value in this alert
    normal_value: float | None = None  # the last value scored normal before the alert fired
    last_normal: float | None = None


class _Partner:
    """Pending windows and scoring position of one partner."""

    __slots__ = ("arrival_gaps", "clock", "dead_letters", "next_window", "pending", "recent",
                 "row_clock", "scoring", "shard_clocks", "silent_run")

    def __init__(self, first_window: int) -> None:
        self.next_window = first_window
        self.silent_run = 0  # consecutive empty windows scored
        self.scoring = False  # until the first window is scored, earlier rows move the start
        self.clock = first_window
        # the newest window with events in the rows, which becomes the clock once the arrivals
        # that carried it have settled (when arrivals are passed)
        self.row_clock = first_window
        # shard -> the newest window with events in that shard's rows (row_clock follows the
        # slowest shard that is not far behind: see AnomalyMonitor.shard_lag_ms)
        self.shard_clocks: dict[int, int] = {}
        # window start -> {(region, service level, shard): (version, totals)}
        self.pending: dict[int, dict[tuple[str, str, int], tuple[int, WindowTotals]]] = {}
        self.dead_letters: dict[int, int] = {}
        self.recent: deque[WindowTotals] = deque()
        self.arrival_gaps: deque[int] = deque(maxlen=64)


class _Received:
    """Arrival windows (by received time) of one partner, pending until the received clock
    passes them."""

    __slots__ = ("next_window", "pending", "recent", "settled_event", "silent_run", "unsettled")

    def __init__(self, first_window: int) -> None:
        self.next_window = first_window
        self.silent_run = 0  # consecutive empty windows scored
        self.pending: dict[int, WindowTotals] = {}
        self.recent: deque[WindowTotals] = deque()
        # received minute -> newest event time received in it, until the received clock has
        # passed it by received_delay_ms; then it joins settled_event (the newest event time
        # of the settled arrivals)
        self.unsettled: dict[int, int] = {}
        self.settled_event: int | None = None


Arrival = CanonicalEvent | tuple[str, int, int] | tuple[str, int, int, str]
"""A newly accepted event (or ``(partner_id, received_ms, event_ms[, status])``)."""


class AnomalyMonitor:
    """Online anomaly detection over a pipeline's 5-minute windows (see the module docs).

    Parameters
    ----------
    detector, detector_params
        ``count_model`` (default: the count models of :mod:`carrierwatch.anomaly.counts`) or a
        registered detector name, and that detector's extra keyword parameters.
    model_params
        Extra keyword parameters of the count models, per kind (``count``, ``daily``, ``rate``,
        ``tail``) or per metric name.
    seed
        Base seed; each stream's detector gets ``seed`` + a hash of ``partner/metric``.
    threshold
        Scores at or above it are anomalies (and are not learned).
    metrics
        The streams to score (a subset of :data:`METRICS`).
    scoring_delay_ms
        Event time a partner's clock must pass a window's end by before the window is scored.
    silence_floor_ms, silence_factor, silence_cap_ms
        The silence rule: see the module docs.
    min_support, pool_windows
        Rates with fewer than ``min_support`` in their denominator pool up to ``pool_windows``
        preceding windows.
    resolve_after
        Consecutive normal windows that resolve a firing alert.
    emit_normal
        Also write an ``anomalies`` row (``is_anomaly = false``) for every normal window.
    partners
        Partners to score from ``start_ms`` on even if they never send anything (a partner
        otherwise starts being monitored at its first row).
    start_ms
        First window of the ``partners`` given (default: the first window the monitor sees).
    received_delay_ms
        How far the received clock must pass a received window's end before it is scored.
    max_silent_windows
        Consecutive empty windows a stream scores before it skips the rest of a silence (see
        "Long silences" in the module docs).
    time_zones
        ``{partner id: IANA zone}`` (the contract's ``timezone``, see
        :func:`monitor_options_for`): the seasons of a partner's streams (hour of day, hour of
        week, the daily model's day) follow its local wall clock, so a switch to summer time
        is not an anomaly. Partners not listed use UTC.
    shard_lag_ms, shards
        The stream driver's shards (``shards``: how many, the partitions of
        ``events.canonical``): a partner's clock (and the received clock) follows the slowest
        shard, a shard not heard from yet standing where the clock stands, unless that shard is
        more than ``shard_lag_ms`` behind the newest one (then it is taken as idle for the
        partner). One shard (the replay driver): its own clock, as without shards.
    polled_partners
        Partners we poll: their ``received_*`` count streams (``received_new_packages``'s
        day included) keep UTC seasons, because when their data arrive is set by our poller's
        schedule, not by the partner's day; their ``received_*_rate`` streams are not scored
        (a received window is one poll: its share is one draw of the hours the poll covers,
        and the event-time rates see the same events once the poll is in).
    """

    def __init__(self, *, detector: str = COUNT_MODEL,
                 detector_params: Mapping[str, Any] | None = None, seed: int = 0,
                 threshold: float = 0.5, metrics: Sequence[str] = DEFAULT_METRICS,
                 scoring_delay_ms: int = 15 * MINUTE_MS, silence_floor_ms: int = 30 * MINUTE_MS,
                 silence_factor: float = 1.5, silence_cap_ms: int = 6 * 60 * MINUTE_MS,
                 min_support: int = 20, pool_windows: int = 6, resolve_after: int = 3,
                 emit_normal: bool = True, partners: Sequence[str] = (),
                 start_ms: int | None = None, received_delay_ms: int = MINUTE_MS,
                 model_params: Mapping[str, Mapping[str, Any]] | None = None,
                 max_silent_windows: int = 2 * 288,
                 time_zones: Mapping[str, str] | None = None,
                 polled_partners: Iterable[str] = (),
                 shard_lag_ms: int = 2 * 24 * 60 * MINUTE_MS, shards: int = 1) -> None:
        unknown = [m for m in metrics if m not in METRIC_SPECS]
        if unknown:
            raise ConfigurationError(f"unknown metric streams {unknown}; known: {list(METRICS)}")
        if not 0.0 < threshold <= 1.0:
            raise ConfigurationError(f"threshold must be in (0, 1], got {threshold}")
        if scoring_delay_ms < 0 or silence_floor_ms < 0:
            raise ConfigurationError("delays must be >= 0")
        if max_silent_windows < 1:
            raise ConfigurationError(f"max_silent_windows must be >= 1, got {max_silent_windows}")
        if shard_lag_ms < 0:
            raise ConfigurationError(f"shard_lag_ms must be >= 0, got {shard_lag_ms}")
        self.max_silent_windows = max_silent_windows
        self.shard_lag_ms = shard_lag_ms
        self.shards = max(1, shards)
        self.time_zones: dict[str, str] = {}
        self.polled_partners: set[str] = set()
        self.detector = detector
        self.detector_params = dict(detector_params or {})
        self.seed = seed
        self.threshold = threshold
        self.model_params = {kind: dict(params) for kind, params in (model_params or {}).items()}
        if detector != COUNT_MODEL:
            make_detector(detector, seed=seed, **self._params())  # fail early on bad names
        else:
            for kind in ("count", "daily", "rate", "tail"):
                self._make_model(kind)  # fail early on bad parameters
            for metric in metrics:
                self._make_model(METRIC_SPECS[metric].kind, metric)
        self.metrics = tuple(metrics)
        self.scoring_delay_ms = scoring_delay_ms
        self.silence_floor_ms = silence_floor_ms
        self.silence_factor = silence_factor
        self.silence_cap_ms = silence_cap_ms
        self.min_support = min_support
        self.pool_windows = pool_windows
        self.resolve_after = resolve_after
        self.emit_normal = emit_normal
        self.received_delay_ms = received_delay_ms
        self.global_clock: int | None = None
        self.received_clock: int | None = None
        #: shard -> the newest received time among its arrivals
        self._received_shards: dict[int, int] = {}
        self._partners: dict[str, _Partner] = {}
        self._received: dict[str, _Received] = {}
        self._detectors: dict[tuple[str, str], Detector] = {}
        self._models: dict[tuple[str, str],
                           CountModel | DailyCountModel | RateModel | TailShareModel] = {}
        self._alerts: dict[tuple[str, str], _Alert] = {}
        self.add_time_zones(time_zones or {}, polled_partners)
        self.stats: dict[str, int] = {"rows": 0, "stale_rows": 0, "late_rows": 0,
                                      "late_dead_letters": 0, "arrivals": 0,
                                      "late_arrivals": 0, "heartbeats": 0,
                                      "late_heartbeats": 0, "windows_scored": 0,
                                      "points_scored": 0, "anomalies": 0,
                                      "silent_windows_skipped": 0}
        # partners named up front: from start_ms, else from the first global clock
        self._expected: tuple[str, ...] = ()
        if start_ms is not None:
            first = start_ms - start_ms % WINDOW_MS
            for partner_id in partners:
                self._partners[partner_id] = _Partner(first)
        else:
            self._expected = tuple(partners)

    def _params(self) -> dict[str, Any]:
        return {"flag_threshold": self.threshold, **self.detector_params}

    def _make_model(self, kind: str, metric: str | None = None, partner_id: str | None = None
                    ) -> CountModel | DailyCountModel | RateModel | TailShareModel:
        params = {"flag_threshold": self.threshold, **self.model_params.get(kind, {})}
        if metric is not None:
            params.update(METRIC_MODEL_PARAMS.get(metric, {}))
            params.update(self.model_params.get(metric, {}))
            if (kind == "tail" and METRIC_SPECS[metric].source == "window"
                    and partner_id in self.polled_partners):
                # a polled feed's event-time window arrives in one poll: its latencies are one
                # draw, not n, and the share above the cut is all or nothing (docs/anomaly.md
                # round 6); test it over 30 minutes and more, not per window
                params["horizons"] = tuple(h for h in params.get("horizons", RATE_HORIZONS)
                                           if h > 1)
        if kind == "count":
            return CountModel(window_seconds=WINDOW_MS / 1000, **params)
        if kind == "daily":
            return DailyCountModel(window_seconds=WINDOW_MS / 1000, **params)
        if kind == "rate":
            return RateModel(**params)
        return TailShareModel(**params)

    # ------------------------------------------------------------------ public API
    @property
    def partners(self) -> list[str]:
        """Partners being monitored (sorted)."""
        return sorted(self._partners)

    def active_alerts(self) -> list[tuple[str, str]]:
        """``(partner, metric)`` of every firing alert (sorted)."""
        return sorted(key for key, alert in self._alerts.items() if alert.firing)

    def add_time_zones(self, time_zones: Mapping[str, str],
                       polled_partners: Iterable[str] = ()) -> None:
        """Set the time zone (and whether we poll it) of partners not scored yet; a restored
        monitor keeps those of the partners it has learned (their seasons were learned so)."""
        def learned(partner_id: str) -> bool:
            return any(key[0] == partner_id for key in (*self._models, *self._detectors))

        self.polled_partners.update(p for p in polled_partners if not learned(p))
        for partner_id, zone in time_zones.items():
            if zone != "UTC":
                try:
                    ZoneInfo(zone)
                except (ValueError, KeyError) as error:  # ZoneInfoNotFoundError is a KeyError
                    raise ConfigurationError(
                        f"unknown time zone {zone!r} for partner {partner_id!r}") from error
            if not learned(partner_id):
                self.time_zones[partner_id] = zone

    def silence_delay_ms(self, partner_id: str) -> int:
        """The silence delay currently applied to a partner (see the module docs)."""
        state = self._partners.get(partner_id)
        gaps = sorted(state.arrival_gaps) if state is not None else []
        learned = 0.0
        if len(gaps) >= 5:
            learned = self.silence_factor * gaps[min(len(gaps) - 1, int(0.9 * len(gaps)))]
        delay = max(float(self.silence_floor_ms), learned)
        return int(min(delay, float(max(self.silence_cap_ms, self.silence_floor_ms))))

    def observe(self, rows: Iterable[MetricWindowRow],
                dead_letters: Iterable[DeadLetter | tuple[str, int]] = (), *,
                now_ms: int | None = None, arrivals: Iterable[Arrival] = (),
                shard: int = 0) -> MonitorOutput:
        """Take one batch of pipeline rows and dead letters; score every window now final.

        ``now_ms`` (optional) moves the global event-time clock forward, e.g. from processing
        time when the input is idle, so that a world where every feed is silent is scored too.
        ``arrivals`` (optional) are the batch's newly accepted events (``output.events`` of the
        pipeline call, or ``(partner_id, received_ms, event_ms[, status])`` tuples): they feed
        the ``received_*`` streams, windowed by received time; ``shard`` is the shard (Kafka
        partition) whose pipeline call they come from (rows carry their own).
        """
        self._take_arrivals(arrivals, now_ms, shard)
        before = self.global_clock
        advanced: dict[str, int] = {}
        for row in rows:
            if row.granularity != "5m":
                continue
            self.stats["rows"] += 1
            state = self._partner(row.partner_id, row.window_start)
            start = row.window_start
            if start < state.next_window:
                if state.scoring:
                    self.stats["late_rows"] += 1
                    continue
                state.next_window = start
            window = state.pending.setdefault(start, {})
            key = (row.region, row.service_level, row.shard)
            held = window.get(key)
            if held is not None and held[0] >= row.version:
                self.stats["stale_rows"] += 1
                continue
            window[key] = (row.version, WindowTotals.of_row(row))
            if row.events or row.synthetic_events:
                shard_clocks = _shard_clocks(state)
                if start > shard_clocks.get(row.shard, start - 1):
                    shard_clocks[row.shard] = start
                    common = _slowest_near(shard_clocks, getattr(self, "shard_lag_ms", 0),
                                           getattr(self, "shards", 1), state.row_clock)
                    if common > state.row_clock:
                        state.row_clock = common
        for item in dead_letters:
            partner_id, received = ((item.partner_id, item.received_time)
                                    if isinstance(item, DeadLetter) else item)
            start = received - received % WINDOW_MS
            state = self._partner(partner_id, start)
            if start < state.next_window:
                if state.scoring:
                    self.stats["late_dead_letters"] += 1
                    continue
                state.next_window = start
            state.dead_letters[start] = state.dead_letters.get(start, 0) + 1
        for partner_id, state in self._partners.items():
            clock = self._settled_clock(partner_id, state)
            if clock > state.clock:
                advanced[partner_id] = clock
        for partner_id, clock in advanced.items():
            state = self._partners[partner_id]
            reference = before if before is not None else state.clock
            state.arrival_gaps.append(max(0, reference - state.clock))
            state.clock = clock
        clocks = [s.clock for s in self._partners.values()]
        if now_ms is not None:
            clocks.append(now_ms - now_ms % WINDOW_MS)
        if clocks:
            newest = max(clocks)
            self.global_clock = newest if before is None else max(before, newest)
        out = self._score_ready()
        self._score_received(out)
        return out

    def to_bytes(self) -> bytes:
        """The whole state (detectors included), to restore with :meth:`from_bytes`."""
        return _FORMAT + pickle.dumps(self, protocol=5)

    @staticmethod
    def from_bytes(data: bytes) -> AnomalyMonitor:
        """Restore a monitor saved by :meth:`to_bytes` (it continues exactly where it stopped)."""
        if not data.startswith(_FORMAT):
            raise ConfigurationError("not a carrierwatch anomaly monitor state")
        monitor = pickle.loads(data[len(_FORMAT):])
        if not isinstance(monitor, AnomalyMonitor):
            raise ConfigurationError("not a carrierwatch anomaly monitor state")
        return monitor

    # ------------------------------------------------------------------ internals
    def _settled_clock(self, partner_id: str, state: _Partner) -> int:
        """The partner's clock after this call: the newest window with events in its rows, but
        (when its arrivals are passed) no later than the newest event time among the arrivals
        the received clock has passed by ``received_delay_ms``. A polled feed's poll is
        processed in several pipeline calls; the first part of it moves the clock to the poll
        time, and without this its windows were scored before the rest of the poll was in
        (scored empty: false alarms, docs/anomaly.md round 5)."""
        received = self._received.get(partner_id)
        if received is None or self.received_clock is None:
            return state.row_clock
        limit = self.received_clock - self.received_delay_ms
        for minute in [m for m in received.unsettled if m + MINUTE_MS <= limit]:
            newest = received.unsettled.pop(minute)
            if received.settled_event is None or newest > received.settled_event:
                received.settled_event = newest
        if received.settled_event is None:
            return state.clock
        return min(state.row_clock, received.settled_event - received.settled_event % WINDOW_MS)

    def _take_arrivals(self, arrivals: Iterable[Arrival], now_ms: int | None,
                       shard: int = 0) -> None:
        newest: int | None = None
        for item in arrivals:
            synthetic = False
            if isinstance(item, CanonicalEvent):
                partner_id, received, event_time, status, synthetic = (
                    item.partner_id, item.received_time, item.event_time, item.status,
                    item.synthetic)
            else:
                partner_id, received, event_time = item[0], item[1], item[2]
                status = item[3] if len(item) > 3 else ""
            start = received - received % WINDOW_MS
            state = self._received.get(partner_id)
            if state is None:
                state = self._received[partner_id] = _Received(start)
            if start < state.next_window:
                self.stats["late_arrivals" if not synthetic else "late_heartbeats"] += 1
                continue
            totals = state.pending.get(start)
            if totals is None:
                totals = state.pending[start] = WindowTotals()
            age = bucket_of(max(0, received - event_time))
            newest = received if newest is None else max(newest, received)
            if synthetic:  # a heartbeat: its latency only, never the partner's own streams
                self.stats["heartbeats"] += 1
                totals.heartbeat_hist[age] = totals.heartbeat_hist.get(age, 0) + 1
                continue
            self.stats["arrivals"] += 1
            minute = received - received % MINUTE_MS
            if state.unsettled.get(minute, event_time - 1) < event_time:
                state.unsettled[minute] = event_time
            totals.events += 1
            if status == "exception":
                totals.exception_events += 1
            elif status == "unknown":
                totals.codebook_gap_events += 1
            elif status in NEW_PACKAGE_STATUSES:
                totals.new_packages += 1
            totals.latency_hist[age] = totals.latency_hist.get(age, 0) + 1
        clock = self.received_clock
        if newest is not None:
            shards = self.__dict__.setdefault("_received_shards", {})  # states saved before it
            if newest > shards.get(shard, newest - 1):
                shards[shard] = newest
            common = _slowest_near(shards, getattr(self, "shard_lag_ms", 0),
                                   getattr(self, "shards", 1), clock)
            clock = common if clock is None else max(clock, common)
        if now_ms is not None:
            clock = now_ms if clock is None else max(clock, now_ms)
        self.received_clock = clock

    def _score_received(self, out: MonitorOutput) -> None:
        if self.received_clock is None:
            return
        limit = self.received_clock - self.received_delay_ms
        for partner_id in sorted(self._received):
            state = self._received[partner_id]
            while state.next_window + WINDOW_MS <= limit:
                if not self._silent(state, state.pending, limit):
                    continue
                start = state.next_window
                totals = state.pending.pop(start, None) or WindowTotals()
                self._score_totals(partner_id, state.recent, start, totals, "received",
                                   self.received_clock, out)
                state.next_window += WINDOW_MS

    def _silent(self, state: _Partner | _Received, pending: Mapping[int, object], limit: int,
                dead_letters: Mapping[int, int] | None = None) -> bool:
        """Count the empty run at ``state.next_window``; past ``max_silent_windows``, jump to
        the next window with data (or to the last window ``limit`` allows) and return False
        (nothing to score now); True: score ``state.next_window``."""
        start = state.next_window
        if start in pending or (dead_letters is not None and start in dead_letters):
            state.silent_run = 0
            return True
        if state.silent_run < self.max_silent_windows:
            state.silent_run += 1
            return True
        later = [w for w in pending if w > start]
        if dead_letters is not None:
            later.extend(w for w in dead_letters if w > start)
        target = min([*later, limit - limit % WINDOW_MS])
        self.stats["silent_windows_skipped"] += max(1, (target - start) // WINDOW_MS)
        state.next_window = max(target, start + WINDOW_MS)
        return False

    def _partner(self, partner_id: str, window: int) -> _Partner:
        state = self._partners.get(partner_id)
        if state is None:
            state = self._partners[partner_id] = _Partner(window)
        return state

    def _score_ready(self) -> MonitorOutput:
        out = MonitorOutput()
        if self.global_clock is None:
            return out
        for expected in self._expected:  # partners named up front but never seen: start now
            if expected not in self._partners:
                self._partners[expected] = _Partner(self.global_clock)
        self._expected = ()
        for partner_id in sorted(self._partners):
            state = self._partners[partner_id]
            own_limit = state.clock - self.scoring_delay_ms
            silent_limit = self.global_clock - self.silence_delay_ms(partner_id)
            limit = max(own_limit, silent_limit)  # score windows whose end <= limit
            while state.next_window + WINDOW_MS <= limit:
                if not self._silent(state, state.pending, limit, state.dead_letters):
                    continue
                self._score_window(partner_id, state, state.next_window, out)
                state.next_window += WINDOW_MS
        return out

    def _score_window(self, partner_id: str, state: _Partner, start: int,
                      out: MonitorOutput) -> None:
        totals = WindowTotals()
        for _, part in (state.pending.pop(start, None) or {}).values():
            totals.add(part)
        totals.dead_letters = state.dead_letters.pop(start, 0)
        state.scoring = True
        self._score_totals(partner_id, state.recent, start, totals, "window",
                           self.global_clock, out)

    def _score_totals(self, partner_id: str, recent: deque[WindowTotals], start: int,
                      totals: WindowTotals, source: str, clock: int | None,
                      out: MonitorOutput) -> None:
        self.stats["windows_scored"] += 1
        for metric in self.metrics:
            spec = METRIC_SPECS[metric]
            if spec.source != source:
                continue
            if (source == "received" and spec.kind == "rate"
                    and partner_id in self.polled_partners):
                # one poll's share is one draw of the hours it covers, and the same events
                # reach the event-time rates once the poll is in (docs/anomaly.md round 7)
                continue
            view = totals
            if spec.support is not None and spec.support(totals) < self.min_support:
                view = WindowTotals()
                view.add(totals)
                for previous in reversed(recent):
                    if spec.support(view) >= self.min_support:
                        break
                    view.add(previous)
            value = spec.value(view)
            if self.detector == COUNT_MODEL:
                score = self._model_score(partner_id, spec, start, totals)
            elif value is None:
                continue
            else:
                score = self._detector_score(partner_id, metric, start, value)
            if value is None:
                continue
            self._score_point(partner_id, metric, start, value, score, clock, out)
        recent.append(totals)
        while len(recent) > self.pool_windows:
            recent.popleft()

    def _model_score(self, partner_id: str, spec: MetricSpec, start: int,
                     totals: WindowTotals) -> float:
        key = (partner_id, spec.name)
        model = self._models.get(key)
        if model is None:
            model = self._models[key] = self._make_model(spec.kind, spec.name, partner_id)
        assert spec.evidence is not None
        evidence = spec.evidence(totals)
        timestamp = local_seconds(start, self._zone(partner_id, spec.source, spec.kind))
        if isinstance(model, CountModel | DailyCountModel):
            return model.update(timestamp, float(evidence))
        if isinstance(model, RateModel):
            successes, trials = evidence
            return model.update(timestamp, float(successes), float(trials))
        return model.update(timestamp, evidence)

    def _zone(self, partner_id: str, source: str, kind: str) -> str | None:
        """The time zone of a partner's seasons: its own, but UTC for the arrival counts of a
        feed we poll, labels so far today included (they come when our poller runs: in the
        partner's local time its polls move by an hour at a switch to summer time)."""
        if (source == "received" and partner_id in self.polled_partners
                and kind in ("count", "daily")):
            return None
        return self.time_zones.get(partner_id)

    def _detector_score(self, partner_id: str, metric: str, start: int, value: float) -> float:
        key = (partner_id, metric)
        detector = self._detectors.get(key)
        if detector is None:
            detector = self._detectors[key] = make_detector(
                self.detector, seed=_stream_seed(self.seed, partner_id, metric), **self._params())
        spec = METRIC_SPECS[metric]
        point = (local_seconds(start, self._zone(partner_id, spec.source, spec.kind)), value)
        score = detector.score_one(point)
        detector.learn_one(point)
        return score

    def _score_point(self, partner_id: str, metric: str, start: int, value: float,
                     score: float, clock: int | None, out: MonitorOutput) -> None:
        key = (partner_id, metric)
        anomalous = score >= self.threshold
        self.stats["points_scored"] += 1
        alert = self._alerts.get(key)
        if alert is None:
            alert = self._alerts[key] = _Alert()
        end = start + WINDOW_MS
        if anomalous:
            self.stats["anomalies"] += 1
            alert.normal_run = 0
            alert.last_anomalous_end = end
            alert.last_value = value
            if not alert.firing:
                alert.firing = True
                alert.normal_value = alert.last_normal
                alert.extreme = value
                alert.starts_at = start
                alert.peak_score = score
                out.alerts.append(self._alert_row(partner_id, metric, alert, end, value, score))
            else:
                alert.peak_score = max(alert.peak_score, score)
                if (alert.normal_value is not None and abs(value - alert.normal_value)
                        > abs(alert.extreme - alert.normal_value)):
                    alert.extreme = value
        elif alert.firing:
            if self._recovered(alert, value):
                alert.normal_run += 1
            else:
                alert.normal_run = 0
            if alert.normal_run >= self.resolve_after:
                alert.firing = False
                out.alerts.append(self._alert_row(partner_id, metric, alert, end,
                                                  alert.last_value, alert.peak_score))
        if not anomalous and not alert.firing:
            alert.last_normal = value
        if anomalous or self.emit_normal:
            out.anomalies.append({
                "partner_id": partner_id, "metric": metric, "window_start": _utc(start),
                "detector": self.detector, "value": value, "score": score,
                "threshold": self.threshold, "is_anomaly": anomalous,
                "detected_at": _utc(max(clock or end, end)),
            })
        out.points.append(ScoredPoint(partner_id, metric, start, value, score, anomalous,
                                      alert.firing))

    @staticmethod
    def _recovered(alert: _Alert, value: float) -> bool:
        """A normal score counts toward resolving only once the value is back at least halfway
        from the most extreme anomalous value to the last normal one: detectors damp their
        scores after an alarm, and a feed that stays silent must keep its alert firing."""
        if alert.normal_value is None:
            return True
        return abs(value - alert.normal_value) <= abs(alert.extreme - alert.normal_value) / 2

    def _alert_row(self, partner_id: str, metric: str, alert: _Alert, updated: int,
                   value: float, score: float) -> dict[str, Any]:
        labels = {"alertname": ALERT_NAME, "partner": partner_id, "metric": metric,
                  "detector": self.detector}
        fingerprint = hashlib.sha256(
            "\x1f".join(f"{k}={labels[k]}" for k in sorted(labels)).encode()).hexdigest()[:16]
        silent = METRIC_SPECS[metric].kind == "count" and value == 0.0
        severity = "critical" if silent else "warning"
        what = "no events (silent feed)" if silent else f"value {value:.4g}"
        summary = (f"{partner_id}: {metric} anomalous since {_utc(alert.starts_at):%Y-%m-%d %H:%M} "
                   f"UTC ({what}, score {score:.2f} >= {self.threshold:g})")
        return {
            "partner_id": partner_id, "name": ALERT_NAME, "fingerprint": fingerprint,
            "starts_at": _utc(alert.starts_at),
            "ends_at": None if alert.firing else _utc(alert.last_anomalous_end),
            "severity": severity, "state": "firing" if alert.firing else "resolved",
            "labels": {"metric": metric, "detector": self.detector},
            "annotations": {"summary": summary, "runbook_url": RUNBOOK_URL},
            "updated_at": _utc(updated),
        }

