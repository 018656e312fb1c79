"""``carrierwatch poll`` (the pollers, until SIGTERM/SIGINT) and ``carrierwatch track``
(the tracking registry: add, list, remove, sync from the store)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

__all__ = ["poll", "track"]

_LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG}


def _base_urls(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        partner, sep, url = value.partition("=")
        if not sep or not partner or not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{value!r}: expected PARTNER=http(s)://host[:port]/path",
                                     param_hint="--base-url")
        out[partner] = url
    return out


def _poll_settings(overrides: dict[str, Any]) -> Any:
    from pydantic import ValidationError

    from carrierwatch.ingest.poller import PollSettings

    try:
        return PollSettings().model_copy(update={k: v for k, v in overrides.items()
                                                 if v is not None})
    except ValidationError as exc:  # a CARRIERWATCH_POLL_* variable that does not parse
        problems = "; ".join(f"CARRIERWATCH_POLL_{'_'.join(map(str, e['loc'])).upper()}: "
                             f"{e['msg']}" for e in exc.errors())
        raise click.ClickException(f"invalid poll settings: {problems}") from None


@click.command("poll")
@click.option("--partner", "partners", multiple=True,
              help="Poll only this partner (repeatable) [every partner with a poll: block].")
@click.option("--base-url", "base_urls", multiple=True, metavar="PARTNER=URL",
              help="Use another API root for a partner, e.g. the simulated APIs "
                   "(repeatable) [CARRIERWATCH_POLL_<ID>_BASE_URL, the YAML's base_url].")
@click.option("--secrets-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="YAML <partner>_api -> '<client id>:<secret>' or API key "
                                 "[CARRIERWATCH_POLL_SECRETS_FILE].")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Port of /metrics and /healthz [CARRIERWATCH_POLL_METRICS_PORT, 8472; "
                   "0: any free port].")
@click.option("--namespace", default=None,
              help="Topic prefix, as the worker's [CARRIERWATCH_STREAM_NAMESPACE].")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds [run until SIGTERM/SIGINT].")
@click.option("-l", "--loglevel", type=click.Choice(list(_LEVELS)), default="info",
              show_default=True, help="Logging level (the worker's names).")
def poll(partners: tuple[str, ...], base_urls: tuple[str, ...], secrets_file: Path | None,
         metrics_port: int | None, namespace: str | None, max_seconds: float | None,
         loglevel: str) -> None:
    """Poll the tracking APIs of the partners with a poll: block (UPS, FedEx, DHL, USPS, ...).

    Follows the numbers of the tracking registry (`carrierwatch track`, POST /v1/trackings on
    the gateway, heartbeat canaries), at each partner's batch size, rate and concurrency, with
    retries (backoff with jitter, Retry-After), a circuit breaker per partner and token
    refresh. A response with news is made durable in raw.<partner> (acks=all) or, while Kafka
    is unreachable, in the local spool, before the per-number cursor moves. Serves /metrics.
    """
    from aiohttp import web

    from carrierwatch.ingest.poller import metrics_app, open_poller
    from carrierwatch.settings import get_settings
    from carrierwatch.transformers.registry import load_registry

    logging.basicConfig(level=_LEVELS[loglevel],
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if loglevel != "debug":
        logging.getLogger("carrierwatch.ingest.rdkafka").setLevel(logging.CRITICAL)
    urls = _base_urls(base_urls)
    poll_settings = _poll_settings({"secrets_file": secrets_file, "metrics_port": metrics_port})
    settings = get_settings()
    poller = open_poller(settings=settings, poll_settings=poll_settings,
                         registry=load_registry(settings.home), namespace=namespace,
                         base_urls=urls, partners=list(partners) or None)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if max_seconds is not None:
            loop.call_later(max_seconds, stop.set)
        runner = web.AppRunner(metrics_app(poller), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, poll_settings.host, poll_settings.metrics_port)
            try:
                await site.start()
            except OSError as exc:
                raise click.ClickException(
                    f"cannot listen on {poll_settings.host}:{poll_settings.metrics_port}: "
                    f"{exc.strerror or exc}") from None
            for address in runner.addresses:
                click.echo(f"carrierwatch poll: {', '.join(sorted(poller.pollers)) or 'no'} "
                           f"partners; metrics on http://{address[0]}:{address[1]}/metrics")
            sys.stdout.flush()
            await poller.run(stop)
        finally:
            await runner.cleanup()
            await poller.close()

    asyncio.run(serve())
    if poller.spool.depth:
        click.echo(f"{poller.spool.depth} response(s) wait in the local spool "
                   f"({poller.spool.directory}) until Kafka answers; the next run delivers them")


@click.group("track")
def track() -> None:
    """The tracking numbers `carrierwatch poll` follows, per partner."""


def _registry() -> Any:
    from carrierwatch.ingest.trackings import TrackingRegistry, default_path
    from carrierwatch.settings import get_settings

    return TrackingRegistry(default_path(get_settings().data_dir))


def _specs() -> dict[str, Any]:
    from carrierwatch.settings import get_settings
    from carrierwatch.transformers.registry import load_registry

    return {p.id: p.spec for p in load_registry(get_settings().home)}


@track.command("add")
@click.option("--partner", required=True, help="A partner with a poll: block.")
@click.argument("numbers", nargs=-1, required=True)
def track_add(partner: str, numbers: tuple[str, ...]) -> None:
    """Follow tracking NUMBERS of a polled partner."""
    from carrierwatch.ingest.trackings import TrackingError, add_trackings
    from carrierwatch.settings import get_settings

    try:
        added = add_trackings(partner, list(numbers), source="manual",
                              data_dir=get_settings().data_dir, specs=_specs())
    except TrackingError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{partner}: {added} number(s) added, {len(set(numbers)) - added} already "
               f"followed")


@track.command("remove")
@click.option("--partner", required=True, help="The partner of the numbers.")
@click.argument("numbers", nargs=-1, required=True)
def track_remove(partner: str, numbers: tuple[str, ...]) -> None:
    """Stop following tracking NUMBERS."""
    with _registry() as registry:
        removed = registry.remove(partner, numbers)
    click.echo(f"{partner}: {removed} number(s) no longer followed")


@track.command("list")
@click.option("--partner", default=None, help="Only this partner.")
@click.option("--all", "include_inactive", is_flag=True,
              help="Also numbers no longer followed (removed, delivered, expired).")
def track_list(partner: str | None, include_inactive: bool) -> None:
    """The followed numbers: partner, number, source, when added, last poll and news."""
    from carrierwatch.core.model import ms_to_iso

    with _registry() as registry:
        rows = registry.entries(partner, include_inactive=include_inactive)
    click.echo("partner\tnumber\tsource\tactive\tadded\tlast_polled\tlast_news")
    for row in rows:
        click.echo("\t".join((row.partner, row.number, row.source, "yes" if row.active else "no",
                              str(ms_to_iso(row.added_ms)),
                              str(ms_to_iso(row.polled_ms)) if row.polled_ms else "-",
                              str(ms_to_iso(row.changed_ms)) if row.changed_ms else "-")))
    if not rows:
        click.echo("(no numbers)", err=True)


@track.command("sync")
@click.option("--days", type=click.IntRange(1, 3650), default=45, show_default=True,
              help="Only packages with an event in the last DAYS days.")
@click.option("--wait", "wait_seconds", type=click.FloatRange(min=0), default=0.0,
              help="Seconds to wait for another process to release the embedded store.")
def track_sync(days: int, wait_seconds: float) -> None:
    """Follow the packages of polled partners still open in the store (not delivered,
    returned or cancelled; not synthetic)."""
    from carrierwatch.ingest.trackings import open_trackings_from_store
    from carrierwatch.settings import get_settings
    from carrierwatch.storage import open_store

    specs = _specs()
    polled = sorted(p for p, s in specs.items() if s.poll is not None)
    started = time.monotonic()
    with open_store(get_settings(), command="carrierwatch track sync", wait=wait_seconds,
                    migrate=True) as store:
        found = open_trackings_from_store(store, polled, days=days)
    with _registry() as registry:
        for partner in polled:
            numbers = found.get(partner, [])
            added = registry.add(partner, numbers, "store",
                                 synthetic_prefix=specs[partner].synthetic_tracking_prefix)
            click.echo(f"{partner}: {len(numbers)} open package(s) in the store, {added} new")
    click.echo(f"synced in {time.monotonic() - started:.1f} s")
