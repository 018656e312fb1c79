"""``carrierwatch alerts validate`` and ``carrierwatch alerts generate``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from carrierwatch.core.errors import EXIT_ERROR

if TYPE_CHECKING:
    from carrierwatch.alerting.spec import PartnerSlos, SpecProblem

__all__ = ["alerts"]


@click.group(name="alerts")
def alerts() -> None:
    """SLO burn-rate and integration alerts for Prometheus, from the partner contracts."""


def _load() -> tuple[list[PartnerSlos], list[SpecProblem]]:
    from carrierwatch.alerting.spec import load_slos
    from carrierwatch.settings import get_settings

    return load_slos(get_settings().home)


@alerts.command(name="validate")
def validate() -> None:
    """Check the SLO specification of every partner (contract targets and `slos:` sections).

    Prints each problem as `file:line: message`. Exit 0 when every partner is valid, 1 when
    any has a problem.
    """
    specs, problems = _load()
    for problem in problems:
        click.echo(str(problem), err=True)
    objectives = sum(len(spec.objectives) for spec in specs)
    click.echo(f"{len(specs) + len({p.source for p in problems})} partners checked, "
               f"{objectives} SLOs, {len(problems)} problems")
    if problems:
        sys.exit(EXIT_ERROR)


@alerts.command(name="generate")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="folder for the rule files (default: alerts/rules in the "
                                 "configuration home)")
@click.option("--runbook-base", default="runbooks/", show_default=True,
              help="prefix of every runbook_url (e.g. your repository's web URL of runbooks/)")
@click.option("--check", is_flag=True,
              help="write nothing; exit 1 when a file in --out differs from what would be "
                   "generated")
def generate(out_dir: Path | None, runbook_base: str, check: bool) -> None:
    """Write Prometheus recording and alerting rules: one file per partner, one for the platform.

    Exit 0 when written (or, with --check, up to date); 1 when a partner's specification has a
    problem (nothing is written), a file cannot be written, or --check found a stale file.
    """
    from carrierwatch.alerting import rules
    from carrierwatch.settings import get_settings

    specs, problems = _load()
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        click.echo(f"carrierwatch: error: {len(problems)} problems in the SLO specifications; "
                   "no rules written", err=True)
        sys.exit(EXIT_ERROR)
    folder = out_dir or get_settings().home / "alerts" / "rules"
    files = rules.generate(specs, runbook_base)
    if check:
        stale = [f.name for f in files
                 if not (folder / f.name).is_file()
                 or (folder / f.name).read_text(encoding="utf-8") != rules.render(f)]
        extra = sorted(p.name for p in folder.glob("*.rules.yml")
                       if p.name not in {f.name for f in files}) if folder.is_dir() else []
        for name in [*stale, *extra]:
            click.echo(f"{folder / name}: out of date; run `carrierwatch alerts generate`",
                       err=True)
        click.echo(f"{len(files)} rule files checked, {len(stale) + len(extra)} out of date")
        if stale or extra:
            sys.exit(EXIT_ERROR)
        return
    written = rules.write(files, folder)
    alerts_count = sum(1 for f in files for g in f.groups for r in g["rules"] if "alert" in r)
    click.echo(f"wrote {len(written)} rule files to {folder} ({alerts_count} alerts)")
