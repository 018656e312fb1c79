"""The ``carrierwatch`` command line.

Exit codes: 0 success; 2 usage errors (unknown partner, missing file) with a one-line message;
3 when ``normalize`` sent anything to the dead-letter output; 1 for other failures.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson

from carrierwatch.core.errors import CarrierwatchError, UnknownPartnerError

__all__ = ["main"]

EXIT_DEAD_LETTERS = 3
EXIT_USAGE = 2


def _usage_error(message: str) -> NoReturn:
    click.echo(f"carrierwatch: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _registry() -> Any:
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry()
    for partner_id, trace in registry.failures.items():
        click.echo(f"carrierwatch: warning: partner {partner_id!r} failed to load:\n{trace}",
                   err=True)
    return registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="carrierwatch")
def cli() -> None:
    """carrierwatch: SLA monitoring for last-mile delivery partners."""


@cli.command()
@click.option("--partner", "partner_id", required=True, help="partner id (see `partners list`)")
@click.argument("file", type=str)
def normalize(partner_id: str, file: str) -> None:
    """Normalize one partner payload FILE (or - for stdin) into canonical events.

    Canonical events go to stdout as JSON lines (keys = Avro field names, times ISO 8601 UTC);
    dead-letter records go to stderr as JSON lines. Exit 0 when everything normalized, 3 when
    anything went to the dead-letter output.
    """
    registry = _registry()
    try:
        partner = registry.get(partner_id)
    except UnknownPartnerError as exc:
        _usage_error(str(exc))
    if file == "-":
        raw = sys.stdin.buffer.read()
    else:
        path = Path(file)
        if not path.is_file():
            _usage_error(f"no such file: {file}")
        raw = path.read_bytes()
    result = partner.transform(raw, int(time.time() * 1000))
    out = sys.stdout.buffer
    for event in result.events:
        out.write(orjson.dumps(event.to_json_dict()) + b"\n")
    out.flush()
    err = sys.stderr.buffer
    for dead in result.dead_letters:
        err.write(orjson.dumps(dead.to_json_dict()) + b"\n")
    err.flush()
    if result.empty and not result.events:
        click.echo(f"carrierwatch: empty payload: no events at {', '.join(result.empty)} "
                   "(the partner sent an empty event list)", err=True)
    if result.dead_letters:
        sys.exit(EXIT_DEAD_LETTERS)


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--partner", "partner_id", default=None,
              help="partner of single payload files (default: their folder's name)")
@click.option("--batch-events", default=20_000, show_default=True,
              help="canonical events per pipeline batch")
@click.option("--wait", "wait_seconds", default=0.0, show_default=True,
              help="seconds to wait for the embedded store if another process owns it")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--no-anomalies", is_flag=True, help="do not run the online anomaly monitor")
def replay(files: tuple[Path, ...], partner_id: str | None, batch_events: int,
           wait_seconds: float, no_progress: bool, no_anomalies: bool) -> None:
    """Run the whole core in-process over raw partner FILES into the store.

    FILES are simulator raw logs (*.rawlog.jsonl), folders holding them, or single payload files
    (partner from --partner or the parent folder's name).
    """
    from carrierwatch.replay import iter_inputs, run_replay
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store

    missing = [f for f in files if not f.exists()]
    if missing:
        _usage_error(f"no such file: {missing[0]}")
    registry = _registry()
    try:
        records = iter_inputs(list(files), partner=partner_id, registry=registry)
    except UnknownPartnerError as exc:
        _usage_error(str(exc))
    settings = get_settings()
    with open_store(settings, command="carrierwatch replay", wait=wait_seconds,
                    migrate=True) as store:
        from tqdm import tqdm

        with tqdm(unit=" events", unit_scale=True, disable=no_progress, leave=False,
                  desc="replay") as bar:
            from carrierwatch.anomaly.monitor import AnomalyMonitor, monitor_options_for

            monitor = None if no_anomalies else AnomalyMonitor(
                **monitor_options_for(partner.spec for partner in registry))
            summary = run_replay(records, store, registry, batch_events=batch_events,
                                 progress=bar.update, monitor=monitor)
    click.echo(
        f"replayed {summary.payloads:,} payloads → {summary.events:,} canonical events "
        f"({summary.accepted:,} unique, {summary.duplicates:,} duplicates, "
        f"{summary.too_late:,} too late) for {len(summary.per_partner)} partners in "
        f"{summary.seconds:.1f} s ({summary.events_per_second:,.0f} events/s)")
    click.echo(f"dead letters: {summary.dead_letters:,}; codebook gaps: "
               f"{sum(summary.gaps.values()):,} events"
               + (f" ({', '.join(f'{k} ×{v}' for k, v in summary.gaps.most_common(5))})"
                  if summary.gaps else "")
               + (f"; empty payloads (no events sent yet): {summary.empty_payloads:,}"
                  if summary.empty_payloads else ""))
    click.echo(f"anomalous windows: {summary.anomalies:,}; rows written: "
               f"{summary.rows_written:,}; store: {store!r}")


@cli.group()
def partners() -> None:
    """List and scaffold partners."""


@partners.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def partners_list(as_json: bool) -> None:
    """List registered partners with their feed format and codebook size."""
    registry = _registry()
    rows = [
        {
            "id": p.id,
            "name": p.spec.display_name,
            "kind": p.spec.kind,
            "format": p.spec.format,
            "delivery": p.spec.delivery,
            "transformer": p.spec.transformer,
            "codebook_version": p.codebook.version,
            "codes": len(p.codebook.codes) + len(p.codebook.patterns),
        }
        for p in registry
    ]
    if as_json:
        click.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "name", "kind", "format", "delivery", "transformer", "codebook",
                      title=f"{len(rows)} partners")
        for row in rows:
            table.add_row(row["id"], row["name"], row["kind"], row["format"], row["delivery"],
                          row["transformer"], f"v{row['codebook_version']} ({row['codes']} codes)")
        Console().print(table)
    if registry.failures:
        sys.exit(1)


@partners.command("add")
@click.argument("partner_id")
@click.option("--name", "display_name", default=None, help="display name")
@click.option("--kind", type=click.Choice(["config", "code"]), default="config",
              show_default=True,
              help="config: a JSON webhook onboarded by field paths alone; code: a Python "
                   "transformer module")
def partners_add(partner_id: str, display_name: str | None, kind: str) -> None:
    """Scaffold a new partner: metadata, codebook, samples folder (and a transformer module)."""
    from carrierwatch.scaffold import scaffold_partner
    from carrierwatch.settings import get_settings

    try:
        created = scaffold_partner(get_settings().home, partner_id, display_name, kind)
    except CarrierwatchError as exc:
        _usage_error(str(exc))
    for path in created:
        click.echo(f"created {path}")
    click.echo(f"next: edit codebooks/{partner_id}.yaml, add samples/{partner_id}/, "
               f"then `carrierwatch codebook check` and `make test`")


@cli.group()
def codebook() -> None:
    """Validate partner codebooks."""


@codebook.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def codebook_check(paths: tuple[Path, ...]) -> None:
    """Check codebooks (all of codebooks/ by default); report errors as file:line: message."""
    from carrierwatch.core.codebook import problems_in
    from carrierwatch.settings import get_settings

    files = list(paths) or sorted(get_settings().codebooks_dir.glob("*.yaml"))
    missing = [p for p in files if not p.is_file()]
    if missing:
        _usage_error(f"no such file: {missing[0]}")
    problems = problems_in(files)
    for problem in problems:
        click.echo(str(problem), err=True)
    click.echo(f"{len(files)} codebooks checked, {len(problems)} problems")
    if problems:
        sys.exit(1)


def _register_groups() -> None:
    """Attach the command groups that live beside the subsystems they drive.

    Imported lazily so that ``carrierwatch normalize`` does not pay for Faust or chDB imports.
    """

    for target, name in _GROUPS:
        module_name, attr = target.split(":")
        cli.add_command(_LazyCommand(name, module_name, attr), name=name)


class _LazyCommand(click.Command):
    """A command whose module is imported only when the command runs (or its help is shown)."""

    def __init__(self, name: str, module_name: str, attr: str) -> None:
        super().__init__(name)
        self._target = (module_name, attr)
        self._real: click.Command | None = None

    def _load(self) -> click.Command:
        if self._real is None:
            import importlib

            module = importlib.import_module(self._target[0])
            self._real = getattr(module, self._target[1])
        return self._real

    def get_short_help_str(self, limit: int = 45) -> str:
        return self._load().get_short_help_str(limit)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        return self._load().main(*args, **kwargs)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        return self._load().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        return self._load().invoke(ctx)


_GROUPS: list[tuple[str, str]] = [
    ("carrierwatch.demo:demo", "demo"),
    ("carrierwatch.registry.cli:schema_registry", "schema-registry"),
    ("carrierwatch.anomaly.cli:anomaly", "anomaly"),
    ("carrierwatch.streams.broker:kafka_cli", "kafka"),
    ("carrierwatch.synthetic.simulator:simulate_cli", "simulate"),
    ("carrierwatch.streams.cli:worker", "worker"),
    ("carrierwatch.streams.cli:sink", "sink"),
    ("carrierwatch.streams.cli:topics", "topics"),
]


def main() -> None:
    _register_groups()
    try:
        cli.main(prog_name="carrierwatch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        _usage_error(exc.format_message().splitlines()[0])
    except click.Abort:
        sys.exit(1)
    except CarrierwatchError as exc:
        click.echo(f"carrierwatch: error: {exc}", err=True)
        sys.exit(1)
