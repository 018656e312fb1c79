"""The transformer contract: raw partner bytes → canonical events + dead letters + codebook gaps.

A transformer is a pure function ``transform(raw: bytes, ctx: TransformContext) -> TransformResult``.
Partner input never makes it fail: a payload that cannot be parsed or validated becomes a
:class:`DeadLetter` whose ``path`` names the offending field; an element of a payload that is bad
(one scan event with an unreadable date) becomes a dead letter of its own while the good elements
still yield events. A transformer may signal "this whole payload is bad" by raising
:class:`PayloadError` (as :func:`parse_json` and the ``req_*`` helpers do); :func:`run_transform`,
the only way the pipeline calls a transformer, turns it into a dead letter. Any other exception is
a bug: the conformance and fuzz suites fail on it, and in production :func:`run_transform` still
contains it as a dead letter so that a worker never crashes on partner input.

Transformers build events through an :class:`Emitter`, which applies the codebook (unknown codes
become status ``unknown`` with confidence 0, keep the raw code and are counted as gaps), computes
the deterministic event id and package identity, and collects dead letters.

The emitter is also the one place where every number of an event is checked against the data
contract (:mod:`carrierwatch.core.limits`): attempt numbers within the Avro ``int``, coordinates
finite and on the globe, and every time (event, promise, ETA, partner-received) within the
plausible range of a delivery event (by default from 2000-01-01 to a year after the payload was
received; never beyond 1970..2248, what the state machine and the store hold). A value outside
them never reaches the store: an event time outside the range drops that event, any other field
outside its range is left empty on an event that is otherwise kept, and either way a dead letter
names the field's path in the payload (the transformer passes ``paths=``; without it, the path of
the element being processed). Helpers such as :func:`count` check numbers where they are read,
so that a transformer can treat an out-of-range value as it treats an unreadable one.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import TracebackType
from typing import Any, NamedTuple, NoReturn, Protocol, TypeVar

import orjson

from carrierwatch.core.codebook import Codebook
from carrierwatch.core.limits import (
    INT32_MAX,
    EventLimits,
    coordinate_problem,
    count_problem,
    time_problem,
)
from carrierwatch.core.model import (
    CanonicalEvent,
    CanonicalStatus,
    DeadLetter,
    Location,
    event_id,
    new_event,
)
from carrierwatch.core.partner import PartnerSpec, TextLimits
from carrierwatch.core.timeutil import CACHE_KEY_LIMIT

__all__ = [
    "CONTAINED_ERRORS",
    "Emitter",
    "FieldPaths",
    "ParsedScan",
    "PayloadError",
    "Promise",
    "TransformContext",
    "TransformResult",
    "Transformer",
    "clear_parse_caches",
    "count",
    "field_paths",
    "location",
    "may_hold_text_over",
    "nesting",
    "opt_dict",
    "opt_list",
    "opt_str",
    "oversized_strings",
    "parse_each",
    "parse_json",
    "provider_error",
    "req",
    "req_dict",
    "req_list",
    "req_str",
    "run_transform",
    "scan_paths",
    "zone_of_newest_scan",
]

SYNTHETIC_HEADER = "x-carrierwatch-synthetic"
DEFAULT_LIMITS = EventLimits()
_T = TypeVar("_T")
_UNKNOWN = CanonicalStatus.UNKNOWN.value


FieldPaths = Mapping[str, str] | Callable[[str], str | None]
"""Where a payload holds each canonical field (see :meth:`Emitter.event`'s ``paths``)."""


class PayloadError(ValueError):
    """A field of a partner payload is missing or malformed. ``path`` locates it (JSONPath-ish)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class TransformContext:
    """What a transformer knows besides the bytes: who sent them, when, and the codebook.

    ``limits``: the plausible range of the payload's times (the settings', through the registry).
    """

    partner: PartnerSpec
    codebook: Codebook
    received_time: int
    headers: Mapping[str, str] = field(default_factory=dict)
    limits: EventLimits = DEFAULT_LIMITS

    @property
    def synthetic(self) -> bool:
        """Marked by a header on an internal ingest path (replayed raw logs); heartbeat
        packages are also recognised by the partner's ``synthetic_tracking_prefix``."""
        for key, value in self.headers.items():
            if key.lower() == SYNTHETIC_HEADER:
                return value.strip().lower() in {"1", "true", "yes"}
        return False


