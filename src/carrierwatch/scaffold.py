"""``carrierwatch partners add ID``: scaffold a new partner, never a hand copy.

``--kind config`` (default) onboards a simple JSON webhook with YAML alone: partner metadata with
a ``json_mapping`` block, a starter codebook and sample payloads. ``--kind code`` adds a Python
transformer module built on :class:`~carrierwatch.transformers.base.Emitter` for feeds whose shape
needs code. Either way the new partner loads at once, normalizes its starter samples and is picked
up by the conformance, golden and fuzz suites (the golden test then asks for expected files).
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from zoneinfo import available_timezones

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.partner import PARTNER_ID_PATTERN
from carrierwatch.core.timeutil import country_code, country_names

__all__ = ["check_country", "check_timezone", "scaffold_partner"]

_PARTNER = Template('''\
# $name: scaffolded by `carrierwatch partners add $id`. Fill in the real feed's field paths, auth
# and contract; see src/carrierwatch/transformers/json_mapping.py for every mapping key.
id: $id
display_name: $name
kind: courier
format: json
delivery: webhook
transformer: $transformer
payload_schema_version: "1"
auth:
  scheme: hmac_sha256_hex
  header: X-Signature
$place
$mapping
contract:
  timezone: $contract_zone
  on_time_target: 0.95
  first_attempt_target: 0.90
  exception_rate_max: 0.05
  pickup_compliance_target: 0.95
  grace_minutes: 0
  pickup_cutoff: "17:00"
  transit_days: {standard: 3}
  default_service_level: standard
''')

_MAPPING = '''\
mapping:
  events: events
  error: error
  error_code: error.code
  error_message: error.message
  tracking_number: tracking_number
  code: [status]
  reason_code: reason
  reason_prefix: "reason/"
  time: {path: time, format: iso}
  location: {country: country, region: state, city: city, postal_code: postal_code}
  attempt: attempt
  eta_end: {path: eta}'''

_CODEBOOK = Template('''\
# Codebook of $id: partner status code → canonical status, reason, confidence.
# Bump `version` on every edit; `carrierwatch codebook check` validates this file.
version: 1
partner: $id
codes:
  CREATED: {status: info_received, confidence: 1.0}
  PICKED_UP: {status: picked_up, confidence: 1.0}
  IN_TRANSIT: {status: in_transit, confidence: 1.0}
  OUT_FOR_DELIVERY: {status: out_for_delivery, confidence: 1.0}
  DELIVERED: {status: delivered, confidence: 1.0}
  ATTEMPTED: {status: delivery_attempted, reason: unknown, confidence: 0.9}
  EXCEPTION: {status: exception, reason: unknown, confidence: 0.8}
  RETURNED: {status: returned, confidence: 1.0}
  reason/NOT_HOME: {status: delivery_attempted, reason: recipient_not_available, confidence: 1.0}
  reason/BAD_ADDRESS: {status: exception, reason: address_issue, confidence: 1.0}
required: [PICKED_UP, DELIVERED]
''')

_SAMPLES = {
    "lifecycle_delivered.json": '''\
{"events": [
  {"tracking_number": "$prefix-0001", "status": "PICKED_UP", "time": "2026-03-02T09:10:00-06:00",
   "city": "Austin", "state": "TX", "postal_code": "78701", "country": "US"},
  {"tracking_number": "$prefix-0001", "status": "ATTEMPTED", "reason": "NOT_HOME", "attempt": 1,
   "time": "2026-03-02T15:40:00-06:00", "city": "Austin", "state": "TX", "country": "US"},
  {"tracking_number": "$prefix-0001", "status": "DELIVERED", "attempt": 2,
   "time": "2026-03-03T11:05:00-06:00", "city": "Austin", "state": "TX", "country": "US"}
]}
''',
    "unknown_code.json": '''\
{"events": [{"tracking_number": "$prefix-0002", "status": "SORTED_AT_DEPOT",
             "time": "2026-03-02T10:00:00Z"}]}
''',
    "malformed_time.json": '''\
{"events": [{"tracking_number": "$prefix-0003", "status": "IN_TRANSIT", "time": "yesterday"},
            {"tracking_number": "$prefix-0003", "status": "DELIVERED",
             "time": "2026-03-03T12:00:00Z"}]}
''',
    "error_response.json": '''\
{"error": {"code": "NOT_FOUND", "message": "no such parcel"}}
''',
}

_MODULE = Template('''\
"""Transformer of $name (scaffolded by `carrierwatch partners add $id --kind code`).

