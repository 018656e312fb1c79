"""A generic JSON transformer configured by field paths: onboard a simple JSON feed with YAML only.

A partner whose feed is plain JSON names this module as its transformer and describes its
payload in the ``mapping:`` block of ``partners/<id>.yaml``; its codes go in its codebook. No
Python is written per partner. Paths are `JMESPath <https://jmespath.org>`_ expressions evaluated
against each event; a path starting with ``$.`` is evaluated against the whole payload instead
(for envelope fields; ``$[0].x`` and ``$`` work too). Example (a local courier's webhook)::

    transformer: json_mapping
    mapping:
      events: updates                 # where the list of events is ("@": the payload is the list)
      error: error                    # optional: a non-empty value marks the partner's error response
      error_code: error.code          # optional, named in the dead letter
      error_message: error.message    # optional
      tracking_number: parcel
      discriminator: null             # optional: id that tells reused tracking numbers apart
      shipment_id: order_ref          # optional
      code: [state]                   # codebook keys, most specific first (a string is one path)
      reason_code: why                # optional: the feed's own reason code …
      reason_prefix: "why/"           # … looked up as <prefix><value>; its `reason` overrides
      time: {path: at, format: "%Y-%m-%d %H:%M:%S", zone_path: tz}
      location: {city: hub.city, region: hub.state, postal_code: hub.zip, country: hub.country}
      attempt: attempt                # optional, an integer
      proof: {path: proof, values: {photo: photo, signature: signature, pin: pin, none: none}}
      eta_start: {path: eta_from}     # optional time fields; zone and format default to the
      eta_end: {path: eta}            # event time's
      promised_by: {path: promise, date_only: end_of_day}
      service_level: service          # optional; {path: service, lower: true} lower-cases it
      partner_received_time: {path: "$.received_at"}   # optional

The same model, with column names instead of paths, describes CSV drops: see
:mod:`~carrierwatch.transformers.csv_mapping`, which shares this module's event machinery
(:class:`Flavor` tells the two apart).

Time fields: ``format`` is ``iso`` (ISO 8601), ``epoch_s``, ``epoch_ms`` or a ``strptime``
pattern. ``date_only`` says what a value without a time of day (``2026-03-02``, or any value
of a pattern without hour fields) means: ``reject`` it (a dead letter; the default of ``time`` and
``partner_received_time``), the ``start_of_day`` (default of ``eta_start``) or the
``end_of_day``, 23:59:59 (default of ``promised_by`` and ``eta_end``: "by Tuesday" means by
Tuesday's end). A time with an offset is exact. Otherwise its zone comes from ``zone_path`` (an
IANA name in the payload; exact), else the fixed ``zone`` (exact), else the event location
(``local_zone``: its region's zone, flagged when the region spans several clocks, or its
country's), else the partner's ``default_timezone`` (flagged as a guess). DST folds and gaps are
flagged too.

Location: ``country``, ``region``, ``city``, ``postal_code``, ``latitude``, ``longitude`` paths,
and ``city_region_postal``, one value written ``City, RR 12345`` (read by :func:`parse_place`;
its parts fill those the other keys leave empty). A place that does not read as such may be a
street address: it is dropped, never copied, and when nothing else but a country is known the
event has no location. The partner's ``default_country`` fills in a missing country.

The mapping is validated when the partner registry loads it (:func:`check_spec` raises
:class:`~carrierwatch.core.errors.PartnerLoadError` naming the bad key), and compiled once.

Examples
--------
>>> from carrierwatch.core.partner import PartnerSpec
>>> spec = PartnerSpec(id="demo", display_name="Demo", transformer="json_mapping",
...                    mapping={"events": "items", "tracking_number": "id", "code": "s",
...                             "time": {"path": "t"}})
>>> check_spec(spec)
>>> bad = spec.model_copy(update={"mapping": {"events": "items[", "tracking_number": "id",
...                                           "code": "s", "time": {"path": "t"}}})
>>> try:
...     check_spec(bad)
... except Exception as exc:
...     print(type(exc).__name__)
PartnerLoadError
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jmespath
import jmespath.exceptions
import orjson
from jmespath.parser import ParsedResult
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from carrierwatch.core.errors import PartnerLoadError
from carrierwatch.core.limits import coordinate_problem
from carrierwatch.core.model import Location
from carrierwatch.core.partner import PartnerSpec
from carrierwatch.core.timeutil import local_zone, resolve_local, to_ms
from carrierwatch.transformers.base import (
    Emitter,
    PayloadError,
    TransformContext,
    TransformResult,
    count,
    location,
    parse_json,
)

__all__ = [
    "JSON",
    "Flavor",
    "JsonMapping",
    "LocationPaths",
    "ProofField",
    "ServiceLevelField",
    "TimeField",
    "check_spec",
    "compile_mapping",
    "parse_place",
    "transform",
]


def _split_root(text: str) -> tuple[str, bool]:
    """The JMESPath of a mapping path and whether it starts at the payload root (``$``)."""
    if not text.startswith("$"):
        return text, False
    rest = text[1:].removeprefix(".")
    return (rest or "@"), True


def _check_path(value: str | None, info: ValidationInfo) -> str | None:
    if value is None or _columns(info):
        return value
    try:
        jmespath.compile(_split_root(value)[0])
    except jmespath.exceptions.JMESPathError as exc:
        raise ValueError(f"invalid JMESPath {value!r}: {exc}") from None
    return value


def _columns(info: ValidationInfo) -> bool:
    """Whether paths name CSV columns (any text) rather than JMESPath expressions."""
    context = info.context
    return isinstance(context, dict) and bool(context.get("columns"))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TimeField(_Frozen):
    """Where a time is and how to read it."""

    path: str
    format: str | None = None
    zone_path: str | None = None
    zone: str | None = None
    date_only: Literal["reject", "start_of_day", "end_of_day"] | None = None

    _paths = field_validator("path", "zone_path")(_check_path)

    @field_validator("format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        if value is not None and value not in {"iso", "epoch_s", "epoch_ms"} and "%" not in value:
            raise ValueError("format must be iso, epoch_s, epoch_ms or a strptime pattern")
        return value

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
                raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value


class LocationPaths(_Frozen):
    """Paths of the coarse location parts (never a street)."""

    country: str | None = None
    region: str | None = None
    city: str | None = None
    postal_code: str | None = None
    latitude: str | None = None
    longitude: str | None = None
    city_region_postal: str | None = None

    _paths = field_validator("*")(_check_path)


class ProofField(_Frozen):
    """Where the proof of delivery is and how the feed's values read as canonical kinds."""

    path: str
    values: dict[str, Literal["signature", "photo", "pin", "none"]]

    _paths = field_validator("path")(_check_path)


