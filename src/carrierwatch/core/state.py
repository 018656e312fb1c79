"""The package state machine: one small, order-independent state per package.

A package's state is a function of the **set** of its (deduplicated) events, never of the order
in which they arrived. Events are ordered by the *sort key* ``(event_time, status rank, event id)``
and every derived field is either

* a minimum over that order (first promise, first located region, first service level, first
  delivery and its proof, first attempt and its reason, earliest info-received and pickup times),
  which does not depend on arrival order, or
* a fold over the sorted events (illegal-transition flags, exception episodes), recomputed from
  the sorted keys when an event arrives out of order and advanced by one step when it arrives in
  order (the common case).

Each event is stored as one signed 64-bit integer whose natural order *is* the sort key::

    key = event_time_ms << 20 | status_rank << 16 | first 16 bits of the event id

An event's identity within a package is its ``event_id``, which
:func:`carrierwatch.core.model.event_id` derives from partner, package, status and event time; so
two events with one key are one event (a duplicate), and the key doubles as the dedup token. Keys
live in an ``array('q')`` (8 bytes each), the fixed numeric fields in another one, so an in-flight
package costs a few hundred bytes (see ``tests/core/test_state.py`` for the measured figure).

Status precedence: the current status is ``delivered`` if any delivery was seen, else
``returned``, else ``cancelled``, else the status of the last event in sort order. A delivery that
arrives before "out for delivery" still ends delivered; an "in transit" dated after the delivery
does not un-deliver the package, it is flagged.

Examples
--------
>>> from carrierwatch.core.model import CanonicalEvent, event_id
>>> from carrierwatch.core.partner import SlaContract
>>> rules = ContractRules.from_contract(SlaContract(timezone="America/Chicago", grace_minutes=30))
>>> def ev(status, t, **kw):
...     return CanonicalEvent(event_id=event_id("demo", "p1", status, t), partner_id="demo",
...                           package_id="p1", tracking_number="1", status=status, confidence=1.0,
...                           raw_code="x", event_time=t, received_time=t + 60_000, **kw)
>>> state = PackageState("demo", "p1")
>>> t0 = 1_772_467_200_000                      # 2026-03-02 10:00 in Chicago (a Monday)
>>> for e in [ev("delivered", t0 + 86_400_000), ev("picked_up", t0), ev("out_for_delivery",
...           t0 + 80_000_000), ev("in_transit", t0 + 90_000_000), ev("picked_up", t0)]:
...     _ = state.add(e, rules)
>>> state.status, state.event_count, state.flags
('delivered', 4, 1)
>>> ms_to_iso(state.promised_by), state.promise_source      # 5 business days, end of day
('2026-03-10T04:59:59.999Z', 'contract')
"""

from __future__ import annotations

import pickle
import sys
import zlib
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from carrierwatch.core.model import CanonicalEvent, CanonicalStatus, ms_to_iso
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.timeutil import to_ms

__all__ = [
    "FLAG_AFTER_TERMINAL",
    "FLAG_BACKWARD",
    "FORWARD_MASK",
    "NONE",
    "N_FIELDS",
    "POSSESSION_MASK",
    "RANK_STATUS",
    "STATUS_RANK",
    "ContractRules",
    "PackageState",
    "event_key",
    "key_rank",
    "key_time",
    "ms_to_iso",
]

NONE = (1 << 63) - 1
"""Sentinel for "no value" in the integer fields (larger than every time and key)."""

_S = CanonicalStatus
STATUS_RANK: dict[str, int] = {
    _S.INFO_RECEIVED: 0, _S.PICKED_UP: 1, _S.STAGED: 2, _S.IN_TRANSIT: 3, _S.UNKNOWN: 4,
    _S.EXCEPTION: 5, _S.OUT_FOR_DELIVERY: 6, _S.DELIVERY_ATTEMPTED: 7,
    _S.AVAILABLE_FOR_PICKUP: 8, _S.DELIVERED: 9, _S.RETURNED: 10, _S.CANCELLED: 11,
}
"""Tie-break order of statuses that share an event time (the natural lifecycle order)."""

