"""Numbers and times out of the contract's range become dead letters naming their path (#13).

The two reports of the issue (FedEx ``deliveryAttempts: "3000000000"`` that crashed replay's
store write, metro_courier ``attempt: 10**30`` that crashed ``normalize``), the plausible time
window (years 0001 and 9999, promises, ETAs) and its settings, and the shared check in
:meth:`Emitter.event` that covers transformers which read a number without checking it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from carrierwatch.core.model import Location, ms_to_iso
from carrierwatch.replay import iter_inputs, run_replay
from carrierwatch.settings import Settings, get_settings
from carrierwatch.storage import EmbeddedStore
from carrierwatch.transformers.base import Emitter
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000  # 2026-03-05T12:00:00Z
REGISTRY = load_registry(ROOT)  # the settings' defaults: 2000-01-01 to received + 365 days
FEDEX_RESULT = "$.output.completeTrackResults[0].trackResults[0]"


def _sample(partner_id: str, name: str) -> Any:
    return orjson.loads((ROOT / "samples" / partner_id / name).read_bytes())


def _fedex_with_attempts(value: Any) -> bytes:
    doc = _sample("fedex", "failed_attempts_then_delivered.json")
    result = doc["output"]["completeTrackResults"][0]["trackResults"][0]
    result["deliveryDetails"]["deliveryAttempts"] = value
    return orjson.dumps(doc)


def _metro(change: dict[int, dict[str, Any]]) -> bytes:
    doc = _sample("metro_courier", "failed_attempts_then_delivered.json")
    for index, fields in change.items():
        doc["updates"][index].update(fields)
    return json.dumps(doc).encode()  # json, not orjson: it writes integers beyond 64 bits


def test_fedex_delivery_attempts_beyond_int32_is_a_dead_letter_and_the_events_are_kept() -> None:
    good = REGISTRY.get("fedex").transform(_fedex_with_attempts("3"), RECEIVED)
    result = REGISTRY.get("fedex").transform(_fedex_with_attempts("3000000000"), RECEIVED)
    assert [(d.path, d.error) for d in result.dead_letters] == [
        (f"{FEDEX_RESULT}.deliveryDetails.deliveryAttempts",
         "3000000000 is outside the contract's range 0..2147483647")]
    assert [e.event_id for e in result.events] == [e.event_id for e in good.events]
    delivered = [e for e in result.events if e.status == "delivered"]
    assert [e.attempt_number for e in delivered] == [3]  # counted from the scans instead


@pytest.mark.parametrize("value", ["99999999999999999999999999999", 2**31, -1, 1e30, "1e30",
                                   "NaN", float("1e308")])
def test_fedex_delivery_attempts_extremes(value: Any) -> None:
    raw = (_fedex_with_attempts(value) if not isinstance(value, int) or value < 2**63
           else _fedex_with_attempts(str(value)))
    result = REGISTRY.get("fedex").transform(raw, RECEIVED)
    assert [d.path for d in result.dead_letters] == [
        f"{FEDEX_RESULT}.deliveryDetails.deliveryAttempts"]
    assert len(result.events) == 7
    assert all(e.attempt_number is None or 0 <= e.attempt_number < 2**31 for e in result.events)


def test_replay_stores_the_fedex_payload_whose_attempts_overflow_int32(tmp_path: Path) -> None:
    """Today's code normalizes it with exit 0 and then fails the whole batch in the store."""
    folder = tmp_path / "fedex"
    folder.mkdir()
    (folder / "big_attempts.json").write_bytes(_fedex_with_attempts("3000000000"))
    (folder / "good.json").write_bytes((ROOT / "samples/fedex/lifecycle_delivered.json")
                                       .read_bytes())
    with EmbeddedStore.open(tmp_path / "clickhouse", command="pytest numbers") as store:
        store.migrate()
        summary = run_replay(iter_inputs([folder]), store, REGISTRY)
        stored = store.fetch_events("fedex")
        dead = store.fetch_dead_letters("fedex")
    assert summary.dead_letters == 1
    assert [d.path for d in dead] == [f"{FEDEX_RESULT}.deliveryDetails.deliveryAttempts"]
    packages = {e.package_id for e in stored}
    assert len(packages) == 2 and len(stored) == summary.events
    assert max(e.attempt_number or 0 for e in stored) == 3