class ServiceLevelField(_Frozen):
    """Where the service level is, and whether to lower-case it (to match the contract's
    ``transit_days`` keys)."""

    path: str
    lower: bool = False

    _paths = field_validator("path")(_check_path)


class JsonMapping(_Frozen):
    """The ``mapping:`` block of a JSON partner; see the module docstring."""

    events: str = "@"
    error: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    tracking_number: str
    discriminator: str | None = None
    shipment_id: str | None = None
    code: list[str]
    reason_code: str | None = None
    reason_prefix: str = "reason/"
    time: TimeField
    location: LocationPaths | None = None
    attempt: str | None = None
    proof: ProofField | None = None
    eta_start: TimeField | None = None
    eta_end: TimeField | None = None
    promised_by: TimeField | None = None
    service_level: str | ServiceLevelField | None = None
    partner_received_time: TimeField | None = None

    _paths = field_validator("events", "error", "error_code", "error_message",
                             "tracking_number", "discriminator", "shipment_id",
                             "reason_code", "attempt")(_check_path)

    @field_validator("code", mode="before")
    @classmethod
    def _codes(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ValueError("code must be a path or a non-empty list of paths")
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"code paths must be strings, got {item!r}")
            _check_path(item, info)
        return value

    @field_validator("service_level", mode="before")
    @classmethod
    def _service_level(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            _check_path(value, info)
        return value


_ISO_LIKE = {"%Y-%m-%d %H:%M:%S": " ", "%Y-%m-%dT%H:%M:%S": "T"}


def _strptime(value: str, fmt: str) -> datetime:
    """``datetime.strptime``, with a fast path for the two ISO-shaped patterns.

    A 19-character ``YYYY-MM-DD HH:MM:SS`` string (digits where the pattern has fields) reads the
    same with :meth:`datetime.fromisoformat`, at a tenth of the cost; anything else takes
    ``strptime``.
    """
    separator = _ISO_LIKE.get(fmt)
    if (separator is not None and len(value) == 19 and value.isascii() and value[10] == separator
            and value[4] == value[7] == "-" and value[13] == value[16] == ":"
            and (value[:4] + value[5:7] + value[8:10] + value[11:13] + value[14:16]
                 + value[17:]).isdigit()):
        return datetime.fromisoformat(value)
    return datetime.strptime(value, fmt)


@dataclass(frozen=True, slots=True)
class _Path:
    """A compiled path: the JMESPath, whether it starts at the payload root, and its text.

    Plain dotted field paths (``hub.city``), most of what a mapping holds, are read by walking
    the dicts directly, with JMESPath's semantics (a missing key or a non-object gives None);
    anything richer (indexes, filters, functions) goes through JMESPath.
    """

    expression: ParsedResult
    root: bool
    text: str
    fields: tuple[str, ...] | None = None

    def get(self, event: Any, payload: Any) -> Any:
        value = payload if self.root else event
        fields = self.fields
        if fields is None:
            return self.expression.search(value)
        for name in fields:
            if not isinstance(value, dict):
                return None
            value = value.get(name)
        return value

    def where(self, event_path: str) -> str:
        if self.root:
            return self.text
        return f"{event_path}.{self.text}" if event_path else self.text


def _compile(text: str | None) -> _Path | None:
    if text is None:
        return None
    expression, root = _split_root(text)
    fields = tuple(expression.split(".")) if _FIELD_PATH.fullmatch(expression) else None
    return _Path(jmespath.compile(expression), root, text, fields)


def _column(text: str | None) -> _Path | None:
    """A CSV column name as a path: any text, read from the row (a dict) by name."""
    if text is None:
        return None
    return _Path(jmespath.compile(orjson.dumps(text).decode()), False, text, (text,))


_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_TIME_OF_DAY = ("%H", "%I", "%M", "%S", "%X", "%T", "%R", "%c", "%s")
_DATE_ONLY_DEFAULT = {"time": "reject", "partner_received_time": "reject",
                      "eta_start": "start_of_day", "eta_end": "end_of_day",
                      "promised_by": "end_of_day"}


@dataclass(frozen=True, slots=True)
class _Time:
    path: _Path
    format: str | None
    zone_path: _Path | None
    zone: str | None
    date_only: str


def _time(name: str, field: TimeField | None, main: TimeField | None,
          compile_path: Callable[[str | None], _Path | None]) -> _Time | None:
    if field is None:
        return None
    path = compile_path(field.path)
    assert path is not None
    fmt = field.format or (main.format if main is not None else None) or "iso"
    return _Time(path, fmt, compile_path(field.zone_path), field.zone,
                 field.date_only or _DATE_ONLY_DEFAULT[name])


def _is_date_only(value: str, fmt: str) -> bool:
    """Whether a time value read with ``fmt`` names a day without a time of day."""
    if fmt == "iso":
        return len(value.strip()) <= 10
    if fmt in {"epoch_s", "epoch_ms"}:
        return False
    return not any(directive in fmt for directive in _TIME_OF_DAY)


@dataclass(frozen=True, slots=True)
class Flavor:
    """How a mapping's paths read a payload: JMESPath over a JSON document (``json_mapping``), or
    names of the columns of a CSV row (``csv_mapping``, whose model adds the ``csv:`` block)."""

    transformer: str
    model: type[JsonMapping]
    columns: bool


JSON = Flavor("json_mapping", JsonMapping, columns=False)


@dataclass(frozen=True, slots=True)
class _Compiled:
    mapping: JsonMapping
    events: _Path
    paths: dict[str, _Path | None]
    codes: tuple[_Path, ...]
    location: dict[str, _Path | None]
    times: dict[str, _Time | None]
    proof: _Path | None
    service_lower: bool


def check_spec(spec: PartnerSpec) -> None:
    """Validate a partner's ``mapping:``; raise :class:`PartnerLoadError` with a clear message."""
    compile_mapping(spec)


def compile_mapping(spec: PartnerSpec, flavor: Flavor = JSON) -> _Compiled:
    """The validated, compiled mapping of ``spec`` (cached per partner and mapping)."""
    if spec.mapping is None:
        raise PartnerLoadError(f"partner {spec.id!r}: transformer {flavor.transformer} needs a "
                               f"'mapping:' block in partners/{spec.id}.yaml")
    key = orjson.dumps(spec.mapping, option=orjson.OPT_SORT_KEYS, default=str)
    return _compiled(spec.id, key, flavor)


@lru_cache(maxsize=64)
def _compiled(partner_id: str, key: bytes, flavor: Flavor = JSON) -> _Compiled:
    raw = orjson.loads(key)
    try:
        mapping = flavor.model.model_validate(raw, context={"columns": flavor.columns})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(('mapping', *(str(p) for p in err['loc'])))}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors())
        raise PartnerLoadError(f"partners/{partner_id}.yaml: invalid mapping: {problems}"
                               ) from None
    compile_path = _column if flavor.columns else _compile
    events = compile_path(mapping.events) if not flavor.columns else _compile("@")
    assert events is not None
    loc = mapping.location or LocationPaths()
    service = mapping.service_level
    paths = {name: compile_path(getattr(mapping, name)) for name in (
        "error", "error_code", "error_message", "tracking_number", "discriminator",
        "shipment_id", "reason_code", "attempt")}
    paths["service_level"] = compile_path(
        service.path if isinstance(service, ServiceLevelField) else service)
    return _Compiled(
        mapping=mapping,
        events=events,
        paths=paths,
        codes=tuple(p for p in (compile_path(c) for c in mapping.code) if p is not None),
        location={name: compile_path(getattr(loc, name)) for name in (
            "country", "region", "city", "postal_code", "latitude", "longitude",
            "city_region_postal")},
        times={name: _time(name, getattr(mapping, name), mapping.time, compile_path)
               for name in ("time", "eta_start", "eta_end", "promised_by",
                            "partner_received_time")},
        proof=compile_path(mapping.proof.path) if mapping.proof else None,
        service_lower=isinstance(service, ServiceLevelField) and service.lower,
    )


