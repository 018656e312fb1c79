"""Hypothesis fuzzing with extreme values, pushed through the transformers *and* a real store.

Every partner's samples get leaves (JSON values, CSV cells) replaced by values at and beyond the
data contract's limits: integers around ±2**31, ±2**63 and 10**30, floats up to 1e308 and NaN or
infinity written as text or as JSON literals, years 0001 and 9999 in each partner's time formats,
NUL bytes and 100,000-character strings. The property, for every input:

* no exception escapes the transformer (it is called directly, not through the safety net);
* every event is valid Avro of the contract, has its numbers in the contract's ranges, and is
  storable: written with :func:`carrierwatch.sink.write_batch` to a real chDB store it reads
  back unchanged (ClickHouse would otherwise refuse it, or silently clamp a time it cannot hold);
* every rejected value is a dead letter: a mutated payload that yields fewer events than its
  sample yields a dead letter that the sample did not, and every dead letter names a path.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from carrierwatch.core.model import CanonicalEvent, ms_to_iso
from carrierwatch.sink import SinkBatch, write_batch
from carrierwatch.storage import EmbeddedStore, Store
from carrierwatch.transformers.base import PayloadError, TransformResult, run_transform
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000  # 2026-03-05T12:00:00Z, the samples' week
REGISTRY = load_registry(ROOT)
PARTNERS = REGISTRY.ids()
JSON_PARTNERS = [p.id for p in REGISTRY if p.spec.format == "json"]
CSV_PARTNERS = [p.id for p in REGISTRY if p.spec.format == "csv"]
SCHEMA = fastavro.parse_schema(
    json.loads(max((ROOT / "schemas" / "canonical_event").glob("v*.avsc"),
                   key=lambda p: int(p.stem[1:])).read_text()))
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_LONG = settings(FUZZ, max_examples=600, derandomize=False)  # @slow: minutes, not seconds

LONG = 100_000
INT32_MAX = 2**31 - 1                    # Avro int, the store's Int32
EARLIEST = 946_684_800_000               # 2000-01-01T00:00:00Z
MAX_FUTURE = 365 * 86_400_000            # a year after the payload was received
EXTREME_INTEGERS = [2**31, 2**31 - 1, -(2**31), -(2**31) - 1, 2**63, 2**63 - 1, -(2**63),
                    2**64, 10**30, -(10**30), -1, 0,
                    253_402_300_800, -62_135_596_800,            # years 10000 and 1, epoch s
                    253_402_300_800_000, -62_135_596_800_000]    # the same in epoch ms
EXTREME_FLOATS = [1e308, -1e308, 1.7976931348623157e308, 5e-324, -0.0, 1e30, 3e9, 2.5]
EXTREME_TEXTS = [
    "NaN", "nan", "-inf", "Infinity", "1e308", "-1e308", "1e999", "3000000000", "-2147483649",
    "9223372036854775808", str(10**30), "1" * 5000,
    # years 0001 and 9999 in the partners' time formats (ISO, local, dates, compact, CSV)
    "0001-01-01T00:00:00Z", "0001-01-01T00:00:00", "0001-01-01T00:00:00-14:00", "0001-01-01",
    "9999-12-31T23:59:59Z", "9999-12-31T23:59:59.999999+14:00", "9999-12-31T23:59:59",
    "9999-12-31", "0001-01-01 00:00:00", "9999-12-31 23:59:59", "0001-01-01 00:00",
    "9999-12-31 23:59", "00010101", "99991231", "000000", "235959", "1899-12-31T23:59:59Z",
    "2300-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "2200-06-01T00:00:00Z",
    # NUL bytes and very long strings
    "\x00", "A\x00B", "\x00" * 64, "x" * LONG, "\x00" + "y" * (LONG - 1),
]
# JSON literals orjson refuses (a whole-payload dead letter): spliced in as bytes
NON_JSON_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e999"]

EXTREMES: list[Any] = [*EXTREME_INTEGERS, *EXTREME_FLOATS, *EXTREME_TEXTS]


def _extreme(data: st.DataObject) -> Any:
    """One of :data:`EXTREMES`, drawn by index so that a failure report stays readable."""
    value = EXTREMES[data.draw(st.integers(0, len(EXTREMES) - 1), label="extreme")]
    note(f"extreme value: {value!r:.60} ({len(value) if isinstance(value, str) else ''})")
    return value


def _samples(partner_id: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((ROOT / "samples" / partner_id).glob("*"))]


def _json_samples(partner_id: str) -> list[Any]:
    docs = []
    for raw in _samples(partner_id):
        try:
            docs.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return docs


def _csv_samples(partner_id: str) -> list[list[list[str]]]:
    tables = []
    for raw in _samples(partner_id):
        try:
            rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
        except (UnicodeDecodeError, csv.Error):
            continue
        if len(rows) > 1:
            tables.append(rows)
    return tables


def _leaves(doc: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths of the scalar values of a JSON document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _leaves(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _leaves(value, (*prefix, index))
    elif prefix:
        yield prefix


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


# --- the property -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One real chDB store for the whole module (opening one costs about a second)."""
    opened = EmbeddedStore.open(tmp_path_factory.mktemp("fuzz") / "clickhouse",
                                command="pytest fuzz extremes")
    try:
        opened.migrate()
        yield opened
    finally:
        opened.close()


