"""registry_client(): the embedded registry by default, a configured URL when set."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError
from registry_helpers import url_of

from carrierwatch.core.model import SCHEMA_SUBJECT
from carrierwatch.registry.client import (
    registry_client,
    registry_state_file,
    seed_canonical_schemas,
)
from carrierwatch.registry.schemas import SchemaVersion, discover_schema_versions
from carrierwatch.registry.server import EmbeddedSchemaRegistry
from carrierwatch.settings import Settings


def test_embedded_registry_is_seeded_and_persisted(tmp_path: Path,
                                                   committed_versions: list[SchemaVersion]
                                                   ) -> None:
    settings = Settings(data_dir=tmp_path / "data", schema_registry_url=None)
    with registry_client(settings) as client:
        url = url_of(client)
        assert url.startswith("http://127.0.0.1:")
        versions = client.get_versions(SCHEMA_SUBJECT)
        assert versions == [v.version for v in committed_versions]
        ids = [client.get_version(SCHEMA_SUBJECT, n).schema_id for n in versions]
        with registry_client(settings) as nested:  # same state file: the same server, shared
            assert url_of(nested) == url
        assert httpx.get(url + "/config", timeout=10).status_code == 200  # still serving
    state = registry_state_file(settings)
    assert state == tmp_path / "data" / "schema-registry" / "registry.json"
    assert json.loads(state.read_text())["subjects"][SCHEMA_SUBJECT]["versions"][0]["id"] == ids[0]
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/config", timeout=2)  # stopped with the last user
    with registry_client(settings) as client:  # restart: seeding again changes nothing
        assert [client.get_version(SCHEMA_SUBJECT, n).schema_id for n in versions] == ids


def test_configured_url_is_used(tmp_path: Path, committed_versions: list[SchemaVersion]) -> None:
    with EmbeddedSchemaRegistry(tmp_path / "external.json") as external:
        settings = Settings(data_dir=tmp_path / "data", schema_registry_url=external.url)
        with registry_client(settings) as client:
            assert url_of(client) == external.url
            assert client.get_versions(SCHEMA_SUBJECT) == [v.version for v in committed_versions]
        assert not registry_state_file(settings).exists()  # no embedded registry was started
        assert external.store.versions(SCHEMA_SUBJECT) == [v.version for v in committed_versions]


def test_seeding_rejects_an_incompatible_committed_history(tmp_path: Path,
                                                           committed_versions: list[SchemaVersion]
                                                           ) -> None:
    folder = tmp_path / "schemas" / "canonical_event"
    folder.mkdir(parents=True)
    for committed in committed_versions:
        (folder / committed.path.name).write_text(committed.schema_str)
    broken = committed_versions[-1].schema_dict
    broken["fields"].append({"name": "depot_code", "type": "string"})
    next_version = committed_versions[-1].version + 1
    (folder / f"v{next_version}.avsc").write_text(json.dumps(broken))
    (folder / "README.md").write_text("not a schema")
    discovered = discover_schema_versions(folder)
    assert [v.version for v in discovered] == [*[v.version for v in committed_versions],
                                               next_version]
    settings = Settings(data_dir=tmp_path / "data", schema_registry_url=None)
    with registry_client(settings, seed=False) as client:
        with pytest.raises(SchemaRegistryError) as caught:
            seed_canonical_schemas(client, tmp_path / "schemas")
        assert caught.value.error_code == 409
        # everything before the broken version was registered
        assert client.get_versions(SCHEMA_SUBJECT) == [v.version for v in committed_versions]