# --- reading values --------------------------------------------------------------------------


def _text(path: _Path | None, event: Any, payload: Any, where: str) -> str | None:
    if path is None:
        return None
    value = path.get(event, payload)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise PayloadError(path.where(where), f"expected a string, got {type(value).__name__}")
    return str(value).strip() or None


def _number(path: _Path | None, event: Any, payload: Any, where: str) -> float | None:
    if path is None:
        return None
    value = path.get(event, payload)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PayloadError(path.where(where), f"expected a number, got {type(value).__name__}")
    try:
        return float(value)
    except ValueError:
        raise PayloadError(path.where(where), f"expected a number, got {value!r:.40}") from None


def _parse_time(spec: _Time, value: Any, where: str) -> tuple[datetime, bool]:
    """A datetime (aware when the value carries an offset) and whether it did.

    A value that names a day without a time of day is rejected, read as that day's start or as
    its end (23:59:59), as the field's ``date_only`` says.
    """
    fmt = spec.format or "iso"
    try:
        if fmt in {"epoch_s", "epoch_ms"}:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r:.40}")
            seconds = value / 1000 if fmt == "epoch_ms" else value
            return datetime.fromtimestamp(seconds, tz=UTC), True
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {type(value).__name__}")
        moment = (datetime.fromisoformat(value) if fmt == "iso"
                  else _strptime(value, fmt))
    except (ValueError, OverflowError, OSError) as exc:
        if fmt == "iso":
            raise PayloadError(where, f"unreadable time {value!r:.60} "
                                      f"(expected YYYY-MM-DD HH:MM[:SS])") from None
        raise PayloadError(where, f"unreadable time {value!r:.60} ({fmt}): {exc}") from None
    if _is_date_only(value, fmt):
        if spec.date_only == "reject":
            raise PayloadError(where, f"a date without a time of day: {value!r:.60} (set "
                                      f"date_only: start_of_day or end_of_day to accept it)")
        if spec.date_only == "end_of_day":
            moment = moment.replace(hour=23, minute=59, second=59, microsecond=0)
    return moment, moment.tzinfo is not None


