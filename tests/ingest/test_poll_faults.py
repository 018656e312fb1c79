"""The poller against the simulated APIs' faults: rate and batch limits, concurrency, token
refresh before expiry and after a 401, Retry-After, a peak-day burst that opens the breaker and
its recovery through half-open. Kafka is not needed here: with no broker the responses go to
the poller's spool (durable all the same), which these tests do not look at."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest
from pollkit import T0, Clock, fast_home, make_apis, make_poller, registry_of, run_until

from carrierwatch.ingest.trackings import TrackingRegistry
from carrierwatch.synthetic.apis import SimulatedApis, serve_in_thread


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


NO_KAFKA = _closed_port()


def _setup(tmp_path: Path, partner: str, count: int, **poll: Any
           ) -> tuple[Any, SimulatedApis, Clock, list[str]]:
    registry = registry_of(fast_home(tmp_path / "home", **{partner: poll}))
    clock = Clock(T0 + 2 * 86_400_000)
    apis = make_apis(registry, clock)
    numbers = apis.add_packages(partner, count, T0)
    with TrackingRegistry(tmp_path / "data" / "poll" / "trackings.sqlite3") as trackings:
        trackings.add(partner, numbers, "manual")
    return registry, apis, clock, numbers


def _track(apis: SimulatedApis, partner: str) -> list[Any]:
    return [r for r in apis.log if r.partner == partner and r.kind == "track"]


def _polled(tmp_path: Path, partner: str, numbers: list[str]) -> bool:
    with TrackingRegistry(tmp_path / "data" / "poll" / "trackings.sqlite3") as trackings:
        return all(t.polled_ms is not None for t in trackings.entries(partner, include_inactive=True)
                   if t.number in numbers)


def test_rate_and_concurrency_limits_hold_and_fedex_batches_at_most_30(tmp_path: Path) -> None:
    registry, apis, _clock, numbers = _setup(tmp_path, "fedex", 75, rate_per_second=5.0,
                                             concurrency=2, interval_seconds=600)
    apis.faults("fedex").latency = 0.3
    url, stop = serve_in_thread(apis)
    try:
        poller = make_poller(registry, tmp_path / "data", NO_KAFKA, "t", url, ["fedex"])

        async def go() -> None:
            try:
                await run_until(poller, lambda: _polled(tmp_path, "fedex", numbers), 20)
            finally:
                await poller.close()

        asyncio.run(go())
    finally:
        stop()
    track = [r for r in _track(apis, "fedex") if r.status == 200]
    sizes = sorted(len(r.numbers) for r in track)
    assert sizes == [15, 30, 30]  # 75 numbers in requests of at most 30
    assert sorted(n for r in track for n in r.numbers) == sorted(numbers)
    assert apis.max_in_flight("fedex") <= 2


def test_requests_are_spaced_by_the_partner_rate(tmp_path: Path) -> None:
    registry, apis, _clock, numbers = _setup(tmp_path, "ups", 12, rate_per_second=8.0,
                                             concurrency=4, interval_seconds=600)
    url, stop = serve_in_thread(apis)
    try:
        poller = make_poller(registry, tmp_path / "data", NO_KAFKA, "t", url, ["ups"])

        async def go() -> None:
            try:
                await run_until(poller, lambda: _polled(tmp_path, "ups", numbers), 20)
            finally:
                await poller.close()

        asyncio.run(go())
    finally:
        stop()
    times = sorted(r.at for r in _track(apis, "ups"))
    assert len(times) == 12
    # at 8 requests/s, 12 requests take at least 11/8 s, and no second holds more than 9
    assert times[-1] - times[0] >= 11 / 8 - 0.05
    assert max(sum(1 for t in times if s <= t < s + 1.0) for s in times) <= 9


@pytest.mark.parametrize(("partner", "token_url"), [("usps", "/oauth2/v3/token"),
                                                    ("carrier_b", "/oauth/token")])
def test_token_is_renewed_before_expiry_and_after_a_401(tmp_path: Path, partner: str,
                                                        token_url: str) -> None:
    import time

    registry, apis, _clock, _numbers = _setup(
        tmp_path, partner, 3, interval_seconds=0.1, rate_per_second=20.0,
        auth={"scheme": "oauth2_client_credentials", "token_url": token_url,
              "refresh_margin_seconds": 0.5})
    apis.faults(partner).token_ttl = 1.5
    url, stop = serve_in_thread(apis)
    try:
        poller = make_poller(registry, tmp_path / "data", NO_KAFKA, "t", url, [partner])
        marks: dict[str, float] = {}

        async def go() -> None:
            try:
                # 3.2 s of polling every 0.1 s with 1.5 s tokens renewed 0.5 s before expiry
                end = time.monotonic() + 3.2
                await run_until(poller, lambda: time.monotonic() > end, 10)
                # a long-lived token, then the partner revokes it: the next call gets 401
                apis.faults(partner).token_ttl = 3600.0
                source = poller.pollers[partner].token
                assert source is not None
                source.invalidate()
                fresh = time.time()
                await run_until(poller, lambda: any(
                    r.kind == "track" and r.status == 200 and r.at > fresh + 0.2
                    for r in apis.log), 10)
                marks["revoked"] = time.time()
                apis.tokens.clear()
                await run_until(poller, lambda: any(
                    r.kind == "track" and r.status == 200 and r.at > marks["revoked"]
                    for r in apis.log), 10)
            finally:
                await poller.close()

        asyncio.run(go())
    finally:
        stop()
    tokens = [r for r in apis.log if r.kind == "token" and r.at < marks["revoked"]]
    first_phase = [r for r in _track(apis, partner) if r.at < marks["revoked"]]
    # renewed about every second (1.5 s lifetime - 0.5 s margin): 3 or 4 tokens in 3.2 s,
    # and no request of that phase was refused
    assert 3 <= len(tokens) <= 6, len(tokens)  # + the one after invalidate()
    assert len(first_phase) >= 10
    assert all(r.status == 200 for r in first_phase), [r.status for r in first_phase]
    # after the revocation: exactly one 401, a new token, then answers again with it
    later = [r for r in apis.log if r.at >= marks["revoked"]]
    refused = [i for i, r in enumerate(later) if r.status == 401]
    assert len(refused) == 1
    after = later[refused[0] + 1:]
    assert after[0].kind == "token" and after[0].status == 200
    assert after[1].kind == "track" and after[1].status == 200
    assert after[1].token == after[0].token
    assert poller.metrics.tokens.labels(partner, "unauthorized")._value.get() == 1


def test_retry_after_is_respected(tmp_path: Path) -> None:
    registry, apis, _clock, numbers = _setup(tmp_path, "dhl", 4, rate_per_second=50.0,
                                             concurrency=1, interval_seconds=600,
                                             max_attempts=4)
    apis.faults("dhl").rate_limit = 1  # one request per second, then 429 Retry-After: 1
    apis.faults("dhl").retry_after = 1
    url, stop = serve_in_thread(apis)
    try:
        poller = make_poller(registry, tmp_path / "data", NO_KAFKA, "t", url, ["dhl"])

        async def go() -> None:
            try:
                await run_until(poller, lambda: _polled(tmp_path, "dhl", numbers), 20)
            finally:
                await poller.close()

        asyncio.run(go())
    finally:
        stop()
    track = _track(apis, "dhl")
    limited = [i for i, r in enumerate(track) if r.status == 429]
    assert limited, "the rate limit was never hit"
    for i in limited:  # after each 429, the next request waits the second it was asked to
        assert track[i + 1].at - track[i].at >= 0.95
    assert sum(1 for r in track if r.status == 200) == 4
    assert poller.metrics.requests.labels("dhl", "rate_limited")._value.get() == 0  # all retried


@pytest.mark.parametrize("partner", ["ups", "carrier_b"])
def test_a_peak_day_burst_opens_the_breaker_which_recovers_through_half_open(
        tmp_path: Path, partner: str) -> None:
    import time

    registry, apis, _clock, _numbers = _setup(
        tmp_path, partner, 40, batch_size=1, rate_per_second=100.0, concurrency=1, interval_seconds=0.05,
        max_attempts=1, breaker_threshold=3, breaker_reset_seconds=0.6)
    url, stop = serve_in_thread(apis)
    states: list[str] = []
    try:
        poller = make_poller(registry, tmp_path / "data", NO_KAFKA, "t", url, [partner])
        pp = poller.pollers[partner]
        original = pp._note_breaker

        def note(state: str) -> None:
            original(state)
            if not states or states[-1] != pp.breaker_state:
                states.append(pp.breaker_state)

        pp._note_breaker = note  # type: ignore[method-assign]

        async def go() -> None:
            try:
                await run_until(poller, lambda: len(_track(apis, partner)) >= 10, 10)
                start = time.time()
                apis.faults(partner).burst = (start, start + 1.5)
                await run_until(poller, lambda: time.time() > start + 3.0 and
                                pp.breaker_state == "closed", 10)
            finally:
                await poller.close()

        asyncio.run(go())
    finally:
        stop()
    burst = apis.faults(partner).burst
    assert burst is not None
    during = [r for r in _track(apis, partner) if burst[0] <= r.at < burst[1]]
    assert all(r.status == 503 for r in during)
    # 3 failures open it; then one half-open probe per 0.6 s: at most 3 + 3 calls in 1.5 s
    assert 3 <= len(during) <= 6, len(during)
    assert states[:4] == ["closed", "open", "half_open", "open"] or \
        states[:3] == ["closed", "open", "half_open"]
    assert states[-1] == "closed" and "half_open" in states
    after = [r for r in _track(apis, partner) if r.at >= burst[1]]
    assert after and after[-1].status == 200
    assert poller.metrics.breaker.labels(partner, "closed")._value.get() == 1
    transitions = poller.metrics.transitions
    assert transitions.labels(partner, "open")._value.get() >= 1
    assert transitions.labels(partner, "half_open")._value.get() >= 1
    assert transitions.labels(partner, "closed")._value.get() == 1


@pytest.mark.parametrize("partner", ["ups"])
def test_timeouts_are_retried_with_backoff(tmp_path: Path, partner: str) -> None:
    registry, apis, _clock, numbers = _setup(tmp_path, partner, 5, timeout_seconds=0.3,
                                             max_attempts=5, interval_seconds=600,
                                             concurrency=1)
    apis.faults(partner).timeout_rate = 0.5
    apis.faults(partner).hang_seconds = 1.0
    url, stop = serve_in_thread(apis)
    try:
        poller = make_poller(registry, tmp_path / "data", NO_KAFKA, "t", url, [partner])

        async def go() -> None:
            try:
                await run_until(poller, lambda: _polled(tmp_path, partner, numbers), 30)
            finally:
                await poller.close()

        asyncio.run(go())
    finally:
        stop()
    track = _track(apis, partner)
    assert any(r.status == 0 for r in track)  # some hung
    assert sum(1 for r in track if r.status == 200) >= 5
    assert poller.metrics.retries.labels(partner, "timeout")._value.get() >= 1


def test_metrics_endpoint_exports_the_shared_poller_names(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer
    from prometheus_client.parser import text_string_to_metric_families

    from carrierwatch.ingest.poller import metrics_app

    registry, apis, _clock, numbers = _setup(tmp_path, "dhl", 5, interval_seconds=600)
    with TrackingRegistry(tmp_path / "data" / "poll" / "trackings.sqlite3") as trackings:
        trackings.add("dhl", ["NOSUCH00001"], "manual")  # answered 404: not_found
    url, stop = serve_in_thread(apis)
    text = ""
    try:
        poller = make_poller(registry, tmp_path / "data", NO_KAFKA, "t", url, ["dhl"])

        async def go() -> None:
            nonlocal text
            try:
                await run_until(poller, lambda: _polled(tmp_path, "dhl", [*numbers,
                                                                          "NOSUCH00001"]), 20)
                async with TestClient(TestServer(metrics_app(poller))) as client:
                    response = await client.get("/metrics")
                    assert response.status == 200
                    text = await response.text()
            finally:
                await poller.close()

        asyncio.run(go())
    finally:
        stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("carrierwatch_poller_requests_total",
                    (("outcome", "ok"), ("partner", "dhl")))] == 5
    assert samples[("carrierwatch_poller_requests_total",
                    (("outcome", "not_found"), ("partner", "dhl")))] == 1
    assert samples[("carrierwatch_poller_breaker_state",
                    (("partner", "dhl"), ("state", "closed")))] == 1
    assert samples[("carrierwatch_poller_breaker_state",
                    (("partner", "dhl"), ("state", "open")))] == 0
    assert samples[("carrierwatch_poller_tracked_numbers", (("partner", "dhl"),))] == 6
    assert samples[("carrierwatch_kafka_up", ())] == 0
    assert samples[("carrierwatch_poller_produced_total",
                    (("partner", "dhl"), ("store", "spool")))] == 5
