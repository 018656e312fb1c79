"""SLA metrics: what a package and an event contribute to the windows, and how rates are read.

Two kinds of contributions feed a window (full definitions in ``docs/metrics.md``):

* **event contributions** (volume, statuses, codebook gaps, latency, carrier and ingest lag,
  synthetic volume, too-late events), attributed to the 5-minute window of the event's own
  ``event_time`` under the event's own region (``location.region``, else ``"unknown"``) and
  service level (else the contract's default). They never change once counted.
* **package facts** (on-time, first attempt, pickup compliance, delivery, lateness, ETA accuracy,
  tracking compliance, exceptions), a pure function of the package state and the watermark,
  attributed to the window of the fact's time under the package's region and service level.
  When a late event changes a package, its old facts are retracted and the new ones added, so a
  window holds exactly the facts of the current states.

A fact is a small tuple whose first element is its kind:

======================  ==========================================================  =============
kind                    tuple                                                       window of
======================  ==========================================================  =============
``FACT_ON_TIME``        ``(0, decided_at, on_time, had_exception)``                 decision time
``FACT_FIRST_ATTEMPT``  ``(1, attempt_time, success)``                              first attempt
``FACT_PICKUP``         ``(2, decided_at, on_time)``                                pickup or due
``FACT_DELIVERED``      ``(3, delivered_at, tracking_ok, lateness_s|None, eta_ok)``  delivery
``FACT_EXC_OPENED``     ``(4, opened_at)``                                          open time
``FACT_EXC_RESOLVED``   ``(5, resolved_at, duration_ms)``                           resolve time
======================  ==========================================================  =============

``eta_ok`` is ``-1`` when no ETA was given before the delivery.

Examples
--------
A package promised for 12:00 with 30 minutes of grace and no delivery is decided *late* as soon
as the watermark reaches 12:30, attributed to 12:30:

>>> from carrierwatch.core.model import CanonicalEvent, event_id
>>> from carrierwatch.core.partner import SlaContract
>>> from carrierwatch.core.state import ContractRules, PackageState
>>> rules = ContractRules.from_contract(SlaContract(grace_minutes=30, required_milestones=()))
>>> noon = 1_772_452_800_000                         # 2026-03-02 12:00 UTC
>>> state = PackageState("demo", "p1")
>>> _ = state.add(CanonicalEvent(event_id("demo", "p1", "picked_up", noon - 7_200_000), "demo",
...     "p1", "1", "picked_up", 1.0, "PU", noon - 7_200_000, noon, promised_by=noon), rules)
>>> package_facts(state, rules, watermark=noon, eta_tolerance_ms=7_200_000)   # undecided yet
()
>>> package_facts(state, rules, watermark=noon + 1_800_000, eta_tolerance_ms=7_200_000)[0]
(0, 1772454600000, 0, False)
>>> on_time_rate(MetricWindowRow("demo", "US", "ground", "1h", 0, 0, 1, packages_decided=4,
...                              packages_on_time=3))
0.75
"""

from __future__ import annotations

from carrierwatch.core.sketch import bucket_of, quantile
from carrierwatch.core.state import (
    I_DELIV_KEY,
    I_EXC_OPEN,
    I_FA_KEY,
    I_PICKUP,
    I_PICKUP_DUE,
    I_PROMISED_BY,
    NONE,
    R_CANCELLED,
    R_DELIVERED,
    ContractRules,
    PackageState,
)
from carrierwatch.core.windows import COUNTER_COLUMNS, MetricWindowRow, WindowAgg

__all__ = [
    "FACT_DELIVERED",
    "FACT_EXC_OPENED",
    "FACT_EXC_RESOLVED",
    "FACT_FIRST_ATTEMPT",
    "FACT_ON_TIME",
    "FACT_PICKUP",
    "Fact",
    "apply_fact",
    "carrier_lag_quantile",
    "delay_variance_s2",
    "eta_accuracy",
    "event_latency_quantile",
    "exception_rate",
    "first_attempt_success_rate",
    "mean_lateness_s",
    "mean_resolution_ms",
    "on_time_rate",
    "package_facts",
    "pickup_compliance",
    "resolution_quantile",
    "tracking_compliance",
]

Fact = tuple[int, ...]

FACT_ON_TIME, FACT_FIRST_ATTEMPT, FACT_PICKUP, FACT_DELIVERED = 0, 1, 2, 3
FACT_EXC_OPENED, FACT_EXC_RESOLVED = 4, 5

_CANCELLED_BIT = 1 << R_CANCELLED
_I = {name: i for i, name in enumerate(COUNTER_COLUMNS)}
C_DECIDED, C_ON_TIME, C_WITH_EXC = _I["packages_decided"], _I["packages_on_time"], \
    _I["packages_with_exception"]
C_FIRST, C_FIRST_OK = _I["first_attempts"], _I["first_attempt_successes"]
C_PICKUPS, C_PICKUPS_OK = _I["pickups_due"], _I["pickups_on_time"]
C_DELIVERIES, C_TRACKING_OK = _I["deliveries"], _I["tracking_compliant"]
C_LATE_N, C_LATE_SUM, C_LATE_SQ = _I["lateness_count"], _I["lateness_sum_s"], \
    _I["lateness_sum_sq_s2"]