_received = itertools.count(RECEIVED)


def _transform(partner_id: str, raw: bytes, received: int) -> TransformResult:
    partner = REGISTRY.get(partner_id)
    ctx = partner.context(received)
    try:
        return partner.transformer(raw, ctx)  # no safety net: nothing else may escape
    except PayloadError:  # the designed "whole payload is bad" signal: one dead letter
        result = run_transform(partner.transformer, raw, ctx)
        assert len(result.dead_letters) == 1 and not result.events
        return result


def _check_ranges(event: CanonicalEvent, received: int) -> None:
    lowest, highest = EARLIEST, received + MAX_FUTURE  # the defaults of the settings
    for name in ("event_time", "promised_by", "eta_start", "eta_end", "partner_received_time"):
        value = getattr(event, name)
        assert value is None or (type(value) is int and lowest <= value <= highest), \
            (name, value, ms_to_iso(value) if isinstance(value, int) else None)
    assert event.attempt_number is None or 0 <= event.attempt_number <= INT32_MAX
    assert math.isfinite(event.confidence) and 0.0 <= event.confidence <= 1.0
    if event.location is not None:
        for value, bound in ((event.location.latitude, 90), (event.location.longitude, 180)):
            assert value is None or (math.isfinite(value) and -bound <= value <= bound)
    # the printed form is ISO 8601 with four-digit years
    for name, text in event.to_json_dict().items():
        if name in ("event_time", "received_time") or (text and name.endswith(("_by", "_start",
                                                                                 "_end"))):
            assert isinstance(text, str) and len(text) == 24 and text[4] == "-", (name, text)


def _store_and_read_back(store: Store, partner_id: str, result: TransformResult) -> None:
    write_batch(store, SinkBatch(events=list(result.events),
                                 dead_letters=list(result.dead_letters)))
    expected: dict[str, list[dict[str, Any]]] = {}
    for event in result.events:
        expected.setdefault(event.event_id, []).append(event.to_record())
    packages = {event.package_id for event in result.events}
    stored = [e for package in packages for e in store.fetch_events(partner_id, package)
              if e.event_id in expected]
    assert {e.event_id for e in stored} == set(expected)
    for event in stored:
        assert event.to_record() in expected[event.event_id], event.event_id


def check_extremes(store: Store, partner_id: str, raw: bytes, baseline: TransformResult | None
                   ) -> None:
    received = next(_received)  # a later receipt per input: the store keeps the latest row
    result = _transform(partner_id, raw, received)
    for event in result.events:
        fastavro.validation.validate(event.to_record(), SCHEMA, raise_errors=True)
        _check_ranges(event, received)
        orjson.dumps(event.to_json_dict())  # what `normalize` prints
    for dead in result.dead_letters:
        assert dead.raw == raw and dead.path and dead.error
        orjson.dumps(dead.to_json_dict())
    if baseline is not None and len(result.events) < len(baseline.events):
        before = {(d.path, d.error) for d in baseline.dead_letters}
        assert {(d.path, d.error) for d in result.dead_letters} - before, \
            "events were lost without a dead letter"
    _store_and_read_back(store, partner_id, result)


# --- the inputs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("partner_id", JSON_PARTNERS)
@FUZZ
@given(data=st.data())
def test_extreme_json_values(store: Store, partner_id: str, data: st.DataObject) -> None:
    _extreme_json_case(store, partner_id, data)


