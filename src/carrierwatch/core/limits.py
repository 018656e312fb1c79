"""The ranges a canonical event's numbers must fall in: the data contract's types and plausibility.

Every number a transformer puts into a :class:`~carrierwatch.core.model.CanonicalEvent` must be
representable by the Avro contract (``schemas/canonical_event/``) *and* by the store's columns
(``storage/migrations``), and a time must be plausible for a delivery event:

========================  =====================================  ==================================
field                     contract / store type                  accepted range
========================  =====================================  ==================================
``attempt_number``        Avro ``int`` / ``Nullable(Int32)``     0 .. 2**31 - 1 (a count)
``latitude``              Avro ``double`` / ``Float64``          finite, -90 .. 90
``longitude``             Avro ``double`` / ``Float64``          finite, -180 .. 180
``confidence``            Avro ``double`` / ``Float64``          finite, 0 .. 1
event, promise, ETA and   Avro ``timestamp-millis`` /            :class:`EventLimits`: from the
partner-received times    ``DateTime64(3, 'UTC')``               earliest plausible time (default
                                                                 2000-01-01) to the received time
                                                                 plus the allowed future skew
                                                                 (default 365 days), never outside
                                                                 1970-01-01 .. 2248-09-26, what
                                                                 the state machine's int64 event
                                                                 keys hold (the store: 1900..2299)
========================  =====================================  ==================================

The earliest time and the skew are settings (``CARRIERWATCH_EARLIEST_EVENT_TIME``,
``CARRIERWATCH_MAX_FUTURE_SKEW_DAYS``, see :mod:`carrierwatch.settings`); the rest are the
contract's and cannot be configured. The transformer layer applies these limits (see
:meth:`carrierwatch.transformers.base.Emitter.event`): a value outside them becomes a dead letter
naming its path, never an event that the store or the Avro encoder would refuse.

Examples
--------
>>> limits = EventLimits()
>>> received = 1_772_712_000_000                     # 2026-03-05T12:00:00Z
>>> lo, hi = limits.time_window(received)
>>> ms_text(lo), ms_text(hi)
('2000-01-01T00:00:00.000Z', '2027-03-05T12:00:00.000Z')
>>> ms_text(limits.time_window(10**13)[1])          # received in 2286: capped
'2248-09-26T15:10:22.207Z'
>>> time_problem(-62_135_596_800_000, lo, hi)        # 0001-01-01
'0001-01-01T00:00:00.000Z is before the earliest plausible time 2000-01-01T00:00:00.000Z'
>>> print(count_problem(3_000_000_000))
3000000000 is outside the contract's range 0..2147483647
>>> coordinate_problem(float("nan"), 90.0)
'nan is not a finite number'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "DEFAULT_EARLIEST_EVENT_TIME",
    "DEFAULT_MAX_FUTURE_SKEW_DAYS",
    "INT32_MAX",
    "INT32_MIN",
    "STATE_TIME_MAX_MS",
    "STATE_TIME_MIN_MS",
    "STORE_TIME_MAX_MS",
    "STORE_TIME_MIN_MS",
    "TIME_MAX_MS",
    "TIME_MIN_MS",
    "EventLimits",
    "coordinate_problem",
    "count_problem",
    "ms_text",
    "time_problem",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
_DAY_MS = 86_400_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# ClickHouse's DateTime64 range (the store's time columns); the Avro long is wider.
STORE_TIME_MIN_MS = -2_208_988_800_000        # 1900-01-01T00:00:00.000Z
STORE_TIME_MAX_MS = 10_413_791_999_999        # 2299-12-31T23:59:59.999Z
# The package state machine keeps an event as one int64 key, event_time << 20 | rank | id bits
# (carrierwatch.core.state), so the core takes event times in 0 .. 2**43 - 1 only and counts any
# other as a too-late "invalid_time" event, out of every metric.
STATE_TIME_MIN_MS = 0                         # 1970-01-01T00:00:00.000Z
STATE_TIME_MAX_MS = (1 << 43) - 1             # 2248-09-26T15:10:22.207Z
TIME_MIN_MS = max(STORE_TIME_MIN_MS, STATE_TIME_MIN_MS)
TIME_MAX_MS = min(STORE_TIME_MAX_MS, STATE_TIME_MAX_MS)

DEFAULT_EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
DEFAULT_MAX_FUTURE_SKEW_DAYS = 365.0


def ms_text(ms: int) -> str:
    """ISO 8601 text of epoch milliseconds, for messages (see :func:`carrierwatch.core.model.ms_to_iso`)."""
    from carrierwatch.core.model import ms_to_iso

    return ms_to_iso(ms) or ""


@dataclass(frozen=True, slots=True)
class EventLimits:
    """The plausible range of a delivery event's times, relative to when the payload arrived.

    ``earliest``: epoch ms before which no time is plausible; ``max_future``: how far (ms) after
    the payload's received time a time may lie (promises and ETAs are in the future; an event
    time ahead of the received time is a partner's clock or zone error, tolerated up to this).
    """

    earliest: int = 946_684_800_000                   # DEFAULT_EARLIEST_EVENT_TIME
    max_future: int = int(DEFAULT_MAX_FUTURE_SKEW_DAYS * _DAY_MS)

    @classmethod
    def from_settings(cls, earliest: datetime, max_future_skew_days: float) -> EventLimits:
        """Limits from the settings' values (an aware or UTC-naive datetime and days)."""
        if earliest.tzinfo is None:
            earliest = earliest.replace(tzinfo=UTC)
        earliest_ms = (earliest - _EPOCH).total_seconds() * 1000
        return cls(earliest=int(earliest_ms), max_future=int(max_future_skew_days * _DAY_MS))

    def time_window(self, received_time: int) -> tuple[int, int]:
        """``(lowest, highest)`` epoch ms accepted in a payload received at ``received_time``,
        always within what the store and the state machine hold (:data:`TIME_MIN_MS` ..
        :data:`TIME_MAX_MS`), whatever the settings or the received time."""
        return (max(self.earliest, TIME_MIN_MS),
                min(received_time + self.max_future, TIME_MAX_MS))


def time_problem(value: object, lowest: int, highest: int) -> str | None:
    """Why ``value`` is not an acceptable event time within ``[lowest, highest]``, or None."""
    if value.__class__ is not int:
        return f"expected epoch milliseconds, got {type(value).__name__} {value!r:.40}"
    assert isinstance(value, int)
    if value < lowest:
        return f"{ms_text(value)} is before the earliest plausible time {ms_text(lowest)}"
    if value > highest:
        return (f"{ms_text(value)} is after the latest plausible time {ms_text(highest)} "
                f"(received time + the allowed future skew)")
    return None


def count_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable count (attempt number), or None."""
    if value.__class__ is not int:
        return f"expected a whole number, got {type(value).__name__} {value!r:.40}"
    assert isinstance(value, int)
    if not 0 <= value <= INT32_MAX:
        shown = f"{value}" if len(str(abs(value))) <= 40 else f"{value:.3e}"
        return f"{shown} is outside the contract's range 0..{INT32_MAX}"
    return None


def coordinate_problem(value: object, bound: float) -> str | None:
    """Why ``value`` is not a coordinate within ``[-bound, bound]`` (90 for latitudes, 180 for
    longitudes), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {type(value).__name__}"
    if not math.isfinite(value):
        return f"{value} is not a finite number"
    if not -bound <= value <= bound:
        return f"{value} is outside -{bound:g}..{bound:g}"
    return None

