"""Command line of the stream driver: ``carrierwatch worker`` and ``carrierwatch sink``.

``worker`` follows Faust's conventions (``-l/--loglevel`` with ``crit``, ``error``, ``warn``,
``info``, ``debug``; ``--web-port``); it declares the topics, then runs the Faust worker (the
``normalize`` agent and the ``track`` stage) until SIGTERM/SIGINT. ``--stages normalize`` runs
the Faust app with the agent only; ``--stages track`` runs the track stage alone under
:class:`mode.Worker` (Faust's service runner: same logging and signals, no Faust app, hence no
web views: ``--web-port`` is refused there). ``sink`` runs the store
writer, the one process that owns an embedded chDB store. Both read ``CARRIERWATCH_*`` (broker,
registry, store) and ``CARRIERWATCH_STREAM_*`` (namespace, partitions, batching) settings;
options override them.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from carrierwatch.settings import Settings, get_settings
from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics, parse_stages

__all__ = ["sink", "streams_cli", "topics", "worker"]

_LEVELS = {"crit": logging.CRITICAL, "error": logging.ERROR, "warn": logging.WARNING,
           "info": logging.INFO, "debug": logging.DEBUG}

_namespace = click.option("--namespace", default=None,
                          help="Topic/group prefix [CARRIERWATCH_STREAM_NAMESPACE].")
_metrics_port = click.option(
    "--metrics-port", type=click.IntRange(1, 65535), default=None,
    help="Serve Prometheus metrics on METRICS_ADDR:PORT/metrics (prometheus-client) "
         "[CARRIERWATCH_STREAM_METRICS_PORT; off].")
_metrics_addr = click.option(
    "--metrics-addr", default=None,
    help="Address of the metrics server [CARRIERWATCH_STREAM_METRICS_ADDR, 127.0.0.1].")
_loglevel = click.option("-l", "--loglevel", type=click.Choice(list(_LEVELS)), default="warn",
                         show_default=True, help="Logging level (Faust's names).")


def _config(namespace: str | None, stages: str | None = None, metrics_port: int | None = None,
            metrics_addr: str | None = None) -> StreamConfig:
    config = StreamConfig()
    if metrics_port is not None:
        config = config.model_copy(update={"metrics_port": metrics_port})
    if metrics_addr is not None:
        config = config.model_copy(update={"metrics_addr": metrics_addr})
    if namespace is not None:
        config = config.model_copy(update={"namespace": namespace})
    if stages is not None:
        config = config.model_copy(update={"stages": stages})
    return config


def _stages(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return ",".join(parse_stages(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _topology(settings: Settings, config: StreamConfig) -> Topology:
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry(settings.home)
    registry.require()  # a partner that failed to load would lose its topics: stop instead
    return Topology(config, registry.ids())


@click.command("worker")
@_loglevel
@click.option("--web-port", type=click.IntRange(1, 65535), default=None,
              help="Serve Faust's web views (and /metrics) on 127.0.0.1:PORT [off]; needs the "
                   "normalize stage (the Faust app).")
@_namespace
@click.option("--stages", default=None, callback=_stages,
              help="Stages of this process: normalize,track (both), normalize or track "
                   "[CARRIERWATCH_STREAM_STAGES, default both].")
@_metrics_port
@_metrics_addr
def worker(loglevel: str, web_port: int | None, namespace: str | None,
           stages: str | None, metrics_port: int | None, metrics_addr: str | None) -> None:
    """Run a stream worker: raw.<partner> → events.canonical → core → cw.sink."""
    import faust
    import mode

    from carrierwatch.registry.client import registry_client
    from carrierwatch.registry.serde import CANONICAL_TOPIC, CanonicalSerde
    from carrierwatch.streams.app import WorkerRuntime, create_app, track_service
    from carrierwatch.streams.kafka import OutputProducer
    from carrierwatch.transformers.registry import load_registry

    settings = get_settings()
    config = _config(namespace, stages, metrics_port, metrics_addr)
    normalize, track = ("normalize" in config.stage_names), ("track" in config.stage_names)
    if web_port is not None and not normalize:
        raise click.UsageError("--web-port serves the Faust app's web views; a track-only "
                               "worker (--stages track) runs no Faust app")
    registry = load_registry(settings.home)
    registry.require()
    topology = Topology(config, registry.ids())
    ensure_topics(settings.kafka_bootstrap, topology.specs())
    with ExitStack() as stack:
        client = stack.enter_context(registry_client(settings))
        serde = CanonicalSerde(client, topic=CANONICAL_TOPIC)
        runtime = WorkerRuntime(
            settings=settings, config=config, topology=topology, registry=registry, serde=serde,
            producer=OutputProducer(settings.kafka_bootstrap),
            # both stages: the track stage's own producer (its flushes wait for nothing else)
            track_producer=OutputProducer(settings.kafka_bootstrap) if normalize and track
            else None,
            metrics=_worker_metrics(stack, settings, config, topology, registry))
        if track:
            from carrierwatch.decisions.stream import stream_hook

            runtime.escalations = stream_hook(runtime)
        runner: mode.Worker
        if normalize:
            app = create_app(runtime, web_port=web_port, track=track)
            runner = faust.Worker(app, loglevel=_LEVELS[loglevel], quiet=True,
                                  override_logging=True)
        else:
            runner = mode.Worker(track_service(runtime), loglevel=_LEVELS[loglevel], quiet=True,
                                 override_logging=True)
        try:
            runner.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise
        finally:
            runtime.producer.flush()
            runtime.track_output.flush()
            logging.getLogger(__name__).info("worker stats: %s", runtime.stats)


def _worker_metrics(stack: ExitStack, settings: Settings, config: StreamConfig,
                    topology: Topology, registry: Any) -> Any:
    """The worker's Prometheus metrics, served when a metrics port is set, with the lag of the
    consumer groups of its stages."""
    from carrierwatch.outputs.metrics import WorkerMetrics

    metrics = WorkerMetrics({partner.id: partner.spec.contract for partner in registry})
    groups: dict[str, list[str]] = {}
    if "normalize" in config.stage_names:
        groups[topology.app_id] = list(topology.raw_topics)
    if "track" in config.stage_names:
        groups[topology.track_group] = [topology.events]
    _serve_metrics(stack, metrics, config, settings, groups)
    return metrics


def _serve_metrics(stack: ExitStack, metrics: Any, config: StreamConfig, settings: Settings,
                   groups: dict[str, list[str]]) -> None:
    from carrierwatch.core.errors import ConfigurationError
    from carrierwatch.outputs.metrics import KafkaLagMonitor, serve

    if config.metrics_port is None:
        return
    try:
        server = serve(metrics.registry, config.metrics_port, config.metrics_addr)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve metrics on {config.metrics_addr}:"
                                 f"{config.metrics_port}: {exc.strerror or exc}") from exc
    stack.callback(server.shutdown)
    lag = KafkaLagMonitor(metrics, settings.kafka_bootstrap, groups, interval=config.lag_interval)
    stack.callback(lag.stop)
    lag.start()


@click.command("sink")
@_loglevel
@click.option("--web-port", type=click.IntRange(1, 65535), default=None,
              help="Same as --metrics-port (kept for compatibility).")
@_namespace
@click.option("--wait", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for the embedded store to be released by another process.")
@click.option("--no-anomalies", is_flag=True, help="do not run the online anomaly monitor")
@_metrics_port
@_metrics_addr
@click.option("--no-heartbeats", is_flag=True, help="do not run the heartbeat monitor")
def sink(loglevel: str, web_port: int | None, namespace: str | None, wait: float,
         no_anomalies: bool, metrics_port: int | None, metrics_addr: str | None,
         no_heartbeats: bool) -> None:
    """Run the store writer: cw.sink → ClickHouse, offsets committed after each write."""
    from carrierwatch.storage import open_store
    from carrierwatch.streams.sink import SinkMetrics, SinkMonitor, run_sink

    logging.basicConfig(level=_LEVELS[loglevel],
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    settings = get_settings()
    config = _config(namespace, None, metrics_port or web_port, metrics_addr)
    topology = _topology(settings, config)
    ensure_topics(settings.kafka_bootstrap, topology.specs())
    metrics = SinkMetrics()
    from carrierwatch.transformers.registry import load_registry

    monitor = None if no_anomalies else SinkMonitor(
        Path(settings.data_dir) / "anomaly-monitor" / f"{topology.sink_group}.bin",
        metrics.registry, partners=[partner.spec for partner in load_registry(settings.home)],
        shards=config.events_partitions)
    from carrierwatch.streams.heartbeats import SinkHeartbeats

    heartbeats = None if no_heartbeats else SinkHeartbeats(metrics.registry)
    with ExitStack() as stack, open_store(settings, command="carrierwatch sink", wait=wait,
                                          migrate=True) as store:
        _serve_metrics(stack, metrics, config, settings, {topology.sink_group: [topology.sink]})
        if heartbeats is not None:
            heartbeats.restore(store)
        run_sink(settings, config, topology, store, metrics=metrics, monitor=monitor,
                 heartbeats=heartbeats)


@click.command("topics")
@_namespace
def topics(namespace: str | None) -> None:
    """Declare the stream topics (idempotent) and list them with their partitions."""
    settings = get_settings()
    topology = _topology(settings, _config(namespace))
    specs = topology.specs()
    created = set(ensure_topics(settings.kafka_bootstrap, specs))
    for spec in specs:
        click.echo(f"{spec.name}\t{spec.partitions}\t{'created' if spec.name in created else 'exists'}")


@click.group("streams")
def streams_cli() -> None:
    """Stream driver commands."""


streams_cli.add_command(worker)
streams_cli.add_command(sink)
streams_cli.add_command(topics)


if __name__ == "__main__":  # python -m carrierwatch.streams.cli worker|sink|topics
    streams_cli()