def test_metro_courier_attempt_of_10_to_the_30_is_a_dead_letter() -> None:
    result = REGISTRY.get("metro_courier").transform(_metro({2: {"attempt": 10**30}}), RECEIVED)
    assert [(d.path, d.error) for d in result.dead_letters] == [
        ("updates[2].attempt", "1e+30 is outside the contract's range 0..2147483647")]
    assert [e.status for e in result.events] == ["delivery_attempted", "delivery_attempted"]
    for event in result.events:
        orjson.dumps(event.to_json_dict())  # what normalize prints: no 64-bit overflow


def test_normalize_prints_no_traceback_for_an_attempt_of_10_to_the_30(tmp_path: Path) -> None:
    payload = tmp_path / "metro.json"
    payload.write_bytes(_metro({2: {"attempt": 10**30}}))
    run = subprocess.run([sys.executable, "-m", "carrierwatch", "normalize", "--partner",
                          "metro_courier", str(payload)], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin"},
                         check=False)
    assert run.returncode == 3, run.stderr
    assert "Traceback" not in run.stderr
    assert len(run.stdout.splitlines()) == 2
    assert json.loads(run.stderr.splitlines()[0])["path"] == "updates[2].attempt"


@pytest.mark.parametrize(("field", "value"), [
    ("at", "0001-01-01 00:00:00"), ("at", "9999-12-31 23:59:59"),
    ("at", "1999-12-31 17:59:59"),                    # Chicago: 1999-12-31T23:59:59Z
    ("at", "2027-03-07 00:00:00"),                    # more than a year after it was received
])
def test_event_times_outside_the_plausible_range_are_dead_letters(field: str, value: str) -> None:
    result = REGISTRY.get("metro_courier").transform(_metro({0: {field: value}}), RECEIVED)
    assert [d.path for d in result.dead_letters] == [f"updates[0].{field}"]
    assert "event_time out of range" in result.dead_letters[0].error
    assert len(result.events) == 2  # the other two updates


@pytest.mark.parametrize(("field", "name", "value"), [
    ("promise", "promised_by", "9999-12-31 23:59:59"),
    ("promise", "promised_by", "0001-01-01 00:00:00"),
    ("eta", "eta_end", "9999-12-31 23:59:59"),
    ("eta", "eta_end", "1970-01-01 00:00:00"),
])
def test_promises_and_etas_outside_the_plausible_range_are_dead_letters(
        field: str, name: str, value: str) -> None:
    result = REGISTRY.get("metro_courier").transform(_metro({1: {field: value}}), RECEIVED)
    assert [d.path for d in result.dead_letters] == [f"updates[1].{field}"]
    assert result.dead_letters[0].error.startswith(f"{name} out of range: ")
    assert len(result.events) == 3  # the event is kept, without the implausible time
    assert getattr(result.events[1], name) is None
    assert getattr(result.events[0], name) is not None


def test_fedex_commitment_in_year_9999_names_its_path_once() -> None:
    doc = _sample("fedex", "failed_attempts_then_delivered.json")
    dates = doc["output"]["completeTrackResults"][0]["trackResults"][0]["dateAndTimes"]
    index = next(i for i, d in enumerate(dates) if d["type"] == "COMMITMENT")
    dates[index]["dateTime"] = "9999-12-31T23:59:59"
    result = REGISTRY.get("fedex").transform(orjson.dumps(doc), RECEIVED)
    assert [d.path for d in result.dead_letters] == [
        f"{FEDEX_RESULT}.dateAndTimes[{index}].dateTime"]  # once, not once per event
    assert len(result.events) == 7 and all(e.promised_by is None for e in result.events)


