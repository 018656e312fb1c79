"""The incident spec parser and what incidents do at an instant."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carrierwatch.synthetic.incidents import (
    INCIDENT_KINDS,
    Incident,
    IncidentSpecError,
    PartnerIncidents,
    parse_incident,
    parse_span,
)

START = 1_772_409_600_000  # 2026-03-02T00:00:00Z
H = 3_600_000
D = 24 * H


def test_offsets_count_from_the_simulation_start() -> None:
    incident = parse_incident("feed_outage@fedex:2d12h+6h", START)
    assert (incident.kind, incident.partner) == ("feed_outage", "fedex")
    assert incident.start == START + 2 * D + 12 * H
    assert incident.end == incident.start + 6 * H
    assert incident.to_json_dict()["start_iso"] == "2026-03-04T12:00:00.000Z"


def test_iso_starts_are_utc_unless_they_carry_an_offset() -> None:
    assert parse_incident("peak_day@ups:2026-03-05+1d", START).start == START + 3 * D
    assert parse_incident("peak_day@ups:2026-03-05T06:30+1d", START).start == (
        START + 3 * D + 6 * H + 30 * 60_000)
    # 06:00 at UTC-05:00 is 11:00 UTC; the '+' of the duration is the last one
    incident = parse_incident("latency_drift@ups:2026-03-05T06:00-05:00+12h", START)
    assert incident.start == START + 3 * D + 11 * H
    east = parse_incident("latency_drift@ups:2026-03-05T06:00+02:00+12h", START)
    assert (east.start, east.end) == (START + 3 * D + 4 * H, START + 3 * D + 16 * H)


def test_parameters_override_the_defaults_and_are_labelled() -> None:
    spike = parse_incident("exception_spike@easypost:1d+6h,factor=20", START)
    assert spike.param("factor") == 20.0
    drift = parse_incident("latency_drift@aftership:1d+1d,max=2h", START)
    assert drift.param("max_ms") == 2 * H
    change = parse_incident("codebook_change@dhl:1d+1d,statuses=delivered/staged", START)
    assert change.param("statuses") == ("delivered", "staged")
    assert change.to_json_dict()["parameters"] == {"statuses": ["delivered", "staged"]}
    assert parse_incident("peak_day@ups:1d+1d", START).to_json_dict()["parameters"] == {
        "factor": 3.0, "slowdown": 0.4}


@pytest.mark.parametrize(("spec", "message"), [
    ("feed_outage", "expected KIND@partner:start+duration"),
    ("outage@fedex:1d+6h", "unknown kind 'outage'"),
    ("feed_outage@Fedex:1d+6h", "expected a partner id"),
    ("feed_outage@fedex1d+6h", "expected a partner id"),
    ("feed_outage@fedex:1d", "expected start+duration"),
    ("feed_outage@fedex:+6h", "expected start+duration"),
    ("feed_outage@fedex:1d+0h", "duration must be positive"),
    ("feed_outage@fedex:1d+6x", "is not a span"),
    ("feed_outage@fedex:yesterday+6h", "neither an ISO date/time nor an offset"),
    ("feed_outage@fedex:1d+6h,factor=3", "feed_outage takes no parameter 'factor'"),
    ("exception_spike@fedex:1d+6h,factor=lots", "factor must be a number"),
    ("exception_spike@fedex:1d+6h,factor=0.5", "factor must be between 1 and 1000"),
    ("exception_spike@fedex:1d+6h,factor", "expected name=value"),
    ("codebook_change@dhl:1d+6h,statuses=teleported", "statuses must be canonical statuses"),
    ("latency_drift@ups:1d+6h,max=0h", "max must be a positive span"),
    ("peak_day@ups:1d+6h,slowdown=2", "slowdown is a probability"),
])
def test_bad_specs_are_rejected_with_a_clear_message(spec: str, message: str) -> None:
    with pytest.raises(IncidentSpecError) as caught:
        parse_incident(spec, START)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"bad incident {spec!r}: ")


def _span_text(days: int, hours: int, minutes: int) -> str:
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"))
                   if n) or "0d"


@given(kind=st.sampled_from(INCIDENT_KINDS),
       partner=st.from_regex(r"[a-z][a-z0-9_]{1,31}", fullmatch=True),
       start=st.tuples(st.integers(0, 30), st.integers(0, 23), st.integers(0, 59)),
       duration=st.tuples(st.integers(0, 9), st.integers(0, 23), st.integers(0, 59)).filter(
           lambda t: any(t)))
def test_well_formed_specs_round_trip(kind: str, partner: str, start: tuple[int, int, int],
                                      duration: tuple[int, int, int]) -> None:
    spec = f"{kind}@{partner}:{_span_text(*start)}+{_span_text(*duration)}"
    incident = parse_incident(spec, START)
    days, hours, minutes = start
    assert incident.start == START + days * D + hours * H + minutes * 60_000
    days, hours, minutes = duration
    assert incident.end - incident.start == days * D + hours * H + minutes * 60_000
    assert (incident.kind, incident.partner, incident.spec) == (kind, partner, spec)


@given(st.text(max_size=60))
def test_any_text_parses_or_fails_with_an_incident_spec_error(text: str) -> None:
    try:
        incident = parse_incident(text, START)
    except IncidentSpecError as exc:
        assert exc.spec == text and exc.problem
    else:
        assert incident.kind in INCIDENT_KINDS and incident.end > incident.start


def test_parse_span_rejects_what_is_not_a_span() -> None:
    assert parse_span("0d") == 0
    assert parse_span("1d1h1m") == D + H + 60_000
    for text in ("", "d", "1h1d", "1.5h", "-1h", "1 h"):
        with pytest.raises(ValueError):
            parse_span(text)


def test_effects_at_an_instant() -> None:
    effects = PartnerIncidents([
        Incident("exception_spike", "x", 10 * H, 20 * H, {"factor": 10.0}),
        Incident("latency_drift", "x", 0, 10 * H, {"max_ms": 6 * H}),
        Incident("codebook_change", "x", 5 * H, 6 * H),
        Incident("peak_day", "x", 0, D),
        Incident("feed_outage", "x", 30 * H, 36 * H),
        Incident("feed_outage", "x", 35 * H, 40 * H),
    ])
    assert [effects.exception_factor(t * H) for t in (9, 10, 19, 20)] == [1.0, 10.0, 10.0, 1.0]
    assert [effects.extra_latency(t * H) for t in (0, 5, 10)] == [0, 3 * H, 0]
    assert effects.changed_code("in_transit", 5 * H) == "NEW_IN_TRANSIT"
    assert effects.changed_code("delivered", 5 * H) is None  # not one of the statuses
    assert effects.changed_code("in_transit", 6 * H) is None
    assert effects.volume_factor(D - 1) == 3.0 and effects.volume_factor(D) == 1.0
    assert effects.max_volume_factor(D, 2 * D) == 1.0
    assert effects.outage(29 * H) is None
    assert effects.outage(31 * H) == (30 * H, 40 * H)  # overlapping outages merge
    assert effects.outage(39 * H) == (30 * H, 40 * H)