@pytest.mark.slow
@pytest.mark.parametrize("partner_id", JSON_PARTNERS)
@FUZZ_LONG
@given(data=st.data())
def test_extreme_json_values_long(store: Store, partner_id: str, data: st.DataObject) -> None:
    _extreme_json_case(store, partner_id, data)


def _extreme_json_case(store: Store, partner_id: str, data: st.DataObject) -> None:
    docs = _json_samples(partner_id)
    assert docs, f"{partner_id} is a JSON feed without parseable JSON samples"
    original = data.draw(st.sampled_from(docs))
    doc = orjson.loads(orjson.dumps(original))
    leaves = list(_leaves(doc))
    if not leaves:
        return
    for _ in range(data.draw(st.integers(1, 3))):
        _set(doc, data.draw(st.sampled_from(leaves)), _extreme(data))
    try:
        raw = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: written as JSON text instead
        raw = json.dumps(doc).encode()
    baseline = _transform(partner_id, orjson.dumps(original), RECEIVED)
    check_extremes(store, partner_id, raw, baseline)


@pytest.mark.parametrize("partner_id", JSON_PARTNERS)
@FUZZ
@given(data=st.data())
def test_non_json_numbers(store: Store, partner_id: str, data: st.DataObject) -> None:
    """A number of a sample replaced by NaN, Infinity or 1e999 (not JSON, yet sent by some
    JSON writers): one dead letter, never a float that reaches an event."""
    raw = data.draw(st.sampled_from(_samples(partner_id)))
    digits = [i for i, byte in enumerate(raw) if chr(byte).isdigit()
              and i > 0 and raw[i - 1:i] in (b":", b" ", b"[")]
    if not digits:
        return
    at = data.draw(st.sampled_from(digits))
    end = at
    while end < len(raw) and chr(raw[end]) in "0123456789.eE+-":
        end += 1
    mutated = raw[:at] + data.draw(st.sampled_from(NON_JSON_NUMBERS)) + raw[end:]
    check_extremes(store, partner_id, mutated, None)


@pytest.mark.parametrize("partner_id", CSV_PARTNERS)
@FUZZ
@given(data=st.data())
def test_extreme_csv_cells(store: Store, partner_id: str, data: st.DataObject) -> None:
    _extreme_csv_case(store, partner_id, data)


@pytest.mark.slow
@pytest.mark.parametrize("partner_id", CSV_PARTNERS)
@FUZZ_LONG
@given(data=st.data())
def test_extreme_csv_cells_long(store: Store, partner_id: str, data: st.DataObject) -> None:
    _extreme_csv_case(store, partner_id, data)


def _extreme_csv_case(store: Store, partner_id: str, data: st.DataObject) -> None:
    tables = _csv_samples(partner_id)
    assert tables, f"{partner_id} is a CSV feed without readable samples"
    original = data.draw(st.sampled_from(tables))
    rows = [list(row) for row in original]
    cells = [(r, c) for r in range(1, len(rows)) for c in range(len(rows[r]))]
    for _ in range(data.draw(st.integers(1, 3))):
        r, c = data.draw(st.sampled_from(cells))
        rows[r][c] = str(_extreme(data))

    def render(table: list[list[str]]) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(table)
        return out.getvalue().encode()

    baseline = _transform(partner_id, render(original), RECEIVED)
    check_extremes(store, partner_id, render(rows), baseline)


# --- the two reports of issue #13, as fixed examples --------------------------------------------


def test_examples_of_the_issue_are_stored(store: Store) -> None:
    """FedEx ``deliveryAttempts: "3000000000"`` and metro_courier ``attempt: 10**30``."""
    fedex = orjson.loads((ROOT / "samples/fedex/failed_attempts_then_delivered.json").read_bytes())
    details = fedex["output"]["completeTrackResults"][0]["trackResults"][0]["deliveryDetails"]
    details["deliveryAttempts"] = "3000000000"
    check_extremes(store, "fedex", orjson.dumps(fedex), None)
    metro = orjson.loads(
        (ROOT / "samples/metro_courier/failed_attempts_then_delivered.json").read_bytes())
    metro["updates"][2]["attempt"] = 10**30
    check_extremes(store, "metro_courier", json.dumps(metro).encode(), None)
