"""``carrierwatch schema-registry``: serve the embedded registry, seed a registry.

Wire into the main CLI with ``cli.add_command(schema_registry)``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from types import FrameType

import click

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.registry.client import (
    registry_client,
    registry_state_file,
    seed_canonical_schemas,
)
from carrierwatch.registry.schemas import canonical_schema_versions
from carrierwatch.settings import Settings

__all__ = ["schema_registry"]


@click.group("schema-registry")
def schema_registry() -> None:
    """The Confluent-compatible schema registry (embedded or configured)."""


@schema_registry.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8081, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data directory (default: CARRIERWATCH_DATA_DIR).")
@click.option("--seed/--no-seed", default=True, show_default=True,
              help="Register the committed canonical schema versions at start.")
def serve(host: str, port: int, data_dir: Path | None, seed: bool) -> None:
    """Serve the embedded registry in the foreground until interrupted."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from carrierwatch.registry.server import EmbeddedSchemaRegistry

    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    state_file = registry_state_file(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            server = EmbeddedSchemaRegistry(state_file, host=host, port=port).start()
        except OSError as exc:  # address in use, unknown host, unwritable state
            where = f" ({exc.filename})" if exc.filename else ""
            raise ConfigurationError(f"cannot serve the schema registry on {host}:{port}"
                                     f"{where}: {exc.strerror or exc}") from exc
        with contextlib.ExitStack() as stack:
            stack.push(server)  # its __exit__ stops it
            if seed:
                with SchemaRegistryClient({"url": server.url}) as client:
                    for seeded in seed_canonical_schemas(client, settings.schemas_dir):
                        click.echo(f"seeded v{seeded.file_version}.avsc as {seeded.subject} "
                                   f"version {seeded.subject_version}, id {seeded.schema_id}")
            click.echo(f"schema registry listening on {server.url} (state: {state_file})")
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo("schema registry stopped")


@schema_registry.command("seed")
def seed() -> None:
    """Register every committed canonical schema version (configured or embedded registry)."""
    settings = Settings()
    with registry_client(settings, seed=False) as client:
        for seeded in seed_canonical_schemas(client, settings.schemas_dir):
            click.echo(f"v{seeded.file_version}.avsc -> {seeded.subject} "
                       f"version {seeded.subject_version}, id {seeded.schema_id}")


@schema_registry.command("versions")
def versions() -> None:
    """List the committed canonical schema versions and what the registry holds."""
    settings = Settings()
    for committed in canonical_schema_versions(settings.schemas_dir):
        click.echo(f"committed v{committed.version}: {committed.path}")
    with registry_client(settings, seed=False) as client:
        for subject in client.get_subjects():
            for number in client.get_versions(subject):
                registered = client.get_version(subject, number)
                click.echo(f"registry {subject} version {number}: id {registered.schema_id}")
