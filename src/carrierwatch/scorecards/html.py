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
_SHORT = {"delay_stddev": "Delay std dev", "exception_resolution_mean": "Resolution, mean",
          "exception_resolution_p90": "Resolution, p90", "first_attempt": "First attempt"}
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
    text = text[text.index("<svg"):]
    if "<metadata>" in text:  # RDF boilerplate: no content, and namespace URLs in the page
        text = text[:text.index("<metadata>")] + text[text.index("</metadata>") + 11:]
    return text


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
        title = _SHORT.get(kpi.key, kpi.label)
        ax.set_title(f"{title} ({unit})", fontsize=8.5)
        ax.tick_params(axis="y", labelsize=7)
    fig.subplots_adjust(left=0.04, right=0.99, top=0.92, bottom=0.08, wspace=0.32, hspace=0.45)
    return _svg(fig, tight=False)


def _heatmap(card: Scorecard, regions: list[str], failed: bool = False) -> str:
    """Region × local day: on-time % (red below 80, green at 100), or failed first attempts
    (white none, red most)."""
    import matplotlib.pyplot as plt
    import numpy as np

    days = sorted({d.day for d in card.region_days})
    grid = np.full((len(regions), len(days)), np.nan)
    for cell in card.region_days:
        if cell.region not in regions:
            continue
        value = (float(cell.failed_first_attempts) if cell.first_attempts else None) if failed \
            else (None if cell.on_time_rate is None else 100 * cell.on_time_rate)
        if value is not None:
            grid[regions.index(cell.region), days.index(cell.day)] = value
    fig, ax = plt.subplots(figsize=(5.4, 0.3 * len(regions) + 1.1))
    top = 1.0
    if failed:
        cmap = plt.get_cmap("Reds").with_extremes(bad="#eef1f4")
        top = max(1.0, float(np.nanmax(grid))) if not np.all(np.isnan(grid)) else 1.0
        image = ax.imshow(grid, cmap=cmap, vmin=0, vmax=top, aspect="auto")
    else:
        cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#eef1f4")
        image = ax.imshow(grid, cmap=cmap, vmin=80, vmax=100, aspect="auto")
    ax.set_xticks(range(len(days)))
    ax.set_xticklabels([d[5:] for d in days], fontsize=7.5)
    ax.set_yticks(range(len(regions)))
    ax.set_yticklabels(regions, fontsize=7.5)
    for (r, c), value in np.ndenumerate(grid):
        if not np.isnan(value):
            dark = value > 0.6 * top if failed else value < 84
            ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=6.5,
                    color="white" if dark else "#111")
    ax.spines[:].set_visible(False)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("failed first attempts" if failed else "on-time %", fontsize=7.5)
    bar.ax.tick_params(labelsize=7)
    ax.set_title("Failed first attempts by region and local day" if failed
                 else "On-time % by region (origin) and local day", fontsize=9)
    return _svg(fig)


def _failures_chart(card: Scorecard) -> str | None:
    import matplotlib.pyplot as plt

    if not card.failures:
        return None
    reasons = sorted({(f.kind, f.reason) for f in card.failures},
                     key=lambda k: -sum(f.count for f in card.failures
                                        if (f.kind, f.reason) == k))[:12]
    fig, ax = plt.subplots(figsize=(5.4, 0.26 * len(reasons) + 0.9))
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


def _busiest_hubs(card: Scorecard, count: int = 12) -> list[Any]:
    """The ``count`` hubs with the most stays, longest mean dwell first (a hub seen twice
    says little about a partner's network)."""
    busiest = sorted(card.hubs, key=lambda h: (-h.stays, h.hub))[:count]
    return sorted(busiest, key=lambda h: (-h.mean_hours, h.hub))


def _hub_chart(card: Scorecard) -> str | None:
    import matplotlib.pyplot as plt

    hubs = _busiest_hubs(card)
    if not hubs:
        return None
    fig, ax = plt.subplots(figsize=(5.4, 0.26 * len(hubs) + 0.9))
    ys = range(len(hubs))
    ax.barh(ys, [h.p90_hours for h in hubs], color="#c9d8e6", label="p90")
    ax.barh(ys, [h.mean_hours for h in hubs], color=_ACCENT, height=0.45, label="mean")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([h.hub for h in hubs], fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlabel("hours between arrival and departure scans")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    return _svg(fig)




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

    from importlib.resources import files

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
    page = env.from_string(
        files("carrierwatch.scorecards").joinpath("templates/scorecard.html.jinja")
        .read_text(encoding="utf-8")).render(
        card=card, headline=headline, hubs=_busiest_hubs(card), worst_on_time=worst_on_time,
        worst_attempts=worst_attempts, shown=shown, last_day=last_day,
        trend_svg=Markup(_trend_chart(card.kpis)),
        heatmap_svg=Markup(_heatmap(card, heat_regions)) if heat_regions else "",
        failed_heatmap_svg=Markup(_heatmap(card, heat_regions, failed=True))
        if heat_regions else "",
        failures_svg=Markup(svg) if (svg := _failures_chart(card)) else None,
        hub_svg=Markup(svg) if (svg := _hub_chart(card)) else None)
    assert len(KPIS) == len(card.kpis)
    return page


def write_html(card: Scorecard, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(card), encoding="utf-8")
    return path
