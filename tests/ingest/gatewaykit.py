"""Helpers of the gateway tests: a configuration home, partners' signatures, a real gateway
on loopback (in-process or as a subprocess) and reading topics back. Every wait is bounded."""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from carrierwatch.core.partner import AuthSpec
from carrierwatch.ingest.auth import sign_request
from carrierwatch.ingest.gateway import GATEWAY, Gateway, GatewaySettings, create_app
from carrierwatch.settings import Settings, find_project_root
from carrierwatch.streams.broker import die_with_parent

REPO = find_project_root()

#: secrets of every webhook partner of the test home (acme_courier: Standard Webhooks)
SECRETS = {
    "easypost": "ep-test-secret", "aftership": "as-test-secret", "fedex": "fx-test-secret",
    "metro_courier": "mc-test-api-key", "shippo": "sh-test-token",
    "acme_courier": "whsec_" + base64.b64encode(b"acme-courier-test-key-32-bytes!!").decode(),
}
#: acme_courier's tight limits, so that the 413 and 429 tests stay small
ACME_MAX_BODY = 4096
ACME_BURST = 5

_ACME = """\
# A test-only courier signing with Standard Webhooks (the metro_courier feed otherwise).
id: acme_courier
display_name: Acme Courier (test)
kind: courier
format: json
delivery: webhook
transformer: json_mapping
payload_schema_version: "1"
auth:
  scheme: standard_webhooks
webhook:
  max_body_bytes: {max_body}
  rate_per_second: 0.5
  burst: {burst}
  timestamp_tolerance_seconds: 300
"""


def build_home(root: Path) -> Path:
    """A copy of the repo's configuration plus ``acme_courier`` (Standard Webhooks)."""
    for name in ("partners", "codebooks", "schemas"):
        shutil.copytree(REPO / name, root / name)
    metro = (REPO / "partners" / "metro_courier.yaml").read_text()
    rest = metro[metro.index("default_timezone:"):]
    (root / "partners" / "acme_courier.yaml").write_text(
        _ACME.format(max_body=ACME_MAX_BODY, burst=ACME_BURST) + rest)
    codebook = (REPO / "codebooks" / "metro_courier.yaml").read_text()
    (root / "codebooks" / "acme_courier.yaml").write_text(
        codebook.replace("partner: metro_courier", "partner: acme_courier"))
    return root


@functools.lru_cache(maxsize=64)
def auth_of(home: Path, partner: str) -> AuthSpec:
    from carrierwatch.transformers.registry import load_registry

    return load_registry(home).get(partner).spec.auth


def signed(home: Path, partner: str, body: bytes, *, secret: str | None = None,
           **kwargs: Any) -> tuple[dict[str, str], dict[str, str]]:
    """Headers (with the content type) and query parameters of a correctly signed request."""
    headers, query = sign_request(auth_of(home, partner), secret or SECRETS[partner], body,
                                  **kwargs)
    return {"Content-Type": "application/json", **headers}, query


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway


@contextlib.asynccontextmanager
async def serve(home: Path, data_dir: Path, bootstrap: str, namespace: str,
                **settings: Any) -> AsyncIterator[RunningGateway]:
    """The gateway app on a free loopback port (the real aiohttp server)."""
    from carrierwatch.ingest.secrets import load_secrets
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry(home)
    secrets = load_secrets(list(SECRETS), environ={
        f"CARRIERWATCH_SECRET_{p.upper()}": s for p, s in SECRETS.items()})
    gateway_settings = GatewaySettings(**{"port": 0, "probe_interval": 0.5, **settings})
    app = create_app(settings=Settings(home=home, data_dir=data_dir, kafka_bootstrap=bootstrap),
                     gateway_settings=gateway_settings, registry=registry, namespace=namespace,
                     secrets=secrets)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield RunningGateway(f"http://{host}:{port}", app[GATEWAY])
    finally:
        await runner.cleanup()


# -- reading Kafka back ---------------------------------------------------------------------


