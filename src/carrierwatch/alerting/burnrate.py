"""Multiwindow, multi-burn-rate alert thresholds (Google SRE workbook, chapter 5), pure.

The workbook's table is written for a 30-day SLO window:

==========  ============  ============  ==========  =======================
severity    long window   short window  burn rate   error budget consumed
==========  ============  ============  ==========  =======================
page        1 h           5 min         14.4        2 %
page        6 h           30 min        6           5 %
ticket      1 d           2 h           3           10 %
ticket      3 d           6 h           1           10 %
==========  ============  ============  ==========  =======================

A burn rate ``b`` held for a long window ``L`` consumes the fraction ``b * L / W`` of the error
budget of an SLO window ``W``. carrierwatch keeps the *budget fraction* of each row fixed and
derives the burn rate from the partner's own SLO window (``contract.slo_window_days``)::

    burn_rate = budget_fraction * W / L

so a 30-day window gives the workbook's values exactly, and UPS's 28-day window pages at
``0.02 * 672 h / 1 h = 13.44``. An alert compares the *error ratio* (bad / all events) of both
windows with ``burn_rate * (1 - target)``. When that product is 1 or more (a loose target with a
fast burn: 13.44 x 8 % = 1.08), no error ratio can exceed it; the threshold is then clamped to
"every event in both windows bad" (``>= 1``), so a total outage still pages.

Low volume: each row also requires at least ``min_events`` decided events in its long window
(see :func:`false_alarm_probability` and docs/alerting.md for the choice of 20).

Examples
--------
>>> [(w.long, w.short, round(w.burn_rate, 2)) for w in burn_rate_windows(30)]
[('1h', '5m', 14.4), ('6h', '30m', 6.0), ('1d', '2h', 3.0), ('3d', '6h', 1.0)]
>>> t = burn_rate_windows(28)[0].threshold(0.96)
>>> round(t.error_ratio, 4), t.comparison
(0.5376, '>')
>>> burn_rate_windows(28)[0].threshold(0.92).comparison
'>='
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "WORKBOOK_ROWS",
    "BurnRateWindow",
    "Threshold",
    "WindowRow",
    "burn_rate_windows",
    "duration_seconds",
    "false_alarm_probability",
    "format_duration",
]

Severity = Literal["page", "ticket"]


@dataclass(frozen=True)
class WindowRow:
    """One row of the workbook's table: severity, windows and the budget fraction it spends."""

    severity: Severity
    long_seconds: int
    short_seconds: int
    budget_fraction: float


#: the workbook's table (long window, short window = long / 12, budget fraction)
WORKBOOK_ROWS: tuple[WindowRow, ...] = (
    WindowRow("page", 3600, 300, 0.02),
    WindowRow("page", 6 * 3600, 1800, 0.05),
    WindowRow("ticket", 86400, 2 * 3600, 0.10),
    WindowRow("ticket", 3 * 86400, 6 * 3600, 0.10),
)


@dataclass(frozen=True)
class Threshold:
    """What an error ratio must exceed: ``error_ratio`` with ``comparison`` ('>' or '>=')."""

    error_ratio: float
    comparison: Literal[">", ">="]


@dataclass(frozen=True)
class BurnRateWindow:
    """A row of the table for one SLO window: windows as Prometheus durations and its burn rate."""

    severity: Severity
    long: str
    short: str
    burn_rate: float
    budget_fraction: float

    def threshold(self, target: float) -> Threshold:
        """The error ratio both windows must exceed for an SLO ``target`` (0 < target < 1)."""
        if not 0 < target < 1:
            raise ValueError(f"an SLO target must be between 0 and 1 (exclusive), not {target}")
        ratio = self.burn_rate * (1 - target)
        if ratio >= 1:
            return Threshold(1.0, ">=")
        return Threshold(ratio, ">")


def burn_rate_windows(slo_window_days: float,
                      rows: tuple[WindowRow, ...] = WORKBOOK_ROWS) -> list[BurnRateWindow]:
    """The workbook's rows for an SLO window of ``slo_window_days``: same budget fractions,
    burn rates scaled by ``window / long window``.

    >>> [round(w.burn_rate, 4) for w in burn_rate_windows(28)]
    [13.44, 5.6, 2.8, 0.9333]
    """
    if not slo_window_days > 0:
        raise ValueError(f"the SLO window must be positive, not {slo_window_days} days")
    window_seconds = slo_window_days * 86400
    out = []
    for row in rows:
        if row.long_seconds >= window_seconds:
            raise ValueError(f"the SLO window ({slo_window_days} days) must be longer than the "
                             f"alert window {format_duration(row.long_seconds)}")
        out.append(BurnRateWindow(
            severity=row.severity,
            long=format_duration(row.long_seconds),
            short=format_duration(row.short_seconds),
            burn_rate=row.budget_fraction * window_seconds / row.long_seconds,
            budget_fraction=row.budget_fraction))
    return out


_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def format_duration(seconds: int) -> str:
    """A Prometheus duration in its largest whole unit.

    >>> format_duration(300), format_duration(7200), format_duration(259200), format_duration(90)
    ('5m', '2h', '3d', '90s')
    """
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    for unit, size in _UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("unreachable: every whole number of seconds has a unit")


def duration_seconds(text: str) -> int:
    """The inverse of :func:`format_duration` for one unit (``'90m'`` -> 5400).

    >>> duration_seconds("3d"), duration_seconds("5m")
    (259200, 300)
    """
    sizes = dict(_UNITS)
    if len(text) < 2 or text[-1] not in sizes or not text[:-1].isdigit():
        raise ValueError(f"not a duration like 5m, 6h or 3d: {text!r}")
    return int(text[:-1]) * sizes[text[-1]]


def false_alarm_probability(events: int, target: float, threshold: Threshold) -> float:
    """Chance that ``events`` outcomes of a partner *meeting* its target exactly (each bad with
    probability ``1 - target``, independently) show an error ratio that crosses ``threshold``.

    This is the binomial tail ``P(X > t * n)`` (or ``>=``) for ``X ~ Binomial(n, 1 - target)``;
    it is why a page needs a minimum number of events in its long window:

    >>> t = burn_rate_windows(28)[0].threshold(0.96)    # > 53.76 % bad in 1 h
    >>> round(false_alarm_probability(2, 0.96, t), 4)   # 2 packages, both late
    0.0016
    >>> false_alarm_probability(20, 0.96, t) < 1e-10    # at least 11 of 20 late
    True
    """
    if events <= 0:
        return 0.0
    bad = 1 - target
    limit = threshold.error_ratio * events
    first = math.ceil(limit) if threshold.comparison == ">=" else math.floor(limit) + 1
    return sum(math.comb(events, k) * bad**k * (1 - bad)**(events - k)
               for k in range(max(first, 0), events + 1))
