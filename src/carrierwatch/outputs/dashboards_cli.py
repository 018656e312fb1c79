"""``carrierwatch dashboards``: generate the Grafana dashboards and provisioning files."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["dashboards"]


@click.group()
def dashboards() -> None:
    """Grafana dashboards as code (grafanalib): see docs/dashboards.md."""


@dashboards.command("generate")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where to write (default: dashboards/ in the configuration home)")
@click.option("--check", is_flag=True,
              help="write nothing; exit 1 when the files in --out differ from what would be "
                   "generated (for CI)")
def generate(out_dir: Path | None, check: bool) -> None:
    """Write the dashboard JSON (json/) and Grafana provisioning (provisioning/) files.

    One scorecard per partner (thresholds from its SLA contract), the operations overview,
    integration health, the region heatmap and hub dwell time. Same partners, same bytes.
    Exit code 1 with --check when a file differs or is missing.
    """
    from carrierwatch.outputs.dashboards import build, write
    from carrierwatch.settings import get_settings

    settings = get_settings()
    target = out_dir if out_dir is not None else settings.home / "dashboards"
    files = build(settings.home)
    if check:
        stale = sorted(rel for rel, text in files.items()
                       if not (target / rel).is_file()
                       or (target / rel).read_text(encoding="utf-8") != text)
        for rel in stale:
            what = ("differs from the generated file" if (target / rel).is_file()
                    else "missing (a partner added since the last generate?)")
            click.echo(f"{target / rel}: {what}; run `carrierwatch dashboards generate`",
                       err=True)
        click.echo(f"{len(files)} files checked, {len(stale)} differ")
        if stale:
            sys.exit(1)
        return
    try:
        written = write(files, target)
    except OSError as exc:
        click.echo(f"carrierwatch: error: cannot write {target}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    click.echo(f"{len(written)} files written to {target}")