@dataclass(slots=True)
class TransformResult:
    """What one payload yielded.

    ``empty`` lists the paths of event lists the partner sent empty where its feed legitimately
    does (a tracking number known before its first scan): such a payload yields nothing, is not
    bad input, and is counted as an "empty payload" (see :func:`run_transform`).
    """

    events: list[CanonicalEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


class ParsedScan(NamedTuple):
    """One scan of a carrier payload, parsed: its UTC time (and whether the zone was a guess),
    the carrier's local time string, its raw code, the codebook keys to try (most specific first)
    and its coarse location. (An immutable named tuple: built once per scan, it costs a third of
    a frozen dataclass.)"""

    time: int
    ambiguous: bool
    local: str
    raw_code: str
    codes: tuple[str, ...]
    location: Location | None
    time_path: str = "$"
    """Where the payload holds the scan's time (for a dead letter when it is out of range)."""


def zone_of_newest_scan(scans: list[ParsedScan]) -> tuple[str | None, bool]:
    """A guess of a package's destination zone: the zone of the newest scan with a place
    (always marked uncertain). ``(None, False)`` when no scan has one."""
    from carrierwatch.core.timeutil import zone_for

    for scan in reversed(scans):
        if scan.location is not None and scan.location.country:
            zone, _ = zone_for(scan.location.country, scan.location.region)
            if zone is not None:
                return zone, False
    return None, False


class Promise(NamedTuple):
    """A payload's delivery promise and latest ETA window, UTC ms (None where the feed is silent)."""

    promised_by: int | None = None
    eta_start: int | None = None
    eta_end: int | None = None
    paths: Mapping[str, str] | None = None
    """Where the payload holds each of the three (for a dead letter when one is out of range)."""


def field_paths(event_time: str, others: Mapping[str, str] | None = None
                ) -> Callable[[str], str | None]:
    """The ``paths`` of :meth:`Emitter.event`: the event time's path and the other fields'
    (looked up only when a value is out of range).

    >>> field_paths("$.a[0].date", {"promised_by": "$.promise"})("promised_by")
    '$.promise'
    """
    def where(name: str) -> str | None:
        if name == "event_time":
            return event_time
        return others.get(name) if others else None
    return where


def scan_paths(scan: ParsedScan, promise: Promise) -> Callable[[str], str | None]:
    """The ``paths`` of :meth:`Emitter.event` for an event of ``scan`` carrying ``promise``."""
    return field_paths(scan.time_path, promise.paths)


def parse_each(emitter: Emitter, elements: Iterable[tuple[int, Any]], path: str,
               context: str | None, parse: Callable[[Any, str, str | None], _T]) -> list[_T]:
    """``parse(element, f"{path}[{k}]", context)`` of every ``(k, element)``; an element that
    fails becomes a dead letter of its own (as ``with emitter.element(...)``, cheaper per
    element) and is left out.
    """
    parsed: list[_T] = []
    for k, element in elements:
        where = f"{path}[{k}]"
        try:
            parsed.append(parse(element, where, context))
        except CONTAINED_ERRORS as exc:
            emitter.contain(exc, where)
    return parsed


def clear_parse_caches() -> int:
    """Empty the ``functools.lru_cache`` functions of ``carrierwatch.transformers.*`` and
    ``carrierwatch.core.*`` (time parsing, zones). Results never depend on them; benchmarks call
    this so that each timed pass meets its input cold, as a freshly started worker does.
    Returns how many caches were emptied.

    >>> from carrierwatch.core import timeutil  # its memoized time and zone parsing
    >>> clear_parse_caches() > 0
    True
    """
    emptied = 0
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("carrierwatch.transformers.",
                                                  "carrierwatch.core.")):
            continue
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)) and \
                    getattr(value, "__module__", None) == name:
                value.cache_clear()
                emptied += 1
    return emptied


class Transformer(Protocol):
    def __call__(self, raw: bytes, ctx: TransformContext) -> TransformResult: ...


