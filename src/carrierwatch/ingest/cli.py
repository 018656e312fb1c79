"""``carrierwatch gateway`` (the webhook gateway, until SIGTERM/SIGINT), ``ingest-file`` and
``watch`` (batch drops)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from carrierwatch.ingest.drops import Dropper, FileOutcome

__all__ = ["gateway", "ingest_file", "watch"]

_LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG}


@click.command("gateway")
@click.option("--host", default=None, help="Address to listen on [CARRIERWATCH_GATEWAY_HOST, "
                                           "127.0.0.1].")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port [CARRIERWATCH_GATEWAY_PORT, 8470; 0: any free port].")
@click.option("--namespace", default=None,
              help="Topic prefix, as the worker's [CARRIERWATCH_STREAM_NAMESPACE].")
@click.option("--secrets-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML partner -> secret(s) [CARRIERWATCH_GATEWAY_SECRETS_FILE].")
@click.option("-l", "--loglevel", type=click.Choice(list(_LEVELS)), default="info",
              show_default=True, help="Logging level (the worker's names).")
@click.option("--bare", is_flag=True, hidden=True,
              help="BENCHMARK ONLY: answer 202 without verification or Kafka.")
@click.option("--force-spool", is_flag=True, hidden=True,
              help="BENCHMARK ONLY: every request goes to the spool, which is never drained.")
def gateway(host: str | None, port: int | None, namespace: str | None,
            secrets_file: Path | None, loglevel: str, bare: bool, force_spool: bool) -> None:
    """Run the webhook gateway: POST /ingest/<partner> → raw.<partner>.

    Verifies each partner's signature, token or API key, makes the raw request durable in Kafka
    (acks=all) or, while Kafka is unreachable, in the local write-ahead spool, and only then
    answers 202. Also serves /healthz, /readyz and /metrics.
    """
    from aiohttp import web
    from pydantic import ValidationError

    from carrierwatch.ingest.gateway import GatewaySettings, create_app
    from carrierwatch.settings import get_settings

    logging.basicConfig(level=_LEVELS[loglevel],
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if loglevel != "debug":  # librdkafka logs every reconnect attempt; the gateway says it once
        logging.getLogger("carrierwatch.ingest.rdkafka").setLevel(logging.CRITICAL)
    settings = get_settings()
    updates = {k: v for k, v in {"host": host, "port": port, "secrets_file": secrets_file}.items()
               if v is not None}
    try:
        gateway_settings = GatewaySettings().model_copy(update=updates)
    except ValidationError as exc:  # a CARRIERWATCH_GATEWAY_* variable that does not parse
        problems = "; ".join(f"CARRIERWATCH_GATEWAY_{'_'.join(map(str, e['loc'])).upper()}: "
                             f"{e['msg']}" for e in exc.errors())
        raise click.ClickException(f"invalid gateway settings: {problems}") from None
    app = create_app(settings=settings, gateway_settings=gateway_settings, namespace=namespace,
                     bare=bare, force_spool=force_spool)

    async def serve() -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, gateway_settings.host, gateway_settings.port)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for address in runner.addresses:
            click.echo(f"carrierwatch gateway listening on http://{address[0]}:{address[1]}")
        sys.stdout.flush()
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except OSError as exc:  # the port is taken, the address is not ours, ...
        raise click.ClickException(
            f"cannot listen on {gateway_settings.host}:{gateway_settings.port}: "
            f"{exc.strerror or exc}") from None


def _dropper(namespace: str | None, overrides: dict[str, object]) -> Dropper:
    from pydantic import ValidationError

    from carrierwatch.ingest.drops import Dropper, DropSettings
    from carrierwatch.settings import get_settings
    from carrierwatch.transformers.registry import load_registry

    try:
        drop_settings = DropSettings().model_copy(
            update={k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:  # a CARRIERWATCH_DROPS_* variable that does not parse
        problems = "; ".join(f"CARRIERWATCH_DROPS_{'_'.join(map(str, e['loc'])).upper()}: "
                             f"{e['msg']}" for e in exc.errors())
        raise click.ClickException(f"invalid drop settings: {problems}") from None
    logging.basicConfig(level=logging.WARNING,
                        format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s")
    # librdkafka logs every reconnect attempt; a spooled file is reported once instead
    logging.getLogger("carrierwatch.ingest.rdkafka").setLevel(logging.CRITICAL)
    settings = get_settings()
    return Dropper.open(settings=settings, drop_settings=drop_settings,
                        registry=load_registry(settings.home), namespace=namespace)


def _say_where(dropper: Dropper, outcomes: list[FileOutcome]) -> None:
    for outcome in outcomes:
        line = outcome.describe()
        if outcome.moved_to is not None:
            line += f" → {outcome.moved_to}"
        click.echo(line, err=outcome.status in ("failed", "skipped"))
    if dropper.spool.depth:
        click.echo(f"{dropper.spool.depth} file(s) wait in the local spool "
                   f"({dropper.spool.directory}) until Kafka at {dropper.producer.bootstrap} "
                   f"answers: the next `carrierwatch ingest-file` or `watch` run delivers them")


_NAMESPACE_HELP = "Topic prefix, as the worker's [CARRIERWATCH_STREAM_NAMESPACE]."
_PARTNER_HELP = "The batch partner of the files [the name of each file's parent folder]."


@click.command("ingest-file")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--partner", default=None, help=_PARTNER_HELP)
@click.option("--namespace", default=None, help=_NAMESPACE_HELP)
def ingest_file(files: tuple[Path, ...], partner: str | None, namespace: str | None) -> None:
    """Hand batch files (CSV, JSON) of a `delivery: batch` partner to raw.<partner>.

    Each file becomes one raw message (the file's bytes, with its name, checksum and receive
    time in headers), durable in Kafka (acks=all) or, while Kafka is unreachable, in the local
    spool. A file whose content was ingested before, under any name, is skipped (checksum
    ledger). Files stay where they are. Exit 1 when a file was not taken (unknown or non-batch
    partner, unsupported type, unreadable, too large, partial name).
    """
    dropper = _dropper(namespace, {})

    async def run() -> list[FileOutcome]:
        try:
            await dropper.connect()
            outcomes = [await dropper.ingest(path, partner) for path in files]
            if dropper.producer.up:
                await dropper.drain()
            return outcomes
        finally:
            await dropper.close()

    outcomes = asyncio.run(run())
    _say_where(dropper, outcomes)
    refused = sum(1 for o in outcomes if o.status in ("failed", "skipped"))
    if refused:
        raise click.ClickException(f"{refused} of {len(outcomes)} files not ingested (see above)")


@click.command("watch")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--partner", default=None,
              help="The batch partner of the files directly in DIR [DIR's name]; files in a "
                   "sub-folder belong to the partner the sub-folder names.")
@click.option("--once", is_flag=True, help="Scan once, ingest the settled files, and exit.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds [run until SIGTERM/SIGINT].")
@click.option("--settle-seconds", type=click.FloatRange(min=0), default=None,
              help="Read a file once unchanged for this long [CARRIERWATCH_DROPS_SETTLE_SECONDS, "
                   "5].")
@click.option("--interval", type=click.FloatRange(min=0.01), default=None,
              help="Seconds between scans [CARRIERWATCH_DROPS_INTERVAL, 2].")
@click.option("--namespace", default=None, help=_NAMESPACE_HELP)
def watch(directory: Path, partner: str | None, once: bool, max_seconds: float | None,
          settle_seconds: float | None, interval: float | None, namespace: str | None) -> None:
    """Watch a drop folder: ingest each settled file, then move it to done/ or failed/.

    Files named `.*`, `*.part` or `*.tmp` are being written and are left alone (write under such
    a name, then rename); any other file is read once its size and modification time have not
    changed for the settle time. A file moves to DIR/done/ once durable in Kafka or the spool
    (a duplicate of an ingested content too, with a `<name>.reason.txt` note), or to
    DIR/failed/ with `<name>.reason.txt` saying why. Stops cleanly on SIGTERM/SIGINT; exit 1
    when a file went to failed/ during the run.
    """
    directory.mkdir(parents=True, exist_ok=True)
    dropper = _dropper(namespace, {"settle_seconds": settle_seconds, "interval": interval})
    failed = 0

    async def run() -> None:
        nonlocal failed
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        seen: dict[Path, tuple[int, int]] = {}
        try:
            await dropper.connect()
            while not stop.is_set():
                outcomes, waiting = await dropper.scan(directory, partner, seen)
                if outcomes:
                    _say_where(dropper, outcomes)
                failed += sum(1 for o in outcomes if o.status == "failed")
                if once:
                    if waiting:
                        click.echo(f"{waiting} file(s) not settled or partially written: "
                                   f"left for the next scan")
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                wait = dropper.settings.interval
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)
                if not dropper.producer.up or dropper.spool.depth:
                    await dropper.connect()
        finally:
            await dropper.close()

    click.echo(f"carrierwatch watch: {directory}")
    asyncio.run(run())
    if failed:
        raise click.ClickException(f"{failed} file(s) moved to {directory / 'failed'} "
                                   f"(see their .reason.txt)")
