"""``carrierwatch status``: what operations look at during the day, read from the store.

Per partner, as of the newest data in the store (or ``--at``):

* **SLOs**: every contract objective over the recent period (``--since``, default 6 h) and over
  the contract's SLO window (``slo_window_days``, default 28 days): the SLI as good / total, the
  recent *burn rate* (the share of bad outcomes divided by the share the target allows: 1.0
  spends the error budget exactly over the SLO window, 14.4 is a page in the SRE workbook's
  terms) and the *error budget left* over the SLO window (1 − bad share / allowed share; below 0
  the objective is breached).
* **Anomalies**: the anomaly monitor's alerts still firing (``alerts`` table) and the windows
  flagged in the recent period (``anomalies`` table).
* **Integration health**: the last synthetic delivery (``heartbeats`` table): its state and age.
* **Data quality**: events, dead letters and codebook gaps (events whose partner code the
  codebook does not map) in the recent period, with the most frequent unmapped codes.

The numbers are rollups of the stored window counters (sums, then ratios: never an average of
ratios), read with the same functions as the scorecards (:mod:`carrierwatch.core.metrics`).
Synthetic (heartbeat) packages are not in them: the pipeline keeps them out of every SLA counter.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carrierwatch.core import metrics
from carrierwatch.core.model import ms_to_iso
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.timeutil import to_ms
from carrierwatch.core.windows import MetricWindowRow
from carrierwatch.outputs.scorecard import fetch_rows, latency_verdict

if TYPE_CHECKING:
    from rich.console import RenderableType

    from carrierwatch.storage.base import Store

__all__ = ["Objective", "PartnerStatus", "StatusReport", "collect_status", "objectives_of",
           "parse_duration", "render_status"]

_UNITS_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}
_DURATION = re.compile(r"\s*(\d{1,6})\s*([smhdw])\s*")


def parse_duration(text: str) -> int:
    """A duration such as ``30m``, ``6h``, ``2d`` or ``1w`` in milliseconds.

    >>> parse_duration("6h"), parse_duration("90m"), parse_duration("1w") // 86_400_000
    (21600000, 5400000, 7)
    >>> parse_duration("soon")
    Traceback (most recent call last):
    ...
    ValueError: 'soon' is not a duration such as 30m, 6h, 2d or 1w
    """
    match = _DURATION.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration such as 30m, 6h, 2d or 1w")
    return int(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass
class Objective:
    """One contract objective over a period: ``good`` of ``total`` (a ``max`` objective, such
    as the exception rate, counts the bad ones as ``total - good``)."""

    name: str
    target: float
    good: int
    total: int
    slo_good: int
    slo_total: int
    kind: str = "min"  # "min": the SLI must reach the target; "max": the bad share must stay below

    @property
    def allowed_bad(self) -> float:
        return self.target if self.kind == "max" else 1.0 - self.target

    @staticmethod
    def _bad_share(good: int, total: int) -> float | None:
        return (total - good) / total if total else None

    @property
    def value(self) -> float | None:
        """The SLI over the recent period (for a ``max`` objective, the bad share)."""
        bad = self._bad_share(self.good, self.total)
        if bad is None:
            return None
        return bad if self.kind == "max" else 1.0 - bad

    @property
    def slo_value(self) -> float | None:
        bad = self._bad_share(self.slo_good, self.slo_total)
        if bad is None:
            return None
        return bad if self.kind == "max" else 1.0 - bad

    @property
    def burn_rate(self) -> float | None:
        """Bad share over the recent period / the bad share the target allows."""
        bad = self._bad_share(self.good, self.total)
        if bad is None:
            return None
        if self.allowed_bad <= 0:
            return 0.0 if bad == 0 else float("inf")
        return bad / self.allowed_bad

    @property
    def budget_left(self) -> float | None:
        """Share of the SLO window's error budget not yet spent (negative: breached)."""
        bad = self._bad_share(self.slo_good, self.slo_total)
        if bad is None:
            return None
        if self.allowed_bad <= 0:
            return 1.0 if bad == 0 else float("-inf")
        return 1.0 - bad / self.allowed_bad

    @property
    def state(self) -> str:
        """``breached`` (SLO window below target), ``burning`` (recent burn above 1), ``ok``,
        or ``no data``."""
        left, burn = self.budget_left, self.burn_rate
        if left is None and burn is None:
            return "no data"
        if left is not None and left < -1e-9:  # not a rounding error of 1 - target
            return "breached"
        if burn is not None and burn > 1.0:
            return "burning"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(value=self.value, slo_value=self.slo_value, burn_rate=_finite(self.burn_rate),
                   budget_left=_finite(self.budget_left), state=self.state)
        return out


