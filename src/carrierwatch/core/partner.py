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

__all__ = ["CREDIT_KPIS", "PARTNER_ID_PATTERN", "AuthSpec", "ContractRates", "CreditRule",
           "HeartbeatSpec", "PartnerSpec", "PollAuth", "PollSpec", "SlaContract", "TextLimits",
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


CREDIT_KPIS = ("on_time", "first_attempt", "pickup_compliance", "tracking_compliance",
               "exception_rate")
"""The KPIs a service-credit rule may name (rates with a target; ``exception_rate`` against its
maximum)."""


class ContractRates(_Frozen):
    """What the shipper pays the partner (``rates:`` in the contract; all optional)."""

    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    #: per successful delivery
    per_delivery: float = Field(0.0, ge=0)
    #: per failed delivery attempt (the re-attempt it causes)
    per_reattempt: float = Field(0.0, ge=0)
    #: per package returned to sender
    per_return: float = Field(0.0, ge=0)


class CreditRule(_Frozen):
    """A service credit: when ``kpi`` misses its target by more than ``points`` percentage
    points in a week, the partner owes ``credit_percent`` % of the week's charges.

    For ``exception_rate`` "missing" means above its maximum. Several rules on one KPI are
    tiers: the highest triggered one applies; credits of different KPIs add up, capped at
    100 % of the charges (``docs/scorecards.md``).
    """

    kpi: Literal["on_time", "first_attempt", "pickup_compliance", "tracking_compliance",
                 "exception_rate"]
    points: float = Field(0.0, ge=0, le=100)
    credit_percent: float = Field(gt=0, le=100)

class HeartbeatSpec(_Frozen):
    """The partner's synthetic deliveries (``heartbeat:`` in ``partners/<id>.yaml``, optional).

    ``carrierwatch heartbeat`` sends one synthetic package lifecycle through the partner's real
    ingest path every ``interval_seconds``; the heartbeat monitor (in the sink) expects its
    canonical events in the store within ``deadline_seconds`` (else the heartbeat is
    ``missing`` and the integration ``silent``) and calls the integration ``slow`` when they
    took longer than ``slow_seconds``. The deadline is at most the interval, so that a feed
    that stops turns ``silent`` within two intervals.
    """

    enabled: bool = True
    interval_seconds: float = Field(300.0, gt=0)
    deadline_seconds: float = Field(120.0, gt=0)
    slow_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> HeartbeatSpec:
        if self.deadline_seconds > self.interval_seconds:
            raise ValueError("heartbeat.deadline_seconds must not exceed interval_seconds")
        if self.slow_seconds > self.deadline_seconds:
            raise ValueError("heartbeat.slow_seconds must not exceed deadline_seconds")
        return self

class PollAuth(_Frozen):
    """How the poller authenticates to the partner's tracking API (outbound).

    ``oauth2_client_credentials``: the client id and secret (secret ``<client id>:<client
    secret>``) are exchanged at ``token_url`` for a short-lived bearer token, sent in ``header``
    after ``prefix``; the token is renewed ``refresh_margin_seconds`` before it expires and after
    a 401. ``api_key``: a static key in ``header``. ``none``: no credential. The secret comes from
    ``CARRIERWATCH_SECRET_<ID>_API`` or the secrets file's ``<id>_api`` entry
    (:mod:`carrierwatch.ingest.secrets`), never from this file.
    """

    scheme: Literal["oauth2_client_credentials", "api_key", "none"] = "none"
    token_url: str | None = None
    #: how the client credentials go to the token URL: HTTP basic auth (UPS) or form fields
    client_auth: Literal["basic", "form"] = "form"
    header: str = "Authorization"
    prefix: str = "Bearer "
    refresh_margin_seconds: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _token_url(self) -> PollAuth:
        if self.scheme == "oauth2_client_credentials" and not self.token_url:
            raise ValueError("oauth2_client_credentials needs a token_url")
        return self


class PollSpec(_Frozen):
    """How ``carrierwatch poll`` follows this partner's tracking numbers (``poll:`` block).

    ``api`` names the request/response adapter in :mod:`carrierwatch.ingest.pollapis`
    (``fedex``, ``ups``, ``dhl``, ``usps``, ``graphql``); ``base_url`` is the API's root (override
    it with ``CARRIERWATCH_POLL_<ID>_BASE_URL``, e.g. for the simulated APIs). ``batch_size`` is
    the number of tracking numbers one request may carry (FedEx 30, UPS 1), ``rate_per_second``
    the partner's request budget, ``concurrency`` the requests in flight at most, and
    ``interval_seconds`` how often each number is asked for. Failures are retried with
    exponential backoff and jitter (``Retry-After`` wins when the partner sends it), and
    ``breaker_threshold`` consecutive failed requests open the partner's circuit breaker for
    ``breaker_reset_seconds`` before a half-open probe.
    """

    api: Literal["fedex", "ups", "dhl", "usps", "graphql"]
    base_url: str
    auth: PollAuth = PollAuth()
    batch_size: int = Field(1, ge=1, le=1000)
    rate_per_second: float = Field(5.0, gt=0)
    concurrency: int = Field(4, ge=1, le=256)
    interval_seconds: float = Field(900.0, gt=0)
    #: how often a heartbeat canary (a number with the synthetic prefix) is asked for
    canary_interval_seconds: float = Field(60.0, gt=0)
    timeout_seconds: float = Field(10.0, gt=0)
    max_attempts: int = Field(4, ge=1, le=20)
    backoff_initial_seconds: float = Field(0.5, gt=0)
    backoff_max_seconds: float = Field(60.0, gt=0)
    max_retry_after_seconds: float = Field(300.0, gt=0)
    breaker_threshold: int = Field(5, ge=1)
    breaker_reset_seconds: float = Field(30.0, gt=0)
    #: stop following a number this many days after it was registered
    max_age_days: int = Field(45, ge=1)


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
    #: optional targets of the scorecard's other KPIs (None: reported without pass/fail)
    eta_accuracy_target: float | None = Field(None, ge=0, le=1)
    exception_resolution_mean_max_hours: float | None = Field(None, gt=0)
    exception_resolution_p90_max_hours: float | None = Field(None, gt=0)
    delay_stddev_max_hours: float | None = Field(None, gt=0)
    #: prices and service credits (optional; scorecards show cost and credits when present)
    rates: ContractRates | None = None
    credits: tuple[CreditRule, ...] = ()
    #: canonical reason -> accountable party, overriding carrierwatch.core.accountability
    accountability: dict[str, Literal["carrier", "consignee", "shipper", "customs",
                                      "force_majeure"]] = Field(default_factory=dict)

    @field_validator("accountability")
    @classmethod
    def _reasons(cls, value: dict[str, str]) -> dict[str, str]:
        from carrierwatch.core.model import CanonicalReason

        unknown = sorted(set(value) - {r.value for r in CanonicalReason})
        if unknown:
            raise ValueError(f"accountability: not canonical reasons: {unknown}")
        return value

    @model_validator(mode="after")
    def _credits_need_rates(self) -> SlaContract:
        if self.credits and self.rates is None:
            raise ValueError("credits need rates (a credit is a share of the week's charges)")
        return self

    #: how long an exception may stay open before the partner is asked to act (decision tables)
    exception_resolution_minutes: int = Field(1440, gt=0)

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
    poll: PollSpec | None = None
    default_timezone: str | None = None
    default_country: str | None = None
    contract: SlaContract = SlaContract()
    mapping: dict[str, Any] | None = None
    limits: TextLimits = TextLimits()
    synthetic_tracking_prefix: str = Field("CWSYN", min_length=4)
    heartbeat: HeartbeatSpec = HeartbeatSpec()
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
