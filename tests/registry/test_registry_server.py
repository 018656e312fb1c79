"""The embedded registry driven by confluent-kafka's real SchemaRegistryClient over HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from registry_helpers import avro, clear_caches

from carrierwatch.core.model import SCHEMA_SUBJECT
from carrierwatch.registry.schemas import SchemaVersion
from carrierwatch.registry.server import (
    CONTENT_TYPE,
    EmbeddedSchemaRegistry,
    RegistryBusyError,
)

SUBJECT = SCHEMA_SUBJECT


def register_all(client: SchemaRegistryClient, versions: list[SchemaVersion]) -> list[int]:
    return [client.register_schema(SUBJECT, avro(v.schema_str)) for v in versions]


def current_dict(versions: list[SchemaVersion]) -> dict[str, Any]:
    return dict(versions[-1].schema_dict)


def with_field(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = json.loads(json.dumps(schema))
    changed["fields"].append(field)
    return changed


def with_type(schema: dict[str, Any], name: str, new_type: Any) -> dict[str, Any]:
    changed: dict[str, Any] = json.loads(json.dumps(schema))
    for field in changed["fields"]:
        if field["name"] == name:
            field["type"] = new_type
            return changed
    raise AssertionError(f"no field {name}")


def test_committed_versions_register_in_order(client: SchemaRegistryClient,
                                              committed_versions: list[SchemaVersion]) -> None:
    ids = register_all(client, committed_versions)
    assert ids == list(range(1, len(committed_versions) + 1))
    assert client.get_subjects() == [SUBJECT]
    assert client.get_versions(SUBJECT) == list(range(1, len(committed_versions) + 1))
    latest = client.get_latest_version(SUBJECT)
    assert (latest.version, latest.schema_id) == (len(committed_versions), ids[-1])
    assert latest.schema.schema_str is not None
    assert json.loads(latest.schema.schema_str) == current_dict(committed_versions)
    for number, (committed, schema_id) in enumerate(zip(committed_versions, ids, strict=True), 1):
        version = client.get_version(SUBJECT, number)
        assert version.schema_id == schema_id
        assert version.schema.schema_str == committed.schema_str
        clear_caches(client)
        assert client.get_schema(schema_id).schema_str == committed.schema_str


def test_registering_is_idempotent(client: SchemaRegistryClient,
                                   committed_versions: list[SchemaVersion]) -> None:
    first = register_all(client, committed_versions)
    clear_caches(client)  # force real HTTP requests again
    assert register_all(client, committed_versions) == first
    # whitespace and key order do not make a new schema
    reformatted = json.dumps(current_dict(committed_versions), indent=None, sort_keys=True)
    assert client.register_schema(SUBJECT, avro(reformatted)) == first[-1]
    assert client.get_versions(SUBJECT) == list(range(1, len(committed_versions) + 1))


def test_same_schema_in_two_subjects_shares_its_id(client: SchemaRegistryClient,
                                                   committed_versions: list[SchemaVersion]) -> None:
    current = avro(committed_versions[-1].schema_str)
    first = client.register_schema(SUBJECT, current)
    second = client.register_schema("other-value", current)
    assert first == second
    pairs = {(v.subject, v.version) for v in client.get_schema_versions(first)}
    assert pairs == {(SUBJECT, 1), ("other-value", 1)}
    assert sorted(client.get_subjects_by_schema_id(first)) == sorted([SUBJECT, "other-value"])


@pytest.mark.parametrize("change", ["field without default", "field type change",
                                    "enum symbol removed"])
def test_incompatible_change_is_rejected_with_409(change: str, client: SchemaRegistryClient,
                                                  committed_versions: list[SchemaVersion]) -> None:
    register_all(client, committed_versions)
    schema = current_dict(committed_versions)
    if change == "field without default":
        bad = with_field(schema, {"name": "depot_code", "type": "string"})
    elif change == "field type change":
        bad = with_type(schema, "confidence", "string")
    else:
        status = next(f for f in schema["fields"] if f["name"] == "status")
        symbols = [s for s in status["type"]["symbols"] if s != "unknown"]
        enum = {k: v for k, v in status["type"].items() if k != "default"}
        # old data may hold the removed symbol, and the reader enum has no default to map it to
        bad = with_type(schema, "status", {**enum, "symbols": symbols})
    with pytest.raises(SchemaRegistryError) as caught:
        client.register_schema(SUBJECT, avro(bad))
    assert caught.value.http_status_code == 409
    assert caught.value.error_code == 409
    assert "incompatible" in caught.value.error_message
    assert client.get_versions(SUBJECT) == list(range(1, len(committed_versions) + 1))


def test_compatible_change_is_accepted(client: SchemaRegistryClient,
                                       committed_versions: list[SchemaVersion]) -> None:
    ids = register_all(client, committed_versions)
    good = with_field(current_dict(committed_versions),
                      {"name": "depot_code", "type": ["null", "string"], "default": None})
    new_id = client.register_schema(SUBJECT, avro(good))
    assert new_id == ids[-1] + 1
    assert client.get_latest_version(SUBJECT).version == len(committed_versions) + 1


def test_compatibility_endpoint_answers_both_ways(client: SchemaRegistryClient,
                                                  committed_versions: list[SchemaVersion]) -> None:
    register_all(client, committed_versions)
    schema = current_dict(committed_versions)
    good = with_field(schema, {"name": "depot_code", "type": ["null", "string"], "default": None})
    bad = with_field(schema, {"name": "depot_code", "type": "string"})
    assert client.test_compatibility(SUBJECT, avro(good)) is True
    assert client.test_compatibility(SUBJECT, avro(bad)) is False
    assert client.test_compatibility(SUBJECT, avro(good), version=1) is True
    assert client.test_compatibility_all_versions(SUBJECT, avro(bad)) is False
    assert client.test_compatibility_all_versions(SUBJECT, avro(good)) is True
    # v1 as a candidate reader of data written with the latest version: the fields added since
    # are skipped, so under BACKWARD even this "downgrade" is compatible
    assert client.test_compatibility(SUBJECT, avro(committed_versions[0].schema_str)) is True


def test_compatibility_verbose_messages(registry: EmbeddedSchemaRegistry,
                                        client: SchemaRegistryClient,
                                        committed_versions: list[SchemaVersion]) -> None:
    register_all(client, committed_versions)
    bad = with_field(current_dict(committed_versions), {"name": "depot_code", "type": "string"})
    url = f"{registry.url}/compatibility/subjects/{SUBJECT}/versions/latest"
    body = {"schema": json.dumps(bad)}
    verbose = httpx.post(url, params={"verbose": "true"}, json=body, timeout=10).json()
    assert verbose["is_compatible"] is False
    assert len(verbose["messages"]) == 1
    assert "READER_FIELD_MISSING_DEFAULT_VALUE" in verbose["messages"][0]
    assert "depot_code" in verbose["messages"][0]
    terse = httpx.post(url, json=body, timeout=10).json()
    assert terse == {"is_compatible": False}


def test_config_get_set_and_none_lets_incompatible_in(client: SchemaRegistryClient,
                                                      committed_versions: list[SchemaVersion]
                                                      ) -> None:
    assert client.get_compatibility() == "BACKWARD"
    register_all(client, committed_versions)
    bad = with_type(current_dict(committed_versions), "confidence", "string")
    with pytest.raises(SchemaRegistryError) as caught:
        client.get_compatibility(SUBJECT)
    assert caught.value.error_code == 40408
    answer: object = client.set_compatibility(SUBJECT, "NONE")  # the client returns the body
    assert answer == {"compatibility": "NONE"}
    assert client.get_compatibility(SUBJECT) == "NONE"
    assert client.get_compatibility() == "BACKWARD"  # the global level is untouched
    assert client.test_compatibility(SUBJECT, avro(bad)) is True
    bad_id = client.register_schema(SUBJECT, avro(bad))
    assert client.get_latest_version(SUBJECT).schema_id == bad_id
    answer = cast(object, client.set_compatibility(level="FULL_TRANSITIVE"))
    assert answer == {"compatibility": "FULL_TRANSITIVE"}
    assert client.get_compatibility() == "FULL_TRANSITIVE"
    with pytest.raises(SchemaRegistryError) as invalid:
        client.set_compatibility(level="SIDEWAYS")
    assert (invalid.value.http_status_code, invalid.value.error_code) == (422, 42203)


@pytest.mark.parametrize(("level", "accepted"), [
    # candidate = current schema with `depot_code: string` added WITH a default but `raw_code`
    # removed (raw_code has no default): new readers cope with old data, old readers do not
    # cope with new data.
    ("BACKWARD", True), ("FORWARD", False), ("FULL", False), ("NONE", True),
])
def test_levels_decide_direction(level: str, accepted: bool, client: SchemaRegistryClient,
                                 committed_versions: list[SchemaVersion]) -> None:
    register_all(client, committed_versions)
    client.set_compatibility(SUBJECT, level)
    schema = current_dict(committed_versions)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != "raw_code"]
    candidate = with_field(schema, {"name": "depot_code", "type": "string", "default": ""})
    assert client.test_compatibility_all_versions(SUBJECT, avro(candidate)) is accepted
    if accepted:
        client.register_schema(SUBJECT, avro(candidate))
    else:
        with pytest.raises(SchemaRegistryError) as caught:
            client.register_schema(SUBJECT, avro(candidate))
        assert caught.value.error_code == 409


def test_transitive_checks_every_version(client: SchemaRegistryClient) -> None:
    subject = "transitive-value"
    v1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
    v2 = {"type": "record", "name": "R",
          "fields": [{"name": "a", "type": "string", "default": "x"}]}
    v3 = {"type": "record", "name": "R", "fields": []}
    client.set_compatibility(subject, "FORWARD")
    client.register_schema(subject, avro(v1))
    client.register_schema(subject, avro(v2))
    # v3 drops `a`: v2 (which has a default for a) can read v3 data, v1 cannot
    assert client.test_compatibility_all_versions(subject, avro(v3)) is True
    client.set_compatibility(subject, "FORWARD_TRANSITIVE")
    assert client.test_compatibility_all_versions(subject, avro(v3)) is False
    with pytest.raises(SchemaRegistryError):
        client.register_schema(subject, avro(v3))


def test_lookup_and_not_found_errors(client: SchemaRegistryClient,
                                     committed_versions: list[SchemaVersion]) -> None:
    ids = register_all(client, committed_versions)
    found = client.lookup_schema(SUBJECT, avro(committed_versions[0].schema_str))
    assert (found.schema_id, found.version, found.subject) == (ids[0], 1, SUBJECT)
    unknown = with_field(current_dict(committed_versions),
                         {"name": "zz", "type": ["null", "int"], "default": None})
    cases: list[tuple[Callable[[], object], int, int]] = [
        (lambda: client.lookup_schema(SUBJECT, avro(unknown)), 404, 40403),
        (lambda: client.lookup_schema("nope-value", avro(unknown)), 404, 40401),
        (lambda: client.get_version("nope-value", 1), 404, 40401),
        (lambda: client.get_version(SUBJECT, 99), 404, 40402),
        (lambda: client.get_schema(999), 404, 40403),
        (lambda: client.get_versions("nope-value"), 404, 40401),
        (lambda: client.register_schema(SUBJECT, avro('{"type": "recrd"}')), 422, 42201),
        (lambda: client.register_schema(SUBJECT, avro("{not json")), 422, 42201),
        (lambda: client.get_version(SUBJECT, 0), 422, 42202),
    ]
    for call, status, code in cases:
        clear_caches(client)
        with pytest.raises(SchemaRegistryError) as caught:
            call()
        assert (caught.value.http_status_code, caught.value.error_code) == (status, code)
        assert caught.value.error_message


def test_error_body_and_content_type(registry: EmbeddedSchemaRegistry) -> None:
    response = httpx.get(f"{registry.url}/subjects/ghost/versions", timeout=10)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(CONTENT_TYPE)
    assert response.json() == {"error_code": 40401, "message": "Subject 'ghost' not found."}
    unknown_route = httpx.get(f"{registry.url}/no/such/route", timeout=10)
    assert unknown_route.status_code == 404
    assert unknown_route.json()["error_code"] == 404
    assert httpx.get(f"{registry.url}/schemas/types", timeout=10).json() == ["AVRO"]


def test_delete_version_and_subject(client: SchemaRegistryClient,
                                    committed_versions: list[SchemaVersion]) -> None:
    ids = register_all(client, committed_versions)
    last = len(committed_versions)
    assert client.delete_version(SUBJECT, last) == last
    assert client.get_versions(SUBJECT) == list(range(1, last))
    clear_caches(client)
    assert client.get_schema(ids[-1]).schema_str == committed_versions[-1].schema_str  # ids stay
    # re-registering the deleted schema makes a new version with the same id
    assert client.register_schema(SUBJECT, avro(committed_versions[-1].schema_str)) == ids[-1]
    assert client.get_versions(SUBJECT)[-1] == last + 1
    with pytest.raises(SchemaRegistryError) as not_soft:
        client.delete_subject(SUBJECT, permanent=True)
    assert not_soft.value.error_code == 40405
    assert client.delete_subject(SUBJECT) == [*range(1, last), last + 1]
    assert client.get_subjects() == []
    assert client.get_subjects(deleted=True) == [SUBJECT]
    assert client.delete_subject(SUBJECT, permanent=True) == [*range(1, last + 2)]
    assert client.get_subjects(deleted=True) == []


def test_restart_from_persisted_file_keeps_ids(state_file: Path,
                                               committed_versions: list[SchemaVersion]) -> None:
    with EmbeddedSchemaRegistry(state_file) as first, \
            SchemaRegistryClient({"url": first.url, "max.retries": 0}) as client:
        ids = register_all(client, committed_versions)
        other = client.register_schema("other-value", avro('{"type": "string"}'))
        client.set_compatibility(SUBJECT, "FULL")
        first_port = first.port
    saved = json.loads(state_file.read_text())
    assert saved["format"] == 1
    assert not list(state_file.parent.glob(".registry.json.*"))  # no temporary files left
    with EmbeddedSchemaRegistry(state_file) as second, \
            SchemaRegistryClient({"url": second.url, "max.retries": 0}) as client:
        assert second.port != 0 and first_port != 0
        for schema_id, committed in zip(ids, committed_versions, strict=True):
            assert client.get_schema(schema_id).schema_str == committed.schema_str
        assert client.register_schema(SUBJECT, avro(committed_versions[-1].schema_str)) == ids[-1]
        assert client.get_schema(other).schema_str == '{"type": "string"}'
        assert client.get_compatibility(SUBJECT) == "FULL"
        # a new schema continues the id sequence instead of reusing an id
        assert client.register_schema("third-value", avro('{"type": "long"}')) == other + 1


def test_one_server_per_state_file(state_file: Path) -> None:
    with EmbeddedSchemaRegistry(state_file), pytest.raises(RegistryBusyError):
        EmbeddedSchemaRegistry(state_file).start()
    with EmbeddedSchemaRegistry(state_file) as again:  # released on stop
        assert again.running