RANK_STATUS: tuple[str, ...] = tuple(str(s) for s, _ in sorted(STATUS_RANK.items(),
                                                               key=lambda kv: kv[1]))

R_INFO, R_PICKED, R_STAGED, R_TRANSIT, R_UNKNOWN, R_EXCEPTION = 0, 1, 2, 3, 4, 5
R_OFD, R_ATTEMPT, R_AFP, R_DELIVERED, R_RETURNED, R_CANCELLED = 6, 7, 8, 9, 10, 11

POSSESSION_MASK = sum(1 << r for r in (R_PICKED, R_STAGED, R_TRANSIT, R_OFD, R_ATTEMPT, R_AFP,
                                       R_DELIVERED))
"""Statuses that prove the carrier holds the package: the earliest one is the pickup time."""

FORWARD_MASK = POSSESSION_MASK
"""Statuses that resolve an open exception (forward movement, an attempt, or the delivery)."""

TERMINAL_MASK = (1 << R_DELIVERED) | (1 << R_RETURNED) | (1 << R_CANCELLED)

# Progress level per rank for the backward-transition rule; None = neutral (exception, unknown).
_LEVEL: tuple[int | None, ...] = (0, 1, 2, 2, None, None, 3, 3, 3, 4, 4, 4)

FLAG_AFTER_TERMINAL = "after_terminal"
"""Any event that sorts after a delivered/returned/cancelled event (including a second delivery)."""
FLAG_BACKWARD = "backward"
"""``info_received`` after the carrier held the package, or ``picked_up`` after it moved on."""

_TIME_SHIFT = 20
_RANK_SHIFT = 16
_MAX_TIME = (1 << 43) - 1

# Indices of the fixed numeric fields (array 'q').
I_INFO, I_PICKUP, I_DELIV_KEY, I_FA_KEY, I_REGION_KEY, I_SL_KEY = 0, 1, 2, 3, 4, 5
I_PROMISE_KEY, I_FEED_PROMISE, I_PROMISED_BY, I_PICKUP_DUE, I_EXC_OPEN = 6, 7, 8, 9, 10
_N_FIELDS = 11
N_FIELDS = _N_FIELDS
"""Number of fixed int64 fields before the event keys in ``PackageState.fields``."""


def event_key(event_time: int, status: str, event_id: str) -> int:
    """The packed sort key of an event: ``(event_time, status rank, event id)`` in one int.

    Unknown status strings rank as ``unknown``. Raises ``ValueError`` for an event time outside
    ``[0, 2**43)`` ms (1970 to 2248).

    >>> k = event_key(1_000, "delivered", "abcd0123")
    >>> key_time(k), RANK_STATUS[key_rank(k)], k & 0xFFFF == 0xabcd
    (1000, 'delivered', True)
    >>> event_key(1_000, "picked_up", "ffff") < event_key(1_000, "delivered", "0000")
    True
    """
    if not 0 <= event_time <= _MAX_TIME:
        raise ValueError(f"event_time {event_time} out of range")
    rank = STATUS_RANK.get(status, R_UNKNOWN)
    try:
        low = int(event_id[:4], 16)
    except ValueError:
        low = zlib.crc32(event_id.encode()) & 0xFFFF
    return event_time << _TIME_SHIFT | rank << _RANK_SHIFT | low


def key_time(key: int) -> int:
    """Event time (ms) of a packed key."""
    return key >> _TIME_SHIFT


def key_rank(key: int) -> int:
    """Status rank of a packed key."""
    return (key >> _RANK_SHIFT) & 0xF


# --------------------------------------------------------------------------------------------
# Contract rules: promise and pickup due from the SLA contract (pure, cached per calendar day).

@lru_cache(maxsize=65536)
def _promise_for_day(zone_name: str, ordinal: int, business_days: int) -> int:
    zone = ZoneInfo(zone_name)
    day = date.fromordinal(ordinal)
    added = 0
    while added < business_days:
        day += timedelta(days=1)
        if day.weekday() < 5:
            added += 1
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return to_ms(end) - 1


