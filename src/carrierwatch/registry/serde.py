"""Canonical events to and from the Confluent wire format.

Bytes are ``0x00`` (magic byte) + the schema id (4 bytes, big-endian) + the Avro binary body, under
the subject ``events.canonical-value`` (TopicNameStrategy for the topic ``events.canonical``): the
framing of confluent-kafka's :class:`~confluent_kafka.schema_registry.avro.AvroSerializer` and
:class:`~confluent_kafka.schema_registry.avro.AvroDeserializer`, which read what
:class:`CanonicalSerde` writes and write what it reads (tested both ways).

:class:`CanonicalSerde` frames fastavro's ``schemaless_writer``/``schemaless_reader`` itself
(about 10× cheaper per event than going through confluent-kafka's classes, which rebuild a
context, look the schema up and walk it for rule tags on every message):

- the writer's schema id is looked up (or registered) once; the reader resolves each writer
  schema id through the registry client once and keeps the parsed schema per id (no Avro schema
  resolution at all when the writer schema is the reader's);
- the schemas are parsed without the ``timestamp-millis`` logical type (the encoding is the
  ``long`` underneath): the model holds epoch milliseconds, so fastavro neither builds nor takes
  ``datetime`` objects;

- :func:`event_to_record` builds the record dict from the slots dataclass with one
  :func:`operator.attrgetter` call and a ``zip`` (no :func:`dataclasses.asdict`, which copies
  recursively and is several times slower);
- a union holding ``null`` and one record type (``location``) is written with fastavro's tuple
  notation, ``(record name, value)``, which names the branch: without it fastavro validates the
  value against the record, field by field, to choose the branch (~30 % of the write). The
  bytes are the same (tested); the names come from the parsed writer schema
  (:func:`record_union_branches`). Other unions (``null`` with a string, a long or an enum) choose
  their branch with one cheap check and gain nothing from a hint;
- when the writer schema of a message is the reader schema and both list their fields in the
  model's order (the current version), the decoded record becomes the event positionally, its
  ``location`` too, with no per-field time conversion (the parsed schemas have no time types);
- :func:`record_to_event` turns the ``datetime`` values fastavro returns for ``timestamp-millis``
  back into epoch milliseconds with exact integer arithmetic. (Going through
  ``datetime.timestamp() * 1000`` in floating point is off by one millisecond for about 0.6 % of
  instants, so :meth:`CanonicalEvent.from_record` is not used here.)

Examples
--------
>>> from carrierwatch.core.model import CanonicalEvent, Location
>>> event = CanonicalEvent(event_id="e1", partner_id="ups", package_id="ups:1Z", tracking_number="1Z",
...                        status="delivered", confidence=1.0, raw_code="D", event_time=1_700_000_000_123,
...                        received_time=1_700_000_001_000, location=Location(country="US"))
>>> record = event_to_record(event)
>>> record["location"]["country"], record["event_time"]
('US', 1700000000123)
>>> record_to_event(dict(record)) == event
True
"""

from __future__ import annotations

import dataclasses
import io
import json
import operator
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext, SerializationError

from carrierwatch.core.model import SCHEMA_SUBJECT, CanonicalEvent, Location, new_event
from carrierwatch.registry.schemas import SchemaVersion, current_schema_version

__all__ = [
    "CANONICAL_TOPIC",
    "MAGIC_BYTE",
    "CanonicalSerde",
    "event_to_record",
    "parse_without_time_types",
    "record_to_event",
    "record_union_branches",
    "wire_schema_id",
]

CANONICAL_TOPIC = SCHEMA_SUBJECT.removesuffix("-value")
MAGIC_BYTE = 0

_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(CanonicalEvent))
_EVENT_FIELD_SET = frozenset(_EVENT_FIELDS)
_N_EVENT_FIELDS = len(_EVENT_FIELDS)
_LOCATION_FIELDS = tuple(f.name for f in dataclasses.fields(Location))
_event_values = operator.attrgetter(*_EVENT_FIELDS)
_location_values = operator.attrgetter(*_LOCATION_FIELDS)
_TIME_FIELDS = ("event_time", "received_time", "promised_by", "eta_start", "eta_end",
                "partner_received_time")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