def _finite(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


def objectives_of(recent: MetricWindowRow | None, slo: MetricWindowRow | None,
                  contract: SlaContract) -> list[Objective]:
    """The contract's ratio objectives from two summed window rows (recent period, SLO window)."""
    empty = MetricWindowRow("", "*", "*", "*", 0, 0, 0)
    r, s = recent or empty, slo or empty
    return [
        Objective("on_time", contract.on_time_target, r.packages_on_time, r.packages_decided,
                  s.packages_on_time, s.packages_decided),
        Objective("first_attempt", contract.first_attempt_target, r.first_attempt_successes,
                  r.first_attempts, s.first_attempt_successes, s.first_attempts),
        Objective("pickup_compliance", contract.pickup_compliance_target, r.pickups_on_time,
                  r.pickups_due, s.pickups_on_time, s.pickups_due),
        Objective("tracking_compliance", contract.tracking_compliance_target,
                  r.tracking_compliant, r.deliveries, s.tracking_compliant, s.deliveries),
        Objective("exception_rate", contract.exception_rate_max,
                  r.packages_decided - r.packages_with_exception, r.packages_decided,
                  s.packages_decided - s.packages_with_exception, s.packages_decided, kind="max"),
    ]


@dataclass
class PartnerStatus:
    partner_id: str
    objectives: list[Objective]
    latency_p95_minutes: float | None
    latency_limit_minutes: float
    latency_verdict: str | None
    events: int
    dead_letters: int
    codebook_gap_events: int
    unmapped_codes: list[tuple[str, int]]
    firing_anomalies: list[dict[str, Any]]
    anomalous_windows: int
    heartbeat: dict[str, Any] | None
    last_event_at: str | None

    @property
    def verdict(self) -> str:
        """The worst of: ``silent`` (heartbeat missing), ``breached``, ``burning``,
        ``anomalous``, ``ok``."""
        if self.heartbeat is not None and self.heartbeat.get("status") in ("missing", "silent"):
            return "silent"
        states = {o.state for o in self.objectives}
        if self.latency_verdict == "missed":
            states.add("burning")
        for worst in ("breached", "burning"):
            if worst in states:
                return worst
        if self.firing_anomalies:
            return "anomalous"
        if self.events == 0:
            return "no data"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "partner": self.partner_id, "verdict": self.verdict,
            "objectives": [o.to_dict() for o in self.objectives],
            "latency_p95_minutes": self.latency_p95_minutes,
            "latency_limit_minutes": self.latency_limit_minutes,
            "latency_verdict": self.latency_verdict,
            "events": self.events, "dead_letters": self.dead_letters,
            "codebook_gap_events": self.codebook_gap_events,
            "unmapped_codes": [{"code": c, "events": n} for c, n in self.unmapped_codes],
            "firing_anomalies": self.firing_anomalies,
            "anomalous_windows": self.anomalous_windows,
            "heartbeat": self.heartbeat, "last_event_at": self.last_event_at,
        }


@dataclass
class StatusReport:
    as_of_ms: int
    since_ms: int
    generated_ms: int
    requested: bool = False  # as of a time the user asked for (not the newest data)
    partners: list[PartnerStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"as_of": ms_to_iso(self.as_of_ms),
                "since": ms_to_iso(self.as_of_ms - self.since_ms),
                "period_minutes": self.since_ms // 60_000,
                "data_age_minutes": max(0, self.generated_ms - self.as_of_ms) // 60_000,
                "partners": [p.to_dict() for p in self.partners]}


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    return to_ms(value) if isinstance(value, datetime) else int(value)


def newest_data_ms(store: Store) -> int | None:
    """Received time of the newest non-synthetic canonical event (the store's "now")."""
    rows = store.query("SELECT max(received_time), count() FROM canonical_events "
                       "WHERE NOT synthetic")
    if not rows or not rows[0][1]:
        return None
    return _ms(rows[0][0])


