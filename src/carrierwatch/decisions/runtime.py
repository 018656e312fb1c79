"""Wiring: decision settings, the escalator of a registry, the dispatcher, Prometheus metrics.

Settings (``CARRIERWATCH_DECISIONS_*``):

=====================  =============================================  ===========================
setting                meaning                                        default
=====================  =============================================  ===========================
``DIR``                folder of the decision tables (``*.yaml``)     ``<home>/decisions``
``ATTRIBUTES_FILE``    shipper package attributes (CSV)               ``<data dir>/decisions/``
                                                                      ``package_attributes.csv``
``WEBHOOK_URL``        where escalations are POSTed                   none: recorded only
``WEBHOOK_SECRET``     Standard Webhooks secret ``whsec_<base64>``    required with the URL
``MAX_ATTEMPTS``       deliveries tried before the dead letter        5
``BACKOFF_SECONDS``    first retry wait (doubles, capped at 30 s)     0.5
``ALERTMANAGER_URL``   Alertmanager for ``carrierwatch silence``      ``http://127.0.0.1:9093``
=====================  =============================================  ===========================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.partner import SlaContract
from carrierwatch.decisions.dispatch import Dispatcher, Ledger, WebhookTarget
from carrierwatch.decisions.engine import Escalation, Escalator
from carrierwatch.decisions.facts import PackageAttributes
from carrierwatch.decisions.table import load_tables
from carrierwatch.settings import Settings

__all__ = ["DecisionSettings", "dispatcher_for", "escalator_for", "metrics"]


class DecisionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARRIERWATCH_DECISIONS_",
                                      env_file="carrierwatch.env", extra="ignore")

    dir: Path | None = None
    attributes_file: Path | None = None
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    max_attempts: int = Field(5, ge=1, le=100)
    backoff_seconds: float = Field(0.5, ge=0, le=60)
    alertmanager_url: str = "http://127.0.0.1:9093"

    def tables_dir(self, settings: Settings) -> Path:
        return self.dir if self.dir is not None else settings.home / "decisions"

    def attributes_path(self, settings: Settings) -> Path:
        return self.attributes_file if self.attributes_file is not None else (
            settings.data_dir / "decisions" / "package_attributes.csv")


def escalator_for(settings: Settings, contracts: Mapping[str, SlaContract],
                  partners: Iterable[str], decision_settings: DecisionSettings | None = None
                  ) -> Escalator | None:
    """The escalator over the configured tables (None when the folder holds no table)."""
    ds = decision_settings or DecisionSettings()
    folder = ds.tables_dir(settings)
    if not folder.is_dir():
        return None
    tables = load_tables(folder, partners=list(partners))
    if not tables:
        return None
    attributes = PackageAttributes.load(ds.attributes_path(settings))
    return Escalator(tables, contracts, attributes=attributes)


def ledger_path(settings: Settings) -> Path:
    return settings.data_dir / "decisions" / "ledger.sqlite3"


def dispatcher_for(settings: Settings, decision_settings: DecisionSettings | None = None
                   ) -> Dispatcher:
    ds = decision_settings or DecisionSettings()
    webhook = None
    if ds.webhook_url:
        if ds.webhook_secret is None:
            raise ConfigurationError("CARRIERWATCH_DECISIONS_WEBHOOK_URL is set but "
                                     "CARRIERWATCH_DECISIONS_WEBHOOK_SECRET (whsec_...) is not")
        webhook = WebhookTarget(ds.webhook_url, ds.webhook_secret.get_secret_value(),
                                max_attempts=ds.max_attempts, backoff_initial=ds.backoff_seconds)
    ledger = Ledger(ledger_path(settings))
    return Dispatcher(ledger, webhook, on_executed=count_escalation)


class _Metrics:
    """``carrierwatch_escalations_total{partner,action}`` and
    ``carrierwatch_manual_tasks_open{partner}`` on the default registry (created once)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge

        self.escalations = Counter("carrierwatch_escalations", "Escalation actions executed "
                                   "(a manual task counts as action 'manual_task')",
                                   ["partner", "action"])
        self.tasks_open = Gauge("carrierwatch_manual_tasks_open",
                                "Open tasks of the manual queue", ["partner"])


_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def count_escalation(esc: Escalation, state: str) -> None:
    m = metrics()
    if state == "task":
        m.escalations.labels(esc.partner_id, "manual_task").inc()
        return
    for action in esc.actions:
        m.escalations.labels(esc.partner_id, action).inc()


def refresh_task_gauge(ledger: Ledger, partners: Iterable[str]) -> None:
    m = metrics()
    counts = ledger.open_tasks_by_partner()
    for partner in {*partners, *counts}:
        m.tasks_open.labels(partner).set(counts.get(partner, 0))
