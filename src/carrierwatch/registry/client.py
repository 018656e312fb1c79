"""Which schema registry carrierwatch talks to, and seeding it with the committed schemas.

``CARRIERWATCH_SCHEMA_REGISTRY_URL`` (``settings.schema_registry_url``) names a real
Confluent-compatible registry. Without it, :func:`registry_client` starts the embedded registry
(:class:`~carrierwatch.registry.server.EmbeddedSchemaRegistry`) on an ephemeral 127.0.0.1 port with
its state in ``settings.data_dir / "schema-registry"``, and hands back a confluent-kafka
:class:`~confluent_kafka.schema_registry.SchemaRegistryClient` that speaks HTTP to it, exactly as
it would to a production registry. Within one process, callers asking for the same state file share
one embedded server (reference counted), since two servers must not write one file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from carrierwatch.core.errors import UnavailableError
from carrierwatch.core.model import SCHEMA_SUBJECT
from carrierwatch.registry.schemas import SchemaVersion, canonical_schema_versions
from carrierwatch.registry.server import STATE_FILE_NAME, EmbeddedSchemaRegistry
from carrierwatch.settings import Settings

__all__ = [
    "RegistryUnavailableError",
    "SeededVersion",
    "client_config",
    "embedded_registry",
    "registry_client",
    "registry_state_file",
    "seed_canonical_schemas",
]


def registry_state_file(settings: Settings) -> Path:
    """Where the embedded registry keeps its state: ``<data_dir>/schema-registry/registry.json``."""
    return settings.data_dir / "schema-registry" / STATE_FILE_NAME


def client_config(url: str, settings: Settings | None = None) -> dict[str, Any]:
    """The :class:`SchemaRegistryClient` configuration for ``url`` (with basic auth if set)."""
    config: dict[str, Any] = {"url": url}
    if settings is not None and settings.schema_registry_basic_auth is not None:
        config["basic.auth.user.info"] = settings.schema_registry_basic_auth.get_secret_value()
    return config


class _Shared:
    """Process-wide embedded registries, one per state file, reference counted."""

    lock = threading.Lock()
    servers: dict[Path, tuple[EmbeddedSchemaRegistry, int]] = {}  # noqa: RUF012


@contextmanager
def embedded_registry(state_file: Path | None) -> Iterator[EmbeddedSchemaRegistry]:
    """A running embedded registry for ``state_file``, shared within the process.

    ``None`` gives a private in-memory registry.
    """
    if state_file is None:
        with EmbeddedSchemaRegistry(None) as private:
            yield private
        return
    key = state_file.resolve()
    with _Shared.lock:
        server, users = _Shared.servers.get(key, (None, 0))
        if server is None:
            server = EmbeddedSchemaRegistry(key).start()
        _Shared.servers[key] = (server, users + 1)
    try:
        yield server
    finally:
        with _Shared.lock:
            server, users = _Shared.servers[key]
            if users == 1:
                del _Shared.servers[key]
                server.stop()
            else:
                _Shared.servers[key] = (server, users - 1)


@contextmanager
def registry_client(settings: Settings, *, seed: bool = True) -> Iterator[SchemaRegistryClient]:
    """A schema registry client: the configured registry, or the embedded one.

    Parameters
    ----------
    settings
        ``schema_registry_url`` chooses a real registry; without it the embedded registry serves
        ``registry_state_file(settings)`` for as long as the context lasts.
    seed
        Register every committed canonical schema version first (idempotent; see
        :func:`seed_canonical_schemas`), so ids are stable and the evolution chain is checked.
    """
    if settings.schema_registry_url:
        url = settings.schema_registry_url
        with SchemaRegistryClient(client_config(url, settings)) as client:
            _require_reachable(client, url)
            if seed:
                seed_canonical_schemas(client, settings.schemas_dir)
            yield client
        return
    with embedded_registry(registry_state_file(settings)) as server, \
            SchemaRegistryClient(client_config(server.url)) as client:
        if seed:
            seed_canonical_schemas(client, settings.schemas_dir)
        yield client


class RegistryUnavailableError(UnavailableError):
    """The configured schema registry does not answer."""


def _require_reachable(client: SchemaRegistryClient, url: str) -> None:
    """One request up front, so that an unreachable registry is a one-line error naming it."""
    import importlib

    transport_errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):  # confluent-kafka's client uses httpx2 where installed
        try:
            transport_errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    try:
        client.get_subjects()
    except tuple(transport_errors) as exc:
        raise RegistryUnavailableError(
            f"the schema registry at {url} does not answer ({type(exc).__name__}: {exc}); "
            f"check CARRIERWATCH_SCHEMA_REGISTRY_URL, or unset it to use the embedded "
            f"registry") from exc


@dataclass(frozen=True, slots=True)
class SeededVersion:
    """What seeding did for one committed schema file."""

    file_version: int
    subject: str
    schema_id: int
    subject_version: int


def seed_canonical_schemas(client: SchemaRegistryClient, schemas_dir: Path | None = None, *,
                           subject: str = SCHEMA_SUBJECT,
                           versions: Sequence[SchemaVersion] | None = None) -> list[SeededVersion]:
    """Register every committed canonical schema version under ``subject``, oldest first.

    Registering in order lets the registry check each step against the subject's compatibility
    level; registering an already registered schema is a no-op that returns its id.

    Raises
    ------
    confluent_kafka.schema_registry.error.SchemaRegistryError
        If a committed version is incompatible with the one before it (409) or invalid (422).
    """
    chosen = list(versions) if versions is not None else canonical_schema_versions(schemas_dir)
    seeded: list[SeededVersion] = []
    for committed in chosen:
        schema = Schema(committed.schema_str, "AVRO")
        schema_id = client.register_schema(subject, schema)
        registered = client.lookup_schema(subject, schema)
        seeded.append(SeededVersion(committed.version, subject, schema_id,
                                    int(registered.version or 0)))
    return seeded
