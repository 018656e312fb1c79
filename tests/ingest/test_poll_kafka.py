"""The poller against the real broker: every polled partner's news lands in raw.<partner>
once, in the shape the worker's transformers read, equal to the simulator's truth; and a poller
killed with -9 and restarted neither skips nor duplicates anything."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from gatewaykit import read_topic
from pollkit import (
    DAY,
    T0,
    Clock,
    environ,
    fast_home,
    make_apis,
    make_poller,
    observed,
    registry_of,
    run_until,
    truth,
)

from carrierwatch.ingest.pollapis import split_response
from carrierwatch.ingest.trackings import TrackingRegistry
from carrierwatch.synthetic.apis import serve_in_thread
from carrierwatch.transformers.base import SYNTHETIC_HEADER

PARTNERS = ("fedex", "ups", "dhl", "usps", "carrier_b")
API = {"fedex": "fedex", "ups": "ups", "dhl": "dhl", "usps": "usps", "carrier_b": "graphql"}


def _header(message: Any, name: str) -> str | None:
    for key, value in message.headers:
        if key == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def _versions(partner: str, messages: list[Any], numbers: list[str]) -> Counter[tuple[str, str]]:
    """(number, digest of its part) → how many raw messages carry that news."""
    found: Counter[tuple[str, str]] = Counter()
    for message in messages:
        news = (_header(message, "carrierwatch-tracking-numbers") or "").split(",")
        parts = split_response(API[partner], message.value, numbers)
        for number in news:
            digest = parts.get(number)
            assert digest is not None, f"{number} announced but not in the body"
            found[(number, digest)] += 1
    return found


@pytest.mark.slow
def test_every_polled_partners_news_lands_once_as_the_simulator_says(
        kafka_broker: Any, tmp_path: Path) -> None:
    registry = registry_of(fast_home(tmp_path / "home"))
    clock = Clock(T0 + DAY)
    apis = make_apis(registry, clock, canary_step_seconds=3600.0)
    numbers = {p: apis.add_packages(p, 35 if p == "fedex" else 6, T0) for p in PARTNERS}
    canaries = {p: registry.get(p).spec.synthetic_tracking_prefix + "0001" for p in PARTNERS}
    unknown = {p: "NOSUCH00001" for p in PARTNERS}
    data = tmp_path / "data"
    with TrackingRegistry(data / "poll" / "trackings.sqlite3") as trackings:
        for p in PARTNERS:
            trackings.add(p, [*numbers[p], unknown[p]], "manual")
            trackings.add(p, [canaries[p]], "canary",
                          synthetic_prefix=registry.get(p).spec.synthetic_tracking_prefix)
    namespace = f"poll{uuid.uuid4().hex[:6]}"
    url, stop = serve_in_thread(apis)
    try:
        poller = make_poller(registry, data, kafka_broker.bootstrap, namespace, url, PARTNERS)

        def all_polled_since(mark: float) -> bool:
            with TrackingRegistry(data / "poll" / "trackings.sqlite3") as t:
                return all((x.polled_ms or 0) / 1000 > mark for x in t.entries())

        async def go() -> None:
            try:
                for day in (1, 3, 6, 12):  # the packages move on between the rounds
                    clock.now = T0 + day * DAY
                    mark = time.time()
                    await run_until(poller, lambda m=mark: all_polled_since(m), 30)  # type: ignore[misc]
                await run_until(poller, lambda: poller.spool.depth == 0, 20)
            finally:
                await poller.close()

        asyncio.run(go())
    finally:
        stop()
    for p in PARTNERS:
        messages = read_topic(kafka_broker.bootstrap, f"{namespace}.raw.{p}")
        real = [m for m in messages if _header(m, SYNTHETIC_HEADER) is None]
        synthetic = [m for m in messages if _header(m, SYNTHETIC_HEADER) == "true"]
        # the transformer reads every body without a dead letter, and finds the truth
        got, dead = observed(registry, p, [(m.value, int(_header(m, "carrierwatch-received-time")
                                                         or 0)) for m in real])
        # FedEx and Carrier B (GraphQL) answer a batch with an error entry for the unknown
        # number, which the transformer reports (the others answer it alone with a 404:
        # nothing produced)
        assert all("NOTFOUND" in d or "NOT_FOUND" in d for d in dead), (p, dead[:3])
        assert bool(dead) == (p in ("fedex", "carrier_b"))
        assert got == truth(apis, p, numbers[p]), p
        # each news once: no (number, content) twice; news only when something changed
        versions = _versions(p, real, numbers[p])
        assert max(versions.values()) == 1, p
        assert len(real) < 4 * len(numbers[p])  # not one message per poll
        # the canary travels alone, flagged synthetic, and is read as a synthetic package
        assert synthetic and all(_header(m, "carrierwatch-tracking-numbers") == canaries[p]
                                 for m in synthetic)
        received = int(_header(synthetic[-1], "carrierwatch-received-time") or 0)
        result = registry.get(p).transform(synthetic[-1].value, received,
                                           {SYNTHETIC_HEADER: "true"})
        assert result.events and all(e.synthetic for e in result.events)
    fedex_sizes = [len(r.numbers) for r in apis.log if r.partner == "fedex" and r.kind == "track"]
    assert max(fedex_sizes) == 30
    with TrackingRegistry(data / "poll" / "trackings.sqlite3") as trackings:
        delivered = [t for t in trackings.entries(include_inactive=True) if not t.active]
    # delivered packages are no longer followed (by day 12 most are)
    assert len(delivered) >= len(numbers["fedex"]) // 2


@pytest.mark.slow
def test_kill_9_and_restart_neither_skips_nor_duplicates(kafka_broker: Any,
                                                         tmp_path: Path) -> None:
    """A ``carrierwatch poll`` process is killed with -9 five times while the packages move;
    after the last restart has caught up, the topic holds each (number, content) exactly once
    and the events of the final contents are the simulator's truth."""
    home = fast_home(tmp_path / "home", ups={"interval_seconds": 0.05, "concurrency": 4})
    registry = registry_of(home)
    clock = Clock(T0)
    apis = make_apis(registry, clock)
    numbers = apis.add_packages("ups", 40, T0)
    data = tmp_path / "data"
    with TrackingRegistry(data / "poll" / "trackings.sqlite3") as trackings:
        trackings.add("ups", numbers, "manual")
    namespace = f"pk{uuid.uuid4().hex[:6]}"
    url, stop_apis = serve_in_thread(apis)
    env = {**os.environ, **environ(), "CARRIERWATCH_HOME": str(home),
           "CARRIERWATCH_DATA_DIR": str(data), "CARRIERWATCH_KAFKA_BOOTSTRAP":
           kafka_broker.bootstrap, "CARRIERWATCH_POLL_IDLE_SECONDS": "0.05",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    command = [sys.executable, "-m", "carrierwatch", "poll", "--partner", "ups", "--base-url",
               f"ups={url}/ups", "--metrics-port", "0", "--namespace", namespace, "-l", "warn"]
    kills = 0
    logs = []
    try:
        for run in range(5):
            clock.now = T0 + (run + 1) * DAY * 5 // 2  # the packages move on between runs
            log = tmp_path / f"poll-{run}.log"
            logs.append(log)
            begun = time.time()
            with open(log, "wb") as out:
                proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            started = time.monotonic()
            while time.monotonic() - started < 60:  # until this run has polled something
                time.sleep(0.02)
                with TrackingRegistry(data / "poll" / "trackings.sqlite3") as t:
                    if any((e.polled_ms or 0) / 1000 > begun for e in t.entries()):
                        break
            time.sleep(0.05 + 0.1 * run)  # in the middle of polling and producing
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        clock.now = T0 + 14 * DAY
        # the last run catches up with everything and stops on SIGTERM
        log = tmp_path / "poll-final.log"
        logs.append(log)
        with open(log, "wb") as out:
            proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        mark = time.time() + 1.0
        health = None
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if health is None:
                found = re.search(rb"metrics on (http://\S+)/metrics", log.read_bytes())
                health = found and found.group(1).decode() + "/healthz"
                continue
            with TrackingRegistry(data / "poll" / "trackings.sqlite3") as t:
                entries = t.entries(include_inactive=True)
                caught_up = time.time() > mark + 1 and not t.pending() and all(
                    not e.active or (e.polled_ms or 0) / 1000 > mark for e in entries)
            if caught_up and httpx.get(health, timeout=5).json()["spool_depth"] == 0:
                break
        else:
            raise AssertionError("the last run did not catch up within 60 s")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-2000:]
    finally:
        stop_apis()
    messages = read_topic(kafka_broker.bootstrap, f"{namespace}.raw.ups")
    versions = _versions("ups", messages, numbers)
    twice = {k: v for k, v in versions.items() if v > 1}
    assert not twice, twice
    got, dead = observed(registry, "ups", [
        (m.value, int(_header(m, "carrierwatch-received-time") or 0)) for m in messages])
    assert dead == []
    assert got == truth(apis, "ups", numbers)
    # the kills did land in the middle of work: several runs produced
    assert len({hashlib.sha256(m.value).hexdigest() for m in messages}) == len(messages)
    assert kills == 5 and len(messages) > 40