def test_the_plausible_range_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _metro({0: {"at": "1995-06-01 12:00:00"}, 1: {"eta": "2026-03-20 12:00:00"}})
    strict = REGISTRY.get("metro_courier").transform(raw, RECEIVED)
    assert [d.path for d in strict.dead_letters] == ["updates[0].at"]

    monkeypatch.setenv("CARRIERWATCH_EARLIEST_EVENT_TIME", "1990-01-01T00:00:00Z")
    monkeypatch.setenv("CARRIERWATCH_MAX_FUTURE_SKEW_DAYS", "7")
    get_settings.cache_clear()
    try:
        registry = load_registry(ROOT)  # the settings' limits by default
    finally:
        get_settings.cache_clear()
    loose = registry.get("metro_courier").transform(raw, RECEIVED)
    assert [d.path for d in loose.dead_letters] == ["updates[1].eta"]  # 15 days ahead > 7
    assert len(loose.events) == 3 and ms_to_iso(loose.events[0].event_time) == \
        "1995-06-01T17:00:00.000Z"


def test_settings_validate_the_skew() -> None:
    from carrierwatch.core.limits import EventLimits

    with pytest.raises(ValueError, match="max_future_skew_days"):
        Settings(max_future_skew_days=-1)
    limits = Settings(earliest_event_time="2010-01-01", max_future_skew_days=1.5).event_limits
    assert limits == EventLimits(earliest=1_262_304_000_000, max_future=129_600_000)


# --- the shared check, for a transformer that does not check what it reads -------------------


def _emitter(received: int = RECEIVED) -> Emitter:
    return Emitter(b"{}", REGISTRY.get("metro_courier").context(received))


def test_emitter_drops_an_event_whose_time_is_out_of_range() -> None:
    emitter = _emitter()
    for when in (2**63, -(2**63), -62_135_596_800_000, 253_402_300_799_999):
        assert emitter.event(tracking_number="T", raw_code="DELIVERED", event_time=when,
                             codes=("DELIVERED",), paths={"event_time": "$.t"}) is None
    kept = emitter.event(tracking_number="T", raw_code="DELIVERED", event_time=RECEIVED,
                         codes=("DELIVERED",))
    assert kept is not None and emitter.result.events == [kept]
    assert [d.path for d in emitter.result.dead_letters] == ["$.t"] * 4
    assert emitter.result.dead_letters[2].error == (
        "event_time out of range: 0001-01-01T00:00:00.000Z is before the earliest plausible "
        "time 2000-01-01T00:00:00.000Z")


def test_emitter_clears_optional_numbers_out_of_range_and_keeps_the_event() -> None:
    emitter = _emitter()
    with emitter.element("$.items[4]"):
        event = emitter.event(
            tracking_number="T", raw_code="DELIVERED", event_time=RECEIVED, codes=("DELIVERED",),
            attempt_number=2**31, promised_by=2**62, eta_start=RECEIVED, eta_end=-1,
            location=Location("US", "US-TX", "Austin", "787", math.nan, 200.0),
            partner_received_time=RECEIVED,
            paths=lambda name: {"attempt_number": "$.items[4].n"}.get(name))
    assert event is not None
    assert (event.attempt_number, event.promised_by, event.eta_start, event.eta_end) == \
        (None, None, RECEIVED, None)
    assert event.location == Location("US", "US-TX", "Austin", "787")
    assert [(d.path, d.error.split(":")[0]) for d in emitter.result.dead_letters] == [
        ("$.items[4]", "promised_by out of range"),
        ("$.items[4]", "eta_end out of range"),
        ("$.items[4].n", "attempt_number out of range"),
        ("$.items[4]", "location out of range"),
    ]


