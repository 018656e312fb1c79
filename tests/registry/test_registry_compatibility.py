"""Compatibility levels: the avro checker's verdicts agree with what fastavro can actually read."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest

from carrierwatch.registry.compatibility import (
    CompatibilityLevel,
    InvalidSchemaError,
    check_compatibility,
    parse_avro_schema,
)


def record(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "R", "fields": list(fields)}


def readable(writer: dict[str, Any], reader: dict[str, Any], datum: dict[str, Any]) -> bool:
    """The independent oracle: can fastavro read data written with `writer` using `reader`?"""
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(writer), datum)
    buffer.seek(0)
    try:
        fastavro.schemaless_reader(buffer, fastavro.parse_schema(writer),
                                   fastavro.parse_schema(reader))
    except Exception:  # any resolution failure means "not readable"
        return False
    return True


CASES = [
    ("added field without default", record({"name": "a", "type": "int"}),
     record({"name": "a", "type": "int"}, {"name": "b", "type": "string"}), {"a": 1}),
    ("added field with default", record({"name": "a", "type": "int"}),
     record({"name": "a", "type": "int"}, {"name": "b", "type": "string", "default": "x"}),
     {"a": 1}),
    ("removed field", record({"name": "a", "type": "int"}, {"name": "b", "type": "int"}),
     record({"name": "a", "type": "int"}), {"a": 1, "b": 2}),
    ("int promoted to long", record({"name": "a", "type": "int"}),
     record({"name": "a", "type": "long"}), {"a": 1}),
    ("long narrowed to int", record({"name": "a", "type": "long"}),
     record({"name": "a", "type": "int"}), {"a": 1}),
    ("double to string", record({"name": "a", "type": "double"}),
     record({"name": "a", "type": "string"}), {"a": 1.5}),
    ("optional became required", record({"name": "a", "type": ["null", "int"]}),
     record({"name": "a", "type": "int"}), {"a": None}),
    ("required became optional", record({"name": "a", "type": "int"}),
     record({"name": "a", "type": ["null", "int"], "default": None}), {"a": 3}),
]


@pytest.mark.parametrize(("name", "writer", "reader", "datum"), CASES, ids=[c[0] for c in CASES])
def test_backward_verdict_matches_fastavro(name: str, writer: dict[str, Any],
                                           reader: dict[str, Any], datum: dict[str, Any]) -> None:
    messages = check_compatibility(parse_avro_schema(json.dumps(reader)),
                                   [parse_avro_schema(json.dumps(writer))],
                                   CompatibilityLevel.BACKWARD)
    assert (not messages) == readable(writer, reader, datum)
    # FORWARD is the same question with the roles swapped
    forward = check_compatibility(parse_avro_schema(json.dumps(writer)),
                                  [parse_avro_schema(json.dumps(reader))],
                                  CompatibilityLevel.FORWARD)
    assert forward == [m.replace("new schema reading data written with",
                                 "new schema's data read by") for m in messages]


def test_levels_properties() -> None:
    assert CompatibilityLevel.FULL.new_as_reader and CompatibilityLevel.FULL.new_as_writer
    assert CompatibilityLevel.BACKWARD_TRANSITIVE.transitive
    assert not CompatibilityLevel.FORWARD.new_as_reader
    assert not CompatibilityLevel.NONE.new_as_reader and not CompatibilityLevel.NONE.new_as_writer


def test_transitive_checks_all_and_names_versions() -> None:
    v1 = parse_avro_schema(json.dumps(record({"name": "a", "type": "int"})))
    v2 = parse_avro_schema(json.dumps(record({"name": "a", "type": "int", "default": 0})))
    new = parse_avro_schema(json.dumps(record()))
    assert check_compatibility(new, [v1, v2], CompatibilityLevel.FORWARD, versions=[4, 7]) == []
    messages = check_compatibility(new, [v1, v2], CompatibilityLevel.FORWARD_TRANSITIVE,
                                   versions=[4, 7])
    assert len(messages) == 1 and messages[0].endswith("(new schema's data read by version 4)")
    assert check_compatibility(new, [v1, v2], CompatibilityLevel.NONE) == []


def test_invalid_schema() -> None:
    with pytest.raises(InvalidSchemaError):
        parse_avro_schema('{"type": "record", "name": "R", "fields": [{"name": "a"}]}')