@dataclass(frozen=True, slots=True)
class _Zone:
    name: str | None
    exact: bool


def _event_zone(spec: _Time, event: Any, payload: Any, where: str,
                place: tuple[str | None, str | None], default: str | None) -> _Zone:
    if spec.zone_path is not None:
        name = _text(spec.zone_path, event, payload, where)
        if name is not None:
            try:
                ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long
                raise PayloadError(spec.zone_path.where(where),
                                   f"unknown time zone {name!r:.60}") from None
            return _Zone(name, True)
    if spec.zone is not None:
        return _Zone(spec.zone, True)
    return _Zone(*local_zone(*place, default))


def _resolve(moment: datetime, aware: bool, zone: _Zone) -> tuple[int, bool]:
    if aware:
        return to_ms(moment), False
    return resolve_local(moment, zone.name, exact_zone=zone.exact)


def _optional_time(compiled: _Compiled, name: str, event: Any, payload: Any, where: str,
                   event_zone: _Zone, place: tuple[str | None, str | None],
                   default: str | None) -> int | None:
    spec = compiled.times[name]
    if spec is None:
        return None
    value = spec.path.get(event, payload)
    if value is None or value == "":
        return None
    moment, aware = _parse_time(spec, value, spec.path.where(where))
    zone = event_zone
    if spec.zone_path is not None or spec.zone is not None:
        zone = _event_zone(spec, event, payload, where, place, default)
    return _resolve(moment, aware, zone)[0]