#: logical types over ``int``/``long`` whose values the model keeps as plain numbers
_NUMERIC_TIME_TYPES = frozenset({"timestamp-millis", "timestamp-micros", "local-timestamp-millis",
                                 "local-timestamp-micros", "time-millis", "time-micros", "date"})


def _strip_time_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strip_time_types(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strip_time_types(value) for key, value in schema.items()
           if key != "logicalType"}
    logical = schema.get("logicalType")
    if logical is not None and (logical not in _NUMERIC_TIME_TYPES
                                or schema.get("type") not in ("int", "long")):
        out["logicalType"] = logical
    if out.keys() == {"type"} and isinstance(out["type"], str):
        return out["type"]  # {"type": "long"} is "long" (fastavro takes the short form faster)
    return out


def parse_without_time_types(schema: dict[str, Any] | str) -> Any:
    """``schema`` parsed by fastavro with its time logical types removed (the ``int``/``long``
    encoding is unchanged; values are read and written as plain numbers).

    >>> parsed = parse_without_time_types('{"type": "record", "name": "T", "fields": '
    ...     '[{"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}')
    >>> parsed["fields"][0]["type"]
    'long'
    """
    loaded = json.loads(schema) if isinstance(schema, str) else schema
    return fastavro.parse_schema(_strip_time_types(loaded), named_schemas={})


def _named_records(schema: Any, found: dict[str, Any]) -> None:
    """Every record type defined in ``schema`` (a parsed schema), by full name, into ``found``."""
    if isinstance(schema, list):
        for branch in schema:
            _named_records(branch, found)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error"):
            found[schema["name"]] = schema
            for field in schema["fields"]:
                _named_records(field["type"], found)
        elif kind == "array":
            _named_records(schema["items"], found)
        elif kind == "map":
            _named_records(schema["values"], found)
        elif isinstance(kind, (dict, list)):
            _named_records(kind, found)


def record_union_branches(parsed: Any) -> tuple[tuple[str, str], ...]:
    """``(field, record name)`` of each top-level field of ``parsed`` (a record schema parsed by
    fastavro) whose type is a union of ``null`` and exactly one record type.

    A non-null value of such a field can only be that record, so the writer may name the branch
    with fastavro's tuple notation ``(record name, value)`` instead of letting fastavro find it
    by validating the value against each branch.

    >>> parsed = parse_without_time_types({"type": "record", "name": "E", "namespace": "n",
    ...     "fields": [{"name": "at", "type": ["null", {"type": "record", "name": "P",
    ...                 "fields": [{"name": "x", "type": "int"}]}]},
    ...               {"name": "again", "type": ["null", "n.P"]},
    ...               {"name": "note", "type": ["null", "string"]}]})
    >>> record_union_branches(parsed)
    (('at', 'n.P'), ('again', 'n.P'))
    """
    records: dict[str, Any] = {}
    _named_records(parsed, records)
    found: list[tuple[str, str]] = []
    for field in parsed["fields"]:
        branches = field["type"]
        if not isinstance(branches, list) or "null" not in branches or len(branches) != 2:
            continue
        other = branches[1] if branches[0] == "null" else branches[0]
        if isinstance(other, dict) and other.get("type") in ("record", "error"):
            found.append((field["name"], other["name"]))
        elif isinstance(other, str) and other in records:
            found.append((field["name"], other))
    return tuple(found)


def _in_model_order(parsed: Any) -> bool:
    """Whether fastavro reads records of ``parsed`` with the model's fields in the model's order
    (the event's, and the location's), so that both can be built positionally."""
    if tuple(f["name"] for f in parsed["fields"]) != _EVENT_FIELDS:
        return False
    records: dict[str, Any] = {}
    _named_records(parsed, records)
    location = next(f["type"] for f in parsed["fields"] if f["name"] == "location")
    if not isinstance(location, list) or len(location) != 2 or location[0] != "null":
        return False
    branch = location[1]
    branch = records.get(branch) if isinstance(branch, str) else branch
    return (isinstance(branch, dict) and branch.get("type") == "record"
            and tuple(f["name"] for f in branch["fields"]) == _LOCATION_FIELDS)