@dataclass(frozen=True)
class RawMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    timestamp_s: float

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode()
        return None


def read_topic(bootstrap: str, topic: str, *, expect: int | None = None,
               timeout: float = 30.0) -> list[RawMessage]:
    """Every message of ``topic`` (all partitions) from the start; with ``expect``, wait (up to
    ``timeout``) until at least that many are there."""
    from confluent_kafka import Consumer, KafkaError

    deadline = time.monotonic() + timeout
    while True:
        consumer: Any = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False, "enable.partition.eof": True,
            "auto.offset.reset": "earliest"})
        try:
            metadata = consumer.list_topics(topic, timeout=10)
            partitions = set(metadata.topics[topic].partitions)
            consumer.subscribe([topic])
            out: list[RawMessage] = []
            at_end: set[int] = set()
            while at_end != partitions and time.monotonic() < deadline:
                for message in consumer.consume(200, timeout=0.5):
                    if message.error() is not None:
                        if message.error().code() == KafkaError._PARTITION_EOF:
                            at_end.add(message.partition())
                        continue
                    at_end.discard(message.partition())
                    out.append(RawMessage(message.topic(), message.key(), message.value(),
                                          list(message.headers() or []),
                                          message.timestamp()[1] / 1000))
        finally:
            consumer.close()
        if expect is None or len(out) >= expect or time.monotonic() > deadline:
            return out
        time.sleep(0.3)


def topic_totals(bootstrap: str, prefix: str) -> dict[str, int]:
    """Messages ever written to each topic whose name starts with ``prefix`` (end offsets)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer: Any = Consumer({"bootstrap.servers": bootstrap, "group.id": "totals"})
    try:
        for attempt in range(30):  # fresh topics: a partition's leader may still move in
            try:
                out = {}
                for name, topic in consumer.list_topics(timeout=10).topics.items():
                    if name.startswith(prefix):
                        out[name] = sum(consumer.get_watermark_offsets(
                            TopicPartition(name, p), timeout=10, cached=False)[1]
                            for p in topic.partitions)
                return out
            except KafkaException:
                if attempt == 29:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")
    finally:
        consumer.close()


# -- the gateway as a real process ------------------------------------------------------------


@dataclass
class GatewayProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError(f"gateway ignored SIGTERM:\n{self.log.read_text()}")\
                    from None
        return int(self.proc.returncode)


def start_gateway_process(home: Path, data_dir: Path, bootstrap: str, namespace: str,
                          log: Path, *, extra_env: dict[str, str] | None = None,
                          timeout: float = 60.0) -> GatewayProcess:
    """``carrierwatch gateway --port 0`` as a subprocess; waits for its "listening" line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    env.update({"CARRIERWATCH_HOME": str(home), "CARRIERWATCH_DATA_DIR": str(data_dir),
                "CARRIERWATCH_KAFKA_BOOTSTRAP": bootstrap,
                "CARRIERWATCH_STREAM_NAMESPACE": namespace,
                "CARRIERWATCH_GATEWAY_PROBE_INTERVAL": "0.5",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])})
    env.update({f"CARRIERWATCH_SECRET_{p.upper()}": s for p, s in SECRETS.items()})
    env.update(extra_env or {})
    start = log.stat().st_size if log.exists() else 0
    handle = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "carrierwatch", "gateway", "--port", "0",
                             "-l", "info"], env=env, stdout=handle, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    handle.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        found = re.findall(r"listening on (http://\S+)", text[start:])
        if found:
            return GatewayProcess(proc, log, found[-1])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    with contextlib.suppress(Exception):
        proc.kill()
    raise AssertionError(f"gateway did not start:\n{log.read_text(errors='replace')[-3000:]}")


def request_ids(messages: Iterable[RawMessage]) -> list[str]:
    from carrierwatch.ingest.kafka import REQUEST_ID_HEADER

    return [m.header(REQUEST_ID_HEADER) or "" for m in messages]
