"""Partner metadata and SLA contracts (pure configuration models).

A partner is described by ``partners/<id>.yaml``: who it is, what its feed looks like, how it
authenticates, which transformer reads it and the SLA contract it signed. These models validate
that file; the partner registry (``carrierwatch.transformers.registry``) loads it together with the
partner's codebook and transformer.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["PARTNER_ID_PATTERN", "AuthSpec", "PartnerSpec", "SlaContract", "TextLimits",
           "WebhookLimits"]

PARTNER_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,31}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AuthSpec(_Frozen):
    """How the ingest gateway authenticates this partner's webhooks.

    ``hmac_sha256_hex``/``hmac_sha256_base64``: HMAC of the raw body in ``header`` (EasyPost sends
    ``hmac-sha256-hex=<hex>``, AfterShip and FedEx base64), keyed by the NFKD-normalized secret;
    ``standard_webhooks``: the Standard Webhooks scheme (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``; the secret is ``whsec_<base64>``); ``token``/``api_key``: a static
    credential in ``header`` after ``prefix`` (a bearer token, an API key), or in the URL's
    ``query`` parameter where the partner can only configure a URL (Shippo); ``basic``: HTTP basic
    auth, the secret being ``user:password``; ``none`` for batch drops read from disk (the gateway
    serves no webhook partner without authentication). The secret itself is never in this file:
    it comes from the environment variable ``CARRIERWATCH_SECRET_<ID>`` or the gateway's secrets
    file (see :mod:`carrierwatch.ingest.secrets`).
    """

    scheme: Literal["hmac_sha256_hex", "hmac_sha256_base64", "standard_webhooks", "token",
                    "api_key", "basic", "none"] = "none"
    header: str | None = None
    prefix: str = ""
    #: URL query parameter that may carry the token instead of ``header`` (token/api_key only)
    query: str | None = None


class WebhookLimits(_Frozen):
    """What the ingest gateway accepts from a webhook partner (all optional, with defaults)."""

    #: largest request body accepted (413 above)
    max_body_bytes: int = Field(1_048_576, gt=0)
    #: accepted media types (415 otherwise); parameters such as ``charset`` are ignored
    content_types: tuple[str, ...] = ("application/json",)
    #: the partner's token bucket: sustained requests per second and burst size (429 beyond)
    rate_per_second: float = Field(200.0, gt=0)
    burst: int = Field(400, ge=1)
    #: Standard Webhooks: largest accepted distance between ``webhook-timestamp`` and now
    timestamp_tolerance_seconds: int = Field(300, gt=0)


class SlaContract(_Frozen):
    """What the partner promised. Targets are fractions in [0, 1]; durations in minutes or days."""

    timezone: str = "UTC"
    on_time_target: float = Field(0.95, ge=0, le=1)
    first_attempt_target: float = Field(0.90, ge=0, le=1)
    exception_rate_max: float = Field(0.05, ge=0, le=1)
    pickup_compliance_target: float = Field(0.95, ge=0, le=1)
    tracking_compliance_target: float = Field(0.95, ge=0, le=1)
    event_latency_p95_max_minutes: float = Field(240, gt=0)
    grace_minutes: int = Field(0, ge=0)
    pickup_cutoff: str = "17:00"
    transit_days: dict[str, int] = Field(default_factory=lambda: {"ground": 5})
    default_service_level: str = "ground"
    slo_window_days: int = Field(28, gt=0)
    required_milestones: tuple[str, ...] = ("picked_up", "out_for_delivery", "delivered")

    @field_validator("pickup_cutoff")
    @classmethod
    def _cutoff(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("pickup_cutoff must be HH:MM")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        ZoneInfo(value)
        return value

    @model_validator(mode="after")
    def _default_level(self) -> SlaContract:
        if self.default_service_level not in self.transit_days:
            raise ValueError("default_service_level must be one of transit_days")
        return self


class TextLimits(_Frozen):
    """How long a partner's text values may be (``limits:`` in ``partners/<id>.yaml``).

    ``max_chars`` applies to every string of a JSON payload (CSV partners limit their cells
    with ``mapping.csv.max_cell_chars``); ``fields`` overrides it per key name (the last key of
    the value's path), for a feed
    that legitimately sends long values, such as UPS's base64 signature ``image``. A value over
    its limit is dropped from the payload, which is read on without it, and the payload gets a
    dead letter naming the value's path, its length and the limit (see docs/inputs.md): no real
    tracking field comes near 1,024 characters, and a value that does is an attack or a bug,
    which must reach neither the canonical events nor the parse caches.
    """

    max_chars: int = Field(1024, ge=16)
    fields: dict[str, int] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = sorted(name for name, limit in value.items() if limit < 16)
        if bad:
            raise ValueError(f"limits.fields must be at least 16 characters: {bad}")
        return value

    @property
    def smallest(self) -> int:
        """The lowest limit: a payload of at most this many bytes holds no value over a limit."""
        return min(self.max_chars, *self.fields.values()) if self.fields else self.max_chars


class PartnerSpec(_Frozen):
    """One partner's metadata (``partners/<id>.yaml``)."""

    id: str
    display_name: str
    kind: Literal["aggregator", "carrier", "courier", "batch"] = "carrier"
    format: Literal["json", "csv"] = "json"
    delivery: Literal["webhook", "poll", "batch"] = "webhook"
    transformer: str
    payload_schema_version: str = "1"
    auth: AuthSpec = AuthSpec()
    webhook: WebhookLimits = WebhookLimits()
    default_timezone: str | None = None
    default_country: str | None = None
    contract: SlaContract = SlaContract()
    mapping: dict[str, Any] | None = None
    limits: TextLimits = TextLimits()
    synthetic_tracking_prefix: str = "CWSYN"
    #: optional overrides of the SLOs derived from ``contract`` (validated, with file:line
    #: errors, by ``carrierwatch alerts validate``: :mod:`carrierwatch.alerting.spec`); the
    #: pipeline does not read them, so a mistake here never stops a worker
    slos: dict[str, Any] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not PARTNER_ID_PATTERN.match(value):
            raise ValueError("partner id must be lower-case letters, digits and _, 2-32 long")
        return value
