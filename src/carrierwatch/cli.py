"""The ``carrierwatch`` command line.

Exit codes (the table is in :mod:`carrierwatch.core.errors`): 0 success; 1 error (invalid
configuration or codebook, a partner that failed to load, a path that cannot be read or written);
2 usage error (unknown option or partner, bad option value, missing file); 3 when ``normalize``
or ``replay`` sent anything to the dead letters; 4 when ``replay`` found more events too late
than ``--max-too-late`` allows; 69 a component is unavailable (Kafka broker, schema registry,
store); 70 internal error (a bug); 130 interrupted. Every error is one
``carrierwatch: error: ...`` line on stderr, never a traceback (``CARRIERWATCH_DEBUG=1`` shows it).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import click
import orjson

from carrierwatch.core.errors import (
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CarrierwatchError,
    ConfigurationError,
    UnknownPartnerError,
)

__all__ = ["cli", "leaf_commands", "main", "run"]

EXIT_DEAD_LETTERS = 3
EXIT_TOO_LATE = 4

#: the exit codes every command shares, in the help of each (see carrierwatch.core.errors)
EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 error (invalid configuration or codebook, a partner that failed "
    "to load, a path that cannot be read or written); 2 usage error (unknown option or "
    "partner, bad option value, missing file); 69 a component is unavailable (Kafka broker, "
    "schema registry, store); 70 internal error (a bug; CARRIERWATCH_DEBUG=1 prints the "
    "traceback); 130 interrupted. Errors are one `carrierwatch: error: ...` line on stderr.")


def _usage_error(message: str) -> NoReturn:
    click.echo(f"carrierwatch: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _registry(need: Iterable[str] | None = None) -> Any:
    """The partner registry; stops the command (exit 1, ``file:line: problem``) when a partner it
    needs failed to load: ``need`` lists them, None means every partner."""
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry()
    registry.require(need)
    return registry


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="carrierwatch")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the store and local state (default: CARRIERWATCH_DATA_DIR, else the "
                   "platform's per-user data directory, e.g. ~/.local/share/carrierwatch)")
def cli(data_dir: Path | None) -> None:
    """carrierwatch: SLA monitoring for last-mile delivery partners."""
    if data_dir is not None:
        import os

        from carrierwatch.settings import get_settings

        # the environment, so that processes this one starts (workers, the sink) use it too
        os.environ["CARRIERWATCH_DATA_DIR"] = str(data_dir.expanduser().resolve())
        get_settings.cache_clear()


@cli.command()
@click.option("--partner", "partner_id", required=True, help="partner id (see `partners list`)")
@click.argument("file", type=str)
def normalize(partner_id: str, file: str) -> None:
    """Normalize one partner payload FILE (or - for stdin) into canonical events.

    Canonical events go to stdout as JSON lines (keys = Avro field names, times ISO 8601 UTC);
    dead-letter records go to stderr as JSON lines. Exit 0 when everything normalized, 3 when
    anything went to the dead-letter output, 1 when the partner failed to load (its codebook's
    file:line problem), 2 for an unknown partner or a missing file.
    """
    registry = _registry([partner_id])
    try:
        partner = registry.get(partner_id)
    except UnknownPartnerError as exc:
        _usage_error(str(exc))
    if file == "-":
        raw = sys.stdin.buffer.read()
    else:
        path = Path(file)
        if not path.is_file():
            _usage_error(f"{'not a payload file, a folder' if path.is_dir() else 'no such file'}"
                         f": {file}")
        try:
            raw = path.read_bytes()
        except OSError as exc:  # e.g. EIO: main() prints "FILE: strerror"
            raise OSError(exc.errno, exc.strerror, file) from exc
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
@click.option("--batch-events", default=20_000, show_default=True, type=click.IntRange(min=1),
              help="canonical events per pipeline batch")
@click.option("--wait", "wait_seconds", default=0.0, show_default=True,
              type=click.FloatRange(min=0),
              help="seconds to wait for the embedded store if another process owns it")
@click.option("--max-too-late", default=1.0, show_default=True,
              type=click.FloatRange(min=0, max=100),
              help="percent of events that may come too late before the run fails (exit 4)")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--no-anomalies", is_flag=True, help="do not run the online anomaly monitor")
def replay(files: tuple[Path, ...], partner_id: str | None, batch_events: int,
           wait_seconds: float, max_too_late: float, no_progress: bool,
           no_anomalies: bool) -> None:
    """Run the whole core in-process over raw partner FILES into the store.

    FILES are raw logs (*.rawlog.jsonl, as `simulate` writes them), folders holding them, or
    single payload files (partner from --partner or the parent folder's name). Records are
    applied in received-time order whatever their order in the files; loose payload files form
    one batch applied in event-time order (docs/metrics.md, "Arrival order"). A line that is no
    raw-log record becomes a dead letter naming its file and line; the others are replayed.

    Exit codes: 0 everything replayed; 3 completed with dead letters (bad lines or payloads,
    kept in the dead_letters table, or escalations whose webhook failed: docs/decisions.md);
    4 completed, but more than --max-too-late percent of the events came too late and were
    not applied; 2 usage errors (no input, unknown partner);
    1 other failures (a partner that failed to load); 69 the store unavailable or in use.
    """
    from carrierwatch.replay import NoInputError, iter_inputs, run_replay
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store

    missing = [f for f in files if not f.exists()]
    if missing:
        _usage_error(f"no such file: {missing[0]}")
    registry = _registry()
    try:
        records = iter_inputs(list(files), partner=partner_id, registry=registry)
    except (UnknownPartnerError, NoInputError) as exc:
        _usage_error(str(exc))
    if not len(records) and not records.bad:
        _usage_error(f"no records in {', '.join(map(str, files))}")
    settings = get_settings()
    with open_store(settings, command="carrierwatch replay", wait=wait_seconds,
                    migrate=True) as store:
        from tqdm import tqdm

        from carrierwatch.anomaly.monitor import AnomalyMonitor, monitor_options_for

        with tqdm(total=len(records), unit=" payloads", unit_scale=True, disable=no_progress,
                  leave=False, desc="replay") as bar:
            monitor = None if no_anomalies else AnomalyMonitor(
                **monitor_options_for(partner.spec for partner in registry))
            from carrierwatch.decisions.cli import replay_escalations, replay_escalator

            summary = run_replay(records, store, registry, batch_events=batch_events,
                                 progress=bar.update, monitor=monitor,
                                 escalator=replay_escalator(settings, registry))
        _print_replay_summary(summary, store, registry, len(records.files))
        dead_escalations = replay_escalations(settings, summary.escalations)
    too_late_percent = 100 * summary.too_late_share
    if too_late_percent > max_too_late:
        click.secho(
            f"INCOMPLETE: {summary.too_late:,} events ({too_late_percent:.1f} %) came too late "
            f"and were not applied (allowed: {max_too_late:g} %). Their packages' outcomes and "
            "windows miss them. Replay them in one run with the rest of their history, or "
            "raise --max-too-late if that is expected.", err=True, fg="red", bold=True)
        sys.exit(EXIT_TOO_LATE)
    if summary.dead_letters or dead_escalations:
        sys.exit(EXIT_DEAD_LETTERS)


def _print_replay_summary(summary: Any, store: Any, registry: Any, files: int) -> None:
    """What a replay did, with each term explained once, and the scorecards of what it
    replayed."""
    from rich.console import Console
    from rich.table import Table

    from carrierwatch.outputs.scorecard import scorecard_table, scorecards

    console = Console(highlight=False)
    late_days = summary.allowed_lateness_ms / 86_400_000
    console.print(
        f"replayed {summary.payloads:,} payloads from {files:,} files → {summary.events:,} "
        f"canonical events of {len(summary.per_partner)} partners in {summary.seconds:.1f} s "
        f"({summary.events_per_second:,.0f} events/s)")
    terms = Table.grid(padding=(0, 2))
    terms.add_column(justify="left")
    terms.add_column(justify="right")
    terms.add_column(justify="left", style="dim")
    terms.add_row("applied", f"{summary.accepted:,}", "distinct events applied to packages")
    terms.add_row("duplicates", f"{summary.duplicates:,}",
                  "copies of an event already applied (partners resend histories)")
    terms.add_row("too late", f"{summary.too_late:,}",
                  f"more than {late_days:g} days older than an event its package already "
                  "had: not applied")
    terms.add_row("dead letters", f"{summary.dead_letters:,}",
                  "payloads or lines that could not be read: table dead_letters")
    if summary.empty_payloads:
        terms.add_row("empty payloads", f"{summary.empty_payloads:,}",
                      "payloads whose event list the partner sent empty (no scan yet)")
    gaps = sum(summary.gaps.values())
    terms.add_row("codebook gaps", f"{gaps:,}",
                  "events with a partner code the codebook lacks (status unknown)"
                  + (f": {', '.join(f'{k} ×{v}' for k, v in summary.gaps.most_common(3))}"
                     if gaps else ""))
    terms.add_row("anomalous windows", f"{summary.anomalies:,}",
                  "5-minute windows the online monitor flagged: table anomalies")
    console.print(terms)
    for bad in summary.bad_inputs[:10]:
        console.print(f"  [red]dead letter[/red] {bad.error}", soft_wrap=True)
    if len(summary.bad_inputs) > 10:
        console.print(f"  … and {len(summary.bad_inputs) - 10:,} more bad lines")
    if summary.dead_letters:
        console.print('  see them all: carrierwatch query "SELECT partner_id, path, error FROM '
                      'dead_letters FINAL ORDER BY received_time DESC"', soft_wrap=True)
    if summary.first_event_time is not None and summary.per_partner:
        contracts = {p.id: p.spec.contract for p in registry if p.id in summary.per_partner}
        day = 86_400_000
        start = summary.first_event_time // day * day
        end = (summary.last_event_time // day + 1) * day
        cards = [card for card in scorecards(store, contracts, start_ms=start, end_ms=end)
                 if card.partner_id in contracts]
        if cards:
            console.print(scorecard_table(
                cards, title=f"Partner scorecards, {_iso_day(start)} → {_iso_day(end - 1)} "
                             "(actual / contract target)"))
    console.print(f"rows written: {summary.rows_written:,} to {store.description}")


def _iso_day(ms: int) -> str:
    from carrierwatch.core.model import ms_to_iso

    return (ms_to_iso(ms) or "")[:-14]  # the date part: four-digit years (strftime's %Y is not)


@cli.command()
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def reset(yes: bool) -> None:
    """Empty the store (every data table; the schema stays) and say what was removed.

    Exit codes: 0 emptied (or nothing to remove); 69 the store is unavailable or in use;
    2 not confirmed (no --yes and no terminal to ask on).
    """
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store

    settings = get_settings()
    with open_store(settings, command="carrierwatch reset", migrate=True) as store:
        if not yes:
            if not sys.stdin.isatty():
                _usage_error(f"reset would empty {store.description}; add --yes to confirm")
            click.confirm(f"Empty every table of {store.description}?", abort=True)
        removed = store.reset()
        where = store.description
    total = sum(removed.values())
    for table, rows in removed.items():
        if rows:
            click.echo(f"removed {rows:,} rows from {table}")
    click.echo(f"{where}: {total:,} rows removed from {len(removed)} tables; the store is empty")


@cli.command()
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True, help="output format")
def query(sql: str, fmt: str) -> None:
    """Run read-only SQL on the store (embedded or server) and print the result.

    The statement runs with ClickHouse's readonly setting: INSERT, ALTER, DROP and the like are
    refused. Tables: canonical_events, package_outcomes, metric_windows, dead_letters,
    anomalies, alerts, heartbeats, raw_events (use FINAL for their latest rows).

    Exit codes: 0 the query ran; 1 the store refused it (the error is printed); 69 the store
    is unavailable or in use.
    """
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store

    if not sql.strip():
        _usage_error("query needs an SQL statement, e.g. carrierwatch query "
                     "\"SELECT partner_id, count() FROM canonical_events FINAL GROUP BY 1\"")
    with open_store(get_settings(), command="carrierwatch query", migrate=True) as store:
        names, rows = store.query_readonly(sql)
    if fmt == "json":
        click.echo(orjson.dumps([dict(zip(names, row, strict=True)) for row in rows],
                                default=_json_value, option=orjson.OPT_INDENT_2
                                | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z).decode())
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_text(value) for value in row] for row in rows)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*names, caption=f"{len(rows):,} rows")
        for row in rows:
            table.add_row(*(_text(value) for value in row))
        Console().print(table)


def _text(value: Any) -> str:
    """A value as a person reads it: times in ISO 8601, bytes as text where they are."""
    from datetime import datetime

    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _json_value(value: Any) -> Any:
    from decimal import Decimal

    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


@cli.group()
def partners() -> None:
    """List and scaffold partners."""


@partners.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def partners_list(as_json: bool) -> None:
    """List registered partners with their feed format and codebook size.

    Exit 0, or 1 when a partner failed to load (each named with its file:line problem).
    """
    registry = _registry(need=())
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
    for partner_id in sorted(registry.failures):
        click.echo(f"carrierwatch: error: partner {partner_id!r} failed to load: "
                   f"{registry.errors.get(partner_id)}", err=True)
    if registry.failures:
        sys.exit(EXIT_ERROR)


@partners.command("add")
@click.argument("partner_id")
@click.option("--name", "display_name", default=None, help="display name")
@click.option("--format", "feed_format", type=click.Choice(["json", "csv"]), default="json",
              show_default=True,
              help="json: a webhook read by json_mapping; csv: batch files read by csv_mapping")
@click.option("--kind", type=click.Choice(["config", "code"]), default="config",
              show_default=True,
              help="config: onboarded by YAML alone (field paths or columns); code: a Python "
                   "transformer module")
@click.option("--timezone", "timezone", default=None,
              help="the partner's IANA time zone, e.g. America/Sao_Paulo (asked for on a "
                   "terminal when left out)")
@click.option("--country", default=None,
              help="the partner's ISO 3166-1 country, e.g. BR (asked for on a terminal when "
                   "left out)")
def partners_add(partner_id: str, display_name: str | None, feed_format: str, kind: str,
                 timezone: str | None, country: str | None) -> None:
    """Scaffold a new partner: metadata, codebook, samples folder (and a transformer module).

    The partner's zone and country are required: local times without an offset and without a
    known place are read in that zone (flagged as a guess), never silently in UTC.
    """
    from carrierwatch.scaffold import check_country, check_timezone, scaffold_partner
    from carrierwatch.settings import get_settings

    try:
        if timezone is not None:
            timezone = check_timezone(timezone)
        if country is not None:
            country = check_country(country)
    except CarrierwatchError as exc:
        _usage_error(str(exc))
    if timezone is None or country is None:
        if not sys.stdin.isatty():
            missing = " and ".join(f"--{name}" for name, value in
                                   (("timezone", timezone), ("country", country)) if value is None)
            _usage_error(f"partners add needs {missing} (no terminal to ask on), e.g. "
                         f"--timezone America/Sao_Paulo --country BR")
        country, timezone = _ask_place(country, timezone)
    try:
        created = scaffold_partner(get_settings().home, partner_id, display_name, kind,
                                   feed_format, timezone=timezone, country=country)
    except CarrierwatchError as exc:
        _usage_error(str(exc))
    for path in created:
        click.echo(f"created {path}")
    from carrierwatch.core.timeutil import country_zones

    if country_zones(country) and timezone not in (*country_zones(country), "UTC"):
        click.echo(f"note: {timezone} is not one of {country}'s zones "
                   f"({', '.join(country_zones(country)[:6])}…); check --timezone", err=True)
    click.echo(f"next: edit codebooks/{partner_id}.yaml, add samples/{partner_id}/, "
               f"then `carrierwatch codebook check` and `make test`")


def _ask_place(country: str | None, timezone: str | None) -> tuple[str, str]:
    """Ask on the terminal for the partner's country and zone, again until each is valid."""
    from carrierwatch.core.timeutil import country_names, country_zones, zone_for
    from carrierwatch.scaffold import check_country, check_timezone

    def valid(check: Any) -> Any:
        def convert(value: str) -> str:
            try:
                return str(check(value))
            except CarrierwatchError as exc:
                raise click.BadParameter(str(exc)) from None
        return convert

    if country is None:
        country = str(click.prompt("Partner's country (ISO 3166-1 code, e.g. BR)",
                                   value_proc=valid(check_country)))
    if timezone is None:
        zones = country_zones(country)
        if zones:
            click.echo(f"{country_names().get(country, country)}'s zones: "
                       + ", ".join(zones[:12]) + (", …" if len(zones) > 12 else ""))
        timezone = str(click.prompt("Partner's time zone (IANA name)",
                                    default=zone_for(country)[0] or None,
                                    value_proc=valid(check_timezone)))
    return country, timezone


@cli.group()
def codebook() -> None:
    """Validate partner codebooks."""


@codebook.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def codebook_check(paths: tuple[Path, ...]) -> None:
    """Check codebooks (all of codebooks/ by default); report errors as file:line: message.

    Exit 0 when every codebook is valid, 1 when any has a problem (one file:line: message line
    per problem on stderr, also for a file that is not UTF-8 text), 2 for a missing file.
    """
    from carrierwatch.core.codebook import problems_in
    from carrierwatch.settings import get_settings

    codebooks_dir = get_settings().codebooks_dir
    if not paths and not codebooks_dir.is_dir():
        raise ConfigurationError(f"no codebooks/ folder in {codebooks_dir.parent}: set "
                                 f"CARRIERWATCH_HOME to the folder that holds partners/, "
                                 f"codebooks/ and schemas/")
    files = list(paths) or sorted(codebooks_dir.glob("*.yaml"))
    missing = [p for p in files if not p.is_file()]
    if missing:
        _usage_error(f"{'not a codebook file, a folder' if missing[0].is_dir() else 'no such file'}"
                     f": {missing[0]}")
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
    for command in list(cli.commands.values()):
        if not isinstance(command, _LazyCommand):
            document_exit_codes(command)


def document_exit_codes(command: click.Command) -> None:
    """Put the exit codes that every command shares into the help of ``command`` (and of every
    subcommand of a group); a command's own codes (``normalize``'s 3) are in its docstring."""
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            document_exit_codes(sub)
    elif command.epilog is None:
        command.epilog = EXIT_CODES_HELP


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
            document_exit_codes(self._real)
        return self._real

    def get_short_help_str(self, limit: int = 45) -> str:
        return self._load().get_short_help_str(limit)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        return self._load().main(*args, **kwargs)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        return self._load().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        return self._load().invoke(ctx)


def leaf_commands() -> dict[tuple[str, ...], click.Command]:
    """Every command a user can run, by its path (``("kafka", "status")``), lazy groups loaded.

    The test of error handling runs each of them, so a new command is covered when it is added.
    """
    _register_groups()
    found: dict[tuple[str, ...], click.Command] = {}

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, _LazyCommand):
            command = command._load()
        if isinstance(command, click.Group):
            for name, sub in sorted(command.commands.items()):
                walk(sub, (*path, name))
        else:
            found[path] = command

    walk(cli, ())
    return found


