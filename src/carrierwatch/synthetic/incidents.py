"""Labelled incidents the feed simulator injects, and the parser of their command-line syntax.

An incident is written ``KIND@partner:start+duration[,name=value...]``:

- ``KIND`` is one of :data:`INCIDENT_KINDS`;
- ``start`` is an ISO 8601 date or date-time (UTC unless it carries an offset) or an offset from
  the simulation start such as ``3d``, ``2d12h`` or ``90m``;
- ``duration`` is a positive span such as ``6h``, ``1d`` or ``1d6h``;
- optional parameters tune the incident (defaults in :data:`DEFAULT_PARAMETERS`): ``factor`` for
  ``exception_spike`` (exception probability multiplier) and ``peak_day`` (volume multiplier),
  ``max`` for ``latency_drift`` (extra visibility delay reached at the end of the window, a span),
  ``statuses`` for ``codebook_change`` (canonical statuses whose codes change, ``/``-separated),
  ``slowdown`` for ``peak_day`` (probability that a package picked up in the window takes an extra
  business day).

Every incident covers the half-open window ``[start, end)`` in UTC milliseconds. What each kind does
to the generated feed is described in :mod:`carrierwatch.synthetic.simulator`.

Examples
--------
>>> start = 1_772_409_600_000                     # 2026-03-02T00:00:00Z
>>> incident = parse_incident("feed_outage@fedex:2d12h+6h", start)
>>> incident.kind, incident.partner, incident.start_iso, incident.end_iso
('feed_outage', 'fedex', '2026-03-04T12:00:00.000Z', '2026-03-04T18:00:00.000Z')
>>> parse_incident("latency_drift@ups:2026-03-03T06:00-05:00+1d,max=8h", start).parameters
{'max_ms': 28800000}
>>> parse_span("1d6h30m")
109800000
>>> try:
...     parse_incident("outage@fedex:1d+6h", start)
... except IncidentSpecError as exc:
...     print(exc.problem[:21])
unknown kind 'outage'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from carrierwatch.core.errors import EXIT_USAGE, CarrierwatchError
from carrierwatch.core.model import CanonicalStatus, ms_to_iso
from carrierwatch.core.timeutil import to_ms

__all__ = [
    "DEFAULT_PARAMETERS",
    "INCIDENT_KINDS",
    "Incident",
    "IncidentSpecError",
    "PartnerIncidents",
    "parse_incident",
    "parse_span",
]

INCIDENT_KINDS = ("codebook_change", "exception_spike", "feed_outage", "latency_drift",
                  "peak_day")

#: Parameters of each kind and their defaults (spans in milliseconds).
DEFAULT_PARAMETERS: Mapping[str, Mapping[str, Any]] = {
    "feed_outage": {},
    # 30: the exception probability of a hub scan (0.6-3 %) times 30 gives a quarter to a third
    # of the packages passing a hub an exception, 2-11 % of a partner's events (~8x the usual
    # share) in US business hours: what a hub problem (weather, sort capacity) looks like.
    # 10 gave 0.2-2.8 %, often within the noise of the usual ~0.45 % (docs/anomaly.md)
    "exception_spike": {"factor": 30.0},
    "codebook_change": {"statuses": ("in_transit", "out_for_delivery")},
    "latency_drift": {"max_ms": 6 * 3_600_000},
    "peak_day": {"factor": 3.0, "slowdown": 0.4},
}

_SPAN = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?")
_UNITS_MS = (86_400_000, 3_600_000, 60_000)
_PARAMETER_NAMES = {"factor": "factor", "max": "max_ms", "statuses": "statuses",
                    "slowdown": "slowdown"}
_CODE_STATUSES = frozenset(s.value for s in CanonicalStatus) - {CanonicalStatus.UNKNOWN.value}


class IncidentSpecError(CarrierwatchError, ValueError):
    """An incident spec that cannot be parsed; the message names the spec and the problem (on
    the command line a usage error, exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, spec: str, problem: str) -> None:
        self.spec = spec
        self.problem = problem
        super().__init__(f"bad incident {spec!r}: {problem}")


def parse_span(text: str) -> int:
    """Milliseconds of a span written as days, hours and minutes (``2d12h``, ``6h``, ``90m``).

    Raises ``ValueError`` when ``text`` is not such a span. ``0d`` is a valid (empty) span.

    >>> parse_span("2d12h"), parse_span("90m")
    (216000000, 5400000)
    """
    match = _SPAN.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a span like 6h, 1d or 2d12h")
    return sum(int(value) * unit for value, unit in zip(match.groups(), _UNITS_MS, strict=True)
               if value is not None)


