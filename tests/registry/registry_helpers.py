"""Helpers shared by the schema registry tests (a plain module: importable by name)."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from carrierwatch.core.model import CanonicalEvent, Location, event_id


def avro(schema: dict[str, Any] | str) -> Schema:
    """A confluent-kafka Schema for a schema dict or text."""
    return Schema(schema if isinstance(schema, str) else json.dumps(schema), "AVRO")


def make_event(**overrides: Any) -> CanonicalEvent:
    """A realistic delivered event with every optional field set (override any of them)."""
    values: dict[str, Any] = {
        "partner_id": "ups",
        "package_id": "ups:1Z999AA10123456784",
        "tracking_number": "1Z999AA10123456784",
        "status": "delivered",
        "confidence": 0.95,
        "raw_code": "KB",
        "event_time": 1_700_000_000_123,
        "received_time": 1_700_000_042_500,
        "timezone_ambiguous": True,
        "event_time_local": "2023-11-14T17:13:20",
        "shipment_id": "SHP-42",
        "reason": "customer_request",
        "location": Location("US", "US-TN", "Memphis", "381", 35.149, -90.049),
        "promised_by": 1_700_006_400_000,
        "eta_start": 1_699_990_000_000,
        "eta_end": 1_700_003_600_000,
        "attempt_number": 2,
        "proof_of_delivery": "signature",
        "service_level": "ground",
        "synthetic": True,
        "payload_schema_version": "3",
        "partner_received_time": 1_700_000_030_777,
    }
    values.update(overrides)
    values.setdefault("event_id", event_id(values["partner_id"], values["package_id"],
                                           values["status"], values["event_time"]))
    return CanonicalEvent(**values)


def clear_caches(client: SchemaRegistryClient) -> None:
    """Drop the client's caches so that the next calls are real HTTP requests."""
    client.clear_caches()  # type: ignore[no-untyped-call]


def url_of(client: SchemaRegistryClient) -> str:
    """The registry URL a client talks to."""
    return str(client.config()["url"])  # type: ignore[no-untyped-call]
