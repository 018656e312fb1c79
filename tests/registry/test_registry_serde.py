"""Canonical events through the Confluent wire format, against the embedded registry."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from registry_helpers import make_event

from carrierwatch.core.model import (
    SCHEMA_SUBJECT,
    CanonicalEvent,
    CanonicalReason,
    CanonicalStatus,
    Location,
    ProofOfDelivery,
)
from carrierwatch.registry.client import seed_canonical_schemas
from carrierwatch.registry.schemas import (
    SchemaVersion,
    canonical_schema_versions,
    current_parsed_schema,
    is_valid_record,
    validation_errors,
)
from carrierwatch.registry.serde import (
    CANONICAL_TOPIC,
    CanonicalSerde,
    event_to_record,
    parse_without_time_types,
    record_to_event,
    record_union_branches,
    wire_schema_id,
)

_MISSING = object()


@pytest.fixture
def seeded(client: SchemaRegistryClient, committed_versions: list[SchemaVersion]
           ) -> SchemaRegistryClient:
    seeded_versions = seed_canonical_schemas(client)
    assert [s.file_version for s in seeded_versions] == [v.version for v in committed_versions]
    return client


@pytest.fixture
def serde(seeded: SchemaRegistryClient) -> CanonicalSerde:
    return CanonicalSerde(seeded, auto_register=False)


def test_topic_and_subject() -> None:
    assert CANONICAL_TOPIC == "events.canonical"
    assert f"{CANONICAL_TOPIC}-value" == SCHEMA_SUBJECT


def test_round_trip_of_real_events(serde: CanonicalSerde, seeded: SchemaRegistryClient) -> None:
    events = [
        make_event(),
        make_event(status="in_transit", reason=None, location=None, promised_by=None,
                   eta_start=None, eta_end=None, attempt_number=None, proof_of_delivery=None,
                   service_level=None, partner_received_time=None, event_time_local=None,
                   shipment_id=None, synthetic=False, timezone_ambiguous=False),
        make_event(status="unknown", confidence=0.0, raw_code="ZZ-NEW",
                   location=Location(country="DE")),
        # an instant where float arithmetic (timestamp() * 1000) loses a millisecond
        make_event(event_time=2_191_250_717_857),
    ]
    messages = serde.serialize_many(events)
    current_id = seeded.get_latest_version(SCHEMA_SUBJECT).schema_id
    for data in messages:
        assert data[0] == 0
        assert struct.unpack(">I", data[1:5])[0] == current_id == wire_schema_id(data)
    assert serde.deserialize_many(messages) == events
    assert [serde.deserialize(serde.serialize(e)) for e in events] == events
    assert serde.schema_id() == current_id


def test_body_is_plain_avro_of_the_record(serde: CanonicalSerde) -> None:
    event = make_event()
    data = serde.serialize(event)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, current_parsed_schema(), event.to_record())
    assert data[5:] == body.getvalue()


def test_rules_path_gives_the_same_events(seeded: SchemaRegistryClient) -> None:
    plain = CanonicalSerde(seeded)
    with_rules = CanonicalSerde(seeded, rules=True)
    event = make_event()
    assert with_rules.deserialize(plain.serialize(event)) == event


def test_event_to_record_equals_to_record() -> None:
    for event in (make_event(), make_event(location=None)):
        assert event_to_record(event) == event.to_record()


def test_record_to_event_converts_datetimes_exactly() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for millis in (0, 1, 999, 2_191_250_717_857, 1_700_000_000_123, 253_402_300_799_999):
        record = make_event(event_time=millis).to_record()
        record["event_time"] = epoch + timedelta(milliseconds=millis)
        assert record_to_event(record).event_time == millis


def test_unknown_schema_id_and_bad_bytes_raise(serde: CanonicalSerde) -> None:
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.serialization import SerializationError

    data = serde.serialize(make_event())
    with pytest.raises(SchemaRegistryError):
        serde.deserialize(b"\x00" + (4242).to_bytes(4, "big") + data[5:])
    with pytest.raises(SerializationError):
        serde.deserialize(b"\x00\x00")


def _old_record(current: dict[str, Any], old: SchemaVersion) -> dict[str, Any]:
    names = {f["name"] for f in old.schema_dict["fields"]}
    return {k: v for k, v in current.items() if k in names}


def test_every_committed_version_is_readable_with_the_current_one(
        serde: CanonicalSerde, seeded: SchemaRegistryClient,
        committed_versions: list[SchemaVersion]) -> None:
    current_fields = {f["name"]: f for f in committed_versions[-1].schema_dict["fields"]}
    full = make_event().to_record()
    context = SerializationContext(CANONICAL_TOPIC, MessageField.VALUE)
    checked = 0
    for old in committed_versions:
        record = _old_record(full, old)
        assert validation_errors(record, old) == []
        old_serializer = AvroSerializer(
            seeded, old.schema_str,
            conf={"auto.register.schemas": False, "subject.name.strategy.type": "TOPIC"})
        data = old_serializer(record, context)
        assert data is not None
        assert wire_schema_id(data) == seeded.lookup_schema(
            SCHEMA_SUBJECT, _schema(old.schema_str)).schema_id
        event = serde.deserialize(data)
        read = event.to_record()
        for name, spec in current_fields.items():
            if name in record:
                assert read[name] == record[name], name
            else:  # added after `old`: the schema default
                assert read[name] == spec["default"], name
        checked += 1
    assert checked == len(committed_versions) >= 2
    # v1 lacks partner_received_time: reading v1 data fills the default (None)
    v1_record = _old_record(full, committed_versions[0])
    assert "partner_received_time" not in v1_record
    assert full["partner_received_time"] is not None


def _schema(text: str) -> Any:
    from confluent_kafka.schema_registry import Schema

    return Schema(text, "AVRO")


def test_validation_helper() -> None:
    record = make_event().to_record()
    assert is_valid_record(record)
    assert validation_errors({**record, "status": "teleported"})[0].startswith(
        "io.carrierwatch.events.CanonicalEvent.status")
    assert validation_errors({**record, "depot": "x"}) == ["unknown field 'depot'"]
    missing = {k: v for k, v in record.items() if k != "raw_code"}
    assert validation_errors(missing) == ["missing required field 'raw_code'"]
    optional_missing = {k: v for k, v in record.items() if k != "service_level"}
    assert is_valid_record(optional_missing)


_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
_maybe_text = st.none() | _text
_millis = st.integers(min_value=0, max_value=253_402_300_799_999)
_maybe_millis = st.none() | _millis
_coordinate = st.none() | st.floats(min_value=-180, max_value=180, allow_nan=False)
_locations = st.none() | st.builds(Location, _maybe_text, _maybe_text, _maybe_text, _maybe_text,
                                   _coordinate, _coordinate)
_events = st.builds(
    CanonicalEvent,
    event_id=_text, partner_id=_text, package_id=_text, tracking_number=_text,
    status=st.sampled_from([s.value for s in CanonicalStatus]),
    confidence=st.floats(min_value=0, max_value=1),
    raw_code=_text, event_time=_millis, received_time=_millis,
    timezone_ambiguous=st.booleans(), event_time_local=_maybe_text, shipment_id=_maybe_text,
    reason=st.none() | st.sampled_from([r.value for r in CanonicalReason]),
    location=_locations, promised_by=_maybe_millis, eta_start=_maybe_millis,
    eta_end=_maybe_millis,
    attempt_number=st.none() | st.integers(min_value=-(2**31), max_value=2**31 - 1),
    proof_of_delivery=st.none() | st.sampled_from([p.value for p in ProofOfDelivery]),
    service_level=_maybe_text, synthetic=st.booleans(), payload_schema_version=_text,
    partner_received_time=_maybe_millis,
)


@pytest.fixture(scope="module")
def module_serde(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanonicalSerde]:
    from carrierwatch.registry.server import EmbeddedSchemaRegistry

    state = tmp_path_factory.mktemp("hypothesis") / "registry.json"
    with EmbeddedSchemaRegistry(state) as server, \
            SchemaRegistryClient({"url": server.url, "max.retries": 0}) as sr_client:
        seed_canonical_schemas(sr_client)
        yield CanonicalSerde(sr_client, auto_register=False)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=_events)
def test_hypothesis_round_trip(module_serde: CanonicalSerde, event: CanonicalEvent) -> None:
    assert is_valid_record(event.to_record())
    assert module_serde.deserialize(module_serde.serialize(event)) == event


@pytest.fixture(scope="module")
def version_serdes(module_serde: CanonicalSerde) -> list[tuple[CanonicalSerde, Any]]:
    """A writer serde per committed schema version, with that version's plain parsed schema."""
    client = module_serde._client  # the module's seeded registry
    return [(CanonicalSerde(client, schema=version, auto_register=False),
             parse_without_time_types(version.schema_dict))
            for version in canonical_schema_versions()]