class Emitter:
    """Accumulates the result of one payload; see the module docstring."""

    __slots__ = ("_book", "_ctx", "_highest", "_lowest", "_partner_id", "_raw", "_received_time",
                 "_result", "_synthetic", "_synthetic_prefix", "_version", "_where")

    def __init__(self, raw: bytes, ctx: TransformContext) -> None:
        self._raw = raw
        self._ctx = ctx
        self._book = ctx.codebook
        self._partner_id = ctx.partner.id
        self._received_time = ctx.received_time
        self._version = ctx.partner.payload_schema_version
        self._synthetic = ctx.synthetic
        # heartbeat packages carry the partner's synthetic tracking prefix, whatever the path
        # (a dropped file has no header to mark them)
        self._synthetic_prefix = ctx.partner.synthetic_tracking_prefix
        self._result = TransformResult()
        self._lowest, self._highest = ctx.limits.time_window(ctx.received_time)
        self._where = "$"

    @property
    def result(self) -> TransformResult:
        return self._result

    def dead_letter(self, path: str, error: str) -> None:
        """Record a dead letter for the part of the payload at ``path``."""
        self._result.dead_letters.append(
            DeadLetter(self._partner_id, self._ctx.received_time, error, path, self._raw))

    def limit_text(self, doc: Any) -> None:
        """Drop the strings of a parsed payload that are over the partner's length limits
        (``limits:`` in its YAML) and record one dead letter naming them; the payload is then
        read as if they were absent. Only payloads that :func:`may_hold_text_over` the smallest
        limit are walked (the walk costs ~20 µs on an 8 KB payload, the test ~1 µs).
        """
        limits = self._ctx.partner.limits
        if may_hold_text_over(self._raw, limits.smallest):
            self._report_oversized(oversized_strings(doc, limits), limits)

    def _report_oversized(self, found: list[tuple[str, int, int]], limits: TextLimits) -> None:
        if not found:
            return
        shown = "; ".join(f"{where} has {length:,} characters (limit {limit:,})"
                          for where, length, limit in found[:3])
        more = f" and {len(found) - 3:,} more" if len(found) > 3 else ""
        self.dead_letter(found[0][0],
                         f"text over the length limit dropped, the rest read without it: {shown}"
                         f"{more} (limits in partners/{self._partner_id}.yaml)")

    def note_empty(self, path: str) -> None:
        """Record that the event list at ``path`` is empty, as the feed legitimately sends it."""
        self._result.empty.append(path)

    def element(self, path: str) -> _Element:
        """Run one element's work; a :class:`PayloadError` or bad value becomes a dead letter.

        Errors of the element are contained: the rest of the payload is still processed.
        Use as ``with emitter.element(path): ...`` (a plain context manager object rather than a
        generator, as it runs once per element of every payload).
        """
        return _Element(self, path)

    def contain(self, exc: Exception, path: str) -> None:
        """Record the error of the element at ``path`` as ``with element(path)`` would.

        For hot loops, where a ``try``/``except CONTAINED_ERRORS as exc`` costs less than a
        context manager per element; an exception outside :data:`CONTAINED_ERRORS` is re-raised.
        """
        if isinstance(exc, PayloadError):
            self.dead_letter(exc.path, exc.message)
        elif isinstance(exc, _CONTAINED):
            self.dead_letter(path, f"{type(exc).__name__}: {exc}")
        else:
            raise exc

    def guarded(self, path: str, default: _T, work: Callable[[], _T]) -> _T:
        """Run ``work``; if a field it reads is bad, record a dead letter for ``path`` and
        return ``default`` instead (an optional part of a payload must not sink the rest)."""
        try:
            return work()
        except _CONTAINED as exc:  # what ``with self.element(path)`` contains
            self.contain(exc, path)
            return default

    def event(
        self,
        *,
        tracking_number: str,
        raw_code: str,
        event_time: int,
        codes: tuple[str | None, ...] = (),
        text: str | None = None,
        discriminator: str | None = None,
        shipment_id: str | None = None,
        timezone_ambiguous: bool = False,
        event_time_local: str | None = None,
        location: Location | None = None,
        promised_by: int | None = None,
        eta_start: int | None = None,
        eta_end: int | None = None,
        attempt_number: int | None = None,
        proof_of_delivery: str | None = None,
        service_level: str | None = None,
        partner_received_time: int | None = None,
        reason: str | None = None,
        paths: FieldPaths | None = None,
    ) -> CanonicalEvent | None:
        """Map the partner code(s) through the codebook and append one canonical event.

        ``codes`` are codebook keys from the most to the least specific; ``text`` is matched
        against the codebook's patterns when no key is known. ``reason`` overrides the codebook's
        reason when the feed states one explicitly (its own reason code mapped separately).

        Numbers are checked against the contract (see the module docstring): ``paths`` maps a
        field name (``event_time``, ``promised_by``, ``eta_start``, ``eta_end``,
        ``partner_received_time``, ``attempt_number``, ``location``) to where the payload holds
        it, for the dead letter of a value out of range (a mapping, or a function, called only
        then). Returns the event, or None when its event time was out of range (a dead letter
        instead).
        """
        if not tracking_number:
            raise PayloadError("tracking_number", "missing tracking number")
        lowest = self._lowest
        highest = self._highest
        if (event_time.__class__ is not int or not lowest <= event_time <= highest
                or (promised_by is not None and not lowest <= promised_by <= highest)
                or (eta_end is not None and not lowest <= eta_end <= highest)
                or (eta_start is not None and not lowest <= eta_start <= highest)
                or (attempt_number is not None and not 0 <= attempt_number <= INT32_MAX)
                or (partner_received_time is not None
                    and not lowest <= partner_received_time <= highest)
                or (location is not None
                    and (location.latitude is not None or location.longitude is not None))):
            checked = self._check_numbers(paths, event_time, promised_by, eta_start, eta_end,
                                          partner_received_time, attempt_number, location)
            if checked is None:
                return None
            promised_by, eta_start, eta_end, partner_received_time, attempt_number, location = \
                checked
        book = self._book
        mapping = book.lookup(*codes) if codes else None
        if mapping is None and text is not None:
            mapping = book.match_text(text)
        if mapping is None:
            status, confidence, mapped_reason = _UNKNOWN, 0.0, None
            self._result.gaps.append(raw_code)
        else:
            status, confidence, mapped_reason = mapping.status, mapping.confidence, mapping.reason
        partner_id = self._partner_id
        package_id = (f"{partner_id}:{tracking_number}:{discriminator}" if discriminator
                      else f"{partner_id}:{tracking_number}")  # = package_key(...), inlined
        if not 0.0 <= confidence <= 1.0:  # the codebook validates it: a bug, not partner input
            raise ValueError(f"confidence {confidence!r} of code {raw_code!r:.60} is outside 0..1")
        event = new_event(
            event_id(partner_id, package_id, status, event_time), partner_id, package_id,
            tracking_number, status, confidence, raw_code, event_time, self._received_time,
            timezone_ambiguous, event_time_local, shipment_id,
            reason if reason is not None else mapped_reason, location, promised_by, eta_start,
            eta_end, attempt_number, proof_of_delivery, service_level,
            self._synthetic or tracking_number.startswith(self._synthetic_prefix),
            self._version, partner_received_time)
        self._result.events.append(event)
        return event

    def _check_numbers(self, paths: FieldPaths | None, event_time: int,
                       promised_by: int | None, eta_start: int | None, eta_end: int | None,
                       partner_received_time: int | None, attempt_number: int | None,
                       place: Location | None
                       ) -> tuple[int | None, int | None, int | None, int | None, int | None,
                                  Location | None] | None:
        """The slow path of :meth:`event`: a dead letter for each value out of range; None when
        the event time is one of them, else the optional fields with those values removed."""
        lowest, highest = self._lowest, self._highest

        where_of = paths.get if isinstance(paths, Mapping) else paths

        def reject(name: str, problem: str) -> None:
            path = (where_of(name) if where_of is not None else None) or self._where
            error = f"{name} out of range: {problem}"
            if not any(d.path == path and d.error == error for d in self._result.dead_letters):
                self.dead_letter(path, error)  # once per payload (a promise repeats per event)

        problem = time_problem(event_time, lowest, highest)
        if problem is not None:
            reject("event_time", problem)
            return None
        times: list[int | None] = []
        for name, value in (("promised_by", promised_by), ("eta_start", eta_start),
                            ("eta_end", eta_end), ("partner_received_time", partner_received_time)):
            problem = None if value is None else time_problem(value, lowest, highest)
            if problem is not None:
                reject(name, problem)
                value = None
            times.append(value)
        if attempt_number is not None:
            problem = count_problem(attempt_number)
            if problem is not None:
                reject("attempt_number", problem)
                attempt_number = None
        if place is not None:
            problem = None
            for name, coordinate, bound in (("latitude", place.latitude, 90.0),
                                            ("longitude", place.longitude, 180.0)):
                if coordinate is not None and problem is None:
                    problem = coordinate_problem(coordinate, bound)
                    if problem is not None:
                        problem = f"{name} {problem}"
            if problem is not None:
                reject("location", problem)
                place = Location(place.country, place.region, place.city, place.postal_prefix)
        return times[0], times[1], times[2], times[3], attempt_number, place