def _proof(compiled: _Compiled, event: Any, payload: Any, where: str) -> str | None:
    value = _text(compiled.proof, event, payload, where)
    if value is None or compiled.mapping.proof is None:
        return None
    return compiled.mapping.proof.values.get(value)


def _service_level(compiled: _Compiled, event: Any, payload: Any, where: str) -> str | None:
    value = _text(compiled.paths["service_level"], event, payload, where)
    return value.lower() if value is not None and compiled.service_lower else value


_PLACE_MAX = 120  # longer text is no "City, ST 12345": not parsed (and never cached)
_CITY_MARKS = str.maketrans("", "", " .'-")
_POSTAL_MARKS = str.maketrans("", "", " -")


def parse_place(text: str) -> tuple[str, str, str | None] | None:
    """City, region code and postal code of a place written ``City, RR 12345``; None otherwise.

    The city starts with a letter and holds letters, spaces and ``.'-``; the region is a code of
    2-3 ASCII letters; the postal code, optional, is one or two tokens of letters, digits and
    ``-`` with a digit in them (``83702``, ``83702-1234``, ``M5V 2T6``, ``01310-100``). Text of any
    other shape (a street address, free text) gives None, so that it is dropped, never copied.
    No regular expression: the text is split once and each part checked in one pass (linear in
    its length), and text longer than 120 characters is not read at all (so that the results,
    memoized as places repeat, are keyed by short text only).

    >>> parse_place("Boise, ID 83702")
    ('Boise', 'ID', '83702')
    >>> parse_place("São Paulo, sp 01310-100")
    ('São Paulo', 'SP', '01310-100')
    >>> parse_place("1421 W Example Dr, Meridian ID") is None
    True
    """
    if len(text) > _PLACE_MAX:
        return None
    return _parse_place(text)