_GROUPS: list[tuple[str, str]] = [
    ("carrierwatch.demo:demo", "demo"),
    ("carrierwatch.registry.cli:schema_registry", "schema-registry"),
    ("carrierwatch.anomaly.cli:anomaly", "anomaly"),
    ("carrierwatch.decisions.cli:decisions", "decisions"),
    ("carrierwatch.decisions.cli:escalations", "escalations"),
    ("carrierwatch.decisions.cli:takeover", "takeover"),
    ("carrierwatch.decisions.cli:tasks", "tasks"),
    ("carrierwatch.decisions.cli:silence", "silence"),
    ("carrierwatch.streams.broker:kafka_cli", "kafka"),
    ("carrierwatch.synthetic.simulator:simulate_cli", "simulate"),
    ("carrierwatch.streams.cli:worker", "worker"),
    ("carrierwatch.streams.cli:sink", "sink"),
    ("carrierwatch.streams.cli:topics", "topics"),
    ("carrierwatch.ingest.cli:gateway", "gateway"),
    ("carrierwatch.ingest.cli:ingest_file", "ingest-file"),
    ("carrierwatch.ingest.cli:watch", "watch"),
    ("carrierwatch.scorecards.cli:scorecard", "scorecard"),
    ("carrierwatch.outputs.dashboards_cli:dashboards", "dashboards"),
    ("carrierwatch.ingest.feed:feed", "feed"),
    ("carrierwatch.outputs.cli:status", "status"),
    ("carrierwatch.ingest.heartbeat_cli:heartbeat", "heartbeat"),
    ("carrierwatch.ingest.poll_cli:poll", "poll"),
    ("carrierwatch.ingest.poll_cli:track", "track"),
    ("carrierwatch.synthetic.apis:simulate_apis", "simulate-apis"),
    ("carrierwatch.alerting.cli:alerts", "alerts"),
]