def _parse_start(text: str, sim_start: int) -> int:
    try:
        return sim_start + parse_span(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"start {text!r} is neither an ISO date/time nor an offset like 3d or "
                         f"2d12h") from None
    if len(text) == 10:  # a bare date: midnight UTC
        moment = datetime.combine(date.fromisoformat(text), datetime.min.time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_ms(moment)


def _parse_parameter(kind: str, name: str, value: str) -> tuple[str, Any]:
    key = _PARAMETER_NAMES.get(name)
    if key is None or key not in DEFAULT_PARAMETERS[kind]:
        allowed = sorted(k for k, v in _PARAMETER_NAMES.items() if v in DEFAULT_PARAMETERS[kind])
        raise ValueError(f"{kind} takes no parameter {name!r}"
                         + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
    if key == "max_ms":
        span = parse_span(value)
        if span <= 0:
            raise ValueError("max must be a positive span")
        return key, span
    if key == "statuses":
        statuses = tuple(s.strip() for s in value.split("/") if s.strip())
        unknown = [s for s in statuses if s not in _CODE_STATUSES]
        if not statuses or unknown:
            raise ValueError(f"statuses must be canonical statuses separated by '/', "
                             f"got {value!r}")
        return key, statuses
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if key == "slowdown":
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"slowdown is a probability in [0, 1], got {value}")
    elif not 1.0 <= number <= 1000.0:
        raise ValueError(f"factor must be between 1 and 1000, got {value}")
    return key, number


@dataclass(frozen=True, slots=True)
class Incident:
    """One labelled incident: ``kind`` on ``partner`` during ``[start, end)`` (UTC ms)."""

    kind: str
    partner: str
    start: int
    end: int
    parameters: Mapping[str, Any] = field(default_factory=dict)
    spec: str = ""

    @property
    def start_iso(self) -> str:
        return ms_to_iso(self.start) or ""

    @property
    def end_iso(self) -> str:
        return ms_to_iso(self.end) or ""

    def covers(self, ms: int) -> bool:
        """Whether the instant ``ms`` falls inside the window."""
        return self.start <= ms < self.end

    def param(self, name: str) -> Any:
        """A parameter, or its default for this kind."""
        if name in self.parameters:
            return self.parameters[name]
        return DEFAULT_PARAMETERS[self.kind][name]

    def to_json_dict(self) -> dict[str, Any]:
        """The label written to ``incidents.json`` (defaults filled in)."""
        parameters = {**DEFAULT_PARAMETERS[self.kind], **self.parameters}
        return {
            "kind": self.kind,
            "partner": self.partner,
            "start": self.start,
            "end": self.end,
            "start_iso": self.start_iso,
            "end_iso": self.end_iso,
            "parameters": {k: list(v) if isinstance(v, tuple) else v
                           for k, v in sorted(parameters.items())},
            "spec": self.spec,
        }


def parse_incident(spec: str, sim_start: int) -> Incident:
    """Parse ``KIND@partner:start+duration[,name=value...]``; offsets count from ``sim_start``.

    Raises :class:`IncidentSpecError` with a message naming the spec and what is wrong.
    """
    text = spec.strip()
    head, _, rest = text.partition("@")
    if not rest:
        raise IncidentSpecError(spec, "expected KIND@partner:start+duration")
    kind = head.strip()
    if kind not in INCIDENT_KINDS:
        raise IncidentSpecError(spec, f"unknown kind {kind!r} (expected one of: "
                                      f"{', '.join(INCIDENT_KINDS)})")
    partner, colon, window = rest.partition(":")
    partner = partner.strip()
    if not colon or not re.fullmatch(r"[a-z][a-z0-9_]{1,31}", partner):
        raise IncidentSpecError(spec, "expected a partner id (lower-case letters, digits, _) "
                                      "followed by ':'")
    window, *parameter_texts = window.split(",")
    start_text, plus, duration_text = window.rpartition("+")
    if not plus or not start_text.strip():
        raise IncidentSpecError(spec, "expected start+duration after the partner, e.g. 3d+6h")
    try:
        start = _parse_start(start_text.strip(), sim_start)
        duration = parse_span(duration_text)
    except ValueError as exc:
        raise IncidentSpecError(spec, str(exc)) from None
    if duration <= 0:
        raise IncidentSpecError(spec, "duration must be positive")
    parameters: dict[str, Any] = {}
    for item in parameter_texts:
        name, equals, value = item.partition("=")
        if not equals or not name.strip() or not value.strip():
            raise IncidentSpecError(spec, f"expected name=value, got {item!r}")
        try:
            key, parsed = _parse_parameter(kind, name.strip(), value.strip())
        except ValueError as exc:
            raise IncidentSpecError(spec, str(exc)) from None
        parameters[key] = parsed
    return Incident(kind=kind, partner=partner, start=start, end=start + duration,
                    parameters=parameters, spec=text)


class PartnerIncidents:
    """The incidents of one partner, answering what they do at a given instant.

    >>> incident = Incident("latency_drift", "ups", start=0, end=1000, parameters={"max_ms": 600})
    >>> effects = PartnerIncidents([incident])
    >>> effects.extra_latency(0), effects.extra_latency(500), effects.extra_latency(1000)
    (0, 300, 0)
    >>> PartnerIncidents([Incident("peak_day", "ups", 0, 10)]).volume_factor(5)
    3.0
    """

    __slots__ = ("_by_kind", "incidents")

    def __init__(self, incidents: Sequence[Incident]) -> None:
        self.incidents = tuple(incidents)
        self._by_kind: dict[str, tuple[Incident, ...]] = {
            kind: tuple(i for i in self.incidents if i.kind == kind) for kind in INCIDENT_KINDS}

    def of_kind(self, kind: str) -> tuple[Incident, ...]:
        return self._by_kind[kind]

    def _factor(self, kind: str, start: int, end: int) -> float:
        """The product of the ``factor`` of the ``kind`` incidents meeting ``[start, end)``."""
        factor = 1.0
        for incident in self._by_kind[kind]:
            if incident.start < end and start < incident.end:
                factor *= float(incident.param("factor"))
        return factor

    def exception_factor(self, ms: int) -> float:
        """Multiplier of the exception probability of a scan at ``ms``."""
        return self._factor("exception_spike", ms, ms + 1)

    def max_exception_factor(self, start: int, end: int) -> float:
        """The largest :meth:`exception_factor` over ``[start, end)``.

        >>> spike = PartnerIncidents([Incident("exception_spike", "ups", 100, 200)])
        >>> spike.max_exception_factor(0, 100), spike.max_exception_factor(0, 101)
        (1.0, 30.0)
        """
        return self._factor("exception_spike", start, end)

    def first_spike_overlap(self, start: int, end: int) -> tuple[int, int] | None:
        """Where ``[start, end)`` first meets an ``exception_spike``: ``(first, end of overlap)``.

        >>> spike = PartnerIncidents([Incident("exception_spike", "ups", 100, 200)])
        >>> spike.first_spike_overlap(50, 150), spike.first_spike_overlap(150, 400)
        ((100, 150), (150, 200))
        >>> spike.first_spike_overlap(200, 300) is None
        True
        """
        overlaps = [(max(start, i.start), min(end, i.end))
                    for i in self._by_kind["exception_spike"] if i.start < end and start < i.end]
        return min(overlaps, default=None)

    def volume_factor(self, ms: int) -> float:
        """Multiplier of the shipping volume at ``ms`` (``peak_day``)."""
        return self._factor("peak_day", ms, ms + 1)

    def max_volume_factor(self, start: int, end: int) -> float:
        """The largest :meth:`volume_factor` over ``[start, end)``."""
        return self._factor("peak_day", start, end)

    def slowdown(self, ms: int) -> float:
        """Probability of one extra transit day for a package picked up at ``ms``."""
        for incident in self._by_kind["peak_day"]:
            if incident.covers(ms):
                return float(incident.param("slowdown"))
        return 0.0

    def extra_latency(self, ms: int) -> int:
        """Extra visibility delay (ms) of a scan made at ``ms`` (``latency_drift``)."""
        extra = 0
        for incident in self._by_kind["latency_drift"]:
            if incident.covers(ms):
                fraction = (ms - incident.start) / (incident.end - incident.start)
                extra += int(int(incident.param("max_ms")) * fraction)
        return extra

    def changed_code(self, status: str, ms: int) -> str | None:
        """The new partner code of a scan of ``status`` made at ``ms`` (``codebook_change``)."""
        for incident in self._by_kind["codebook_change"]:
            if incident.covers(ms) and status in incident.param("statuses"):
                return f"NEW_{status.upper()}"
        return None

    def outage(self, ms: int) -> tuple[int, int] | None:
        """``(start, end)`` of the feed outage covering ``ms`` (overlapping ones merged), or None.

        >>> PartnerIncidents([Incident("feed_outage", "ups", 10, 20),
        ...                   Incident("feed_outage", "ups", 15, 30)]).outage(12)
        (10, 30)
        """
        windows = [i for i in self._by_kind["feed_outage"] if i.covers(ms)]
        if not windows:
            return None
        start, end = min(i.start for i in windows), max(i.end for i in windows)
        while True:  # chained outages: extend while an end falls inside another outage
            later = [i for i in self._by_kind["feed_outage"] if i.covers(end) or i.covers(start - 1)]
            if not later:
                return start, end
            start, end = min(start, *(i.start for i in later)), max(end, *(i.end for i in later))
