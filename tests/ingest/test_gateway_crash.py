"""Nothing accepted is lost: the spool survives kill -9 and drains exactly once, in order."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from gatewaykit import free_port, read_topic, request_ids, signed, start_gateway_process

from carrierwatch.ingest.kafka import DeliveryFailed, Drainer, RawProducer
from carrierwatch.ingest.spool import Spool, SpoolEntry
from carrierwatch.streams.topology import StreamConfig, TopicSpec, Topology, ensure_topics
from carrierwatch.transformers.registry import load_registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTNERS = ("easypost", "aftership", "metro_courier")


def _body(partner: str, n: int) -> bytes:
    return b'{"n": %d, "partner": "%s", "pad": "%s"}' % (n, partner.encode(), b"x" * (n % 50))


async def _post(client: aiohttp.ClientSession, url: str, home: Path, partner: str,
                n: int) -> str | None:
    """The request id of an accepted request (None: not accepted or no answer)."""
    body = _body(partner, n)
    headers, query = signed(home, partner, body)
    try:
        async with client.post(f"{url}/ingest/{partner}", data=body, headers=headers,
                               params=query, timeout=aiohttp.ClientTimeout(total=10)) as response:
            if response.status == 202:
                return str((await response.json())["request_id"])
            return None
    except (aiohttp.ClientError, TimeoutError):
        return None


def test_kill_9_with_a_pending_spool_then_every_accepted_request_lands_exactly_once(
        kafka_broker: Any, gateway_home: Path, tmp_path: Path) -> None:
    namespace = f"k{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_broker.bootstrap,
                  Topology(StreamConfig(namespace=namespace), load_registry(gateway_home).ids())
                  .specs())
    data_dir = tmp_path / "data"
    log = tmp_path / "gateway.log"
    # 1. Kafka unreachable: the gateway spools
    first = start_gateway_process(gateway_home, data_dir, f"127.0.0.1:{free_port()}", namespace,
                                  log)
    accepted: dict[str, list[str]] = {p: [] for p in PARTNERS}

    async def wave_one() -> None:
        async with aiohttp.ClientSession() as client:
            for n in range(30):  # one after the other: arrival order is the order sent
                partner = PARTNERS[n % 3]
                rid = await _post(client, first.url, gateway_home, partner, n)
                assert rid is not None, log.read_text()[-2000:]
                accepted[partner].append(rid)

    async def wave_two() -> list[str | None]:
        # concurrent requests, and kill -9 while some are in flight
        async with aiohttp.ClientSession() as client:
            tasks = [asyncio.ensure_future(_post(client, first.url, gateway_home, "easypost",
                                                 100 + n)) for n in range(20)]
            await asyncio.sleep(0.05)
            first.kill9()
            return list(await asyncio.gather(*tasks))

    asyncio.run(wave_one())
    late = [rid for rid in asyncio.run(wave_two()) if rid is not None]
    spool = list((data_dir / "gateway" / "spool").glob("*.seg"))
    assert spool, "the spool must hold the accepted requests"

    # 2. restarted with Kafka back: the spool drains, then new requests go straight to Kafka
    second = start_gateway_process(gateway_home, data_dir, kafka_broker.bootstrap, namespace,
                                   log)
    try:
        async def drained_then_direct() -> str | None:
            async with aiohttp.ClientSession() as client:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    async with client.get(f"{second.url}/readyz") as response:
                        state = await response.json()
                    if state["kafka"] and state["spool_depth"] == 0:
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError(f"spool not drained: {state}")
                return await _post(client, second.url, gateway_home, "easypost", 999)

        after = asyncio.run(drained_then_direct())
        assert after is not None
    finally:
        second.kill9()

    topics = {p: f"{namespace}.raw.{p}" for p in PARTNERS}
    expected = {p: len(accepted[p]) + (len(late) + 1 if p == "easypost" else 0)
                for p in PARTNERS}
    found = {p: request_ids(read_topic(kafka_broker.bootstrap, topics[p], expect=expected[p]))
             for p in PARTNERS}
    for partner in PARTNERS:
        counts = Counter(found[partner])
        assert not [rid for rid, c in counts.items() if c > 1], f"duplicates in {partner}"
        # in arrival order, each exactly once
        assert [r for r in found[partner] if r in accepted[partner]] == accepted[partner]
    assert set(late) <= set(found["easypost"])
    # the first request after the drain comes after every spooled one
    assert found["easypost"][-1] == after
    text = log.read_text()
    assert "store=spool" in text and "store=kafka" in text
    assert "ep-test-secret" not in text and '"n": ' not in text  # no secret, no body in logs


def test_a_drain_interrupted_half_way_resumes_without_duplicates(
        kafka_broker: Any, tmp_path: Path) -> None:
    topic = f"drain-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_broker.bootstrap, [TopicSpec(topic, 2, {})])
    spool = Spool(tmp_path, max_bytes=1 << 20)
    entries = [SpoolEntry(f"rid-{i:03d}", "easypost", topic, 1_780_000_000_000 + i,
                          (("content-type", "application/json"),
                           ("carrierwatch-request-id", f"rid-{i:03d}")), b'{"i": %d}' % i)
               for i in range(12)]
    spool.append(entries)

    class BrokerFailsAfterFive(RawProducer):
        """The real producer, which stops being acknowledged after five messages."""

        sent = 0

        async def send(self, *args: Any, **kwargs: Any) -> None:
            BrokerFailsAfterFive.sent += 1
            if BrokerFailsAfterFive.sent > 5:
                raise DeliveryFailed("broker went away")
            await super().send(*args, **kwargs)

    async def first_attempt() -> None:
        producer = BrokerFailsAfterFive(kafka_broker.bootstrap)
        try:
            with pytest.raises(DeliveryFailed):
                await Drainer(spool, producer, batch=100).drain_once()
        finally:
            producer.close()

    asyncio.run(first_attempt())
    spool.close()
    assert len(read_topic(kafka_broker.bootstrap, topic)) == 5

    async def after_restart() -> int:
        reopened = Spool(tmp_path, max_bytes=1 << 20)  # as a restarted gateway would
        assert reopened.depth == 12 and reopened.read_intent() is not None
        producer = RawProducer(kafka_broker.bootstrap)
        try:
            drainer = Drainer(reopened, producer, batch=100)
            moved = await drainer.drain_once()
            assert (drainer.recovered, reopened.depth, reopened.read_intent()) == (5, 0, None)
            return moved
        finally:
            producer.close()
            reopened.close()

    assert asyncio.run(after_restart()) == 12
    ids = request_ids(read_topic(kafka_broker.bootstrap, topic, expect=12))
    assert sorted(ids) == [e.request_id for e in entries]
