"""``carrierwatch status``: each partner's SLO status and burn, open anomalies, integration
health and codebook gaps, read from the store (rich tables, or ``--json`` for scripts).

"Now" is the newest event time in the store (live: about the current time; after a replay: the
end of the replayed data), or ``--at``. The SLO figures are the contract KPIs of
:func:`carrierwatch.scorecards.kpis.fetch_kpis` (the scorecards' and dashboards' computation)
over the last ``--since`` and over the contract's SLO window; the **burn rate** of a rate KPI is
its error rate divided by the error budget, ``(1 − value) / (1 − target)`` (1 = spending the
budget exactly as fast as the SLO window allows; a multi-window alert pages at 14.4).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from carrierwatch.core.errors import EXIT_USAGE, CarrierwatchError

if TYPE_CHECKING:
    from carrierwatch.scorecards.build import PartnerInfo
    from carrierwatch.storage.base import Store

__all__ = ["BURN_KPIS", "burn_rate", "parse_duration", "partner_status", "status"]

BURN_KPIS = ("on_time", "first_attempt", "pickup_compliance", "tracking_compliance")
_UNITS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


class NoStatusDataError(CarrierwatchError):
    exit_code = EXIT_USAGE


def parse_duration(text: str) -> int:
    """``30m``, ``6h``, ``2d`` → milliseconds.

    >>> parse_duration("6h"), parse_duration("30m"), parse_duration("2d")
    (21600000, 1800000, 172800000)
    """
    match = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text)
    if not match or int(match[1]) == 0:
        raise ValueError(f"not a duration like 30m, 6h or 2d: {text!r}")
    return int(match[1]) * _UNITS[match[2]]


def burn_rate(value: float | None, target: float) -> float | None:
    """Error rate over error budget.

    >>> round(burn_rate(0.90, 0.95), 6), burn_rate(1.0, 0.95), burn_rate(None, 0.95)
    (2.0, 0.0, None)
    """
    if value is None or target >= 1:
        return None
    return (1 - value) / (1 - target)


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def partner_status(store: Store, infos: list[PartnerInfo], at_ms: int, since_ms: int
                   ) -> list[dict[str, Any]]:
    """The status document: one entry per partner (see the module docstring)."""
    from carrierwatch.scorecards.kpis import fetch_kpis

    contracts = {i.partner_id: i.contract for i in infos}
    ids = [i.partner_id for i in infos]
    recent = fetch_kpis(store, at_ms - since_ms, at_ms, contracts, ids)
    params = {"start": at_ms - since_ms, "end": at_ms}
    window = ("{c} >= fromUnixTimestamp64Milli({{start:Int64}}, 'UTC') "
              "AND {c} < fromUnixTimestamp64Milli({{end:Int64}}, 'UTC')")
    anomalies: dict[str, list[dict[str, Any]]] = {}
    for pid, metric, windows, last, score in store.query(
            "SELECT partner_id, metric, count(), toUnixTimestamp64Milli(max(window_start)), "
            "max(score) FROM anomalies FINAL WHERE is_anomaly AND "
            + window.format(c="window_start") + " GROUP BY partner_id, metric "
            "ORDER BY partner_id, metric", params):
        anomalies.setdefault(pid, []).append(
            {"metric": metric, "windows": int(windows), "last_window": _iso(int(last)),
             "max_score": round(float(score), 4)})
    heartbeats: dict[str, dict[str, Any]] = {}
    for pid, sent, seen, late, missing, last_seen, p95 in store.query(
            "SELECT partner_id, count(), countIf(status = 'seen'), countIf(status = 'late'), "
            "countIf(status = 'missing'), toUnixTimestamp64Milli(max(seen_at)), "
            "quantile(0.95)(latency_ms) FROM heartbeats FINAL WHERE "
            + window.format(c="sent_at") + " GROUP BY partner_id", params):
        state = "silent" if int(missing) and not int(seen) else (
            "slow" if int(late) or int(missing) else "healthy")
        heartbeats[pid] = {"state": state, "sent": int(sent), "seen": int(seen),
                           "late": int(late), "missing": int(missing),
                           "last_seen": _iso(int(last_seen)) if int(seen) else None,
                           "latency_p95_s": None if p95 is None or p95 != p95
                           else round(float(p95) / 1000, 1)}
    gaps: dict[str, list[dict[str, Any]]] = {}
    for pid, code, count in store.query(
            "SELECT partner_id, raw_code, count() AS n FROM canonical_events FINAL "
            "WHERE status = 'unknown' AND NOT synthetic AND " + window.format(c="event_time")
            + " GROUP BY partner_id, raw_code ORDER BY partner_id, n DESC, raw_code "
            "LIMIT 5 BY partner_id", params):
        gaps.setdefault(pid, []).append({"code": code, "events": int(count)})
    last_events = {pid: int(ms) for pid, ms in store.query(
        "SELECT partner_id, toUnixTimestamp64Milli(max(event_time)) FROM canonical_events "
        "WHERE NOT synthetic AND event_time < fromUnixTimestamp64Milli({end:Int64}, 'UTC') "
        "GROUP BY partner_id", params)}
    out = []
    for info in infos:
        pid, contract = info.partner_id, info.contract
        slo_window = fetch_kpis(store, at_ms - contract.slo_window_days * 86_400_000, at_ms,
                                contracts, [pid]).get(pid, [])
        long_by_key = {f.key: f for f in slo_window}
        slos = []
        for figure in recent.get(pid, []):
            entry: dict[str, Any] = {
                "kpi": figure.key, "value": figure.value, "numerator": figure.numerator,
                "denominator": figure.denominator, "target": figure.target,
                "passed": figure.passed}
            if figure.key in BURN_KPIS and figure.target is not None:
                entry["burn_rate"] = burn_rate(figure.value, figure.target)
                long = long_by_key.get(figure.key)
                long_burn = burn_rate(long.value, figure.target) if long else None
                entry["slo_window_value"] = long.value if long else None
                entry["budget_remaining"] = None if long_burn is None else 1 - long_burn
            slos.append(entry)
        last = last_events.get(pid)
        out.append({"partner_id": pid, "display_name": info.display_name,
                    "last_event": _iso(last),
                    "silent_for_minutes": None if last is None else (at_ms - last) // 60_000,
                    "slos": slos, "anomalies": anomalies.get(pid, []),
                    "integration": heartbeats.get(pid),
                    "codebook_gaps": gaps.get(pid, [])})
    return out


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _print(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 140))
    console.print(f"[bold]carrierwatch status[/bold] at {doc['at']} (last {doc['since']}; "
                  f"SLO window per contract)")
    slo = Table("partner", "last event", "on-time", "first attempt", "pickup", "tracking",
                "worst burn", "budget left (SLO window)", "anomalies", "integration",
                "codebook gaps", title="SLO status and burn")
    slo.columns[0].no_wrap = True
    for p in doc["partners"]:
        by = {s["kpi"]: s for s in p["slos"]}

        def cell(key: str, by: dict[str, Any] = by) -> str:
            s = by.get(key)
            if not s or s["value"] is None:
                return "—"
            colour = "green" if s["passed"] else "red"
            return f"[{colour}]{_pct(s['value'])}[/{colour}] / {_pct(s['target'])}"

        burns = [(s["burn_rate"], s["kpi"]) for s in p["slos"] if s.get("burn_rate") is not None]
        worst = max(burns, default=None)
        budgets = [s["budget_remaining"] for s in p["slos"]
                   if s.get("budget_remaining") is not None]
        budget = min(budgets, default=None)
        hb = p["integration"]
        integration = "—" if hb is None else (
            f"{hb['state']} ({hb['seen']}/{hb['sent']} seen)")
        gaps = ", ".join(f"{g['code']}×{g['events']}" for g in p["codebook_gaps"][:3]) or "none"
        anomalies = ", ".join(f"{a['metric']} ({a['windows']})" for a in p["anomalies"]) or "none"
        silent = p["silent_for_minutes"]
        last = "never" if silent is None else (f"{silent} min ago" if silent < 120
                                               else f"{silent / 60:.1f} h ago")
        slo.add_row(p["partner_id"], last, cell("on_time"), cell("first_attempt"),
                    cell("pickup_compliance"), cell("tracking_compliance"),
                    "—" if worst is None else
                    f"[{'red' if worst[0] > 1 else 'green'}]{worst[0]:.1f}×[/] {worst[1]}",
                    "—" if budget is None else
                    f"[{'red' if budget < 0 else 'green'}]{100 * budget:.0f}%[/]",
                    anomalies, integration, gaps)
    console.print(slo)
    console.print("burn = error rate / error budget over the last window (1× spends the "
                  "budget exactly over the SLO window); budget left: over the contract's SLO "
                  "window; anomalies: metric (anomalous 5-min windows)")


@click.command("status")
@click.option("--partner", "partners", multiple=True, help="partner id (repeatable; default: all)")
@click.option("--since", default="6h", show_default=True,
              help="the recent window: 30m, 6h, 2d, ...")
@click.option("--at", "at", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M",
                                                  "%Y-%m-%d"]), default=None,
              help="evaluate at this UTC time (default: the newest event in the store)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(partners: tuple[str, ...], since: str, at: datetime | None, as_json: bool) -> None:
    """Operations view: each partner's SLO status and burn, open anomalies, integration health
    and codebook gaps, read from the store. Exit code 2 when the store holds no events."""
    from carrierwatch.core.timeutil import to_ms
    from carrierwatch.scorecards.cli import partner_infos
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store
    from carrierwatch.transformers.registry import load_registry

    try:
        since_ms = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since'") from None
    settings = get_settings()
    registry = load_registry(settings.home)
    known = {p.id for p in registry}
    unknown = [p for p in partners if p not in known]
    if unknown:
        raise click.BadParameter(f"unknown partner {unknown[0]!r}", param_hint="'--partner'")
    infos = [i for i in partner_infos(registry) if not partners or i.partner_id in partners]
    with open_store(settings, command="carrierwatch status", migrate=True) as store:
        if at is None:
            newest = store.query("SELECT toUnixTimestamp64Milli(max(event_time)), count() "
                                 "FROM canonical_events")
            if not newest or not newest[0][1]:
                raise NoStatusDataError(f"the store ({store.location}) holds no events yet: "
                                        "replay or ingest first")
            at_ms = int(newest[0][0]) + 1
        else:
            at_ms = to_ms(at.replace(tzinfo=UTC))
        doc = {"at": _iso(at_ms), "since": since,
               "partners": partner_status(store, infos, at_ms, since_ms)}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        _print(doc)
