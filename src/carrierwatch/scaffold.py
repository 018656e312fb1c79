"""``carrierwatch partners add ID``: scaffold a new partner, never a hand copy.

``--kind config`` (default) onboards a simple JSON webhook with YAML alone: partner metadata with
a ``json_mapping`` block, a starter codebook and sample payloads; with ``--format csv``, a CSV
batch drop with a ``csv_mapping`` block and CSV samples. The mapping block lists every key the
generic transformers read, the optional ones commented out, with a note on each. ``--kind code``
adds a Python transformer module built on :class:`~carrierwatch.transformers.base.Emitter` for
JSON feeds whose shape needs code. Either way the new partner loads at once, normalizes its
starter samples and is picked up by the conformance, golden and fuzz suites (the golden test then
asks for expected files).
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
# and contract; docs/onboarding.md walks from a sample file to golden tests.
id: $id
display_name: $name
$feed
transformer: $transformer
payload_schema_version: "1"
auth:
  scheme: $auth_scheme
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

_FEED = {"json": "kind: courier\nformat: json\ndelivery: webhook",
         "csv": "kind: batch\nformat: csv\ndelivery: batch"}
_AUTH_SCHEME = {"json": "hmac_sha256_hex",
                "csv": "none   # files are read from a drop folder: no signature (header unused)"}

# The mapping blocks name every key of the mapping models (tests/test_scaffold.py checks it):
# optional keys are commented out, each with what it does. Keep them in step with
# carrierwatch.transformers.json_mapping and csv_mapping.
_MAPPING = {"json": '''\
# How the feed reads (transformer json_mapping): JMESPath paths relative to each event, "$."
# from the payload root. Uncomment what the feed has; every key is explained in
# src/carrierwatch/transformers/json_mapping.py, the whole walk-through in docs/onboarding.md.
mapping:
  events: events                  # where the list of events is ("@": the payload is the list)
  error: error                    # a non-empty value marks the partner's error response …
  error_code: error.code          # … named in the dead letter
  error_message: error.message
  tracking_number: tracking_number
  # discriminator: ship_date      # tells a reused tracking number's packages apart
  # shipment_id: order_id         # the shipper's order reference
  code: [status]                  # codebook keys, most specific first
  reason_code: reason             # the feed's own reason code, looked up as <prefix><value>;
  reason_prefix: "reason/"        # its `reason` overrides the status's
  # Times: `format` is iso (ISO 8601), epoch_s, epoch_ms or a strptime pattern, e.g.
  #   {path: at, format: "%d/%m/%Y %H:%M", zone_path: tz}. A time without an offset is read in
  #   the zone of `zone_path` (an IANA name in the event), else the fixed `zone`, else its
  #   location's zone, else default_timezone (flagged as a guess). `date_only` (reject,
  #   start_of_day, end_of_day) says what a date without a time of day means.
  time: {path: time, format: iso}
  # time: {path: time, format: "%Y-%m-%d %H:%M:%S", zone_path: tz, zone: America/Chicago, date_only: reject}
  location:                       # coarse only: never a street address
    country: country              # else default_country
    region: state
    city: city
    postal_code: postal_code      # only its first 3 characters are kept
    # latitude: lat               # rounded to ~100 m
    # longitude: lon
    # city_region_postal: place   # one value written "City, ST 12345"; other shapes are dropped
  attempt: attempt                # a whole number
  proof: {path: proof, values: {photo: photo, signature: signature, pin: pin, none: none}}
  # eta_start: {path: eta_from}   # optional times: format and zone default to `time`'s
  eta_end: {path: eta}            # a bare date: the end of that day
  promised_by: {path: promised_by, date_only: end_of_day}   # the delivery promise
  service_level: {path: service, lower: true}   # lower-cased to match contract.transit_days
  # partner_received_time: {path: "$.sent_at"}  # when the partner says it got the event''',
                "csv": '''\
# How the files read (transformer csv_mapping): one row is one event, and each key names a
# column. Uncomment what the files have; every key is explained in
# src/carrierwatch/transformers/csv_mapping.py, the whole walk-through in docs/onboarding.md.
mapping:
  csv:
    delimiter: ","                # ";" or "\\t" are common too
    quotechar: '"'
    # escapechar: "\\\\"            # when quotes inside a cell are escaped, not doubled
    doublequote: true             # "" inside a quoted cell is one "
    encoding: utf-8               # a BOM is skipped; cp1252, latin-1, utf-16 … work too
    skip_rows: 0                  # records before the header (a report title)
    header: true                  # false: no header row, `columns` names the cells by position
    # columns: [tracking_number, status, reason, scanned_at, time_zone]   # must be in the header
    # optional_columns: [promised_by]   # may be in the header
    unknown_columns: ignore       # reject: a header with other columns is a dead letter
    max_cell_chars: 1000          # a longer value in a column the mapping reads: row rejected
  tracking_number: tracking_number
  # discriminator: ship_date      # tells a reused tracking number's packages apart
  # shipment_id: order_id         # the shipper's order reference
  code: [status]                  # codebook keys, most specific first
  reason_code: reason             # the file's own reason code, looked up as <prefix><value>;
  reason_prefix: "reason/"        # its `reason` overrides the status's
  # Times: `format` is iso (ISO 8601), epoch_s, epoch_ms or a strptime pattern (here day first).
  #   A time without an offset is read in the zone of `zone_path` (an IANA name in a column),
  #   else the fixed `zone`, else its location's zone, else default_timezone (flagged as a
  #   guess). `date_only` (reject, start_of_day, end_of_day): a date without a time of day.
  time: {path: scanned_at, format: "%d/%m/%Y %H:%M", zone_path: time_zone}
  # time: {path: scanned_at, format: iso, zone: America/Chicago, date_only: reject}
  location:                       # coarse only: never a street address
    country: country              # else default_country
    region: state
    city: city
    postal_code: postal_code      # only its first 3 characters are kept
    # latitude: lat               # rounded to ~100 m
    # longitude: lon
    # city_region_postal: location   # one cell written "City, ST 12345"; other shapes dropped
  attempt: attempt                # a whole number
  proof: {path: proof, values: {photo: photo, signature: signature, pin: pin, none: none}}
  # eta_start: {path: eta_from}   # optional times: format and zone default to `time`'s
  # eta_end: {path: eta}
  promised_by: {path: promised_by, format: "%d/%m/%Y", date_only: end_of_day}   # the promise
  service_level: {path: service, lower: true}   # lower-cased to match contract.transit_days
  # partner_received_time: {path: exported_at}  # when the partner says it got the event'''}

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

_CSV_HEADER = ("tracking_number,status,reason,scanned_at,time_zone,city,state,postal_code,"
               "country,attempt,proof,promised_by,service\n")
_CSV_SAMPLES = {
    "lifecycle_delivered.csv": _CSV_HEADER + '''\
$prefix-0001,PICKED_UP,,02/03/2026 09:10,America/Chicago,Austin,TX,78701,US,,,04/03/2026,Standard
$prefix-0001,ATTEMPTED,NOT_HOME,02/03/2026 15:40,America/Chicago,Austin,TX,,US,1,,04/03/2026,Standard
$prefix-0001,DELIVERED,,03/03/2026 11:05,America/Chicago,Austin,TX,,US,2,photo,04/03/2026,Standard
''',
    "unknown_code.csv": _CSV_HEADER + '''\
$prefix-0002,SORTED_AT_DEPOT,,02/03/2026 10:00,UTC,,,,,,,,
''',
    "malformed_time.csv": _CSV_HEADER + '''\
$prefix-0003,IN_TRANSIT,,yesterday,America/Chicago,,,,,,,,
$prefix-0003,DELIVERED,,03/03/2026 12:00,UTC,,,,,,,,
''',
    "error_wrong_header.csv": '''\
Tracking #;Status;When
$prefix-0004;DELIVERED;03/03/2026 12:00
''',
}

_SAMPLES = {
    "lifecycle_delivered.json": '''\
{"events": [
  {"tracking_number": "$prefix-0001", "status": "PICKED_UP", "time": "2026-03-02T09:10:00-06:00",
   "city": "Austin", "state": "TX", "postal_code": "78701", "country": "US"},
  {"tracking_number": "$prefix-0001", "status": "ATTEMPTED", "reason": "NOT_HOME", "attempt": 1,
   "time": "2026-03-02T15:40:00-06:00", "city": "Austin", "state": "TX", "country": "US"},
  {"tracking_number": "$prefix-0001", "status": "DELIVERED", "attempt": 2, "proof": "photo",
   "time": "2026-03-03T11:05:00-06:00", "city": "Austin", "state": "TX", "country": "US",
   "promised_by": "2026-03-04", "service": "Standard"}
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
                     kind: str = "config", feed_format: str = "json", *,
                     timezone: str | None = None, country: str | None = None) -> list[Path]:
    """Create the files of a new partner under ``home``; return the paths created.

    ``feed_format`` is ``json`` (a webhook) or ``csv`` (a batch drop, ``kind`` config only).
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
    if feed_format not in _MAPPING:
        raise ConfigurationError(f"unknown format {feed_format!r} (json or csv)")
    if feed_format == "csv" and kind != "config":
        raise ConfigurationError("a CSV partner is onboarded by configuration: --format csv "
                                 "goes with --kind config")
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
    transformer = f"{feed_format}_mapping" if kind == "config" else partner_id
    mapping = (_MAPPING[feed_format] if kind == "config"
               else "# no mapping: the transformer module reads the feed")
    targets["partner"].parent.mkdir(parents=True, exist_ok=True)
    targets["partner"].write_text(_PARTNER.substitute(
        id=partner_id, name=name, transformer=transformer, mapping=mapping,
        feed=_FEED[feed_format], auth_scheme=_AUTH_SCHEME[feed_format],
        place=_place_lines(timezone, country),
        contract_zone=timezone or "UTC   # the partner's zone was not given: set it here too"))
    created.append(targets["partner"])
    targets["codebook"].parent.mkdir(parents=True, exist_ok=True)
    targets["codebook"].write_text(_CODEBOOK.substitute(id=partner_id))
    created.append(targets["codebook"])
    targets["samples"].mkdir(parents=True)
    prefix = partner_id.upper().replace("_", "")[:6]
    for file_name, text in (_CSV_SAMPLES if feed_format == "csv" else _SAMPLES).items():
        path = targets["samples"] / file_name
        path.write_text(Template(text).substitute(prefix=prefix))
        created.append(path)
    if kind == "code":
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text(_MODULE.substitute(id=partner_id, name=name))
        created.append(module)
    return created
