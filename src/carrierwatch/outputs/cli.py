"""Commands that read the store for people: ``carrierwatch status``."""

from __future__ import annotations

import sys

import click

from carrierwatch.core.errors import EXIT_USAGE

__all__ = ["status"]


class _Duration(click.ParamType):
    name = "duration"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        from carrierwatch.outputs.status import parse_duration

        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _Instant(click.ParamType):
    name = "time"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        from carrierwatch.core.timeutil import parse_instant

        if isinstance(value, int):
            return value
        try:
            ms, _ = parse_instant(str(value))
        except ValueError:
            ms = None
        if ms is None:
            self.fail(f"{value!r} is not an ISO 8601 time with an offset, e.g. "
                      "2026-11-23T14:00:00Z", param, ctx)
        return ms


@click.command()
@click.option("--partner", "partners", multiple=True, metavar="P",
              help="only this partner (repeatable; default: every partner with data)")
@click.option("--since", "since_ms", type=_Duration(), default="6h", show_default=True,
              help="the recent period: 30m, 6h, 2d, 1w")
@click.option("--at", "at_ms", type=_Instant(), default=None,
              help="as of this time (ISO 8601; default: the newest data in the store)")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
def status(partners: tuple[str, ...], since_ms: int, at_ms: int | None, as_json: bool) -> None:
    """Each partner's SLO status and burn, open anomalies, integration health and codebook gaps,
    read from the store (embedded or server).

    Each objective shows its SLI over the period (good/total), the burn rate (1× spends the
    error budget exactly over the contract's SLO window; the SRE workbook pages at 14.4× over
    1 h) and the error budget left over the SLO window. The state of a partner is the worst of
    silent (its last heartbeat is missing), breached (an objective's budget is spent), burning
    (recent burn above 1×), anomalous (an anomaly alert firing), ok.

    Exit codes: 0 the status was printed; 2 the store holds no data (or an unknown partner);
    69 the store is unavailable or in use.
    """
    from rich.console import Console

    from carrierwatch.cli import _registry
    from carrierwatch.outputs.status import collect_status, render_status, status_json
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store

    registry = _registry(list(partners) or None)
    for pid in partners:
        registry.get(pid)  # an unknown partner is a usage error (exit 2), naming the known ones
    contracts = {p.id: p.spec.contract for p in registry}
    with open_store(get_settings(), command="carrierwatch status", migrate=True) as store:
        report = collect_status(store, contracts, since_ms=since_ms, at_ms=at_ms,
                                partners=list(partners) or None)
    if report is None:
        click.echo("carrierwatch: error: the store holds no canonical events yet; run "
                   "`carrierwatch demo`, `carrierwatch replay` or the worker and sink first",
                   err=True)
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(status_json(report).decode())
    else:
        Console().print(render_status(report))