@lru_cache(maxsize=4096)
def _parse_place(text: str) -> tuple[str, str, str | None] | None:
    if text.count(",") != 1:
        return None
    city_part, _, rest = text.partition(",")
    city = city_part.strip()
    if not city or not city[0].isalpha() or not city.translate(_CITY_MARKS).isalpha():
        return None
    tokens = rest.split()
    if not tokens or len(tokens) > 3:
        return None
    region = tokens[0]
    if not (2 <= len(region) <= 3 and region.isascii() and region.isalpha()):
        return None
    postal = " ".join(tokens[1:]) or None
    if postal is not None and not (
            len(postal) <= 10 and postal.isascii() and postal.translate(_POSTAL_MARKS).isalnum()
            and any(char.isdigit() for char in postal)):
        return None
    return city, region.upper(), postal


def _location(loc: dict[str, _Path | None], event: Any, payload: Any, where: str,
              default_country: str | None) -> Location | None:
    """The coarse location of an event. With ``city_region_postal``, the parts it reads fill
    those the separate keys leave empty; when it reads as no place and no other key gives more
    than a country, the event has no location (not even the partner's default country)."""
    city = _text(loc["city"], event, payload, where)
    region = _text(loc["region"], event, payload, where)
    postal = _text(loc["postal_code"], event, payload, where)
    latitude = _coordinate(loc["latitude"], event, payload, where, 90.0)
    longitude = _coordinate(loc["longitude"], event, payload, where, 180.0)
    if loc["city_region_postal"] is not None:
        text = _text(loc["city_region_postal"], event, payload, where)
        parts = parse_place(text) if text is not None else None
        if parts is not None:
            city = city or parts[0]
            region = region or parts[1]
            postal = postal or parts[2]
        elif not (city or region or postal or latitude is not None or longitude is not None):
            return None
    country = _text(loc["country"], event, payload, where) or default_country
    return location(country, region, city, postal, latitude, longitude)


def _attempt(compiled: _Compiled, event: Any, payload: Any, where: str) -> int | None:
    path = compiled.paths["attempt"]
    if path is None:
        return None
    if _number(path, event, payload, where) is None:  # names a value that is no number
        return None
    return count(path.get(event, payload), path.where(where))  # exact, not through a float


def _coordinate(path: _Path | None, event: Any, payload: Any, where: str, bound: float
                ) -> float | None:
    number = _number(path, event, payload, where)
    problem = None if number is None else coordinate_problem(number, bound)
    if problem is not None:
        assert path is not None
        raise PayloadError(path.where(where), problem)
    return number