def _plain_body(parsed: Any, event: CanonicalEvent) -> bytes:
    """The Avro body fastavro writes for ``event`` with no union hints (it picks every branch)."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, event_to_record(event))
    return body.getvalue()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=_events)
def test_hypothesis_hinted_bytes_equal_plain_fastavro(
        version_serdes: list[tuple[CanonicalSerde, Any]], event: CanonicalEvent) -> None:
    """The record branch named in tuple notation changes nothing on the wire, for every writer
    version; confluent-kafka's AvroDeserializer reads the current version's bytes."""
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    for writer, parsed in version_serdes:
        data = writer.serialize(event)
        assert data[5:] == _plain_body(parsed, event)
    current = version_serdes[-1][0]
    deserializer = AvroDeserializer(current._client, current.schema.schema_str,
                                    from_dict=record_to_event,
                                    conf={"subject.name.strategy.type": "TOPIC"})
    context = SerializationContext(CANONICAL_TOPIC, MessageField.VALUE)
    assert deserializer(data, context) == event


def test_record_union_branches_of_every_version(committed_versions: list[SchemaVersion]) -> None:
    for version in committed_versions:
        parsed = parse_without_time_types(version.schema_dict)
        assert record_union_branches(parsed) == (("location", "io.carrierwatch.events.Location"),)
    # a union of two records, or of null and a map, is left to fastavro
    parsed = parse_without_time_types({"type": "record", "name": "E", "fields": [
        {"name": "a", "type": ["null", {"type": "record", "name": "A", "fields": []},
                               {"type": "record", "name": "B", "fields": []}]},
        {"name": "m", "type": ["null", {"type": "map", "values": "string"}]},
        {"name": "b", "type": ["B", "null"]}]})
    assert record_union_branches(parsed) == (("b", "B"),)


def test_positional_read_equals_record_to_event(serde: CanonicalSerde) -> None:
    """The positional fast path of deserialize builds the same events as record_to_event."""
    parsed = parse_without_time_types(serde.schema.schema_dict)
    for event in (make_event(), make_event(location=None),
                  make_event(location=Location(latitude=1.5), reason=None)):
        data = serde.serialize(event)
        body = io.BytesIO(data[5:])
        slow = record_to_event(fastavro.schemaless_reader(body, parsed, None))  # type: ignore[arg-type]
        assert serde.deserialize(data) == slow == event
        assert type(serde.deserialize(data).location) is type(event.location)


def test_current_parsed_schema_matches_model() -> None:
    names = [f["name"] for f in current_parsed_schema()["fields"]]
    assert names == list(CanonicalEvent.__dataclass_fields__)
    assert json.dumps(current_parsed_schema()["name"]) == '"io.carrierwatch.events.CanonicalEvent"'


def test_wire_compatible_with_confluent_kafka_both_ways(serde: CanonicalSerde,
                                                        seeded: SchemaRegistryClient) -> None:
    """CanonicalSerde frames fastavro itself: confluent-kafka's classes read what it writes and
    write what it reads, byte for byte."""
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    context = SerializationContext(CANONICAL_TOPIC, MessageField.VALUE)
    strategy = {"subject.name.strategy.type": "TOPIC"}
    serializer = AvroSerializer(seeded, serde.schema.schema_str, to_dict=event_to_record,
                                conf={"auto.register.schemas": False, **strategy})
    deserializer = AvroDeserializer(seeded, serde.schema.schema_str, from_dict=record_to_event,
                                    conf=strategy)
    events = [make_event(), make_event(location=None, reason=None, promised_by=None),
              make_event(event_time=2_191_250_717_857, location=Location(latitude=1.5))]
    for event in events:
        ours = serde.serialize(event)
        theirs = serializer(event, context)
        assert ours == theirs
        assert deserializer(ours, context) == event  # confluent-kafka reads ours
        assert serde.deserialize(theirs) == event  # we read confluent-kafka's


def test_data_written_with_v1_is_read_with_v2(seeded: SchemaRegistryClient,
                                             committed_versions: list[SchemaVersion]) -> None:
    """Schema evolution through the fast path: a v1 writer (CanonicalSerde pinned to v1), the
    current reader resolving the writer schema by its id."""
    first, current = committed_versions[0], committed_versions[-1]
    assert first.version < current.version
    old_writer = CanonicalSerde(seeded, schema=first, auto_register=False)
    reader = CanonicalSerde(seeded, auto_register=False)
    record = _old_record(make_event().to_record(), first)
    data = old_writer.serialize(record_to_event(dict(record)))
    assert wire_schema_id(data) == seeded.lookup_schema(SCHEMA_SUBJECT,
                                                        _schema(first.schema_str)).schema_id
    assert wire_schema_id(data) != reader.schema_id()
    event = reader.deserialize(data)
    read = event.to_record()
    defaults = {f["name"]: f.get("default") for f in current.schema_dict["fields"]}
    for name, value in read.items():
        assert value == record.get(name, defaults[name]), name
    assert event.partner_received_time is None  # added in v2: the default


def test_truncated_and_foreign_bodies_raise_serialization_errors(serde: CanonicalSerde) -> None:
    from confluent_kafka.serialization import SerializationError

    data = serde.serialize(make_event())
    with pytest.raises(SerializationError):
        serde.deserialize(data[:20])
    with pytest.raises(SerializationError):
        serde.deserialize(b"\x01" + data[1:])
    with pytest.raises(SerializationError):
        serde.deserialize(data[:5])