def main() -> None:
    sys.exit(run(sys.argv[1:]))


def run(args: list[str]) -> int:
    """Run the command line on ``args`` and return its exit code (see :mod:`carrierwatch.core.errors`).

    Every error a user can cause or meet (a usage error, a ``CarrierwatchError``, an unwritable
    path, an interrupt) becomes one ``carrierwatch: error: ...`` line and its documented exit
    code, never a traceback. Anything else is a bug: one line naming the exception, the
    traceback saved to a file, exit 70; ``CARRIERWATCH_DEBUG=1`` prints every traceback instead.
    """
    _register_groups()
    debug = os.environ.get("CARRIERWATCH_DEBUG", "").strip() not in ("", "0")
    try:
        result = cli.main(args, prog_name="carrierwatch", standalone_mode=False)
    except click.exceptions.Exit as exc:  # raised outside a command's context
        return exc.exit_code
    except SystemExit as exc:  # sys.exit(3) in a command: the code, also for in-process callers
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or EXIT_OK
        return _report(str(exc.code), EXIT_ERROR)
    except click.exceptions.NoArgsIsHelpError as exc:  # `carrierwatch`, `carrierwatch kafka`
        click.echo(exc.format_message(), err=True)  # the help, as click prints it
        return exc.exit_code
    except click.UsageError as exc:
        return _report(exc.format_message().splitlines()[0], exc.exit_code)
    except click.ClickException as exc:
        return _report(exc.format_message(), exc.exit_code)
    except click.Abort as exc:
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        return _report("interrupted" if interrupted else "aborted",
                       EXIT_INTERRUPTED if interrupted else EXIT_ERROR)
    except KeyboardInterrupt:
        return _report("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:  # `carrierwatch ... | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except CarrierwatchError as exc:
        if debug:
            traceback.print_exc()
        return _report(str(exc), exc.exit_code)
    except OSError as exc:  # a path the user named cannot be read or written
        if debug:
            traceback.print_exc()
        where = " → ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        what = exc.strerror or str(exc)
        return _report(f"{where}: {what}" if where else what, EXIT_ERROR)
    except Exception as exc:
        if debug:
            raise
        saved = _save_traceback()
        return _report(
            f"internal error (a bug in carrierwatch): {type(exc).__name__}: {exc}; "
            + (f"traceback saved to {saved}; " if saved else "")
            + "run with CARRIERWATCH_DEBUG=1 to print it", EXIT_INTERNAL)
    # ctx.exit(code) inside a command comes back as the return value in this mode
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK


def _report(message: str, code: int) -> int:
    first, _, rest = message.strip().partition("\n")
    click.echo(f"carrierwatch: error: {first}" + (f"\n{rest}" if rest else ""), err=True)
    return code


def _save_traceback() -> str | None:
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix="carrierwatch-traceback-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(traceback.format_exc())
    except OSError:
        return None
    return name
