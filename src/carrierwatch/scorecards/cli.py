"""``carrierwatch scorecard``: write the weekly partner scorecards from the store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from carrierwatch.core.errors import EXIT_USAGE, CarrierwatchError

if TYPE_CHECKING:
    from carrierwatch.scorecards.build import PartnerInfo
    from carrierwatch.scorecards.document import Scorecard
    from carrierwatch.storage.base import Store

__all__ = ["FORMATS", "NoScorecardDataError", "partner_infos", "scorecard", "write_scorecards"]

FORMATS = ("csv", "xlsx", "html", "json")


class NoScorecardDataError(CarrierwatchError):
    """The store holds no data for the week (and partners) asked: no report is written."""

    exit_code = EXIT_USAGE


def partner_infos(registry: Any) -> list[PartnerInfo]:
    from carrierwatch.scorecards.build import PartnerInfo

    return [PartnerInfo(p.id, p.spec.display_name, p.spec.contract,
                        p.spec.synthetic_tracking_prefix)
            for p in sorted(registry, key=lambda p: p.id)]


def write_card(card: Scorecard, out: Path, formats: Sequence[str]) -> list[Path]:
    """Write one scorecard in ``formats`` under ``out/<week>/``; return the files."""
    from carrierwatch.scorecards.tables import write_csv

    folder = out / card.week
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "json" in formats:
        path = folder / f"{card.partner_id}.json"
        path.write_text(card.to_json(), encoding="utf-8")
        written.append(path)
    if "csv" in formats:
        written += write_csv(card, folder / card.partner_id)
    if "xlsx" in formats:
        from carrierwatch.scorecards.xlsx import write_xlsx

        written.append(write_xlsx(card, folder / f"{card.partner_id}.xlsx"))
    if "html" in formats:
        from carrierwatch.scorecards.html import write_html

        written.append(write_html(card, folder / f"{card.partner_id}.html"))
    return written


def write_scorecards(store: Store, infos: Sequence[PartnerInfo], everyone: Sequence[PartnerInfo],
                     week: str | None, formats: Sequence[str], out: Path,
                     now: datetime | None = None) -> tuple[list[Scorecard], list[Path]]:
    """Build and write the scorecards of ``infos`` for ``week`` (default: each partner's last
    complete week in its contract time zone). Raises :class:`NoScorecardDataError` when no
    partner has data."""
    from carrierwatch.scorecards.build import build_scorecards
    from carrierwatch.scorecards.document import last_complete_week

    moment = now or datetime.now(UTC)
    weeks: dict[str, list[PartnerInfo]] = {}
    for info in infos:
        chosen = week or last_complete_week(moment, info.contract.timezone)
        weeks.setdefault(chosen, []).append(info)
    cards: list[Scorecard] = []
    for chosen, group in sorted(weeks.items()):
        cards += build_scorecards(store, chosen, group, everyone)
    if not cards:
        asked = ", ".join(sorted(weeks))
        hint = "replay or ingest that week first, or pick another with --week"
        rows = store.query("SELECT min(event_time), max(event_time), count() "
                           "FROM canonical_events WHERE NOT synthetic")
        if rows and rows[0][2]:
            from carrierwatch.scorecards.document import iso_week

            oldest, newest = iso_week(rows[0][0].date()), iso_week(rows[0][1].date())
            hint = (f"the store holds events of weeks {oldest} to {newest}, e.g. "
                    f"carrierwatch scorecard --week {newest}")
        raise NoScorecardDataError(
            f"the store ({store.location}) has no data for week {asked} of "
            f"{', '.join(i.partner_id for i in infos)}: nothing written ({hint})")
    files: list[Path] = []
    for card in cards:
        files += write_card(card, out, formats)
    return cards, files


@click.command("scorecard")
@click.option("--week", default=None, metavar="YYYY-Www",
              help="ISO week, e.g. 2026-W47 (default: the last complete week in each "
                   "partner's contract time zone)")
@click.option("--partner", "partners", multiple=True, help="partner id (repeatable; default: all)")
@click.option("--format", "formats", multiple=True, type=click.Choice(FORMATS),
              help="output format (repeatable; default: all four)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("scorecards"), show_default=True, help="output folder")
def scorecard(week: str | None, partners: tuple[str, ...], formats: tuple[str, ...],
              out_dir: Path) -> None:
    """Write weekly partner scorecards (CSV, XLSX, HTML, JSON) from the store.

    Reads the embedded store (or the ClickHouse server of CARRIERWATCH_CLICKHOUSE_URL); never
    re-runs the pipeline. Exit code 2 when the store has no data for the week.
    """
    from carrierwatch.scorecards.document import WeekError, week_bounds
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store
    from carrierwatch.transformers.registry import load_registry

    if week is not None:
        try:
            week_bounds(week, "UTC")
        except WeekError as exc:
            raise click.BadParameter(str(exc), param_hint="'--week'") from None
    settings = get_settings()
    registry = load_registry(settings.home)
    known = {p.id for p in registry}
    unknown = [p for p in partners if p not in known]
    if unknown:
        raise click.BadParameter(f"unknown partner {unknown[0]!r} (known: "
                                 f"{', '.join(sorted(known))})", param_hint="'--partner'")
    registry.require(partners or None)
    everyone = partner_infos(registry)
    infos = [i for i in everyone if not partners or i.partner_id in partners]
    if out_dir.exists() and not out_dir.is_dir():
        raise click.BadParameter(f"not a folder: {out_dir}", param_hint="'--out'")
    out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable --out fails before the work
    with open_store(settings, command="carrierwatch scorecard", migrate=True) as store:
        cards, files = write_scorecards(store, infos, everyone, week, formats or FORMATS,
                                        out_dir)
    for card in cards:
        verdict = f"{card.kpis_passed} KPIs met, {card.kpis_failed} missed"
        if card.credits is not None and card.credits.amount:
            verdict += f", credit {card.credits.amount:,.2f} {card.credits.currency}"
        click.echo(f"{card.partner_id} {card.week}: {verdict}")
    missing = sorted({i.partner_id for i in infos} - {c.partner_id for c in cards})
    if missing:
        click.echo(f"no data for {', '.join(missing)} in that week: no scorecard", err=True)
    htmls = [f for f in files if f.suffix == ".html"]
    click.echo(f"wrote {len(files)} files to {out_dir}"
               + (f"; open {htmls[0]}" if htmls else ""))