class _Element:
    """The context manager of :meth:`Emitter.element`."""

    __slots__ = ("emitter", "outer", "path")

    def __init__(self, emitter: Emitter, path: str) -> None:
        self.emitter = emitter
        self.path = path
        self.outer = "$"

    def __enter__(self) -> None:
        emitter = self.emitter
        self.outer = emitter._where
        emitter._where = self.path
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> bool:
        self.emitter._where = self.outer
        if exc is None:
            return False
        if isinstance(exc, PayloadError):
            self.emitter.dead_letter(exc.path, exc.message)
            return True
        if isinstance(exc, _CONTAINED):
            self.emitter.dead_letter(self.path, f"{type(exc).__name__}: {exc}")
            return True
        return False


# RecursionError: orjson reads nesting up to 1,024 levels, deeper than Python's recursion limit,
# so a value nested ~1,000 deep breaks whatever recurses into it (repr in an error message,
# JMESPath): the element with it is a dead letter.
_CONTAINED = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError)
CONTAINED_ERRORS: tuple[type[Exception], ...] = _CONTAINED
"""The errors of one element that become its dead letter (the rest of the payload goes on)."""


def provider_error(errors: Any, path: str, what: str) -> PayloadError:
    """A PayloadError naming every code of a provider's error list (or single error object).

    For the ``[{"code": ..., "message": ...}]`` error shape most carrier APIs share (FedEx
    ``errors``, UPS ``response.errors`` and ``warnings``); the path points at the first code.

    >>> provider_error([{"code": "151044", "message": "No tracking information"}],
    ...                "$.response.errors", "UPS API error").args[0]
    '$.response.errors[0].code: UPS API error 151044: No tracking information'
    """
    items = errors if isinstance(errors, list) else [errors]
    parts = []
    for item in items:
        if isinstance(item, dict):
            code = str(item.get("code") or "?")
            message = str(item.get("message") or "").strip()
            parts.append(f"{code}: {message}" if message else code)
    if not parts:
        return PayloadError(path, f"{what} without an error code")
    first = f"{path}[0].code" if isinstance(errors, list) else f"{path}.code"
    return PayloadError(first, f"{what} {'; '.join(parts)}")


