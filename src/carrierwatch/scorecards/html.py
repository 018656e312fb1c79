"""The scorecard as one self-contained HTML file: inline CSS and inline SVG charts drawn with
matplotlib (no script, no font or image fetched: it opens offline, attaches to an e-mail, fits
a laptop screen and prints on A4/Letter)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from carrierwatch.scorecards.document import KpiRow, Scorecard
from carrierwatch.scorecards.kpis import KPIS

__all__ = ["HTML_PACKAGES", "render_html", "write_html"]

HTML_PACKAGES = 40
"""Packages listed in the HTML (those behind service credits first); the CSV/XLSX hold all."""

_PASS, _FAIL, _GREY, _INK, _ACCENT = "#1a7f37", "#c62828", "#9aa4ae", "#1f2933", "#2f6f9f"
_PARTY_COLORS = {"carrier": "#c62828", "consignee": "#2f6f9f", "shipper": "#8e6cbf",
                 "customs": "#d08c00", "force_majeure": "#6b7a86"}


def fmt(value: float | None, unit: str, signed: bool = False) -> str:
    """A KPI value for people: ``95.3%``, ``12.4 h``, ``183 min``; ``—`` without data.

    >>> fmt(0.95312, "ratio"), fmt(12.44, "hours"), fmt(183.2, "minutes"), fmt(None, "ratio")
    ('95.3%', '12.4 h', '183 min', '—')
    >>> fmt(-0.0123, "ratio", signed=True)
    '−1.2 pts'
    """
    if value is None:
        return "—"
    sign = "+" if signed and value > 0 else ""
    if unit == "ratio":
        text = f"{sign}{100 * value:.1f}" + (" pts" if signed else "%")
    elif unit == "hours":
        text = f"{sign}{value:,.1f} h"
    else:
        text = f"{sign}{value:,.0f} min"
    return text.replace("-", "−")


def _svg(figure: Any, tight: bool = True) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight" if tight else None,
                   metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _style() -> None:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({
        "svg.fonttype": "none", "svg.hashsalt": "carrierwatch", "font.size": 9,
        "font.family": "sans-serif", "axes.spines.top": False, "axes.spines.right": False,
        "axes.edgecolor": "#c5ccd3", "axes.labelcolor": _INK, "xtick.color": "#52606d",
        "ytick.color": "#52606d", "axes.titlesize": 10, "axes.titleweight": "bold"})


def _trend_chart(kpis: list[KpiRow]) -> str:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(11.5, 4.2))
    for ax, kpi in zip(axes.flat, kpis, strict=True):
        weeks = [p.week[-2:] for p in kpi.trend]
        values = [p.value for p in kpi.trend]
        scale = 100 if kpi.unit == "ratio" else 1
        xs = [i for i, v in enumerate(values) if v is not None]
        ys = [v * scale for v in values if v is not None]
        ax.plot(xs, ys, color=_ACCENT, marker="o", markersize=3, linewidth=1.5)
        if xs:
            color = _GREY if kpi.passed is None else (_PASS if kpi.passed else _FAIL)
            ax.plot([xs[-1]], [ys[-1]], marker="o", markersize=6, color=color)
        if kpi.target is not None:
            ax.axhline(kpi.target * scale, color=_FAIL, linestyle="--", linewidth=1)
        ax.set_xticks(range(len(weeks)))
        ax.set_xticklabels(weeks, fontsize=7)
        ax.set_xlim(-0.5, len(weeks) - 0.5)
        unit = {"ratio": "%", "hours": "h", "minutes": "min"}[kpi.unit]
        ax.set_title(f"{kpi.label} ({unit})", fontsize=8.5)
        ax.tick_params(axis="y", labelsize=7)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.92, bottom=0.08, wspace=0.32, hspace=0.45)
    return _svg(fig, tight=False)


def _heatmap(card: Scorecard, regions: list[str]) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    days = sorted({d.day for d in card.region_days})
    grid = np.full((len(regions), len(days)), np.nan)
    for cell in card.region_days:
        if cell.region in regions and cell.on_time_rate is not None:
            grid[regions.index(cell.region), days.index(cell.day)] = 100 * cell.on_time_rate
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(regions) + 1.1))
    cmap = plt.get_cmap("RdYlGn").copy()
    cmap.set_bad("#eef1f4")
    image = ax.imshow(grid, cmap=cmap, vmin=80, vmax=100, aspect="auto")
    ax.set_xticks(range(len(days)))
    ax.set_xticklabels([d[5:] for d in days], fontsize=7.5)
    ax.set_yticks(range(len(regions)))
    ax.set_yticklabels(regions, fontsize=7.5)
    for (r, c), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=6.5, color="#111")
    ax.spines[:].set_visible(False)
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label("on-time %", fontsize=7.5)
    bar.ax.tick_params(labelsize=7)
    ax.set_title("On-time % by region (origin) and local day")
    return _svg(fig)


def _failures_chart(card: Scorecard) -> str | None:
    import matplotlib.pyplot as plt

    if not card.failures:
        return None
    reasons = sorted({(f.kind, f.reason) for f in card.failures},
                     key=lambda k: -sum(f.count for f in card.failures
                                        if (f.kind, f.reason) == k))[:12]
    fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(reasons) + 1.0))
    labels = [f"{'exception' if kind == 'exception' else 'failed attempt'}: "
              f"{reason.replace('_', ' ')}" for kind, reason in reasons]
    used: set[str] = set()
    for i, (kind, reason) in enumerate(reasons):
        row = [f for f in card.failures if f.kind == kind and f.reason == reason]
        left = 0
        for f in row:
            ax.barh(i, f.count, left=left, color=_PARTY_COLORS.get(f.accountable, _GREY),
                    label=None if f.accountable in used else f.accountable.replace("_", " "))
            used.add(f.accountable)
            left += f.count
        ax.text(left, i, f" {left}", va="center", fontsize=7)
    ax.set_yticks(range(len(reasons)))
    ax.set_yticklabels(labels, fontsize=7.5)
    ax.invert_yaxis()
    ax.legend(fontsize=7, frameon=False, loc="lower right", title="accountable",
              title_fontsize=7)
    ax.set_xlabel("scans in the week")
    return _svg(fig)


def _hub_chart(card: Scorecard) -> str | None:
    import matplotlib.pyplot as plt

    hubs = card.hubs[:12]
    if not hubs:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.26 * len(hubs) + 0.9))
    ys = range(len(hubs))
    ax.barh(ys, [h.p90_hours for h in hubs], color="#c9d8e6", label="p90")
    ax.barh(ys, [h.mean_hours for h in hubs], color=_ACCENT, height=0.45, label="mean")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([h.hub for h in hubs], fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlabel("hours between arrival and departure scans")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return _svg(fig)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ card.display_name }} scorecard {{ card.week }}</title>
<style>
:root { --ink:#1f2933; --muted:#52606d; --line:#dde3e9; --pass:#1a7f37; --fail:#c62828; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color: var(--ink); margin: 0; background: #f5f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
header { display: flex; justify-content: space-between; align-items: flex-end;
         border-bottom: 3px solid var(--ink); padding-bottom: 10px; margin-bottom: 18px; }
h1 { font-size: 24px; margin: 0; } h2 { font-size: 17px; margin: 26px 0 8px; }
.sub { color: var(--muted); font-size: 13px; }
.tiles { display: grid; grid-template-columns: repeat(5, 1fr); gap: 10px; margin: 14px 0; }
.tile { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
.tile .v { font-size: 22px; font-weight: 700; } .tile .l { color: var(--muted); font-size: 12px; }
.tile.pass { border-left: 5px solid var(--pass); } .tile.fail { border-left: 5px solid var(--fail); }
.tile.none { border-left: 5px solid #9aa4ae; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); text-align: right; }
th { background: #eef2f6; font-weight: 600; } th:first-child, td:first-child { text-align: left; }
td.l, th.l { text-align: left; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
         font-weight: 600; color: #fff; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.none { background: #9aa4ae; }
.up { color: var(--pass); } .down { color: var(--fail); }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 18px; }
.chart svg { max-width: 100%; height: auto; }
.money { font-size: 20px; font-weight: 700; } .note { color: var(--muted); font-size: 12px; }
section { break-inside: avoid; }
@media print { body { background: #fff; } main { padding: 0; max-width: none; }
  h2 { break-after: avoid; } .tiles { grid-template-columns: repeat(5, 1fr); } }
@media (max-width: 900px) { .grid2, .tiles { grid-template-columns: 1fr 1fr; } }
</style></head>
<body><main>
<header><div><h1>{{ card.display_name }} — weekly scorecard</h1>
<div class="sub">Week {{ card.week }} · {{ card.period_start[:10] }} to {{ last_day }}
({{ card.timezone }}) · partner id {{ card.partner_id }}</div></div>
<div class="sub" id="verdict"><b>{{ card.kpis_passed }}</b> KPIs met,
<b>{{ card.kpis_failed }}</b> missed{% if card.credits %} · service credit
<b>{{ money(card.credits.amount) }}</b>{% endif %}</div></header>

<div class="tiles">{% for k in headline %}
<div class="tile {{ state(k) }}"><div class="l">{{ k.label }}</div>
<div class="v" data-kpi="{{ k.key }}">{{ fmt(k.value, k.unit) }}</div>
<div class="l">target {{ target(k) }} · rank {{ k.rank or '—' }}/{{ k.ranked_of }}</div></div>
{% endfor %}</div>

<section><h2>Contract KPIs</h2>
<table id="kpis"><tr><th>KPI</th><th>actual</th><th>numerator / denominator</th><th>target</th>
<th>result</th><th>vs last week</th><th>rank</th></tr>
{% for k in card.kpis %}<tr><td>{{ k.label }}</td><td><b>{{ fmt(k.value, k.unit) }}</b></td>
<td>{{ fraction(k) }}</td><td>{{ target(k) }}</td>
<td><span class="badge {{ state(k) }}">{{ verdict(k) }}</span></td>
<td class="{{ direction(k) }}">{{ fmt(k.change, k.unit, True) }}</td>
<td>{{ k.rank or '—' }} of {{ k.ranked_of }}</td></tr>{% endfor %}
</table>
<p class="note">Rates are numerator / denominator (docs/metrics.md). Rank 1 = best of the
partners with data this week. Quantiles come from histograms (±2.5 %); "within error" = the
target lies inside that band.</p></section>

<section><h2>8-week trend</h2><div class="chart">{{ trend_svg }}</div>
<p class="note">ISO weeks on the x axis. Dashed red line: contract target. Last point: green
met, red missed, grey without a target.</p></section>

<section><h2>Regions</h2>
<div class="grid2"><div><b>Worst on-time</b>
<table><tr><th>region</th><th>decided</th><th>on-time</th></tr>
{% for r in worst_on_time %}<tr><td>{{ r.region }}</td><td>{{ "{:,}".format(r.decided) }}</td>
<td>{{ fmt(r.on_time_rate, 'ratio') }}</td></tr>{% endfor %}</table></div>
<div><b>Most failed first attempts</b>
<table><tr><th>region</th><th>first attempts</th><th>failed</th><th>rate</th></tr>
{% for r in worst_attempts %}<tr><td>{{ r.region }}</td><td>{{ "{:,}".format(r.first_attempts) }}</td>
<td>{{ r.failed_first_attempts }}</td><td>{{ fmt(r.failed_first_attempt_rate, 'ratio') }}</td></tr>
{% endfor %}</table></div></div>
<div class="chart">{{ heatmap_svg }}</div></section>

<section><h2>Exceptions and failed attempts by reason and accountability</h2>
<div class="grid2"><div class="chart">{{ failures_svg or '<p class="note">No exceptions or failed attempts.</p>' }}</div>
<div><table id="accountability"><tr><th>accountable</th><th>exceptions</th><th>failed attempts</th></tr>
{% for a in card.accountability %}<tr><td>{{ a.party.replace('_', ' ') }}</td><td>{{ a.exceptions }}</td>
<td>{{ a.failed_attempts }}</td></tr>{% endfor %}</table>
<p class="note">Reasons map to parties as in docs/metrics.md §8: a consignee's refusal is not
the carrier's failure; unexplained failures stay with the carrier.</p></div></div></section>

<section><h2>Hub dwell</h2>
{% if card.hubs %}<div class="grid2"><div class="chart">{{ hub_svg }}</div>
<div><table><tr><th>hub</th><th>stays</th><th>mean</th><th>p90</th><th>max</th></tr>
{% for h in card.hubs[:12] %}<tr><td>{{ h.hub }}</td><td>{{ "{:,}".format(h.stays) }}</td>
<td>{{ fmt(h.mean_hours, 'hours') }}</td><td>{{ fmt(h.p90_hours, 'hours') }}</td>
<td>{{ fmt(h.max_hours, 'hours') }}</td></tr>{% endfor %}</table></div></div>
{% else %}<p class="note">The feed reports no hub arrival/departure scans.</p>{% endif %}</section>

<section><h2>Cost and service credits</h2>
{% if card.cost %}{% set c = card.cost %}<div class="grid2"><div><table id="cost">
<tr><td>successful deliveries</td><td>{{ "{:,}".format(c.deliveries) }} × {{ money(c.per_delivery) }}</td></tr>
<tr><td>failed attempts (re-attempts)</td><td>{{ "{:,}".format(c.failed_attempts) }} × {{ money(c.per_reattempt) }}</td></tr>
<tr><td>returns</td><td>{{ "{:,}".format(c.returns) }} × {{ money(c.per_return) }}</td></tr>
<tr><th>charges of the week</th><th>{{ money(c.charges) }}</th></tr>
<tr><td>cost per successful delivery</td><td><b>{{ money(c.cost_per_successful_delivery) }}</b></td></tr>
<tr><td>cost of failed attempts (carrier's share)</td><td>{{ money(c.cost_of_failed_attempts) }} ({{ money(c.cost_of_failed_attempts_carrier) }})</td></tr>
</table></div>
<div>{% if card.credits %}{% set cr = card.credits %}
<div class="money" id="credit">Credit owed: {{ money(cr.amount) }} ({{ "%.1f"|format(cr.credit_percent) }} %)</div>
<table><tr><th>rule</th><th>actual</th><th>target</th><th>shortfall</th><th>credit</th><th>applies</th></tr>
{% for l in cr.lines %}<tr><td>{{ l.kpi.replace('_', ' ') }} &gt; {{ l.points }} pts under</td>
<td>{{ fmt(l.actual, 'ratio') }}</td><td>{{ fmt(l.target, 'ratio') }}</td>
<td>{{ '—' if l.shortfall_points is none else "%.1f pts"|format(l.shortfall_points) }}</td>
<td>{{ l.credit_percent }} %</td><td><span class="badge {{ 'fail' if l.applied else 'none' }}">{{ 'yes' if l.applied else 'no' }}</span></td></tr>
{% endfor %}</table><p class="note">{{ cr.packages }} packages justify the credit (listed below
and in the package sheet).</p>{% else %}<p class="note">The contract declares no service credits.</p>{% endif %}
</div></div>{% else %}<p class="note">The contract declares no rates.</p>{% endif %}</section>

<section><h2>Packages behind the credits and failures ({{ shown|length }} of {{ card.packages|length }})</h2>
<table><tr><th>tracking number</th><th class="l">service</th><th class="l">promised by</th>
<th class="l">delivered</th><th class="l">outcome</th><th>attempts</th><th class="l">reason</th>
<th class="l">accountable</th><th class="l">proof</th><th class="l">credit</th></tr>
{% for p in shown %}<tr><td>{{ p.tracking_number }}</td><td class="l">{{ p.service_level }}</td>
<td class="l">{{ (p.promised_by or '—')[:16].replace('T', ' ') }}</td>
<td class="l">{{ (p.delivered_at or '—')[:16].replace('T', ' ') }}</td><td class="l">{{ p.outcome.replace('_', ' ') }}</td>
<td>{{ p.attempts }}</td><td class="l">{{ (p.reason or '—').replace('_', ' ') }}</td>
<td class="l">{{ (p.accountable or '—').replace('_', ' ') }}</td><td class="l">{{ p.proof_of_delivery or '—' }}</td>
<td class="l">{{ ', '.join(p.credit_kpis).replace('_', ' ') or '—' }}</td></tr>{% endfor %}</table>
<p class="note">The full sheet ({{ card.packages|length }} packages, no personal data) is in the
CSV and XLSX files. Times are local ({{ card.timezone }}).</p></section>
<p class="note">carrierwatch scorecard {{ card.schema }} · figures read from the store
(metric_windows, canonical_events, package_outcomes); definitions in docs/metrics.md and
docs/scorecards.md.</p>
</main></body></html>
"""