C_ETA_N, C_ETA_OK = _I["eta_checked"], _I["eta_accurate"]
C_EXC_OPENED, C_EXC_RESOLVED, C_RES_SUM = _I["exceptions_opened"], _I["exceptions_resolved"], \
    _I["resolution_sum_ms"]
C_EVENTS, C_GAPS, C_SYNTHETIC, C_TOO_LATE = _I["events"], _I["codebook_gap_events"], \
    _I["synthetic_events"], _I["too_late_events"]
C_LAT_N, C_LAT_SUM = _I["latency_count"], _I["latency_sum_ms"]
C_CLAG_N, C_CLAG_SUM = _I["carrier_lag_count"], _I["carrier_lag_sum_ms"]
C_ILAG_N, C_ILAG_SUM = _I["ingest_lag_count"], _I["ingest_lag_sum_ms"]
H_LATENCY, H_CARRIER_LAG, H_INGEST_LAG, H_RESOLUTION = 0, 1, 2, 3


def package_facts(state: PackageState, rules: ContractRules, watermark: int,
                  eta_tolerance_ms: int) -> tuple[Fact, ...]:
    """The facts a package contributes to the windows, given the current watermark.

    * **On time** (only with a promise, not for a cancelled, undelivered package): on time if
      delivered at or before ``promised_by + grace``, decided at the delivery; late otherwise,
      decided at ``promised_by + grace`` — as soon as a later delivery is seen or the watermark
      reaches that deadline without one.
    * **First attempt**: the first delivery attempt (failed attempt or delivery) in sort order;
      success if it is the delivery.
    * **Pickup** (only with a pickup due): on time if the pickup time is at or before the due
      time; late at the due time once a later pickup is seen or the watermark reaches the due
      time (a package cancelled before pickup is excluded).
    * **Delivered**: tracking compliance (all required milestones seen), lateness
      ``floor((delivered_at - promised_by) / 1000)`` seconds when a promise exists, ETA accuracy
      of the last ETA before the delivery: ``eta_start - tol <= delivered_at <= eta_end + tol``.
    * **Exceptions**: one fact per episode opening, one per resolution with its duration.

    Facts are computed for synthetic packages too (their outcome rows need them), but the
    pipeline never adds them to the partner's windows.
    """
    if not state.n:
        return ()
    fields = state.fields
    out: list[Fact] = []
    deliv_key = fields[I_DELIV_KEY]
    delivered = deliv_key != NONE
    delivered_at = deliv_key >> 20 if delivered else NONE
    cancelled = bool(state.mask & _CANCELLED_BIT)
    promised = fields[I_PROMISED_BY]
    if promised != NONE and (delivered or not cancelled):
        deadline = promised + rules.grace_ms
        if delivered_at <= deadline:
            out.append((FACT_ON_TIME, delivered_at, 1, state.exc_count > 0))
        elif delivered or watermark >= deadline:
            out.append((FACT_ON_TIME, deadline, 0, state.exc_count > 0))
    first = fields[I_FA_KEY]
    if first != NONE:
        out.append((FACT_FIRST_ATTEMPT, first >> 20,
                    1 if (first >> 16) & 0xF == R_DELIVERED else 0))
    due = fields[I_PICKUP_DUE]
    if due != NONE:
        pickup = fields[I_PICKUP]
        if pickup <= due:
            out.append((FACT_PICKUP, pickup, 1))
        elif pickup != NONE or (watermark >= due and not cancelled):
            out.append((FACT_PICKUP, due, 0))
    if delivered:
        milestones = rules.milestone_mask
        tracking_ok = 1 if state.mask & milestones == milestones else 0
        lateness = (delivered_at - promised) // 1000 if promised != NONE else None
        eta = state.last_eta(deliv_key) if len(fields) > state.n + 11 else None
        if eta is None:
            eta_ok = -1
        else:
            eta_ok = 1 if eta[0] - eta_tolerance_ms <= delivered_at <= eta[1] + eta_tolerance_ms \
                else 0
        out.append((FACT_DELIVERED, delivered_at, tracking_ok, lateness, eta_ok))  # type: ignore[arg-type]
    for opened, resolved in state.exc_done:
        out.append((FACT_EXC_OPENED, opened))
        out.append((FACT_EXC_RESOLVED, resolved, resolved - opened))
    if fields[I_EXC_OPEN] != NONE:
        out.append((FACT_EXC_OPENED, fields[I_EXC_OPEN]))
    return tuple(out)