NOTHING_READ = ("payload yielded no event, no error and no empty event list: nothing was found "
                "at the paths this partner's transformer reads (a renamed or moved field?)")
"""The dead letter of a payload that yields nothing at all (schema drift must not be silent)."""


def run_transform(transform: Callable[[bytes, TransformContext], TransformResult],
                  raw: bytes, ctx: TransformContext) -> TransformResult:
    """Call a transformer; whatever it lets escape becomes a dead letter for the whole payload.

    A payload must leave a trace: one that yields no event, no dead letter and no legitimately
    empty event list (``result.empty``) gets the dead letter :data:`NOTHING_READ` at ``$``.
    """
    try:
        result = transform(raw, ctx)
    except PayloadError as exc:
        return TransformResult(dead_letters=[DeadLetter(ctx.partner.id, ctx.received_time,
                                                        exc.message, exc.path, raw)])
    except Exception as exc:  # the safety net: partner input must never crash a worker
        return TransformResult(dead_letters=[DeadLetter(
            ctx.partner.id, ctx.received_time,
            f"transformer failed: {type(exc).__name__}: {exc}", "$", raw)])
    if not result.events and not result.dead_letters and not result.empty:
        result.dead_letters.append(
            DeadLetter(ctx.partner.id, ctx.received_time, NOTHING_READ, "$", raw))
    return result


