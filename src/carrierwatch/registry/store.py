"""The state of the embedded schema registry: subjects, versions, global schema ids, configuration.

This is the registry's logic without HTTP: :mod:`carrierwatch.registry.server` maps its methods
onto the Confluent REST API, and its errors onto Confluent's error bodies. Semantics follow the
Confluent Schema Registry:

- schema ids are global: the same schema (compared in a normalized JSON form, so whitespace and key
  order do not matter) gets the same id in every subject;
- registering a schema a subject already holds returns the existing id (idempotent) and checks
  nothing; otherwise the schema is checked against the subject's live versions under the
  subject's compatibility level (or the global one, ``BACKWARD`` by default) and becomes a new
  version;
- deleting is soft first (the version stops being served and checked against, ids stay resolvable),
  and permanent only for what was soft-deleted before.

State is persisted to one JSON file after every change, written atomically (temporary file,
``fsync``, ``os.replace``), so ids survive a restart.

Examples
--------
>>> store = RegistryStore()
>>> schema = '{"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}'
>>> store.register("r-value", schema).schema_id, store.register("r-value", schema).version
(1, 1)
>>> store.versions("r-value")
[1]
>>> store.register("r-value", '{"type": "record", "name": "R", "fields": []}').version
2
>>> try:
...     store.register("r-value", '{"type": "int"}')
... except IncompatibleSchemaError as exc:
...     print(exc.error_code, str(exc)[:60])
409 Schema being registered is incompatible with an earlier sche
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carrierwatch.core.errors import CarrierwatchError
from carrierwatch.registry.compatibility import (
    CompatibilityLevel,
    InvalidSchemaError,
    check_compatibility,
    parse_avro_schema,
)

__all__ = [
    "FILE_FORMAT_VERSION",
    "CompatibilityResult",
    "IncompatibleSchemaError",
    "InvalidCompatibilityLevelError",
    "InvalidSchemaRequestError",
    "InvalidVersionError",
    "RegisteredVersion",
    "RegistryError",
    "RegistryStore",
    "SchemaNotFoundError",
    "SubjectConfigNotFoundError",
    "SubjectNotFoundError",
    "SubjectNotSoftDeletedError",
    "VersionNotFoundError",
    "VersionNotSoftDeletedError",
    "normalize_schema",
]

FILE_FORMAT_VERSION = 1
DEFAULT_COMPATIBILITY = CompatibilityLevel.BACKWARD


class RegistryError(CarrierwatchError):
    """A request the registry refuses; ``http_status`` and ``error_code`` as Confluent's."""

    http_status = 500
    error_code = 50001


class SubjectNotFoundError(RegistryError):
    http_status, error_code = 404, 40401


class VersionNotFoundError(RegistryError):
    http_status, error_code = 404, 40402


class SchemaNotFoundError(RegistryError):
    http_status, error_code = 404, 40403


class SubjectNotSoftDeletedError(RegistryError):
    http_status, error_code = 404, 40405


class VersionNotSoftDeletedError(RegistryError):
    http_status, error_code = 404, 40407


class SubjectConfigNotFoundError(RegistryError):
    http_status, error_code = 404, 40408


class IncompatibleSchemaError(RegistryError):
    http_status, error_code = 409, 409


class InvalidSchemaRequestError(RegistryError):
    http_status, error_code = 422, 42201


class InvalidVersionError(RegistryError):
    http_status, error_code = 422, 42202


class InvalidCompatibilityLevelError(RegistryError):
    http_status, error_code = 422, 42203


def normalize_schema(schema_str: str) -> str:
    """The form in which two schemas are compared: compact JSON with sorted keys.

    >>> normalize_schema('{"type": "string"}') == normalize_schema('{ "type":"string" }')
    True
    """
    try:
        return json.dumps(json.loads(schema_str), sort_keys=True, separators=(",", ":"))
    except json.JSONDecodeError as exc:
        raise InvalidSchemaRequestError(f"Invalid schema: not valid JSON: {exc}") from exc


@dataclass(slots=True)
class _Version:
    version: int
    schema_id: int
    deleted: bool = False


@dataclass(slots=True)
class _Subject:
    versions: list[_Version] = field(default_factory=list)
    deleted: bool = False  # set when every version was soft-deleted through DELETE /subjects/{s}

    def live(self) -> list[_Version]:
        return [v for v in self.versions if not v.deleted]