@lru_cache(maxsize=65536)
def _cutoff_on_day(zone_name: str, ordinal: int, cutoff_minutes: int) -> int:
    zone = ZoneInfo(zone_name)
    moment = datetime.combine(date.fromordinal(ordinal),
                              time(cutoff_minutes // 60, cutoff_minutes % 60), tzinfo=zone)
    return to_ms(moment)


@dataclass(frozen=True, slots=True)
class ContractRules:
    """An :class:`SlaContract` prepared for the hot path (zone object, masks, minutes).

    Promise from the contract (when the feed sends none): ``transit_days`` of the package's
    service level (the default level's when the contract does not list it) counted in
    **business days** (Monday–Friday) from the local date of the pickup (or of
    ``info_received`` when no pickup is known) in the contract's time zone; the promise is the end
    of that local day (23:59:59.999). Pickup due: the contract's ``pickup_cutoff`` on the local
    day of ``info_received`` if the order came in strictly before the cutoff, else the cutoff of
    the next calendar day.

    >>> rules = ContractRules.from_contract(SlaContract(timezone="America/New_York",
    ...                                     pickup_cutoff="17:00", transit_days={"ground": 2}))
    >>> friday_noon = 1_772_816_400_000          # 2026-03-06 12:00 New York
    >>> ms_to_iso(rules.pickup_due(friday_noon)), ms_to_iso(rules.pickup_due(friday_noon + 6 * 3_600_000))
    ('2026-03-06T22:00:00.000Z', '2026-03-07T22:00:00.000Z')
    >>> ms_to_iso(rules.contract_promise(friday_noon, "ground"))   # Fri + 2 business days = Tue
    '2026-03-11T03:59:59.999Z'
    """

    zone_name: str
    grace_ms: int
    cutoff_minutes: int
    transit_days: tuple[tuple[str, int], ...]
    default_service_level: str
    milestone_mask: int

    @classmethod
    def from_contract(cls, contract: SlaContract) -> ContractRules:
        hours, minutes = contract.pickup_cutoff.split(":")
        mask = 0
        for name in contract.required_milestones:
            mask |= 1 << STATUS_RANK.get(name, R_UNKNOWN)
        return cls(zone_name=contract.timezone, grace_ms=contract.grace_minutes * 60_000,
                   cutoff_minutes=int(hours) * 60 + int(minutes),
                   transit_days=tuple(sorted(contract.transit_days.items())),
                   default_service_level=contract.default_service_level, milestone_mask=mask)

    def _local(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, ZoneInfo(self.zone_name))

    def days_for(self, service_level: str) -> int:
        """Transit days for a service level (the default level's if not in the contract)."""
        table = dict(self.transit_days)
        return table.get(service_level, table[self.default_service_level])

    def contract_promise(self, start_ms: int, service_level: str) -> int:
        """End of the local day ``transit_days`` business days after ``start_ms``."""
        local = self._local(start_ms)
        return _promise_for_day(self.zone_name, local.toordinal(), self.days_for(service_level))

    def pickup_due(self, info_received_ms: int) -> int:
        """The pickup cutoff that applies to an order received at ``info_received_ms``."""
        local = self._local(info_received_ms)
        minute_of_day = local.hour * 60 + local.minute
        before = (minute_of_day < self.cutoff_minutes)
        ordinal = local.toordinal() if before else local.toordinal() + 1
        return _cutoff_on_day(self.zone_name, ordinal, self.cutoff_minutes)


# --------------------------------------------------------------------------------------------

class PackageState:
    """Everything carrierwatch remembers about one package (``__slots__``, integers, arrays).

    Use :meth:`add` to fold in an event; read the derived properties; :meth:`to_bytes` /
    :meth:`from_bytes` serialise it (for changelog-backed tables).
    """

    __slots__ = (
        "changed", "exc_count", "exc_done", "fa_reason", "facts", "fields", "flags",
        "fold_attempts", "fold_delivered", "fold_level", "fold_terminal", "mask", "n",
        "package_id", "partner_id", "promise_source", "proof", "region", "service_level",
        "synthetic",
    )

    def __init__(self, partner_id: str, package_id: str) -> None:
        self.partner_id = partner_id
        self.package_id = package_id
        # One int64 array: the fixed fields, then the n sorted event keys, then ETA triples
        # (key, eta_start, eta_end) of the events that carried an ETA.
        self.fields = array("q", [NONE] * _N_FIELDS)
        self.n = 0
        self.mask = 0
        self.proof: str | None = None
        self.fa_reason: str | None = None
        self.region: str | None = None
        self.service_level: str | None = None
        self.promise_source: str | None = None
        self.synthetic = False
        self.fold_terminal = False
        self.fold_delivered = False
        self.fold_attempts = 0
        self.fold_level = -1
        self.flags = 0
        self.exc_count = 0
        self.exc_done: tuple[tuple[int, int], ...] = ()
        self.facts: tuple[tuple[int, ...], ...] = ()
        self.changed = False

    # ---------------------------------------------------------------- folding in one event
    def has(self, key: int) -> bool:
        """Whether an event with this packed key was applied to the package already."""
        f = self.fields
        end = _N_FIELDS + self.n
        index = bisect_left(f, key, _N_FIELDS, end)
        return index < end and f[index] == key

    def add(self, event: CanonicalEvent, rules: ContractRules, key: int | None = None
            ) -> list[tuple[int, int, str]] | None:
        """Fold in one event. ``None`` if it is a duplicate, else the flagged transitions
        (``(from_key, to_key, kind)``) in which the new event takes part (usually ``[]``).

        ``key`` may be passed when the caller already computed :func:`event_key`. After the call
        :attr:`changed` tells whether anything the package's metric facts depend on may have
        changed (conservative: ``True`` may be a false alarm, ``False`` never is).
        """
        if key is None:
            key = event_key(event.event_time, event.status, event.event_id)
        f = self.fields
        n = self.n
        end = _N_FIELDS + n
        if n == 0 or key > f[end - 1]:
            f.insert(end, key)
            in_order = True
        else:
            index = bisect_left(f, key, _N_FIELDS, end)
            if f[index] == key:
                return None
            f.insert(index, key)
            in_order = False
        self.n = n + 1
        rank = (key >> _RANK_SHIFT) & 0xF
        bit = 1 << rank
        etime = key >> _TIME_SHIFT
        old_mask = self.mask
        self.mask = old_mask | bit
        delivered = f[I_DELIV_KEY] != NONE
        # new status kind after a delivery (tracking compliance) or a cancellation
        changed = (delivered and not old_mask & bit) or rank == R_CANCELLED
        rederive = False
        if bit & POSSESSION_MASK and etime < f[I_PICKUP]:
            f[I_PICKUP] = etime
            rederive = True
        elif rank == R_INFO and etime < f[I_INFO]:
            f[I_INFO] = etime
            rederive = True
        if rank == R_DELIVERED and key < f[I_DELIV_KEY]:
            f[I_DELIV_KEY] = key
            self.proof = event.proof_of_delivery
            changed = True
        if rank in (R_DELIVERED, R_ATTEMPT) and key < f[I_FA_KEY]:
            f[I_FA_KEY] = key
            self.fa_reason = None if rank == R_DELIVERED else event.reason
            changed = True
        location = event.location
        if location is not None and location.region and key < f[I_REGION_KEY]:
            f[I_REGION_KEY] = key
            region = sys.intern(location.region)
            if region != self.region:
                self.region = region
                changed = True
        if event.service_level and key < f[I_SL_KEY]:
            f[I_SL_KEY] = key
            self.service_level = sys.intern(event.service_level)
            rederive = True
        if event.promised_by is not None and key < f[I_PROMISE_KEY]:
            f[I_PROMISE_KEY] = key
            f[I_FEED_PROMISE] = event.promised_by
            rederive = True
        if event.eta_end is not None or event.eta_start is not None:
            eta_end = event.eta_end if event.eta_end is not None else event.eta_start
            eta_start = event.eta_start if event.eta_start is not None else eta_end
            f.extend((key, eta_start, eta_end))  # type: ignore[arg-type]
            changed = changed or delivered
        if event.synthetic and not self.synthetic:
            self.synthetic = True
            changed = True
        if rederive:
            self._derive(rules)
            changed = True
        if in_order:
            exc_before = f[I_EXC_OPEN]
            kind = self._step(key)
            self.changed = changed or f[I_EXC_OPEN] != exc_before
            return [] if kind is None else [(f[end - 1] if n else -1, key, kind)]
        flagged = self._refold()
        self.changed = True
        return [t for t in flagged if t[0] == key or t[1] == key]

    def _step(self, key: int) -> str | None:
        rank = (key >> _RANK_SHIFT) & 0xF
        etime = key >> _TIME_SHIFT
        kind: str | None = None
        if self.fold_terminal:
            kind = FLAG_AFTER_TERMINAL
        else:
            level = _LEVEL[rank]
            if level is not None:
                if level <= 1 and level < self.fold_level:
                    kind = FLAG_BACKWARD
                if level > self.fold_level:
                    self.fold_level = level
        if (1 << rank) & TERMINAL_MASK:
            self.fold_terminal = True
        if rank == R_DELIVERED:
            self.fold_delivered = True
        elif rank == R_ATTEMPT and not self.fold_delivered:
            self.fold_attempts += 1
        if kind is not None:
            self.flags += 1
        f = self.fields
        if rank == R_EXCEPTION:
            if f[I_EXC_OPEN] == NONE:
                f[I_EXC_OPEN] = etime
                self.exc_count += 1
        elif (1 << rank) & FORWARD_MASK and f[I_EXC_OPEN] != NONE:
            self.exc_done = (*self.exc_done, (f[I_EXC_OPEN], etime))
            f[I_EXC_OPEN] = NONE
        return kind

    def _refold(self) -> list[tuple[int, int, str]]:
        self.fold_terminal = False
        self.fold_delivered = False
        self.fold_attempts = 0
        self.fold_level = -1
        self.flags = 0
        self.exc_count = 0
        self.exc_done = ()
        self.fields[I_EXC_OPEN] = NONE
        flagged: list[tuple[int, int, str]] = []
        previous = -1
        for key in self.fields[_N_FIELDS:_N_FIELDS + self.n]:
            kind = self._step(key)
            if kind is not None:
                flagged.append((previous, key, kind))
            previous = key
        return flagged

    def _derive(self, rules: ContractRules) -> None:
        f = self.fields
        level = self.service_level or rules.default_service_level
        if f[I_FEED_PROMISE] != NONE:
            f[I_PROMISED_BY] = f[I_FEED_PROMISE]
            self.promise_source = "feed"
        else:
            start = f[I_PICKUP] if f[I_PICKUP] != NONE else f[I_INFO]
            if start != NONE:
                f[I_PROMISED_BY] = rules.contract_promise(start, level)
                self.promise_source = "contract"
        if f[I_INFO] != NONE:
            f[I_PICKUP_DUE] = rules.pickup_due(f[I_INFO])

    # ---------------------------------------------------------------- derived values
    @property
    def keys(self) -> array[int]:
        """The sorted event keys (a copy)."""
        return self.fields[_N_FIELDS:_N_FIELDS + self.n]

    @property
    def event_count(self) -> int:
        """Number of distinct events."""
        return self.n

    @property
    def status(self) -> str:
        """Current status with terminal precedence (delivered > returned > cancelled)."""
        mask = self.mask
        if mask & (1 << R_DELIVERED):
            return RANK_STATUS[R_DELIVERED]
        if mask & (1 << R_RETURNED):
            return RANK_STATUS[R_RETURNED]
        if mask & (1 << R_CANCELLED):
            return RANK_STATUS[R_CANCELLED]
        if not self.n:
            return RANK_STATUS[R_UNKNOWN]
        return RANK_STATUS[key_rank(self.fields[_N_FIELDS + self.n - 1])]

    def _opt(self, index: int) -> int | None:
        value = self.fields[index]
        return None if value == NONE else value

    @property
    def first_event_time(self) -> int | None:
        return key_time(self.fields[_N_FIELDS]) if self.n else None

    @property
    def last_event_time(self) -> int | None:
        return key_time(self.fields[_N_FIELDS + self.n - 1]) if self.n else None

    @property
    def promised_by(self) -> int | None:
        """The first promise in sort order from the feed, else the contract's (see module doc)."""
        return self._opt(I_PROMISED_BY)

    @property
    def pickup_due(self) -> int | None:
        return self._opt(I_PICKUP_DUE)

    @property
    def picked_up_at(self) -> int | None:
        """Earliest event time of a status that proves the carrier held the package."""
        return self._opt(I_PICKUP)

    @property
    def info_received_at(self) -> int | None:
        return self._opt(I_INFO)

    @property
    def delivered_at(self) -> int | None:
        key = self.fields[I_DELIV_KEY]
        return None if key == NONE else key_time(key)

    @property
    def first_attempt(self) -> tuple[int, bool, str | None] | None:
        """``(time, success, reason)`` of the first delivery attempt (failed or successful)."""
        key = self.fields[I_FA_KEY]
        if key == NONE:
            return None
        return key_time(key), key_rank(key) == R_DELIVERED, self.fa_reason

    @property
    def attempts(self) -> int:
        """Failed attempts before the first delivery, plus one for the delivery itself."""
        return self.fold_attempts + (1 if self.fold_delivered else 0)

    @property
    def open_exception_since(self) -> int | None:
        return self._opt(I_EXC_OPEN)

    @property
    def exception_episodes(self) -> tuple[tuple[int, int | None], ...]:
        """``(opened, resolved)`` per exception episode, ``resolved`` None while open."""
        episodes: tuple[tuple[int, int | None], ...] = tuple(self.exc_done)
        opened = self.fields[I_EXC_OPEN]
        return episodes if opened == NONE else (*episodes, (opened, None))

    def last_eta(self, before_key: int = NONE) -> tuple[int, int] | None:
        """``(eta_start, eta_end)`` of the last event (sort order) before ``before_key`` with an
        ETA; by default the last ETA of all."""
        etas = self.fields
        best = -1
        found: tuple[int, int] | None = None
        for i in range(_N_FIELDS + self.n, len(etas), 3):
            key = etas[i]
            if best < key < before_key:
                best = key
                found = (etas[i + 1], etas[i + 2])
        return found

    def milestones_present(self, mask: int) -> bool:
        """True if every status in ``mask`` (bits by rank) was seen."""
        return self.mask & mask == mask

    def snapshot(self) -> tuple[object, ...]:
        """Every derived value in one comparable tuple (used to prove order independence)."""
        return (self.status, self.event_count, tuple(self.keys), self.promised_by,
                self.promise_source, self.pickup_due, self.picked_up_at, self.info_received_at,
                self.delivered_at, self.proof, self.first_attempt, self.attempts,
                self.exception_episodes, self.exc_count, self.flags, self.last_eta(),
                self.region, self.service_level, self.synthetic, self.mask)

    # ---------------------------------------------------------------- serialisation
    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle as one tuple of the slot values (a third cheaper than the default slot-state
        dict per object, which checkpoints of many packages pay for every package). Pickles of
        the default form (earlier versions) still load."""
        return (_restore_state, (_slot_values(self),))

    def to_bytes(self) -> bytes:
        """Pickle this state (protocol 5); :meth:`from_bytes` restores it."""
        return pickle.dumps(self, protocol=5)

    @staticmethod
    def from_bytes(data: bytes) -> PackageState:
        state = pickle.loads(data)
        if not isinstance(state, PackageState):
            raise TypeError("not a PackageState")
        return state


_slot_values = attrgetter(*PackageState.__slots__)


def _restore_state(values: tuple[Any, ...]) -> PackageState:
    """The package state pickled by :meth:`PackageState.__reduce__`."""
    state = PackageState.__new__(PackageState)
    for name, value in zip(PackageState.__slots__, values, strict=True):
        setattr(state, name, value)
    return state