@pytest.mark.parametrize(("ms", "text"), [
    (-62_135_596_800_000, "0001-01-01T00:00:00.000Z"),
    (-59_011_459_200_000, "0100-01-01T00:00:00.000Z"),
    (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    (253_402_300_800_000, "+010000-01-01T00:00:00.000Z"),
    (-62_167_219_200_000, "0000-01-01T00:00:00.000Z"),
    (-62_167_219_200_001, "-000001-12-31T23:59:59.999Z"),
    (1_772_712_000_123, "2026-03-05T12:00:00.123Z"),
    (2**53 + 1, "+287396-10-12T08:59:00.993Z"),
])
def test_ms_to_iso_is_iso_8601_for_every_year(ms: int, text: str) -> None:
    assert ms_to_iso(ms) == text


@pytest.mark.parametrize("module_name", ["carrierwatch.core.limits", "carrierwatch.core.model",
                                         "carrierwatch.transformers.base",
                                         "carrierwatch.transformers.csv_mapping",
                                         "carrierwatch.transformers.json_mapping"])
def test_doctests_of_the_modules_that_check_numbers(module_name: str) -> None:
    import doctest
    import importlib

    failures, attempted = doctest.testmod(importlib.import_module(module_name))
    assert attempted > 0 and failures == 0


@pytest.mark.parametrize(("position", "path", "message"), [
    (["NaN", 13.4], "[0].pos[0]", "nan is not a finite number"),
    ([52.5, "-inf"], "[0].pos[1]", "-inf is not a finite number"),
    ([1e308, 13.4], "[0].pos[0]", "1e+308 is outside -90..90"),
    ([52.5, 180.5], "[0].pos[1]", "180.5 is outside -180..180"),
])
def test_config_only_coordinates_must_be_finite_and_on_the_globe(
        position: list[Any], path: str, message: str) -> None:
    from carrierwatch.core.codebook import Codebook
    from carrierwatch.core.partner import PartnerSpec
    from carrierwatch.transformers import json_mapping
    from carrierwatch.transformers.base import TransformContext

    spec = PartnerSpec(id="bike_fleet", display_name="Bike fleet", transformer="json_mapping",
                       mapping={"events": "@", "tracking_number": "ref", "code": "kind",
                                "time": {"path": "ts", "format": "epoch_ms"},
                                "location": {"latitude": "pos[0]", "longitude": "pos[1]"}})
    book = Codebook.from_yaml("version: 1\npartner: bike_fleet\ncodes:\n"
                              "  handover: {status: delivered, confidence: 1.0}\n")
    events = [{"ref": "BF-1", "kind": "handover", "ts": 1772460300000, "pos": position},
              {"ref": "BF-2", "kind": "handover", "ts": 1772460300000, "pos": [52.5, 13.4]}]
    result = json_mapping.transform(orjson.dumps(events), TransformContext(spec, book, RECEIVED))
    assert [(d.path, d.error) for d in result.dead_letters] == [(path, message)]
    assert [e.tracking_number for e in result.events] == ["BF-2"]
    assert result.events[0].location is not None and result.events[0].location.latitude == 52.5


def test_the_time_range_ends_where_the_core_state_machine_does() -> None:
    from carrierwatch.core import pipeline, state
    from carrierwatch.core.limits import TIME_MAX_MS, TIME_MIN_MS

    assert (TIME_MIN_MS, TIME_MAX_MS) == (0, state._MAX_TIME) == (0, pipeline._MAX_TIME)


def test_events_beyond_the_state_machines_range_are_dead_letters_not_too_late(
        tmp_path: Path) -> None:
    """A payload received in 2248-11 (a bad clock) with events after 2248-09-26: today's code
    stores them but counts them as too late ("invalid_time"), out of every metric, silently."""
    import os

    folder = tmp_path / "metro_courier"
    folder.mkdir()
    doc = _sample("metro_courier", "failed_attempts_then_delivered.json")
    for update, at in zip(doc["updates"], ["2248-09-01 10:00:00", "2248-10-01 10:00:00",
                                           "2248-10-02 10:00:00"], strict=True):
        update["at"] = at
        del update["eta"], update["promise"]
    payload = folder / "far.json"
    payload.write_bytes(orjson.dumps(doc))
    os.utime(payload, (8_800_000_000, 8_800_000_000))  # received 2248-11-11
    with EmbeddedStore.open(tmp_path / "clickhouse", command="pytest numbers") as store:
        store.migrate()
        summary = run_replay(iter_inputs([folder]), store, REGISTRY)
        stored = store.fetch_events("metro_courier")
        dead = store.fetch_dead_letters("metro_courier")
    assert (summary.events, summary.too_late, summary.dead_letters) == (1, 0, 2)
    assert [ms_to_iso(e.event_time) for e in stored] == ["2248-09-01T15:00:00.000Z"]
    assert sorted(d.path for d in dead) == ["updates[1].at", "updates[2].at"]


def test_the_cli_prints_days_with_four_digit_years() -> None:
    from carrierwatch.cli import _iso_day  # the replay scorecard's period

    assert [_iso_day(ms) for ms in (-62_135_596_800_000, -59_011_459_200_000, RECEIVED)] == [
        "0001-01-01", "0100-01-01", "2026-03-05"]