# --- the transformer -------------------------------------------------------------------------


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Normalize one payload of a partner described by a ``mapping:``; see the module docstring."""
    emitter = Emitter(raw, ctx)
    compiled = compile_mapping(ctx.partner)
    payload = parse_json(raw, emitter)
    paths = compiled.paths
    if paths["error"] is not None and paths["error"].get(payload, payload) not in (
            None, False, "", [], {}):
        code = _error_part(paths["error_code"], payload)
        message = _error_part(paths["error_message"], payload) or "error response"
        label = f"{ctx.partner.display_name} error" + (f" {code}" if code else "")
        emitter.dead_letter("$", f"{label}: {message}")
        return emitter.result

    events = compiled.events.get(payload, payload)
    events_where = compiled.events.text if compiled.events.text not in {"@", "$"} else ""
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):
        emitter.dead_letter(events_where or "$",
                            f"expected a list of events, got {type(events).__name__}")
        return emitter.result
    if not events:
        emitter.dead_letter(events_where or "$", "no events in the payload")
    for index, event in enumerate(events):
        where = f"{events_where}[{index}]"
        with emitter.element(where):
            _event(emitter, ctx, compiled, event, payload, where)
    return emitter.result


def _error_part(path: _Path | None, payload: Any) -> str | None:
    if path is None:
        return None
    value = path.get(payload, payload)
    return None if value is None else str(value)


def _event(emitter: Emitter, ctx: TransformContext, compiled: _Compiled, event: Any,
           payload: Any, where: str) -> None:
    if not isinstance(event, dict):
        raise PayloadError(where, f"expected an object, got {type(event).__name__}")
    paths = compiled.paths
    tracking_path = paths["tracking_number"]
    assert tracking_path is not None
    tracking_number = _text(tracking_path, event, payload, where)
    if tracking_number is None:
        raise PayloadError(tracking_path.where(where), "missing tracking number")
    keys = [_text(path, event, payload, where) for path in compiled.codes]
    if not any(keys):
        raise PayloadError(compiled.codes[0].where(where), "missing status code")

    place = _location(compiled.location, event, payload, where, ctx.partner.default_country)
    zone_place = (place.country if place else None, place.region if place else None)

    time_spec = compiled.times["time"]
    assert time_spec is not None
    time_where = time_spec.path.where(where)
    value = time_spec.path.get(event, payload)
    if value is None or value == "":
        raise PayloadError(time_where, "missing event time")
    default_zone = ctx.partner.default_timezone
    zone = _event_zone(time_spec, event, payload, where, zone_place, default_zone)
    moment, aware = _parse_time(time_spec, value, time_where)
    event_time, ambiguous = _resolve(moment, aware, zone)

    times = {name: _optional_time(compiled, name, event, payload, where, zone, zone_place,
                                  default_zone)
             for name in ("eta_start", "eta_end", "promised_by", "partner_received_time")}
    discriminator = _text(paths["discriminator"], event, payload, where)
    shipment_id = _text(paths["shipment_id"], event, payload, where)
    attempt = _attempt(compiled, event, payload, where)
    proof = _proof(compiled, event, payload, where)
    service_level = _service_level(compiled, event, payload, where)
    # the reason last: a reason code's gap is counted only for an element that becomes an event
    reason: str | None = None
    reason_value = _text(paths["reason_code"], event, payload, where)
    if reason_value is not None:
        reason_key = f"{compiled.mapping.reason_prefix}{reason_value}"
        hit = ctx.codebook.lookup(reason_key)
        if hit is None:
            emitter.result.gaps.append(reason_key)
        else:
            reason = hit.reason

    emitter.event(
        tracking_number=tracking_number,
        raw_code=next(k for k in keys if k),
        event_time=event_time,
        codes=tuple(keys),
        discriminator=discriminator,
        shipment_id=shipment_id,
        timezone_ambiguous=ambiguous,
        event_time_local=value if isinstance(value, str) else str(value),
        location=place,
        promised_by=times["promised_by"],
        eta_start=times["eta_start"],
        eta_end=times["eta_end"],
        attempt_number=attempt,
        proof_of_delivery=proof,
        service_level=service_level,
        partner_received_time=times["partner_received_time"],
        reason=reason,
        paths=lambda name: _field_path(compiled, name, where),
    )


def _field_path(compiled: _Compiled, name: str, where: str) -> str | None:
    """Where the payload holds the canonical field ``name`` of the event at ``where``."""
    spec = compiled.times.get(name) if name != "event_time" else compiled.times["time"]
    if spec is not None:
        return spec.path.where(where)
    path = compiled.paths.get("attempt") if name == "attempt_number" else None
    return path.where(where) if path is not None else None