@dataclass(frozen=True, slots=True)
class RegisteredVersion:
    """One version of a subject as the REST API reports it."""

    subject: str
    version: int
    schema_id: int
    schema: str

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "version": self.version, "id": self.schema_id,
                "schema": self.schema}


@dataclass(frozen=True, slots=True)
class CompatibilityResult:
    """The answer of a compatibility test: ``messages`` say why not."""

    is_compatible: bool
    messages: list[str]


class RegistryStore:
    """Thread-safe registry state, optionally persisted to ``path``.

    Parameters
    ----------
    path
        The JSON file to load at start (if it exists) and rewrite after every change; ``None``
        keeps everything in memory.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.RLock()
        self._schemas: dict[int, str] = {}
        self._ids_by_normalized: dict[str, int] = {}
        self._subjects: dict[str, _Subject] = {}
        self._global_compatibility = DEFAULT_COMPATIBILITY
        self._subject_compatibility: dict[str, CompatibilityLevel] = {}
        if path is not None and path.exists():
            self._load(path)

    # -- persistence -----------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The persistence file, if any."""
        return self._path

    def _load(self, path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FILE_FORMAT_VERSION:
            raise RegistryError(f"{path}: unsupported registry file format {data.get('format')!r}")
        for key, schema in data["schemas"].items():
            self._schemas[int(key)] = schema
            self._ids_by_normalized[normalize_schema(schema)] = int(key)
        for name, subject in data["subjects"].items():
            self._subjects[name] = _Subject(
                versions=[_Version(v["version"], v["id"], v.get("deleted", False))
                          for v in subject["versions"]],
                deleted=subject.get("deleted", False),
            )
        self._global_compatibility = CompatibilityLevel(data["config"]["compatibilityLevel"])
        self._subject_compatibility = {
            name: CompatibilityLevel(level) for name, level in data["subject_config"].items()
        }

    def _snapshot(self) -> dict[str, Any]:
        return {
            "format": FILE_FORMAT_VERSION,
            "schemas": {str(k): v for k, v in sorted(self._schemas.items())},
            "subjects": {
                name: {
                    "deleted": subject.deleted,
                    "versions": [{"version": v.version, "id": v.schema_id, "deleted": v.deleted}
                                 for v in subject.versions],
                }
                for name, subject in sorted(self._subjects.items())
            },
            "config": {"compatibilityLevel": self._global_compatibility.value},
            "subject_config": {k: v.value for k, v in sorted(self._subject_compatibility.items())},
        }

    def _persist(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self._snapshot(), indent=2, sort_keys=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=self._path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    # -- helpers ---------------------------------------------------------------------------------

    def _subject(self, name: str, *, deleted: bool = False) -> _Subject:
        subject = self._subjects.get(name)
        if subject is None or not subject.versions or (subject.deleted and not deleted):
            raise SubjectNotFoundError(f"Subject '{name}' not found.")
        if not deleted and not subject.live():
            raise SubjectNotFoundError(f"Subject '{name}' not found.")
        return subject

    def _find_version(self, name: str, version: str | int, *, deleted: bool = False) -> _Version:
        subject = self._subject(name, deleted=deleted)
        candidates = subject.versions if deleted else subject.live()
        number = parse_version(version)
        if number == -1:
            if not candidates:
                raise VersionNotFoundError(f"Version {version} not found.")
            return candidates[-1]
        for candidate in candidates:
            if candidate.version == number:
                return candidate
        raise VersionNotFoundError(f"Version {version} not found.")

    def _registered(self, name: str, version: _Version) -> RegisteredVersion:
        return RegisteredVersion(name, version.version, version.schema_id,
                                 self._schemas[version.schema_id])

    @staticmethod
    def _check_request(schema_type: str | None, references: Any) -> None:
        if schema_type not in (None, "AVRO"):
            raise InvalidSchemaRequestError(
                f"Invalid schema: schema type {schema_type} is not supported by the embedded "
                "registry (AVRO only)")
        if references:
            raise InvalidSchemaRequestError(
                "Invalid schema: schema references are not supported by the embedded registry")

    def _level(self, name: str) -> CompatibilityLevel:
        return self._subject_compatibility.get(name, self._global_compatibility)

    def _compatibility_messages(self, name: str, schema_str: str,
                                against: list[_Version] | None = None) -> list[str]:
        level = self._level(name)
        subject = self._subjects.get(name)
        live = against if against is not None else (subject.live() if subject else [])
        if level is CompatibilityLevel.NONE or not live:
            return []
        try:
            new = parse_avro_schema(schema_str)
        except InvalidSchemaError as exc:
            raise InvalidSchemaRequestError(f"Invalid schema: {exc}") from exc
        existing = [parse_avro_schema(self._schemas[v.schema_id]) for v in live]
        return check_compatibility(new, existing, level, versions=[v.version for v in live])

    # -- subjects and versions -------------------------------------------------------------------

    def register(self, name: str, schema_str: str, *, schema_type: str | None = None,
                 references: Any = None) -> RegisteredVersion:
        """Register ``schema_str`` under subject ``name`` (POST /subjects/{name}/versions).

        Raises
        ------
        InvalidSchemaRequestError
            If the schema does not parse (42201).
        IncompatibleSchemaError
            If it breaks the subject's compatibility level (409).
        """
        self._check_request(schema_type, references)
        normalized = normalize_schema(schema_str)
        try:
            parse_avro_schema(schema_str)
        except InvalidSchemaError as exc:
            raise InvalidSchemaRequestError(f"Invalid schema: {exc}") from exc
        with self._lock:
            subject = self._subjects.get(name)
            known_id = self._ids_by_normalized.get(normalized)
            if subject is not None and known_id is not None:
                for version in subject.live():
                    if version.schema_id == known_id:
                        return self._registered(name, version)
            messages = self._compatibility_messages(name, schema_str)
            if messages:
                raise IncompatibleSchemaError(
                    "Schema being registered is incompatible with an earlier schema for subject "
                    f'"{name}", details: ' + "; ".join(messages))
            if known_id is None:
                known_id = max(self._schemas, default=0) + 1
                self._schemas[known_id] = schema_str
                self._ids_by_normalized[normalized] = known_id
            if subject is None:
                subject = self._subjects[name] = _Subject()
            subject.deleted = False
            number = max((v.version for v in subject.versions), default=0) + 1
            version = _Version(number, known_id)
            subject.versions.append(version)
            self._persist()
            return self._registered(name, version)

    def lookup(self, name: str, schema_str: str, *, deleted: bool = False,
               schema_type: str | None = None, references: Any = None) -> RegisteredVersion:
        """The version of subject ``name`` holding ``schema_str`` (POST /subjects/{name})."""
        self._check_request(schema_type, references)
        normalized = normalize_schema(schema_str)
        with self._lock:
            subject = self._subject(name, deleted=deleted)
            known_id = self._ids_by_normalized.get(normalized)
            for version in subject.versions if deleted else subject.live():
                if version.schema_id == known_id:
                    return self._registered(name, version)
            raise SchemaNotFoundError("Schema not found")

    def subjects(self, *, prefix: str = "", deleted: bool = False) -> list[str]:
        """Subject names (GET /subjects)."""
        with self._lock:
            return sorted(
                name for name, subject in self._subjects.items()
                if name.startswith(prefix) and subject.versions
                and (deleted or (not subject.deleted and subject.live()))
            )

    def versions(self, name: str, *, deleted: bool = False) -> list[int]:
        """The version numbers of a subject (GET /subjects/{name}/versions)."""
        with self._lock:
            subject = self._subject(name, deleted=deleted)
            return [v.version for v in (subject.versions if deleted else subject.live())]

    def get_version(self, name: str, version: str | int, *, deleted: bool = False
                    ) -> RegisteredVersion:
        """One version, or ``latest`` (GET /subjects/{name}/versions/{version})."""
        with self._lock:
            return self._registered(name, self._find_version(name, version, deleted=deleted))

    def delete_version(self, name: str, version: str | int, *, permanent: bool = False) -> int:
        """Soft- (or, after that, permanently) delete one version; returns its number."""
        with self._lock:
            found = self._find_version(name, version, deleted=permanent)
            if permanent:
                if not found.deleted:
                    raise VersionNotSoftDeletedError(
                        f"Subject '{name}' Version {found.version} was not deleted first before "
                        "being permanently deleted")
                self._subjects[name].versions.remove(found)
            else:
                found.deleted = True
            self._persist()
            return found.version

    def delete_subject(self, name: str, *, permanent: bool = False) -> list[int]:
        """Soft- (or, after that, permanently) delete a subject; returns its version numbers."""
        with self._lock:
            subject = self._subject(name, deleted=permanent)
            if permanent:
                if not subject.deleted and subject.live():
                    raise SubjectNotSoftDeletedError(
                        f"Subject '{name}' was not deleted first before being permanently deleted")
                numbers = [v.version for v in subject.versions]
                del self._subjects[name]
                self._subject_compatibility.pop(name, None)
            else:
                numbers = [v.version for v in subject.live()]
                for version in subject.versions:
                    version.deleted = True
                subject.deleted = True
            self._persist()
            return numbers

    # -- schemas by id ---------------------------------------------------------------------------

    def schema_by_id(self, schema_id: int) -> str:
        """The schema text of a global id (GET /schemas/ids/{id})."""
        with self._lock:
            try:
                return self._schemas[schema_id]
            except KeyError:
                raise SchemaNotFoundError("Schema not found") from None

    def versions_of_id(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        """The (subject, version) pairs holding a schema id (GET /schemas/ids/{id}/versions)."""
        with self._lock:
            self.schema_by_id(schema_id)
            return [
                (name, v.version)
                for name, subject in sorted(self._subjects.items())
                for v in subject.versions
                if v.schema_id == schema_id and (deleted or not v.deleted)
            ]

    # -- compatibility ---------------------------------------------------------------------------

    def test_compatibility(self, name: str, schema_str: str, version: str | int | None = None, *,
                           schema_type: str | None = None, references: Any = None
                           ) -> CompatibilityResult:
        """Test ``schema_str`` against one version (or, with ``None``, what the level requires).

        POST /compatibility/subjects/{name}/versions/{version} and …/versions.
        """
        self._check_request(schema_type, references)
        normalize_schema(schema_str)
        with self._lock:
            if version is None:
                messages = self._compatibility_messages(name, schema_str)
            else:
                target = self._find_version(name, version)
                level = self._level(name)
                try:
                    new = parse_avro_schema(schema_str)
                except InvalidSchemaError as exc:
                    raise InvalidSchemaRequestError(f"Invalid schema: {exc}") from exc
                old = parse_avro_schema(self._schemas[target.schema_id])
                messages = check_compatibility(new, [old], level, versions=[target.version])
            return CompatibilityResult(not messages, messages)

    # -- configuration ---------------------------------------------------------------------------

    def global_compatibility(self) -> CompatibilityLevel:
        """GET /config."""
        with self._lock:
            return self._global_compatibility

    def set_global_compatibility(self, level: str) -> CompatibilityLevel:
        """PUT /config."""
        parsed = parse_level(level)
        with self._lock:
            self._global_compatibility = parsed
            self._persist()
            return parsed

    def subject_compatibility(self, name: str, *, default_to_global: bool = False
                              ) -> CompatibilityLevel:
        """GET /config/{name}: 40408 unless set, or ``default_to_global``."""
        with self._lock:
            level = self._subject_compatibility.get(name)
            if level is not None:
                return level
            if default_to_global:
                return self._global_compatibility
            raise SubjectConfigNotFoundError(
                f"Subject '{name}' does not have subject-level compatibility configured")

    def set_subject_compatibility(self, name: str, level: str) -> CompatibilityLevel:
        """PUT /config/{name}."""
        parsed = parse_level(level)
        with self._lock:
            self._subject_compatibility[name] = parsed
            self._persist()
            return parsed

    def delete_subject_compatibility(self, name: str) -> CompatibilityLevel:
        """DELETE /config/{name}: back to the global level; returns the level removed."""
        with self._lock:
            level = self.subject_compatibility(name)
            del self._subject_compatibility[name]
            self._persist()
            return level


def parse_level(level: object) -> CompatibilityLevel:
    """A compatibility level from a request body (42203 if unknown)."""
    try:
        return CompatibilityLevel(str(level).upper())
    except ValueError:
        raise InvalidCompatibilityLevelError(
            f"Invalid compatibility level {level!r}: valid values are "
            + ", ".join(member.value for member in CompatibilityLevel)) from None


def parse_version(version: str | int) -> int:
    """A version number, ``latest`` or ``-1`` meaning the latest (42202 otherwise)."""
    if isinstance(version, int):
        number = version
    elif version == "latest":
        return -1
    else:
        try:
            number = int(version)
        except ValueError:
            number = 0
    if number == -1 or 1 <= number <= 2**31 - 1:
        return number
    raise InvalidVersionError(
        f"The specified version '{version}' is not a valid version id. Allowed values are "
        "between [1, 2^31-1] and the string \"latest\"")