# --- payload access helpers: raise PayloadError naming the path ---------------------------------


def fail(path: str, message: str) -> NoReturn:
    raise PayloadError(path, message)


def parse_json(raw: bytes, emitter: Emitter | None = None) -> Any:
    """Parse JSON bytes; a PayloadError at ``$`` when they are not JSON.

    With the payload's ``emitter``, strings over the partner's length limits are dropped and
    reported (:meth:`Emitter.limit_text`): every transformer parses this way.
    """
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError("$", f"invalid JSON: {exc}") from None
    if len(raw.translate(None, _NOT_OPENING)) > MAX_NESTING and nesting(doc) > MAX_NESTING:
        raise PayloadError("$", f"JSON nested deeper than {MAX_NESTING} levels")
    if emitter is not None:
        emitter.limit_text(doc)
    return doc


MAX_NESTING = 128
"""The deepest nesting of objects and lists a JSON payload may have (tracking payloads nest
fewer than 10 levels). orjson reads up to 1,024 levels, deeper than Python's recursion limit:
such a value would break whatever recurses into it (a ``repr`` in an error message, JMESPath),
so a deeper payload is a dead letter at ``$``. The depth is walked (~20 µs on 8 KB) only when the
payload holds more opening brackets than this (counted at C speed, ~3.5 µs on 10 KB): a webhook
of some twenty events or fewer is never walked."""
_NOT_OPENING = bytes(byte for byte in range(256) if byte not in b"[{")


