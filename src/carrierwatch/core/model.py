"""The canonical event model: the data contract every partner feed is normalized into.

The Avro schema in ``schemas/canonical_event/`` is the source of truth for the wire format; this
module is its typed Python twin, kept in step by a test that compares the field lists.

Times are integers of milliseconds since the Unix epoch, UTC (Avro ``timestamp-millis``), which keeps
the hot path free of datetime objects; :func:`ms_to_iso` renders them for people.

Examples
--------
>>> event_id("fedex", "fedex:1234", "delivered", 1_700_000_000_000)
'b3b2ef6cdc749eb04790d8229f489fc4'
>>> ms_to_iso(1_700_000_000_000)
'2023-11-14T22:13:20.000Z'
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "SCHEMA_SUBJECT",
    "CanonicalEvent",
    "CanonicalReason",
    "CanonicalStatus",
    "DeadLetter",
    "Location",
    "ProofOfDelivery",
    "event_id",
    "ms_to_iso",
    "package_key",
]

SCHEMA_SUBJECT = "events.canonical-value"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CanonicalStatus(StrEnum):
    """Where a package is in its life. Order matches the Avro enum's symbols."""

    INFO_RECEIVED = "info_received"
    PICKED_UP = "picked_up"
    STAGED = "staged"
    IN_TRANSIT = "in_transit"
    OUT_FOR_DELIVERY = "out_for_delivery"
    DELIVERY_ATTEMPTED = "delivery_attempted"
    DELIVERED = "delivered"
    AVAILABLE_FOR_PICKUP = "available_for_pickup"
    EXCEPTION = "exception"
    RETURNED = "returned"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"


class CanonicalReason(StrEnum):
    """Why an attempt failed or an exception was raised. Order matches the Avro enum's symbols."""

    RECIPIENT_NOT_AVAILABLE = "recipient_not_available"
    ADDRESS_ISSUE = "address_issue"
    ACCESS_ISSUE = "access_issue"
    CUSTOMER_REQUEST = "customer_request"
    REFUSED = "refused"
    DAMAGED = "damaged"
    LOST = "lost"
    WEATHER = "weather"
    VEHICLE_OR_CAPACITY = "vehicle_or_capacity"
    CUSTOMS = "customs"
    PAYMENT_DUE = "payment_due"
    CARRIER_DELAY = "carrier_delay"
    OTHER = "other"
    UNKNOWN = "unknown"


class ProofOfDelivery(StrEnum):
    """How a delivery was proven."""

    SIGNATURE = "signature"
    PHOTO = "photo"
    PIN = "pin"
    NONE = "none"


def event_id(partner_id: str, package_id: str, status: str, event_time_ms: int) -> str:
    """Deterministic event id: a hash of partner, package, canonical status and event time only.

    Enriched fields (location, description, ETA) are deliberately left out, so that a partner that
    repeats a checkpoint with more detail, or sends two "delivered" notices for one delivery,
    produces the same id and the duplicate collapses.
    """
    key = f"{partner_id}\x1f{package_id}\x1f{status}\x1f{event_time_ms}".encode()
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def package_key(partner_id: str, tracking_number: str, discriminator: str | None = None) -> str:
    """Package identity: partner + tracking number + a distinguishing id or ship date if known.

    Carriers reuse tracking numbers, so the tracking number alone is not an identity.

    >>> package_key("fedex", "123456789012", "12025~123456789012~FDEG")
    'fedex:123456789012:12025~123456789012~FDEG'
    >>> package_key("ups", "1Z999AA10123456784")
    'ups:1Z999AA10123456784'
    """
    base = f"{partner_id}:{tracking_number}"
    return f"{base}:{discriminator}" if discriminator else base


def ms_to_iso(ms: int | None) -> str | None:
    """Render epoch milliseconds as ISO 8601 UTC with a ``Z`` suffix."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True, slots=True)
class Location:
    """A coarse location: never a street address (data minimisation).

    ``latitude``/``longitude`` are rounded to 3 decimals (about 100 m); ``postal_prefix`` keeps the
    first three characters of a postal code; ``region`` is ISO 3166-2 where known (``US-TN``).
    """

    country: str | None = None
    region: str | None = None
    city: str | None = None
    postal_prefix: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    """One canonical tracking event. Field names equal the Avro schema's field names."""

    event_id: str
    partner_id: str
    package_id: str
    tracking_number: str
    status: str
    confidence: float
    raw_code: str
    event_time: int
    received_time: int
    timezone_ambiguous: bool = False
    event_time_local: str | None = None
    shipment_id: str | None = None
    reason: str | None = None
    location: Location | None = None
    promised_by: int | None = None
    eta_start: int | None = None
    eta_end: int | None = None
    attempt_number: int | None = None
    proof_of_delivery: str | None = None
    service_level: str | None = None
    synthetic: bool = False
    payload_schema_version: str = "1"
    partner_received_time: int | None = None

    def to_record(self) -> dict[str, Any]:
        """The Avro record (a plain dict) for this event."""
        return asdict(self)

    def to_json_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``carrierwatch normalize``: times as ISO 8601 UTC strings."""
        record = asdict(self)
        for key in ("event_time", "received_time", "promised_by", "eta_start", "eta_end",
                    "partner_received_time"):
            record[key] = ms_to_iso(record[key])
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CanonicalEvent:
        """Build an event from an Avro record as fastavro returns it (timestamps as datetimes)."""
        values = dict(record)
        for key in ("event_time", "received_time", "promised_by", "eta_start", "eta_end",
                    "partner_received_time"):
            value = values.get(key)
            if isinstance(value, datetime):
                values[key] = (value - _EPOCH) // timedelta(milliseconds=1)
        location = values.get("location")
        if isinstance(location, dict):
            values["location"] = Location(**location)
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A payload (or part of one) that could not be parsed or validated.

    ``path`` names the offending field
    (``output.completeTrackResults[0].trackResults[1].scanEvents[3].date``); ``raw`` keeps the original
    bytes so the record can be replayed once the cause is fixed.
    """

    partner_id: str
    received_time: int
    error: str
    path: str
    raw: bytes = field(repr=False)

    def to_json_dict(self) -> dict[str, Any]:
        import base64

        return {
            "partner_id": self.partner_id,
            "received_time": ms_to_iso(self.received_time),
            "error": self.error,
            "path": self.path,
            "raw_base64": base64.b64encode(self.raw).decode("ascii"),
        }