def apply_fact(agg: WindowAgg, fact: Fact, sign: int) -> None:
    """Add (``sign=1``) or retract (``sign=-1``) one fact in a window aggregate."""
    counts = agg.counts
    kind = fact[0]
    if kind == FACT_ON_TIME:
        counts[C_DECIDED] += sign
        if fact[2]:
            counts[C_ON_TIME] += sign
        if fact[3]:
            counts[C_WITH_EXC] += sign
    elif kind == FACT_FIRST_ATTEMPT:
        counts[C_FIRST] += sign
        if fact[2]:
            counts[C_FIRST_OK] += sign
    elif kind == FACT_PICKUP:
        counts[C_PICKUPS] += sign
        if fact[2]:
            counts[C_PICKUPS_OK] += sign
    elif kind == FACT_DELIVERED:
        counts[C_DELIVERIES] += sign
        if fact[2]:
            counts[C_TRACKING_OK] += sign
        lateness = fact[3]
        if lateness is not None:
            counts[C_LATE_N] += sign
            counts[C_LATE_SUM] += sign * lateness
            counts[C_LATE_SQ] += sign * lateness * lateness
        if fact[4] >= 0:
            counts[C_ETA_N] += sign
            counts[C_ETA_OK] += sign * fact[4]
    elif kind == FACT_EXC_OPENED:
        counts[C_EXC_OPENED] += sign
    else:
        counts[C_EXC_RESOLVED] += sign
        counts[C_RES_SUM] += sign * fact[2]
        hist = agg.hists[H_RESOLUTION]
        bucket = bucket_of(fact[2])
        total = hist.get(bucket, 0) + sign
        if total:
            hist[bucket] = total
        else:
            del hist[bucket]


# ---------------------------------------------------------------------------------------------
# Reading rates from rows (all return None when the denominator is zero).

def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def on_time_rate(row: MetricWindowRow) -> float | None:
    """``packages_on_time / packages_decided``.

    >>> on_time_rate(MetricWindowRow("p", "r", "s", "1d", 0, 0, 1)) is None
    True
    """
    return _ratio(row.packages_on_time, row.packages_decided)


def first_attempt_success_rate(row: MetricWindowRow) -> float | None:
    """``first_attempt_successes / first_attempts``.

    >>> first_attempt_success_rate(MetricWindowRow("p", "r", "s", "1d", 0, 0, 1,
    ...     first_attempts=10, first_attempt_successes=9))
    0.9
    """
    return _ratio(row.first_attempt_successes, row.first_attempts)


def exception_rate(row: MetricWindowRow) -> float | None:
    """``packages_with_exception / packages_decided`` (same cohort as the on-time rate).

    >>> exception_rate(MetricWindowRow("p", "r", "s", "1d", 0, 0, 1, packages_decided=50,
    ...     packages_with_exception=2))
    0.04
    """
    return _ratio(row.packages_with_exception, row.packages_decided)


def pickup_compliance(row: MetricWindowRow) -> float | None:
    """``pickups_on_time / pickups_due``."""
    return _ratio(row.pickups_on_time, row.pickups_due)


def tracking_compliance(row: MetricWindowRow) -> float | None:
    """``tracking_compliant / deliveries``."""
    return _ratio(row.tracking_compliant, row.deliveries)


def eta_accuracy(row: MetricWindowRow) -> float | None:
    """``eta_accurate / eta_checked``."""
    return _ratio(row.eta_accurate, row.eta_checked)


def mean_lateness_s(row: MetricWindowRow) -> float | None:
    """``lateness_sum_s / lateness_count`` (negative: early)."""
    return _ratio(row.lateness_sum_s, row.lateness_count)


def delay_variance_s2(row: MetricWindowRow) -> float | None:
    """Population variance of lateness: ``sum_sq/n - (sum/n)**2`` (s²).

    >>> row = MetricWindowRow("p", "r", "s", "1d", 0, 0, 1, lateness_count=3,
    ...                       lateness_sum_s=0, lateness_sum_sq_s2=2 * 3600**2)
    >>> delay_variance_s2(row) ** 0.5 / 3600          # lateness -1 h, 0, +1 h
    0.8164965809277259
    """
    n = row.lateness_count
    if not n:
        return None
    mean = row.lateness_sum_s / n
    return max(0.0, row.lateness_sum_sq_s2 / n - mean * mean)


def mean_resolution_ms(row: MetricWindowRow) -> float | None:
    """``resolution_sum_ms / exceptions_resolved``."""
    return _ratio(row.resolution_sum_ms, row.exceptions_resolved)


def resolution_quantile(row: MetricWindowRow, q: float = 0.9) -> int | None:
    """Exception resolution time quantile (ms) from the histogram (≤ 2.47 % relative error)."""
    return quantile(row.resolution_hist, q)


def event_latency_quantile(row: MetricWindowRow, q: float) -> int | None:
    """Event latency (received − event time) quantile, ms.

    >>> from carrierwatch.core.sketch import histogram_of
    >>> row = MetricWindowRow("p", "r", "s", "5m", 0, 0, 1,
    ...                       latency_hist=histogram_of([60_000] * 19 + [3_600_000]))
    >>> event_latency_quantile(row, 0.5), event_latency_quantile(row, 0.99)
    (58790, 3541666)
    """
    return quantile(row.latency_hist, q)


def carrier_lag_quantile(row: MetricWindowRow, q: float) -> int | None:
    """Carrier lag (partner received − event time) quantile, ms."""
    return quantile(row.carrier_lag_hist, q)