class _Crash(BaseException):
    """Stands for a kill -9 at one point of a produce (nothing after it runs)."""


@pytest.mark.parametrize("where", ["after_the_produce", "before_the_produce"])
def test_a_produce_left_pending_by_a_crash_is_settled_from_the_topic(
        kafka_broker: Any, tmp_path: Path, where: str) -> None:
    """Crash after the broker acknowledged the response but before the cursor moved: the
    restart finds the request id in the topic and moves the cursor without producing again.
    Crash before the produce: the restart finds nothing and the next poll produces it."""
    registry = registry_of(fast_home(tmp_path / "home"))
    clock = Clock(T0 + 3 * DAY)
    apis = make_apis(registry, clock)
    numbers = apis.add_packages("ups", 1, T0)
    data = tmp_path / "data"
    with TrackingRegistry(data / "poll" / "trackings.sqlite3") as trackings:
        trackings.add("ups", numbers, "manual")
    namespace = f"pc{uuid.uuid4().hex[:6]}"
    topic = f"{namespace}.raw.ups"
    url, stop = serve_in_thread(apis)
    try:
        first = make_poller(registry, data, kafka_broker.bootstrap, namespace, url, ["ups"])

        async def crash() -> None:
            assert await first.connect()
            if where == "after_the_produce":
                def commit(*_args: Any) -> Any:
                    raise _Crash
                first.trackings.commit = commit  # type: ignore[method-assign]
            else:
                async def persist(*_args: Any) -> Any:
                    raise _Crash
                first._persist = persist  # type: ignore[method-assign]
            with pytest.raises(_Crash):
                await first.poll_batch("ups", numbers)
            first.producer.close()

        asyncio.run(crash())
        with TrackingRegistry(data / "poll" / "trackings.sqlite3") as trackings:
            assert len(trackings.pending()) == 1
            assert trackings.entries()[0].digest is None
        before = len(read_topic(kafka_broker.bootstrap, topic)) \
            if where == "after_the_produce" else 0
        assert before == (1 if where == "after_the_produce" else 0)

        second = make_poller(registry, data, kafka_broker.bootstrap, namespace, url, ["ups"])

        async def restart() -> None:
            try:
                mark = time.time()
                await run_until(second, lambda: all(
                    (e.polled_ms or 0) / 1000 > mark for e in second.trackings.entries()), 20)
            finally:
                await second.close()

        asyncio.run(restart())
    finally:
        stop()
    messages = read_topic(kafka_broker.bootstrap, topic, expect=1)
    assert len(messages) == 1
    with TrackingRegistry(data / "poll" / "trackings.sqlite3") as trackings:
        assert trackings.pending() == []
        assert trackings.entries(include_inactive=True)[0].digest is not None
    assert second.produced == (0 if where == "after_the_produce" else 1)
