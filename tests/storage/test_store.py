"""The Store contract on every backend: round trips, idempotent writes, binary safety, TTLs."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from carrierwatch.core.errors import StorageError
from carrierwatch.core.model import CanonicalEvent, DeadLetter, Location, event_id
from carrierwatch.storage import RawEvent, Store, dead_letter_id

T0 = 1_772_712_000_000  # 2026-03-05T12:00:00Z
STATUSES = ["info_received", "picked_up", "in_transit", "out_for_delivery",
            "delivery_attempted", "delivered", "exception"]


def make_events(count: int, seed: int = 3) -> list[CanonicalEvent]:
    """Events covering every field, None and set, location present and absent."""
    rnd = random.Random(seed)
    events = []
    for i in range(count):
        partner = ("fedex", "ups", "local_courier")[i % 3]
        package = f"{partner}:{rnd.randrange(10**9):09d}"
        status = STATUSES[i % len(STATUSES)]
        event_time = T0 + rnd.randrange(86_400_000)
        full = i % 2 == 0
        events.append(CanonicalEvent(
            event_id=event_id(partner, package, status, event_time),
            partner_id=partner,
            package_id=package,
            tracking_number=package.split(":", 1)[1],
            status=status,
            confidence=rnd.choice([0.0, 0.5, 0.875, 1.0]),
            raw_code=f"C{i % 17}",
            event_time=event_time,
            received_time=event_time + rnd.randrange(1, 3_600_000),
            timezone_ambiguous=i % 5 == 0,
            event_time_local="2026-03-05T07:00:00" if full else None,
            shipment_id=f"S{i}" if full else None,
            reason="recipient_not_available" if status == "delivery_attempted" else None,
            location=Location("US", "US-TN", "Memphis", "381", 35.149, -90.049) if full
            else (Location(country="DE", postal_prefix="101") if i % 3 == 0 else None),
            promised_by=event_time + 86_400_000 if full else None,
            eta_start=event_time + 3_600_000 if i % 4 == 0 else None,
            eta_end=event_time + 7_200_000 if i % 4 == 0 else None,
            attempt_number=(i % 3) + 1 if status == "delivery_attempted" else None,
            proof_of_delivery="signature" if status == "delivered" else None,
            service_level=("ground", "express", None)[i % 3],
            synthetic=i % 11 == 0,
            payload_schema_version=("1", "2")[i % 2],
            partner_received_time=event_time + 1_000 if i % 6 == 0 else None,
        ))
    return events


def sort_key(event: CanonicalEvent) -> tuple[str, str, int, str]:
    return (event.partner_id, event.package_id, event.event_time, event.event_id)


# Aggregates that a double insert must not change (FINAL collapses duplicates by key).
EVENT_AGGREGATES = (
    "SELECT count(), uniqExact(event_id), sum(confidence), sum(toUnixTimestamp64Milli(event_time)),"
    " countIf(status = 'delivered'), sum(ifNull(attempt_number, 0)) FROM canonical_events FINAL"
)
DEAD_LETTER_AGGREGATES = (
    "SELECT count(), sum(length(raw)), sum(toUnixTimestamp64Milli(received_time)),"
    " groupArraySorted(100)(dead_letter_id) FROM dead_letters FINAL"
)

DEAD_LETTERS = [
    DeadLetter("fedex", T0, "invalid JSON: Expecting value", "$", b"\xff\xfe\x00not json\x80"),
    DeadLetter("fedex", T0 + 1, "missing field", "output.completeTrackResults[0].trackResults[1]",
               b'{"output": {}}'),
    DeadLetter("ups", T0 + 2, "bad date", "trackResponse.shipment[0].activity[3].date",
               bytes(range(256))),
    DeadLetter("ups", T0 + 3, "empty payload", "$", b""),
]


def test_canonical_events_round_trip(migrated_store: Store) -> None:
    events = make_events(60)
    assert migrated_store.insert_events(events) == 60
    assert migrated_store.fetch_events() == sorted(events, key=sort_key)
    ups = [e for e in events if e.partner_id == "ups"]
    assert migrated_store.fetch_events(partner_id="ups") == sorted(ups, key=sort_key)
    one = ups[0]
    assert migrated_store.fetch_events(partner_id="ups", package_id=one.package_id) == [one]


def test_location_is_flattened_to_columns(migrated_store: Store) -> None:
    event = make_events(1)[0]
    migrated_store.insert_events([event])
    row = migrated_store.query_dicts(
        "SELECT location_country, location_region, location_city, location_postal_prefix,"
        " location_latitude, location_longitude, event_time FROM canonical_events")[0]
    assert event.location is not None
    assert row == {
        "location_country": "US", "location_region": "US-TN", "location_city": "Memphis",
        "location_postal_prefix": "381", "location_latitude": 35.149,
        "location_longitude": -90.049,
        "event_time": datetime.fromtimestamp(event.event_time / 1000, tz=UTC),
    }


def test_double_insert_of_events_and_dead_letters_is_idempotent(migrated_store: Store) -> None:
    events = make_events(200)
    migrated_store.insert_events(events)
    migrated_store.insert_dead_letters(DEAD_LETTERS)
    once = (migrated_store.query(EVENT_AGGREGATES), migrated_store.query(DEAD_LETTER_AGGREGATES))
    assert once[0][0][:2] == (200, 200)
    assert once[1][0][0] == len(DEAD_LETTERS)

    migrated_store.insert_events(events)                 # a replay of the same input
    migrated_store.insert_events(list(reversed(events)))  # and another, in another order
    migrated_store.insert_dead_letters(DEAD_LETTERS)
    twice = (migrated_store.query(EVENT_AGGREGATES), migrated_store.query(DEAD_LETTER_AGGREGATES))
    assert twice == once
    assert migrated_store.fetch_events() == sorted(events, key=sort_key)
    # the physical rows really are duplicated until merged: FINAL is what makes reads exact
    assert migrated_store.query("SELECT count() FROM canonical_events")[0][0] >= 400


def test_latest_received_version_of_an_event_wins(migrated_store: Store) -> None:
    first = make_events(1)[0]
    richer = CanonicalEvent(**{**first.to_record(), "location": Location(city="Nashville"),
                               "received_time": first.received_time + 60_000})
    assert richer.event_id == first.event_id
    migrated_store.insert_events([richer])
    migrated_store.insert_events([first])  # the older delivery arrives last: it must not win
    assert migrated_store.fetch_events() == [richer]


def test_dead_letters_keep_raw_bytes_intact(migrated_store: Store) -> None:
    assert migrated_store.insert_dead_letters(DEAD_LETTERS) == len(DEAD_LETTERS)
    stored = migrated_store.fetch_dead_letters()
    assert stored == sorted(DEAD_LETTERS, key=lambda d: (d.partner_id, d.received_time))
    assert stored[0].raw == b"\xff\xfe\x00not json\x80"
    ids = {row[0] for row in migrated_store.query("SELECT dead_letter_id FROM dead_letters")}
    assert ids == {dead_letter_id(d.partner_id, d.raw, d.path) for d in DEAD_LETTERS}
    lengths = migrated_store.query(
        "SELECT path, length(raw) FROM dead_letters WHERE partner_id = {p:String} ORDER BY path",
        {"p": "ups"})
    assert lengths == [("$", 0), ("trackResponse.shipment[0].activity[3].date", 256)]


def test_same_bad_payload_twice_is_one_dead_letter_latest_receipt(migrated_store: Store) -> None:
    raw = b"\x00\x01broken"
    migrated_store.insert_dead_letters([DeadLetter("ups", T0, "old error", "$", raw)])
    migrated_store.insert_dead_letters([DeadLetter("ups", T0 + 5, "new error", "$", raw)])
    migrated_store.insert_dead_letters([DeadLetter("ups", T0 + 5, "other path", "$.a", raw)])
    assert sorted((d.error, d.received_time) for d in migrated_store.fetch_dead_letters()) == [
        ("new error", T0 + 5), ("other path", T0 + 5)]


def test_raw_events_have_a_ttl_and_round_trip(migrated_store: Store) -> None:
    ddl = migrated_store.query("SHOW CREATE TABLE raw_events")[0][0]
    assert "TTL toDateTime(stored_at) + toIntervalDay(7)" in ddl
    dead_letters_ddl = migrated_store.query("SHOW CREATE TABLE dead_letters")[0][0]
    assert "`raw` String TTL toDateTime(stored_at) + toIntervalDay(14)" in dead_letters_ddl
    now = int(datetime.now(tz=UTC).timestamp() * 1000)
    raw = RawEvent("ups", now, b'{"name": "J\xc3\xb6rg"}\xff', "webhook",
                   {"content-type": "application/json", "x-signature": "abc"})
    assert migrated_store.insert_raw_events([raw, raw]) == 2
    rows = migrated_store.query(
        "SELECT raw_event_id, source, headers, hex(raw) FROM raw_events FINAL")
    assert rows == [(raw.raw_event_id, "webhook",
                     {"content-type": "application/json", "x-signature": "abc"},
                     raw.raw.hex().upper())]


def test_monitoring_tables_deduplicate_by_key(migrated_store: Store) -> None:
    window = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
    anomaly = {"partner_id": "ups", "metric": "exception_rate", "window_start": window,
               "detector": "hst", "value": 0.2, "score": 0.91, "threshold": 0.8,
               "is_anomaly": True}
    migrated_store.insert("anomalies", [anomaly, {**anomaly, "detector": "zscore"}])
    migrated_store.insert("anomalies", [{**anomaly, "score": 0.95}])
    assert migrated_store.query(
        "SELECT detector, score, is_anomaly FROM anomalies FINAL ORDER BY detector") == [
        ("hst", 0.95, True), ("zscore", 0.91, True)]

    beat = {"partner_id": "dhl", "heartbeat_id": "hb-1", "sent_at": T0, "deadline_at": T0 + 60_000,
            "status": "pending", "updated_at": T0}
    seen = {**beat, "seen_at": T0 + 4_500, "latency_ms": 4500.0, "status": "seen",
            "updated_at": T0 + 4_500}
    migrated_store.insert("heartbeats", [seen])
    migrated_store.insert("heartbeats", [beat])  # an older state replayed later does not win
    assert migrated_store.query("SELECT status, latency_ms FROM heartbeats FINAL") == [
        ("seen", 4500.0)]

    alert = {"partner_id": "ups", "name": "PartnerFeedSilent", "fingerprint": "f00d",
             "starts_at": T0, "severity": "page", "state": "firing",
             "labels": {"partner": "ups"}, "annotations": {"summary": "silent"},
             "updated_at": T0}
    migrated_store.insert("alerts", [alert])
    migrated_store.insert("alerts", [{**alert, "state": "resolved", "ends_at": T0 + 600_000,
                                      "updated_at": T0 + 600_000}])
    assert migrated_store.query_dicts(
        "SELECT state, ends_at, labels FROM alerts FINAL") == [
        {"state": "resolved", "ends_at": datetime.fromtimestamp((T0 + 600_000) / 1000, tz=UTC),
         "labels": {"partner": "ups"}}]


def test_insert_columns_and_parameters(migrated_store: Store) -> None:
    assert migrated_store.insert_columns("heartbeats", {
        "partner_id": ["a", "b"], "heartbeat_id": ["1", "2"], "sent_at": [T0, T0 + 1],
        "status": ["pending", "pending"], "updated_at": [T0, T0 + 1]}) == 2
    assert migrated_store.query(
        "SELECT heartbeat_id FROM heartbeats FINAL WHERE partner_id IN {ps:Array(String)}"
        " AND sent_at >= {since:DateTime64(3, 'UTC')}",
        {"ps": ["b", "c"], "since": datetime.fromtimestamp(T0 / 1000, tz=UTC)}) == [("2",)]
    assert migrated_store.insert("heartbeats", []) == 0
    assert migrated_store.insert_events([]) == 0


def test_bad_rows_are_refused_before_reaching_clickhouse(migrated_store: Store) -> None:
    with pytest.raises(ValueError, match=r"heartbeats.status .* not Nullable .* 1 NULL"):
        migrated_store.insert("heartbeats", [
            {"partner_id": "a", "heartbeat_id": "1", "sent_at": T0, "status": None,
             "updated_at": T0}])
    with pytest.raises(ValueError, match="has no column 'colour'"):
        migrated_store.insert("heartbeats", [{"colour": "blue"}])
    with pytest.raises(ValueError, match="not a table name"):
        migrated_store.insert("heartbeats; DROP TABLE alerts", [{"a": 1}])
    assert migrated_store.query("SELECT count() FROM heartbeats") == [(0,)]


def test_errors_become_storage_errors(migrated_store: Store) -> None:
    with pytest.raises(StorageError, match="UNKNOWN_TABLE") as caught:
        migrated_store.query("SELECT * FROM no_such_table")
    assert caught.value.retry_after is None
    with pytest.raises(StorageError):
        migrated_store.command("ALTER TABLE no_such_table ADD COLUMN x UInt8")


def test_closed_store_refuses_work(store: Store) -> None:
    with store as same:
        assert same.query("SELECT 1 + {n:UInt8}", {"n": 1}) == [(2,)]
    store.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        store.query("SELECT 1")


def test_personal_data_expires_after_its_ttl(migrated_store: Store) -> None:
    """Raw bytes stored 30 days ago are gone once ClickHouse applies the TTL (at merges; forced
    here with OPTIMIZE … FINAL, as a background merge would do)."""
    now = int(datetime.now(tz=UTC).timestamp() * 1000)
    month_ago = now - 30 * 86_400_000
    letter = DeadLetter("ups", T0, "bad json", "$", b"name: Jane Doe")
    migrated_store.insert("dead_letters", [
        {"dead_letter_id": dead_letter_id("ups", letter.raw, "$"), "partner_id": "ups",
         "received_time": T0, "error": "bad json", "path": "$", "raw": letter.raw,
         "stored_at": month_ago}])
    migrated_store.insert_dead_letters([DeadLetter("fedex", T0, "bad json", "$", b"fresh")])
    migrated_store.command("OPTIMIZE TABLE dead_letters FINAL")
    assert migrated_store.query(
        "SELECT partner_id, error, raw FROM dead_letters FINAL ORDER BY partner_id") == [
        ("fedex", "bad json", "fresh"), ("ups", "bad json", "")]

    old = RawEvent("ups", T0, b"name: Jane Doe")
    migrated_store.insert("raw_events", [
        {"raw_event_id": old.raw_event_id, "partner_id": "ups", "received_time": T0,
         "source": "webhook", "headers": {}, "raw": old.raw, "stored_at": month_ago}])
    migrated_store.insert_raw_events([RawEvent("ups", T0, b"fresh")])  # old payload, stored now
    migrated_store.command("OPTIMIZE TABLE raw_events FINAL")
    assert migrated_store.query("SELECT raw FROM raw_events") == [("fresh",)]