def event_to_record(event: CanonicalEvent, ctx: SerializationContext | None = None
                    ) -> dict[str, Any]:
    """The Avro record of ``event`` (equal to ``event.to_record()``, built faster)."""
    record = dict(zip(_EVENT_FIELDS, _event_values(event), strict=True))
    location = record["location"]
    if location is not None:
        record["location"] = dict(zip(_LOCATION_FIELDS, _location_values(location), strict=True))
    return record


def _millis(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // _MILLISECOND
    return value


def record_to_event(record: dict[str, Any], ctx: SerializationContext | None = None
                    ) -> CanonicalEvent:
    """The event of an Avro record as fastavro returns it (``record`` is updated in place).

    Timestamps may be ``datetime`` (exactly converted to epoch milliseconds) or ints; fields the
    model does not know (from a newer writer schema read without resolution) are dropped.
    """
    for key in _TIME_FIELDS:
        value = record.get(key)
        if value is not None and not isinstance(value, int):
            record[key] = _millis(value)
    location = record.get("location")
    if location is not None:
        record["location"] = Location(**location)
    if len(record) == _N_EVENT_FIELDS and tuple(record) == _EVENT_FIELDS:
        # every field, in schema order (fastavro's order for the current schema): the
        # positional constructor, ~5x cheaper than the dataclass's keyword one
        return new_event(*record.values())
    if record.keys() <= _EVENT_FIELD_SET:
        return CanonicalEvent(**record)
    return CanonicalEvent(**{k: v for k, v in record.items() if k in _EVENT_FIELD_SET})


def wire_schema_id(data: bytes) -> int:
    """The schema id in a Confluent wire-format message.

    >>> wire_schema_id(b"\\x00\\x00\\x00\\x01\\x02\\x10")
    258
    """
    if len(data) < 5 or data[0] != MAGIC_BYTE:
        raise ValueError("not a Confluent wire-format message (magic byte 0 + 4-byte schema id)")
    return int.from_bytes(data[1:5], "big")


class CanonicalSerde:
    """Serialize and deserialize :class:`CanonicalEvent` in the Confluent wire format.

    Parameters
    ----------
    client
        The schema registry client (see :func:`carrierwatch.registry.client.registry_client`).
    schema
        The writer and reader schema; the current committed version by default.
    topic
        The topic whose value subject is used (TopicNameStrategy): ``events.canonical``.
    auto_register
        Register the schema on first use (idempotent). With ``False`` the schema must already be
        registered (the registry is seeded), and is only looked up.
    rules
        Deserialize through confluent-kafka's ``AvroDeserializer`` with a serialization context,
        which runs data-contract rules (``ruleSet`` of the registered schema). Off by default:
        confluent-kafka then walks the whole reader schema for inline rule tags on every message
        (about half of its decode time), and the canonical subject carries no rules (the
        embedded registry refuses them).

    Notes
    -----
    A message written with any registered schema version is read with this serde's schema as
    the reader (Avro schema resolution fills the defaults of fields added since). The writer
    schema of each id is fetched from the registry once (the client caches it too) and kept
    parsed. Instances may be shared between threads.
    """

    def __init__(self, client: SchemaRegistryClient, *, schema: SchemaVersion | None = None,
                 topic: str = CANONICAL_TOPIC, auto_register: bool = True,
                 rules: bool = False) -> None:
        self.schema = schema if schema is not None else current_schema_version()
        self._client = client
        self.topic = topic
        self.subject = f"{topic}-value"
        self._auto_register = auto_register
        self._schema_dict = self.schema.schema_dict
        self._parsed = parse_without_time_types(self._schema_dict)
        #: (field, record name) of the ["null", record] unions, written with tuple notation
        self._record_branches = record_union_branches(self._parsed)
        #: whether records read with this (writer = reader) schema build events positionally
        self._positional = _in_model_order(self._parsed)
        self._header: bytes | None = None
        #: writer schema id -> (parsed writer schema, reader schema or None when they are equal)
        self._readers: dict[int, tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        self._rules_deserializer = AvroDeserializer(
            client, self.schema.schema_str, from_dict=record_to_event,
            conf={"subject.name.strategy.type": "TOPIC"}) if rules else None
        self._context = SerializationContext(topic, MessageField.VALUE)

    # -- writing --------------------------------------------------------------------------------

    def _registered_header(self) -> bytes:
        schema = Schema(self.schema.schema_str, "AVRO")
        if self._auto_register:
            schema_id = self._client.register_schema(self.subject, schema)
        else:
            found = self._client.lookup_schema(self.subject, schema)
            if found.schema_id is None:
                raise LookupError(f"the registry returned no id for {self.subject}")
            schema_id = found.schema_id
        header = bytes([MAGIC_BYTE]) + int(schema_id).to_bytes(4, "big")
        self._header = header
        return header

    def serialize(self, event: CanonicalEvent) -> bytes:
        """One event as Confluent wire-format bytes."""
        header = self._header if self._header is not None else self._registered_header()
        record = event_to_record(event)
        for field, name in self._record_branches:
            value = record.get(field)
            if value is not None:
                record[field] = (name, value)
        out = io.BytesIO()
        out.write(header)
        fastavro.schemaless_writer(out, self._parsed, record)
        return out.getvalue()

    def serialize_many(self, events: Iterable[CanonicalEvent]) -> list[bytes]:
        """Many events, in order."""
        serialize = self.serialize
        return [serialize(event) for event in events]

    # -- reading --------------------------------------------------------------------------------

    def _reader_for(self, schema_id: int) -> tuple[Any, Any]:
        with self._lock:
            found = self._readers.get(schema_id)
            if found is not None:
                return found
            registered = self._client.get_schema(schema_id)
            writer = json.loads(registered.schema_str or "null")
            if writer == self._schema_dict:
                found = (self._parsed, None)
            else:
                found = (parse_without_time_types(writer), self._parsed)
            self._readers[schema_id] = found
            return found

    def deserialize(self, data: bytes) -> CanonicalEvent:
        """One event from wire-format bytes written with any registered schema version.

        Raises
        ------
        confluent_kafka.serialization.SerializationError
            If ``data`` is not in the wire format or does not decode.
        confluent_kafka.schema_registry.error.SchemaRegistryError
            If the writer schema id is unknown to the registry.
        """
        if self._rules_deserializer is not None:
            event = self._rules_deserializer(data, self._context)
            if not isinstance(event, CanonicalEvent):
                raise TypeError(f"deserializer returned {type(event).__name__}")
            return event
        if len(data) <= 5 or data[0] != MAGIC_BYTE:
            raise SerializationError("not a Confluent wire-format Avro message "
                                     "(magic byte 0 + 4-byte schema id + body)")
        schema_id = int.from_bytes(data[1:5], "big")
        reader = self._readers.get(schema_id)
        if reader is None:
            reader = self._reader_for(schema_id)
        body = io.BytesIO(data)
        body.seek(5)
        try:
            record: Any = fastavro.schemaless_reader(body, reader[0], reader[1])
            if reader[1] is None and self._positional:
                # the current schema, fields in the model's order, timestamps already ints
                location = record["location"]
                if location is not None:
                    record["location"] = Location(*location.values())
                return new_event(*record.values())
            return record_to_event(record)
        except Exception as exc:
            raise SerializationError(f"undecodable Avro body (schema id {schema_id}): "
                                     f"{type(exc).__name__}: {exc}") from exc

    def deserialize_many(self, messages: Iterable[bytes]) -> list[CanonicalEvent]:
        """Many events, in order."""
        deserialize = self.deserialize
        return [deserialize(data) for data in messages]

    def schema_id(self) -> int:
        """The registry id of this serde's schema under its subject (looked up, then cached)."""
        registered = self._client.lookup_schema(self.subject,
                                                Schema(self.schema.schema_str, "AVRO"))
        if registered.schema_id is None:
            raise LookupError(f"the registry returned no id for {self.subject}")
        return int(registered.schema_id)
