"""``carrierwatch heartbeat``: synthetic deliveries through every integration, on a schedule."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import click

__all__ = ["heartbeat"]

_LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG}


@click.command("heartbeat")
@click.option("--partner", "partners", multiple=True,
              help="Only this partner (repeatable) [every partner with heartbeat.enabled].")
@click.option("--gateway-url", default=None,
              help="The webhook gateway [CARRIERWATCH_HEARTBEAT_GATEWAY_URL, "
                   "http://127.0.0.1:8470].")
@click.option("--drop-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The folder `carrierwatch watch` watches; batch heartbeats go to "
                   "DIR/<partner>/ [CARRIERWATCH_HEARTBEAT_DROP_DIR; without it, none].")
@click.option("--secrets-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The gateway's YAML secrets file "
                                 "[CARRIERWATCH_GATEWAY_SECRETS_FILE].")
@click.option("--interval", type=click.FloatRange(min=0.1), default=None,
              help="Seconds between two heartbeats of a partner, for every partner "
                   "[each partner's heartbeat.interval_seconds, 300].")
@click.option("--deadline", type=click.FloatRange(min=0.1), default=None,
              help="Seconds within which a heartbeat's events must be stored "
                   "[heartbeat.deadline_seconds, 120].")
@click.option("--slow", type=click.FloatRange(min=0.1), default=None,
              help="Latency (s) above which an integration is slow [heartbeat.slow_seconds, "
                   "30].")
@click.option("--once", is_flag=True, help="Send one heartbeat per integration and exit.")
@click.option("--max-seconds", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds [run until SIGTERM/SIGINT].")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Serve the sender's Prometheus metrics on ADDR:PORT/metrics [off].")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True,
              help="Address of the metrics server (0.0.0.0 in a container).")
@click.option("--namespace", default=None,
              help="Topic prefix, as the worker's [CARRIERWATCH_STREAM_NAMESPACE].")
@click.option("-l", "--loglevel", type=click.Choice(list(_LEVELS)), default="info",
              show_default=True, help="Logging level (the worker's names).")
def heartbeat(partners: tuple[str, ...], gateway_url: str | None, drop_dir: Path | None,
              secrets_file: Path | None, interval: float | None, deadline: float | None,
              slow: float | None, once: bool, max_seconds: float | None,
              metrics_port: int | None, metrics_addr: str, namespace: str | None,
              loglevel: str) -> None:
    """Send synthetic deliveries (heartbeats) through every partner's real ingest path.

    Each heartbeat is one synthetic package lifecycle in the partner's own format under its
    synthetic tracking prefix: signed through the gateway for webhook partners, a file in the
    drop folder for batch partners, a canary number for the pollers. Each is announced on the
    sink topic first; the heartbeat monitor in `carrierwatch sink` expects its canonical events
    within the deadline and marks the integration healthy, slow or silent. Exit 1 with --once
    when a heartbeat was refused or could not be announced; 69 when Kafka does not answer.
    """
    from pydantic import ValidationError

    from carrierwatch.core.errors import EXIT_USAGE, CarrierwatchError
    from carrierwatch.ingest.heartbeat import (
        DropSender,
        HeartbeatRunner,
        HeartbeatSettings,
        PollSender,
        Sender,
        WebhookSender,
        poll_registry_available,
        select_partners,
    )
    from carrierwatch.ingest.kafka import RawProducer
    from carrierwatch.ingest.secrets import load_secrets
    from carrierwatch.settings import get_settings
    from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics, require_broker
    from carrierwatch.transformers.registry import load_registry

    logging.basicConfig(level=_LEVELS[loglevel],
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    if loglevel != "debug":
        logging.getLogger("carrierwatch.ingest.rdkafka").setLevel(logging.CRITICAL)
    log = logging.getLogger("carrierwatch.heartbeat")
    try:
        hb_settings = HeartbeatSettings()
    except ValidationError as exc:
        problems = "; ".join(f"CARRIERWATCH_HEARTBEAT_{'_'.join(map(str, e['loc'])).upper()}: "
                             f"{e['msg']}" for e in exc.errors())
        raise click.ClickException(f"invalid heartbeat settings: {problems}") from None
    updates = {k: v for k, v in {"gateway_url": gateway_url, "drop_dir": drop_dir,
                                 "secrets_file": secrets_file}.items() if v is not None}
    hb_settings = hb_settings.model_copy(update=updates)
    if hb_settings.drop_dir is not None:
        try:
            hb_settings.drop_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.ClickException(f"cannot use the drop folder {hb_settings.drop_dir}: "
                                       f"{exc.strerror or exc}") from None
    settings = get_settings()
    registry = load_registry(settings.home)
    try:
        chosen = select_partners(registry, partners)
    except CarrierwatchError as exc:
        raise click.UsageError(str(exc)) from None
    config = StreamConfig()
    if namespace is not None:
        config = config.model_copy(update={"namespace": namespace})
    topology = Topology(config, registry.ids())
    webhook_ids = [p.id for p in chosen if p.spec.delivery == "webhook"]
    secrets_path = hb_settings.secrets_file
    if secrets_path is None:
        from carrierwatch.ingest.gateway import GatewaySettings

        secrets_path = GatewaySettings().secrets_file
    senders: dict[str, Sender] = {}
    if webhook_ids:
        secrets = load_secrets(webhook_ids, secrets_file=secrets_path)
        for partner_id in sorted(set(webhook_ids) - set(secrets)):
            click.echo(f"heartbeat: {partner_id}: no secret (CARRIERWATCH_SECRET_"
                       f"{partner_id.upper()} or the secrets file): its heartbeats will be "
                       f"refused and the integration reported silent", err=True)
        senders["webhook"] = WebhookSender(hb_settings.gateway_url, secrets,
                                           timeout=hb_settings.request_timeout)
    if hb_settings.drop_dir is not None:
        senders["drop"] = DropSender(hb_settings.drop_dir)
    if poll_registry_available():
        senders["poll"] = PollSender(settings.data_dir)
    try:
        runner = HeartbeatRunner(chosen, senders, topology.sink,
                                 RawProducer(settings.kafka_bootstrap,
                                             delivery_timeout=hb_settings.announce_timeout),
                                 hb_settings, interval=interval, deadline=deadline, slow=slow)
    except CarrierwatchError as exc:
        raise click.UsageError(str(exc)) from None
    for partner_id, why in sorted(runner.skipped.items()):
        reason = why
        if why.startswith("no drop sender"):
            reason = "no drop folder (--drop-dir / CARRIERWATCH_HEARTBEAT_DROP_DIR)"
        elif why.startswith("no poll sender"):
            reason = ("poll heartbeats need the pollers' tracking registry "
                      "(carrierwatch.ingest.trackings), not installed")
        click.echo(f"heartbeat: {partner_id}: not sent: {reason}", err=True)
    if not runner.plans:
        click.echo("carrierwatch: error: no integration to send heartbeats through (see above)",
                   err=True)
        raise SystemExit(EXIT_USAGE)
    require_broker(settings.kafka_bootstrap)  # 69 when no broker answers
    ensure_topics(settings.kafka_bootstrap, [s for s in topology.specs()
                                             if s.name == topology.sink])
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_addr, registry=runner.metrics.registry)
    for plan in runner.plans:
        log.info("heartbeat: %s (%s) every %g s, deadline %g s, slow above %g s",
                 plan.partner.id, plan.sender.integration, plan.interval, plan.deadline,
                 plan.slow)

    async def run() -> dict[str, int]:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await runner.run(once=once, stop=stop, max_seconds=max_seconds)
        finally:
            await runner.close()

    counts = asyncio.run(run())
    click.echo("heartbeat: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(
        counts.items())) if counts else "heartbeat: nothing sent")
    failed = counts.get("rejected", 0) + counts.get("unannounced", 0)
    if once and failed:
        raise click.ClickException(f"{failed} heartbeat(s) refused or not announced (see above)")