def render_html(card: Scorecard) -> str:
    """The scorecard as one HTML page (string)."""
    from datetime import date, timedelta

    from jinja2 import Environment
    from markupsafe import Markup

    _style()
    currency = card.cost.currency if card.cost else ""

    def money(value: float | None) -> str:
        return "—" if value is None else f"{value:,.2f} {currency}".strip()

    def target(k: KpiRow) -> str:
        if k.target is None:
            return "—"
        return ("≥ " if k.better == "higher" else "≤ ") + fmt(k.target, k.unit)

    def state(k: KpiRow) -> str:
        return "none" if k.passed is None else ("pass" if k.passed else "fail")

    def verdict(k: KpiRow) -> str:
        if k.passed is None:
            return k.note or ("no target" if k.target is None else "no data")
        return "met" if k.passed else "missed"

    def direction(k: KpiRow) -> str:
        if not k.change:
            return ""
        return "up" if (k.change > 0) == (k.better == "higher") else "down"

    def fraction(k: KpiRow) -> str:
        if k.numerator is None or k.unit != "ratio":
            return f"n = {k.denominator:,}"
        return f"{k.numerator:,.0f} / {k.denominator:,}"

    env = Environment(autoescape=True)
    env.globals.update(fmt=fmt, money=money, target=target, state=state, verdict=verdict,
                       direction=direction, fraction=fraction)
    by_key = {k.key: k for k in card.kpis}
    headline = [by_key[key] for key in ("on_time", "first_attempt", "exception_rate",
                                        "pickup_compliance", "event_latency_p95")]
    regions = [r for r in card.regions if r.decided]
    worst_on_time = regions[:10]
    worst_attempts = sorted((r for r in card.regions if r.first_attempts),
                            key=lambda r: (-r.failed_first_attempts, r.region))[:10]
    heat_regions = sorted({r.region for r in worst_on_time} |
                          {r.region for r in worst_attempts[:5]})
    shown = sorted(card.packages, key=lambda p: (not p.credit_kpis, p.outcome == "on_time",
                                                 p.tracking_number))
    shown = [p for p in shown if p.credit_kpis or p.accountable][:HTML_PACKAGES]
    last_day = (date.fromisoformat(card.period_end[:10]) - timedelta(days=1)).isoformat()
    page = env.from_string(_TEMPLATE).render(
        card=card, headline=headline, worst_on_time=worst_on_time,
        worst_attempts=worst_attempts, shown=shown, last_day=last_day,
        trend_svg=Markup(_trend_chart(card.kpis)),
        heatmap_svg=Markup(_heatmap(card, heat_regions)) if heat_regions else "",
        failures_svg=Markup(svg) if (svg := _failures_chart(card)) else None,
        hub_svg=Markup(svg) if (svg := _hub_chart(card)) else None)
    assert len(KPIS) == len(card.kpis)
    return page


def write_html(card: Scorecard, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(card), encoding="utf-8")
    return path
