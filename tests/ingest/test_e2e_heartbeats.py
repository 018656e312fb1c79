"""End to end on loopback, every component a real process: gateway, drop-folder watcher,
heartbeat sender, stream worker and sink (with the heartbeat monitor) on the session's Kafka
broker and schema registry, into chDB.

One scenario (the processes start once, ~1 minute):

1. a signed webhook of every webhook partner, and a dropped CSV file, land as canonical events
   in the store (the expected event ids come from each partner's transformer, in-process);
2. a heartbeat round trip completes for every webhook and batch integration (the sink's
   ``carrierwatch_heartbeat_state`` says ``healthy`` for each);
3. hostile requests get their status and leave nothing in any topic or table; a malformed
   JSON body with a valid signature is accepted and ends in ``dlq.easypost`` and the store's
   dead letters; a partner's ``X-Carrierwatch-Synthetic`` header does not exempt its packages;
4. stopping the worker turns every integration ``silent`` within two heartbeat intervals, and
   restarting it returns them to ``healthy``;
5. the ``heartbeats`` table holds the history (seen, then missing, then seen again).

(Polled partners get no heartbeat yet: the pollers' tracking registry is #14 section 2.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from gatewaykit import (
    ACME_BURST,
    REPO,
    SECRETS,
    GatewayProcess,
    free_port,
    signed,
    start_gateway_process,
)
from test_gateway import _hostile, _sample

from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.streams.broker import die_with_parent
from carrierwatch.streams.records import decode_dead_letter
from carrierwatch.transformers.registry import load_registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WEBHOOK_PARTNERS = ["aftership", "easypost", "fedex", "metro_courier", "shippo"]
INTEGRATIONS = {(p, "webhook") for p in WEBHOOK_PARTNERS} | {("valley_express", "drop")}
INTERVAL, DEADLINE = 5.0, 4.0


def _states(metrics_url: str) -> dict[tuple[str, str], str]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[tuple[str, str], str] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "carrierwatch_heartbeat_state":
            for sample in family.samples:
                if sample.value == 1:
                    out[(sample.labels["partner"], sample.labels["integration"])] = \
                        sample.labels["state"]
    return out


def _wait_until(what: str, check: Callable[[], bool], timeout: float,
                alive: Callable[[], None], step: float = 0.25) -> float:
    """Seconds until ``check()`` held (bounded by ``timeout``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        alive()
        if check():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _all(states: dict[tuple[str, str], str], state: str) -> bool:
    return all(states.get(key) == state for key in INTEGRATIONS)


def _raw_messages(bootstrap: str, prefix: str) -> list[tuple[str, bytes]]:
    """(topic, value) of every message of every topic named ``prefix…`` (one consumer)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer: Any = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r{uuid.uuid4().hex}",
                              "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        topics = consumer.list_topics(timeout=10).topics
        parts = [TopicPartition(name, p, 0) for name, t in topics.items()
                 if name.startswith(prefix) for p in t.partitions]
        ends = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
                for tp in parts}
        parts = [tp for tp in parts if ends[(tp.topic, tp.partition)] > 0]
        consumer.assign(parts)
        left = {(tp.topic, tp.partition) for tp in parts}
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.5):
                key = (message.topic(), message.partition())
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        left.discard(key)
                    continue
                out.append((message.topic(), message.value() or b""))
                if message.offset() + 1 >= ends[key]:
                    left.discard(key)
        assert not left, f"partitions not read to their end: {left}"
        return out
    finally:
        consumer.close()


def test_webhooks_drops_heartbeats_and_hostile_requests_end_to_end_into_the_store(
        stream_harness: Any, gateway_home: Path, tmp_path: Path) -> None:
    harness = stream_harness
    harness.extra_env["CARRIERWATCH_HOME"] = str(gateway_home)
    registry = load_registry(gateway_home)
    bootstrap, namespace = harness.bootstrap, harness.namespace
    metrics_port = free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    drop = tmp_path / "drop"
    drop.mkdir()
    harness.start("sink", "sink", "--web-port", str(metrics_port))
    harness.start("worker", "worker")
    gateway: GatewayProcess = start_gateway_process(
        gateway_home, tmp_path / "gateway-data", bootstrap, namespace, tmp_path / "gateway.log")
    extra: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        env = harness.env(tmp_path / f"{name}-data")
        env.update({f"CARRIERWATCH_SECRET_{p.upper()}": s for p, s in SECRETS.items()})
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        with (tmp_path / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "carrierwatch", *args], env=env,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        extra.append((name, proc))
        return proc

    def alive() -> None:
        harness.assert_running()
        assert gateway.proc.poll() is None, gateway.log.read_text()[-3000:]
        for name, proc in extra:
            assert proc.poll() is None, (tmp_path / f"{name}.log").read_text()[-3000:]

    try:
        spawn("watch", "watch", str(drop), "--settle-seconds", "0.3", "--interval", "0.3")
        # 1. a signed webhook of every webhook partner (fedex claims to be synthetic) + a file
        expected: dict[str, set[str]] = {}
        now = time.time_ns() // 1_000_000

        async def post_samples() -> dict[str, int]:
            answers = {}
            async with aiohttp.ClientSession() as client:
                for partner in [*WEBHOOK_PARTNERS, "acme_courier"]:
                    body = _sample(gateway_home, partner)
                    headers, query = signed(gateway_home, partner, body)
                    if partner == "fedex":
                        headers["X-Carrierwatch-Synthetic"] = "true"
                    async with client.post(f"{gateway.url}/ingest/{partner}", data=body,
                                           headers=headers, params=query) as response:
                        answers[partner] = response.status
                    result = registry.get(partner).transform(body, now, {})
                    expected[partner] = {e.event_id for e in result.events}
            return answers

        assert asyncio.run(post_samples()) == {p: 202 for p in [*WEBHOOK_PARTNERS,
                                                               "acme_courier"]}
        sample_csv = REPO / "samples" / "valley_express" / "lifecycle_delivered.csv"
        (drop / "valley_express").mkdir()
        shutil.copy(sample_csv, drop / "valley_express" / "scans-0302.csv")
        expected["valley_express"] = {e.event_id for e in registry.get("valley_express")
                                      .transform(sample_csv.read_bytes(), now, {}).events}
        assert all(expected.values())

        # 2. heartbeats: every webhook and batch integration healthy
        # the webhook and batch integrations (no poller runs here: tests/ingest/test_poll*)
        chosen = [arg for partner, _ in sorted(INTEGRATIONS) for arg in ("--partner", partner)]
        spawn("heartbeat", "heartbeat", "--gateway-url", gateway.url, "--drop-dir", str(drop),
              "--interval", str(INTERVAL), "--deadline", str(DEADLINE), "--slow",
              str(DEADLINE), "-l", "info", *chosen)
        figures = {"healthy": _wait_until(
            "every integration healthy", lambda: _all(_states(metrics_url), "healthy"), 120,
            alive)}

        # 3. hostile requests
        marker = f"HOSTILE{uuid.uuid4().hex}"
        malformed = b'{"description": "tracker.updated", "result": "MALFORMED' + marker.encode()

        async def hostile() -> tuple[list[tuple[str, str, int, int, str]], list[int]]:
            results = []
            async with aiohttp.ClientSession() as client:
                async def post(partner: str, headers: dict[str, str], query: dict[str, str],
                               body: bytes) -> tuple[int, str]:
                    async with client.post(f"{gateway.url}/ingest/{partner}", data=body,
                                           headers=headers, params=query) as response:
                        return response.status, (await response.json()).get("code", "")

                for partner in [*WEBHOOK_PARTNERS, "acme_courier"]:
                    body = orjson.dumps({"marker": f"{marker}-{partner}"})
                    for case, headers, query, data, status, code in _hostile(
                            gateway_home, partner, body):
                        got, got_code = await post(partner, headers, query, data)
                        results.append((partner, case, status, got, f"{code}/{got_code}"))
                # a replayed Standard Webhooks id: the first is accepted, the replay is not
                replayed = orjson.dumps({"marker": f"REPLAYED{marker}"})
                headers, query = signed(gateway_home, "acme_courier", replayed,
                                        webhook_id=f"msg_{marker}")
                for expect in (202, 400):
                    got, got_code = await post("acme_courier", headers, query, replayed)
                    results.append(("acme_courier", "replayed id", expect, got, got_code))
                # malformed JSON, correctly signed: accepted (the partner did send it)
                headers, query = signed(gateway_home, "easypost", malformed)
                got, got_code = await post("easypost", headers, query, malformed)
                results.append(("easypost", "malformed JSON", 202, got, got_code))
                # a flood on acme_courier's token bucket (burst 5, 0.5/s)
                flood = [orjson.dumps({"marker": f"FLOOD{i}{marker}"})
                         for i in range(4 * ACME_BURST)]
                answers = await asyncio.gather(*(
                    post("acme_courier", *signed(gateway_home, "acme_courier", body), body)
                    for body in flood))
            return results, [status for status, _ in answers]

        results, flood_statuses = asyncio.run(hostile())
        wrong = [r for r in results if r[2] != r[3]]
        assert not wrong, wrong
        assert len(results) >= 6 * 6
        accepted_floods = flood_statuses.count(202)
        assert ACME_BURST - 1 <= accepted_floods <= ACME_BURST + 2  # heartbeats do not use it
        assert flood_statuses.count(429) == len(flood_statuses) - accepted_floods
        alive()

        # 4. stop the worker: every integration silent within two intervals; restart: healthy
        # (SIGTERM, then the states, then the exit: the worker's shutdown takes a while)
        harness.processes["worker"].send_signal(signal.SIGTERM)
        took = _wait_until("every integration silent",
                           lambda: _all(_states(metrics_url), "silent"), 3 * INTERVAL,
                           lambda: None)
        assert took <= 2 * INTERVAL, f"silent {took:.1f} s after the worker's SIGTERM"
        figures["silent"] = took
        assert harness.stop("worker") == 0
        alive()
        harness.start("worker", "worker")
        figures["healthy again"] = _wait_until(
            "every integration healthy again", lambda: _all(_states(metrics_url), "healthy"),
            120, alive)
        print("seconds until:", {k: round(v, 1) for k, v in figures.items()})
    finally:
        for _name, proc in extra:
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        gateway.stop()
    # everything accepted is normalized and written, then the store is read
    harness.wait(harness.topology.app_id, harness.topology.raw_topics, 60)
    time.sleep(2.0)
    messages = _raw_messages(bootstrap, f"{namespace}.")
    assert harness.stop("worker") == 0
    assert harness.stop("sink") == 0

    raw = [(topic, value) for topic, value in messages if ".raw." in topic]
    assert not [t for t, v in raw if f"{marker}-".encode() in v], "a refused request was stored"
    assert max(len(v) for _, v in raw) < 1_048_576
    assert sum(1 for _, v in raw if f"REPLAYED{marker}".encode() in v) == 1
    assert sum(1 for _, v in raw if b"FLOOD" in v and marker.encode() in v) == accepted_floods
    dlq = [decode_dead_letter(v) for t, v in messages if t == f"{namespace}.dlq.easypost"]
    assert [d.raw for d in dlq if f"MALFORMED{marker}".encode() in d.raw] == [malformed]

    with open_store(Settings(data_dir=harness.sink_dir), command="pytest", wait=30) as store:
        stored = {row[0] for row in store.query("SELECT event_id FROM canonical_events FINAL")}
        for partner, ids in expected.items():
            assert ids <= stored, partner
        spoofed = store.query(
            "SELECT count(), countIf(synthetic) FROM canonical_events FINAL "
            "WHERE partner_id = 'fedex' AND event_id IN {ids:Array(String)}",
            {"ids": sorted(expected["fedex"])})
        assert spoofed == [(len(expected["fedex"]), 0)]
        assert store.query("SELECT count() FROM canonical_events FINAL "
                           "WHERE position(tracking_number, {m:String}) > 0",
                           {"m": marker}) == [(0,)]
        letters = store.query("SELECT partner_id, error FROM dead_letters FINAL "
                              "WHERE position(raw, {m:String}) > 0", {"m": "MALFORMED" + marker})
        assert [(p, "JSON" in e) for p, e in letters] == [("easypost", True)]
        # what was refused is in no table; what acme_courier accepted ({"marker": ...} is not
        # its format) is a dead letter each
        assert store.query("SELECT count() FROM dead_letters FINAL "
                           "WHERE position(raw, {m:String}) > 0", {"m": marker + "-"}) == [(0,)]
        assert store.query("SELECT count() FROM dead_letters FINAL WHERE partner_id = "
                           "'acme_courier' AND position(raw, {m:String}) > 0",
                           {"m": marker}) == [(1 + accepted_floods,)]
        history = store.query_dicts(
            "SELECT partner_id, integration, status, state, latency_ms "
            "FROM heartbeats FINAL ORDER BY sent_at")
    by_integration: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in history:
        by_integration.setdefault((row["partner_id"], row["integration"]), []).append(row)
    assert set(by_integration) == INTEGRATIONS
    for key, rows in by_integration.items():
        statuses = [r["status"] for r in rows]
        assert "seen" in statuses, (key, statuses)
        assert "missing" in statuses or "late" in statuses, (key, statuses)
        first_gap = next(i for i, s in enumerate(statuses) if s in ("missing", "late"))
        assert "seen" in statuses[first_gap:], (key, statuses)  # healthy again after restart
        assert all(r["latency_ms"] > 0 for r in rows if r["status"] == "seen")
    seen = sorted(r["latency_ms"] for r in history if r["status"] == "seen")
    print(f"{len(history)} heartbeats; seen latency ms: min {seen[0]:.0f}, "
          f"median {seen[len(seen) // 2]:.0f}, max {seen[-1]:.0f}; statuses "
          f"{ {s: sum(1 for r in history if r['status'] == s) for s in {r['status'] for r in history}} }")
