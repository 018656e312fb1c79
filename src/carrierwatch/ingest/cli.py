"""``carrierwatch gateway``: run the webhook gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

import click

__all__ = ["gateway"]

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