def nesting(doc: Any) -> int:
    """How deep objects and lists nest in ``doc`` (0 for a scalar), iteratively.

    >>> nesting({"a": [1, {"b": []}]}), nesting("x")
    (4, 0)
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        kind = node.__class__
        if kind is dict:
            children: Iterable[Any] = node.values()
        elif kind is list:
            children = node
        else:
            continue
        if depth > deepest:
            deepest = depth
        for child in children:
            if child.__class__ is dict or child.__class__ is list:
                stack.append((child, depth + 1))
    return deepest


def may_hold_text_over(raw: bytes, limit: int) -> bool:
    """Whether a JSON document may hold a string longer than ``limit`` characters (False: it
    surely does not), read from its bytes at C speed.

    A string of more than ``limit`` characters takes more than ``limit`` bytes between its
    quotes, and any run of ``2b - 1`` bytes holds a whole aligned block of ``b`` bytes; with
    ``b = (limit + 1) // 2``, a document in which every aligned block holds a ``"`` has no such
    string, unless a string hides escaped quotes (``\\"``), in which case the answer is True.

    >>> may_hold_text_over(b'{"city": "Memphis", "code": "DL"}', 16)
    False
    >>> may_hold_text_over(b'{"city": "' + b"x" * 17 + b'"}', 16)
    True
    >>> may_hold_text_over(b'{"city": "' + b'\\\\"' * 9 + b'"}', 16)
    True
    """
    size = len(raw)
    if size <= limit:
        return False
    if b"\\" in raw and b'\\"' in raw:  # (one byte first: memchr is far faster)
        return True
    block = (limit + 1) // 2
    find = raw.find
    return any(find(b'"', start, start + block) < 0 for start in range(0, size - block + 1, block))


def oversized_strings(doc: Any, limits: TextLimits) -> list[tuple[str, int, int]]:
    """Replace every string of ``doc`` over its limit by None, in place; return where they were.

    Each entry is ``(path, length, limit)``. The walk is iterative (orjson nests up to 1,024
    levels, deeper than Python's recursion limit) and builds a path only for containers.

    >>> doc = {"events": [{"city": "x" * 40, "code": "DL"}], "image": "y" * 40}
    >>> oversized_strings(doc, TextLimits(max_chars=16, fields={"image": 64}))
    [('$.events[0].city', 40, 16)]
    >>> doc
    {'events': [{'city': None, 'code': 'DL'}], 'image': 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy'}
    """
    default = limits.max_chars
    per_field = limits.fields
    found: list[tuple[str, int, int]] = []
    if doc.__class__ is str:
        if len(doc) > default:
            found.append(("$", len(doc), default))
        return found
    stack: list[tuple[Any, str]] = [(doc, "$")]
    while stack:
        node, path = stack.pop()
        if node.__class__ is dict:
            for key, value in node.items():
                kind = value.__class__
                if kind is str:
                    limit = per_field.get(key, default) if per_field else default
                    if len(value) > limit:
                        found.append((f"{path}.{key}", len(value), limit))
                        node[key] = None
                elif kind is dict or kind is list:
                    stack.append((value, f"{path}.{key}"))
        elif node.__class__ is list:
            for index, value in enumerate(node):
                kind = value.__class__
                if kind is str:
                    if len(value) > default:
                        found.append((f"{path}[{index}]", len(value), default))
                        node[index] = None
                elif kind is dict or kind is list:
                    stack.append((value, f"{path}[{index}]"))
    found.sort()
    return found


# Each helper tries the common case first (a dict holding a value of the expected type, checked
# by exact class) and leaves everything else, errors included, to its complete ``_*_slow`` twin.


def req(obj: Any, key: str, path: str) -> Any:
    """``obj[key]``, which must exist and not be null."""
    if obj.__class__ is dict:
        value = obj.get(key)
        if value is not None:
            return value
    return _req_slow(obj, key, path)


def _req_slow(obj: Any, key: str, path: str) -> Any:
    if not isinstance(obj, dict):
        fail(path, f"expected an object, got {type(obj).__name__}")
    value = obj.get(key)
    if value is None:
        fail(f"{path}.{key}", "missing required field")
    return value


def req_dict(obj: Any, key: str, path: str) -> dict[str, Any]:
    if obj.__class__ is dict:
        value = obj.get(key)
        if value.__class__ is dict:
            return value  # type: ignore[no-any-return]
    value = _req_slow(obj, key, path)
    if not isinstance(value, dict):
        fail(f"{path}.{key}", f"expected an object, got {type(value).__name__}")
    return value


def req_list(obj: Any, key: str, path: str) -> list[Any]:
    if obj.__class__ is dict:
        value = obj.get(key)
        if value.__class__ is list:
            return value  # type: ignore[no-any-return]
    value = _req_slow(obj, key, path)
    if not isinstance(value, list):
        fail(f"{path}.{key}", f"expected a list, got {type(value).__name__}")
    return value


def req_str(obj: Any, key: str, path: str) -> str:
    if obj.__class__ is dict:
        value = obj.get(key)
        if value.__class__ is str and value.strip():
            return value  # type: ignore[no-any-return]
    value = _req_slow(obj, key, path)
    if not isinstance(value, str) or not value.strip():
        fail(f"{path}.{key}", f"expected a non-empty string, got {value!r:.60}")
    return value


def opt_dict(obj: Any, key: str, path: str) -> dict[str, Any] | None:
    if obj.__class__ is dict:
        value = obj.get(key)
        if value is None or value.__class__ is dict:
            return value  # type: ignore[no-any-return]
    elif obj is None:
        return None
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None:
        return None
    if not isinstance(value, dict):
        fail(f"{path}.{key}", f"expected an object, got {type(value).__name__}")
    return value


def opt_list(obj: Any, key: str, path: str) -> list[Any]:
    if obj.__class__ is dict:
        value = obj.get(key)
        if value.__class__ is list:
            return value  # type: ignore[no-any-return]
    value = obj.get(key) if isinstance(obj, dict) else None
    if value is None:
        return []
    if not isinstance(value, list):
        fail(f"{path}.{key}", f"expected a list, got {type(value).__name__}")
    return value


def opt_str(obj: Any, key: str, path: str) -> str | None:
    if obj.__class__ is dict:
        value = obj.get(key)
        if value.__class__ is str:
            return value if value else None  # type: ignore[no-any-return]
        if value is None:
            return None
    elif obj is None:
        return None
    return _opt_str_slow(obj, key, path)


def _opt_str_slow(obj: Any, key: str, path: str) -> str | None:
    value = obj.get(key) if isinstance(obj, dict) else None
    if value.__class__ is str:
        return value if value else None  # type: ignore[no-any-return]
    if value is None or value == "":
        return None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        fail(f"{path}.{key}", f"expected a string, got {type(value).__name__}")
    return str(value)


def count(value: Any, path: str) -> int:
    """A count read from a payload (an attempt number): a JSON whole number or a string of
    digits, within the contract's ``int`` (0..2**31 - 1); a :class:`PayloadError` at ``path``
    otherwise.

    >>> count("3", "$.n"), count(2.0, "$.n")
    (3, 2)
    >>> try:
    ...     count("3000000000", "$.deliveryAttempts")
    ... except PayloadError as exc:
    ...     print(exc)
    $.deliveryAttempts: 3000000000 is outside the contract's range 0..2147483647
    """
    number: Any = value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            digits = text.lstrip("0")
            if len(digits) > 12:  # too long for a count: say how long without converting it
                fail(path, f"a {len(digits)}-digit number is outside the contract's "
                           f"range 0..{INT32_MAX}")
            number = int(text)
        else:
            try:
                value = float(text)  # "2.0", "1e3": whole numbers written as decimals
            except ValueError:
                fail(path, f"expected a count, got {value!r:.30}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            fail(path, f"expected a whole number, got {value!r:.30}")
        if not 0 <= value <= INT32_MAX:
            fail(path, f"{value!r:.30} is outside the contract's range 0..{INT32_MAX}")
        number = int(value)
    problem = count_problem(number)
    if problem is not None:
        fail(path, problem)
    return int(number)


def location(country: str | None = None, region: str | None = None, city: str | None = None,
             postal_code: str | None = None, latitude: float | None = None,
             longitude: float | None = None) -> Location | None:
    """A coarse :class:`Location` (never a street address), or None when nothing is known.

    ``region`` may be a bare state code (``TN``) or ISO 3166-2 (``US-TN``); the postal code is
    cut to its first three characters and coordinates are rounded to about 100 m.

    >>> location("us", "tn", "Memphis", "38118")
    Location(country='US', region='US-TN', city='Memphis', postal_prefix='381', latitude=None, longitude=None)
    """
    if latitude is None and longitude is None and _short(country) and _short(region) \
            and _short(city) and _short(postal_code):
        try:
            return _coarse_location(country, region, city, postal_code)
        except TypeError:  # an unhashable value from a malformed payload: no caching
            pass
    return _build_location(country, region, city, postal_code, latitude, longitude)


def _short(value: object) -> bool:
    """Whether ``value`` may be (part of) a cache key: None or a string of at most
    ``CACHE_KEY_LIMIT`` characters (the caches are bounded in bytes, not only in entries)."""
    return value is None or (value.__class__ is str
                             and len(value) <= CACHE_KEY_LIMIT)  # type: ignore[arg-type]


@lru_cache(maxsize=8192)
def _coarse_location(country: str | None, region: str | None, city: str | None,
                     postal_code: str | None) -> Location | None:
    # Locations repeat (hubs, cities): the frozen result is shared, built once per place.
    return _build_location(country, region, city, postal_code, None, None)


def _build_location(country: str | None, region: str | None, city: str | None,
                    postal_code: str | None, latitude: float | None,
                    longitude: float | None) -> Location | None:
    country = country.strip().upper() if isinstance(country, str) and country.strip() else None
    if country and len(country) == 3:
        from carrierwatch.core.timeutil import _ALPHA3

        country = _ALPHA3.get(country, country)
    if isinstance(region, str) and region.strip():
        region = region.strip().upper()
        if "-" not in region and country:
            region = f"{country}-{region}"
    else:
        region = None
    city = city.strip().title() if isinstance(city, str) and city.strip() else None
    postal_prefix = (postal_code.strip().replace(" ", "")[:3].upper()
                     if isinstance(postal_code, str) and postal_code.strip() else None)
    lat = round(float(latitude), 3) if isinstance(latitude, (int, float)) else None
    lon = round(float(longitude), 3) if isinstance(longitude, (int, float)) else None
    if not any((country, region, city, postal_prefix, lat is not None, lon is not None)):
        return None
    return Location(country=country, region=region, city=city, postal_prefix=postal_prefix,
                    latitude=lat, longitude=lon)


def decode_text(raw: bytes) -> str:
    """Decode UTF-8 (with or without BOM); a PayloadError at ``$`` otherwise."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PayloadError("$", f"not UTF-8 text: {exc}") from None


def as_json_line(obj: Any) -> bytes:
    return orjson.dumps(obj)
