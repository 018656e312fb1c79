"""Schema compatibility levels of the Confluent Schema Registry, checked with the ``avro`` package.

The pairwise check is :class:`avro.compatibility.ReaderWriterCompatibilityChecker` (Apache Avro's
own schema-resolution rules); this module only decides *which* pairs to check for a level:

=====================  ==============================================  ==========================
level                  the new schema is checked against               as
=====================  ==============================================  ==========================
``BACKWARD``           the latest version                              reader (reads old data)
``BACKWARD_TRANSITIVE`` every version                                  reader
``FORWARD``            the latest version                              writer (old readers cope)
``FORWARD_TRANSITIVE`` every version                                   writer
``FULL``               the latest version                              reader and writer
``FULL_TRANSITIVE``    every version                                   reader and writer
``NONE``               nothing                                         —
=====================  ==============================================  ==========================

Examples
--------
>>> old = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}'
>>> added = ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"},'
...          ' {"name": "b", "type": "int"}]}')
>>> check_compatibility(parse_avro_schema(added), [parse_avro_schema(old)], CompatibilityLevel.BACKWARD)
["READER_FIELD_MISSING_DEFAULT_VALUE at '/fields/1': b (new schema reading data written with version 1)"]
>>> check_compatibility(parse_avro_schema(added), [parse_avro_schema(old)], CompatibilityLevel.FORWARD)
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import avro.errors
import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityResult,
    SchemaCompatibilityType,
)

__all__ = [
    "CompatibilityLevel",
    "InvalidSchemaError",
    "check_compatibility",
    "parse_avro_schema",
]


class CompatibilityLevel(StrEnum):
    """The compatibility levels of the Confluent Schema Registry."""

    NONE = "NONE"
    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"

    @property
    def transitive(self) -> bool:
        """Whether every earlier version is checked, not only the latest."""
        return self.endswith("_TRANSITIVE")

    @property
    def new_as_reader(self) -> bool:
        """Whether the new schema must read data written with the old ones."""
        return self.startswith(("BACKWARD", "FULL"))

    @property
    def new_as_writer(self) -> bool:
        """Whether the old schemas must read data written with the new one."""
        return self.startswith(("FORWARD", "FULL"))


class InvalidSchemaError(ValueError):
    """A schema text that is not a valid Avro schema."""


def parse_avro_schema(schema_str: str) -> avro.schema.Schema:
    """Parse a schema with the ``avro`` package (validating names and defaults).

    Raises
    ------
    InvalidSchemaError
        With the parser's message, if the text is not a valid Avro schema.
    """
    try:
        return avro.schema.parse(schema_str, validate_enum_symbols=True, validate_names=True)
    except (avro.errors.AvroException, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidSchemaError(f"invalid Avro schema: {exc}") from exc


def _describe(result: SchemaCompatibilityResult, role: str, version: int) -> list[str]:
    locations = sorted(loc for loc in result.locations if loc != "/") or ["/"]
    kinds = sorted({kind.name.upper() for kind in result.incompatibilities}) or ["INCOMPATIBLE"]
    detail = "; ".join(sorted(result.messages)) or "incompatible"
    where = ", ".join(f"'{loc}'" for loc in locations)
    return [f"{'/'.join(kinds)} at {where}: {detail} ({role} version {version})"]


def check_compatibility(
    new: avro.schema.Schema,
    existing: Sequence[avro.schema.Schema],
    level: CompatibilityLevel,
    *,
    versions: Sequence[int] | None = None,
) -> list[str]:
    """Why ``new`` is not compatible with ``existing`` under ``level`` (empty when it is).

    Parameters
    ----------
    new
        The candidate schema.
    existing
        The subject's live versions, oldest first; for a non-transitive level only the last one is
        checked.
    level
        The subject's compatibility level.
    versions
        The version numbers of ``existing`` (used in the messages); 1, 2, … by default.
    """
    if level is CompatibilityLevel.NONE or not existing:
        return []
    numbers = list(versions) if versions is not None else list(range(1, len(existing) + 1))
    pairs = list(zip(numbers, existing, strict=True))
    if not level.transitive:
        pairs = pairs[-1:]
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    messages: list[str] = []
    for number, old in pairs:
        if level.new_as_reader:
            result = checker.get_compatibility(reader=new, writer=old)
            if result.compatibility is not SchemaCompatibilityType.compatible:
                messages += _describe(result, "new schema reading data written with", number)
        if level.new_as_writer:
            result = checker.get_compatibility(reader=old, writer=new)
            if result.compatibility is not SchemaCompatibilityType.compatible:
                messages += _describe(result, "new schema's data read by", number)
    return messages
