"""The committed versions of the canonical event schema, discovered from ``schemas/canonical_event/``.

Every released version is kept as ``v<N>.avsc``; the highest ``N`` is the current schema. Nothing here
hard-codes how many versions exist: adding ``v3.avsc`` makes it the current schema, and the registry
seeding and the compatibility tests pick it up.

Examples
--------
>>> versions = canonical_schema_versions()
>>> [v.version for v in versions][:2]
[1, 2]
>>> current_schema_version().version == versions[-1].version
True
>>> current_parsed_schema()["name"]
'io.carrierwatch.events.CanonicalEvent'
>>> validation_errors({"event_id": "e1"})[0]
"missing required field 'partner_id'"
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.validation import ValidationError, validate

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.settings import find_project_root

__all__ = [
    "CANONICAL_SCHEMA_FOLDER",
    "SchemaVersion",
    "canonical_schema_dir",
    "canonical_schema_versions",
    "current_parsed_schema",
    "current_schema_version",
    "discover_schema_versions",
    "is_valid_record",
    "validation_errors",
]

CANONICAL_SCHEMA_FOLDER = "canonical_event"

_VERSION_FILE = re.compile(r"^v(?P<version>[1-9][0-9]*)\.avsc$")


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One committed schema file.

    Parameters
    ----------
    version
        The number in the file name (``v2.avsc`` is version 2).
    path
        Where the file lives.
    schema_str
        The file's text, exactly as committed (what is registered).
    """

    version: int
    path: Path
    schema_str: str

    @property
    def schema_dict(self) -> dict[str, Any]:
        """The schema as a JSON object."""
        loaded: dict[str, Any] = json.loads(self.schema_str)
        return loaded

    def parsed(self) -> dict[str, Any]:
        """The schema parsed by fastavro (named types expanded, logical types kept)."""
        return _parse(self.schema_str)


def canonical_schema_dir(schemas_dir: Path | None = None) -> Path:
    """The folder of the canonical event schema versions.

    Parameters
    ----------
    schemas_dir
        The project's ``schemas/`` folder; by default the one of the project root
        (:func:`carrierwatch.settings.find_project_root`).
    """
    base = schemas_dir if schemas_dir is not None else find_project_root() / "schemas"
    return base / CANONICAL_SCHEMA_FOLDER


def discover_schema_versions(folder: Path) -> list[SchemaVersion]:
    """Every ``v<N>.avsc`` in ``folder``, in version order.

    Raises
    ------
    ConfigurationError
        If the folder holds no version, or a file is not valid JSON.
    """
    found: list[SchemaVersion] = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _VERSION_FILE.match(path.name)
            if match is None:
                continue
            text = path.read_text(encoding="utf-8")
            try:
                json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigurationError(f"{path}: not valid JSON: {exc}") from exc
            found.append(SchemaVersion(int(match["version"]), path, text))
    if not found:
        raise ConfigurationError(f"no schema versions (v<N>.avsc) found in {folder}")
    found.sort(key=lambda v: v.version)
    return found


@lru_cache(maxsize=8)
def _cached_versions(folder: Path) -> tuple[SchemaVersion, ...]:
    return tuple(discover_schema_versions(folder))


def canonical_schema_versions(schemas_dir: Path | None = None) -> list[SchemaVersion]:
    """The committed canonical event schema versions, oldest first (cached per folder)."""
    return list(_cached_versions(canonical_schema_dir(schemas_dir).resolve()))


def current_schema_version(schemas_dir: Path | None = None) -> SchemaVersion:
    """The current (highest-numbered) canonical event schema."""
    return canonical_schema_versions(schemas_dir)[-1]


@lru_cache(maxsize=16)
def _parse(schema_str: str) -> dict[str, Any]:
    parsed = fastavro.parse_schema(json.loads(schema_str))
    if not isinstance(parsed, dict):
        raise ConfigurationError("a canonical schema must be an Avro record")
    return parsed


def current_parsed_schema(schemas_dir: Path | None = None) -> dict[str, Any]:
    """The current canonical schema parsed by fastavro (cached; do not mutate)."""
    return current_schema_version(schemas_dir).parsed()


def validation_errors(record: Any, schema: SchemaVersion | None = None) -> list[str]:
    """Why ``record`` does not conform to the schema (empty when it does).

    Unknown and missing top-level fields are named first; value types are then checked by
    :func:`fastavro.validation.validate`. Timestamps may be ints (epoch milliseconds) or aware
    datetimes.

    Parameters
    ----------
    record
        An Avro record as a dict (``CanonicalEvent.to_record()``).
    schema
        The schema version to validate against; the current one by default.
    """
    parsed = schema.parsed() if schema is not None else current_parsed_schema()
    problems: list[str] = []
    if isinstance(record, dict):
        declared = {f["name"]: f for f in parsed["fields"]}
        problems += [f"unknown field {key!r}" for key in record if key not in declared]
        problems += [
            f"missing required field {name!r}"
            for name, spec in declared.items()
            if name not in record and "default" not in spec
        ]
        if problems:
            return problems
    try:
        validate(record, parsed, raise_errors=True)
    except ValidationError as exc:
        return [_shorten(str(error)) for error in exc.errors]
    return []


def _shorten(message: str) -> str:
    """fastavro's message without the (very long) dump of the expected schema."""
    head, _, expected = message.partition(" expected ")
    if not expected:
        return message
    kind = re.search(r"'type': '(\w+)'", expected)
    return f"{head.strip()} does not match the schema type" + (f" ({kind[1]})" if kind else "")


def is_valid_record(record: Any, schema: SchemaVersion | None = None) -> bool:
    """Whether ``record`` conforms to the schema (see :func:`validation_errors`)."""
    return not validation_errors(record, schema)
