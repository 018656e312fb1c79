"""The ``carrierwatch`` command line.

Exit codes (the table is in :mod:`carrierwatch.core.errors`): 0 success; 1 error (invalid
configuration or codebook, a partner that failed to load, a path that cannot be read or written);
2 usage error (unknown option or partner, bad option value, missing file); 3 when ``normalize``
sent anything to the dead-letter output; 69 a component is unavailable (Kafka broker, schema
registry, store); 70 internal error (a bug); 130 interrupted. Every error is one
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
def cli() -> None:
    """carrierwatch: SLA monitoring for last-mile delivery partners."""


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
                  if summary.gaps else ""))
    click.echo(f"anomalous windows: {summary.anomalies:,}; rows written: "
               f"{summary.rows_written:,}; store: {store!r}")


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
    ("carrierwatch.streams.broker:kafka_cli", "kafka"),
    ("carrierwatch.synthetic.simulator:simulate_cli", "simulate"),
    ("carrierwatch.streams.cli:worker", "worker"),
    ("carrierwatch.streams.cli:sink", "sink"),
    ("carrierwatch.streams.cli:topics", "topics"),
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