Payload: ``{"events": [{"tracking_number", "status", "time", "reason"?, "attempt"?, "city"?,
"state"?, "postal_code"?, "country"?, "eta"?}]}`` or ``{"error": {"code", "message"}}``.
Adapt it to the real feed and keep every rule of ``carrierwatch.transformers.base``: never raise,
one dead letter per bad element with the path of the bad field.
"""

from __future__ import annotations

from carrierwatch.core.timeutil import parse_instant
from carrierwatch.transformers.base import (
    Emitter,
    TransformContext,
    TransformResult,
    location,
    opt_dict,
    opt_str,
    parse_json,
    req_list,
    req_str,
)

__all__ = ["transform"]


def transform(raw: bytes, ctx: TransformContext) -> TransformResult:
    """Raw payload → canonical events, dead letters and codebook gaps."""
    emitter = Emitter(raw, ctx)
    doc = parse_json(raw)
    error = opt_dict(doc, "error", "$$")
    if error is not None:
        emitter.dead_letter("$$.error", f"partner error {error.get('code')}: {error.get('message')}")
        return emitter.result
    for index, item in enumerate(req_list(doc, "events", "$$")):
        path = f"$$.events[{index}]"
        with emitter.element(path):
            code = req_str(item, "status", path)
            text = req_str(item, "time", path)
            event_time, exact = parse_instant(text)
            if event_time is None:
                raise ValueError(f"{path}.time has no UTC offset: {text!r}")
            reason_code = opt_str(item, "reason", path)
            reason = None
            if reason_code is not None:
                mapped = ctx.codebook.lookup(f"reason/{reason_code}")
                reason = mapped.reason if mapped else None
            attempt = item.get("attempt")
            emitter.event(
                tracking_number=req_str(item, "tracking_number", path),
                raw_code=code,
                codes=(code,),
                event_time=event_time,
                event_time_local=text,
                timezone_ambiguous=not exact,
                reason=reason,
                attempt_number=attempt if isinstance(attempt, int) else None,
                location=location(opt_str(item, "country", path), opt_str(item, "state", path),
                                  opt_str(item, "city", path), opt_str(item, "postal_code", path)),
            )
    return emitter.result
''')


def check_timezone(name: str) -> str:
    """``name`` when it is an IANA time zone; else :class:`ConfigurationError`.

    >>> check_timezone(" America/Sao_Paulo ")
    'America/Sao_Paulo'
    """
    zone = name.strip()
    if zone not in available_timezones():
        raise ConfigurationError(f"unknown time zone {name!r}: give an IANA name such as "
                                 f"America/Sao_Paulo, Europe/Berlin or UTC")
    return zone


def check_country(code: str) -> str:
    """The ISO 3166-1 alpha-2 code of ``code`` (alpha-2 or alpha-3, any case); else
    :class:`ConfigurationError`.

    >>> check_country("bra"), check_country("BR")
    ('BR', 'BR')
    """
    value = country_code(code)
    if value is None or value not in country_names():
        raise ConfigurationError(f"unknown country {code!r}: give an ISO 3166-1 code such as "
                                 f"BR, US or DE")
    return value


def _place_lines(timezone: str | None, country: str | None) -> str:
    lines = ["# The partner's own zone and country. A local time without an offset is read in the",
             "# zone of its place (region, country); where the place is unknown, in",
             "# default_timezone, flagged as a guess (timezone_ambiguous)."]
    lines.append(f"default_timezone: {timezone}" if timezone else
                 "# default_timezone: the partner's IANA zone (none set: scaffolded without one)")
    lines.append(f"default_country: {country}" if country else
                 "# default_country: the partner's ISO country (none set: scaffolded without one)")
    return "\n".join(lines)


def scaffold_partner(home: Path, partner_id: str, display_name: str | None,
                     kind: str = "config", *, timezone: str | None = None,
                     country: str | None = None) -> list[Path]:
    """Create the files of a new partner under ``home``; return the paths created.

    ``timezone`` (IANA) and ``country`` (ISO 3166-1) are the partner's own; they are validated
    (:class:`ConfigurationError`) and written as its ``default_timezone``, ``default_country`` and
    contract zone. Left out, the partner file says so in comments, never a silent UTC (the
    contract's day boundaries are then UTC, commented as a value to set).
    """
    timezone = check_timezone(timezone) if timezone is not None else None
    country = check_country(country) if country is not None else None
    if not PARTNER_ID_PATTERN.match(partner_id):
        raise ConfigurationError(
            f"invalid partner id {partner_id!r}: lower-case letters, digits and _, 2-32 long")
    if kind not in {"config", "code"}:
        raise ConfigurationError(f"unknown kind {kind!r} (config or code)")
    name = display_name or partner_id.replace("_", " ").title()
    targets = {
        "partner": home / "partners" / f"{partner_id}.yaml",
        "codebook": home / "codebooks" / f"{partner_id}.yaml",
        "samples": home / "samples" / partner_id,
    }
    module = home / "src" / "carrierwatch" / "transformers" / f"{partner_id}.py"
    if kind == "code":
        targets["module"] = module
    existing = [p for p in targets.values() if p.exists()]
    if existing:
        raise ConfigurationError(f"partner {partner_id!r} exists already: {existing[0]}")

    created: list[Path] = []
    transformer = "json_mapping" if kind == "config" else partner_id
    mapping = _MAPPING if kind == "config" else "# no mapping: the transformer module reads the feed"
    targets["partner"].parent.mkdir(parents=True, exist_ok=True)
    targets["partner"].write_text(_PARTNER.substitute(
        id=partner_id, name=name, transformer=transformer, mapping=mapping,
        place=_place_lines(timezone, country),
        contract_zone=timezone or "UTC   # the partner's zone was not given: set it here too"))
    created.append(targets["partner"])
    targets["codebook"].parent.mkdir(parents=True, exist_ok=True)
    targets["codebook"].write_text(_CODEBOOK.substitute(id=partner_id))
    created.append(targets["codebook"])
    targets["samples"].mkdir(parents=True)
    prefix = partner_id.upper().replace("_", "")[:6]
    for file_name, text in _SAMPLES.items():
        path = targets["samples"] / file_name
        path.write_text(Template(text).substitute(prefix=prefix))
        created.append(path)
    if kind == "code":
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text(_MODULE.substitute(id=partner_id, name=name))
        created.append(module)
    return created