def collect_status(store: Store, contracts: dict[str, SlaContract], *, since_ms: int,
                   at_ms: int | None = None, partners: list[str] | None = None,
                   now_ms: int | None = None) -> StatusReport | None:
    """The status of every partner with data (or of ``partners``), as of ``at_ms`` (default: the
    newest data in the store, never later than the wall clock); None when the store is empty."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    requested = at_ms is not None
    if at_ms is None:
        newest = newest_data_ms(store)
        if newest is None:
            return None
        at_ms = min(newest, now_ms)
    start = at_ms - since_ms
    recent = {r.partner_id: r for r in fetch_rows(store, granularity="5m", by_window=False,
                                                  start_ms=start, end_ms=at_ms)}
    # the SLO window is per contract: one query per distinct window length
    by_days: dict[int, set[str]] = {}
    for pid in set(recent) | set(contracts):
        by_days.setdefault(contracts.get(pid, SlaContract()).slo_window_days, set()).add(pid)
    slo_rows: dict[str, MetricWindowRow] = {}
    for days, members in sorted(by_days.items()):
        for row in fetch_rows(store, granularity="1h", by_window=False,
                              start_ms=at_ms - days * 86_400_000, end_ms=at_ms):
            if row.partner_id in members:
                slo_rows[row.partner_id] = row

    params = {"start": start, "end": at_ms}
    window = ("received_time >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') AND "
              "received_time < fromUnixTimestamp64Milli({end:Int64}, 'UTC')")
    dead = dict(store.query(
        f"SELECT partner_id, count() FROM dead_letters FINAL WHERE {window} GROUP BY partner_id",
        params))
    unmapped: dict[str, list[tuple[str, int]]] = {}
    for pid, code, n in store.query(
            f"SELECT partner_id, raw_code, count() AS n FROM canonical_events FINAL "
            f"WHERE {window} AND status = 'unknown' AND NOT synthetic "
            f"GROUP BY partner_id, raw_code ORDER BY partner_id, n DESC, raw_code "
            f"LIMIT 3 BY partner_id", params):
        unmapped.setdefault(pid, []).append((code, int(n)))
    last_event = {pid: _ms(t) for pid, t in store.query(
        "SELECT partner_id, max(received_time) FROM canonical_events WHERE NOT synthetic "
        "AND received_time <= fromUnixTimestamp64Milli({end:Int64}, 'UTC') GROUP BY partner_id",
        params)}
    firing: dict[str, list[dict[str, Any]]] = {}
    for pid, metric, starts, summary in store.query(
            "SELECT partner_id, labels['metric'], starts_at, annotations['summary'] FROM ("
            " SELECT partner_id, fingerprint, starts_at, argMax(state, updated_at) AS state,"
            " argMax(labels, updated_at) AS labels, argMax(annotations, updated_at) AS annotations"
            " FROM alerts WHERE updated_at <= fromUnixTimestamp64Milli({end:Int64}, 'UTC')"
            " GROUP BY partner_id, name, fingerprint, starts_at)"
            " WHERE state = 'firing' ORDER BY partner_id, starts_at", params):
        firing.setdefault(pid, []).append(
            {"metric": metric, "since": ms_to_iso(_ms(starts) or 0), "summary": summary})
    flagged = dict(store.query(
        "SELECT partner_id, countDistinct(metric, window_start) FROM anomalies FINAL "
        "WHERE is_anomaly AND window_start >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') "
        "AND window_start < fromUnixTimestamp64Milli({end:Int64}, 'UTC') GROUP BY partner_id",
        params))
    heartbeats: dict[str, dict[str, Any]] = {}
    for pid, sent, status, latency in store.query(
            "SELECT partner_id, max(sent_at), argMax(status, (sent_at, updated_at)),"
            " argMax(latency_ms, (sent_at, updated_at)) FROM heartbeats"
            " WHERE sent_at <= fromUnixTimestamp64Milli({end:Int64}, 'UTC')"
            " GROUP BY partner_id", params):
        sent_ms = _ms(sent) or 0
        heartbeats[pid] = {"status": status, "sent_at": ms_to_iso(sent_ms),
                           "age_minutes": round((at_ms - sent_ms) / 60_000, 1),
                           "latency_seconds": None if latency is None else latency / 1000}

    chosen = sorted(set(partners) if partners else
                    (set(recent) | set(slo_rows) | set(dead) | set(heartbeats)))
    report = StatusReport(at_ms, since_ms, now_ms, requested)
    for pid in chosen:
        contract = contracts.get(pid, SlaContract())
        r = recent.get(pid)
        p95 = None if r is None else metrics.event_latency_quantile(r, 0.95)
        report.partners.append(PartnerStatus(
            partner_id=pid, objectives=objectives_of(r, slo_rows.get(pid), contract),
            latency_p95_minutes=None if p95 is None else round(p95 / 60_000, 1),
            latency_limit_minutes=contract.event_latency_p95_max_minutes,
            latency_verdict=latency_verdict(p95, contract.event_latency_p95_max_minutes),
            events=0 if r is None else r.events - r.synthetic_events,
            dead_letters=int(dead.get(pid, 0)),
            codebook_gap_events=0 if r is None else r.codebook_gap_events,
            unmapped_codes=unmapped.get(pid, []), firing_anomalies=firing.get(pid, []),
            anomalous_windows=int(flagged.get(pid, 0)), heartbeat=heartbeats.get(pid),
            last_event_at=None if last_event.get(pid) is None
            else ms_to_iso(last_event[pid] or 0)))
    return report


_VERDICT_STYLE = {"ok": "green", "no data": "dim", "anomalous": "yellow", "burning": "yellow",
                  "breached": "bold red", "silent": "bold red"}
_SHORT = {"on_time": "on-time", "first_attempt": "1st attempt", "pickup_compliance": "pickup",
          "tracking_compliance": "tracking", "exception_rate": "exceptions"}


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _objective_cell(o: Objective) -> str:
    if o.total == 0 and o.slo_total == 0:
        return "[dim]—[/dim]"
    burn = o.burn_rate
    burn_text = "—" if burn is None else ("∞" if burn == float("inf") else f"{burn:.1f}×")
    left = o.budget_left
    left_text = "—" if left is None or left == float("-inf") else f"{100 * left:.0f}%"
    style = {"breached": "red", "burning": "yellow", "ok": "green"}.get(o.state, "dim")
    recent = "[dim]none[/dim]" if o.value is None else f"{_pct(o.value)} {burn_text}"
    return f"{recent} [{style}]{left_text}[/{style}]"


def render_status(report: StatusReport) -> RenderableType:
    """The report as rich renderables: the SLO table, the health table, then what needs
    attention (firing anomalies, unmapped codes)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    age = max(0, report.generated_ms - report.as_of_ms) // 60_000
    hours = report.since_ms / 3_600_000
    slos = Table("partner", "state", *(_SHORT[o] for o in _SHORT),
                 title=f"SLOs as of {ms_to_iso(report.as_of_ms)}: last {hours:g} h",
                 caption="each objective: SLI over the period and its burn rate (1× spends the "
                         "error budget exactly over the contract's SLO window; 14.4× over 1 h "
                         "pages), then the error budget left over the SLO window (negative: "
                         "breached). Packages count once decided (delivered, or their promise "
                         "passed by the allowed lateness): 'none' = none decided in the period.")
    health = Table("partner", "events", "latency p95", "dead letters", "codebook gaps",
                   "heartbeat", "anomalies", title=f"Integration health: last {hours:g} h")
    for p in report.partners:
        style = _VERDICT_STYLE.get(p.verdict, "")
        slos.add_row(p.partner_id, f"[{style}]{p.verdict}[/{style}]",
                     *(_objective_cell(o) for o in p.objectives))
        latency = ("—" if p.latency_p95_minutes is None else
                   f"{p.latency_p95_minutes:,.0f} / {p.latency_limit_minutes:g} min "
                   f"({p.latency_verdict})")
        hb = p.heartbeat
        heartbeat = ("[dim]none[/dim]" if hb is None else
                     f"{hb['status']}, {hb['age_minutes']:g} min ago")
        anomalies = (f"{len(p.firing_anomalies)} firing" if p.firing_anomalies else "—")
        if p.anomalous_windows:
            anomalies += f", {p.anomalous_windows} windows"
        health.add_row(p.partner_id, f"{p.events:,}", latency, f"{p.dead_letters:,}",
                       f"{p.codebook_gap_events:,}", heartbeat, anomalies)
    parts: list[RenderableType] = []
    if age > 60 and not report.requested:
        parts.append(Text(f"note: the newest data in the store is {age / 60:,.1f} h old",
                          style="yellow"))
    parts += [slos, health]
    for p in report.partners:
        for a in p.firing_anomalies:
            parts.append(Text(str(a["summary"]), style="yellow"))  # names the partner
        if p.unmapped_codes:
            codes = ", ".join(f"{c!r} ×{n:,}" for c, n in p.unmapped_codes)
            parts.append(Text(f"{p.partner_id}: unmapped partner codes: {codes} "
                              f"(add them to codebooks/{p.partner_id}.yaml)", style="yellow"))
    return Group(*parts)


def status_json(report: StatusReport) -> bytes:
    import orjson

    return orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2)

