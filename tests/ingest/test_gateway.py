"""The webhook gateway on loopback (the real aiohttp server) against the real Kafka broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from gatewaykit import ACME_BURST, ACME_MAX_BODY, SECRETS, read_topic, serve, signed, topic_totals

from carrierwatch.ingest.gateway import webhook_partners
from carrierwatch.streams.records import headers_to_dict, received_time_of
from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics
from carrierwatch.transformers.registry import load_registry

pytestmark = pytest.mark.integration

WEBHOOK_PARTNERS = ["acme_courier", "aftership", "easypost", "fedex", "metro_courier", "shippo"]


def _sample(home: Path, partner: str) -> bytes:
    """A real sample payload of the partner that normalizes cleanly (acme_courier speaks
    metro_courier's format)."""
    from carrierwatch.settings import find_project_root

    samples = find_project_root() / "samples" / ("metro_courier" if partner == "acme_courier"
                                                 else partner)
    transformer = load_registry(home).get(partner)
    for path in sorted(samples.glob("*.json")):
        result = transformer.transform(path.read_bytes(), 1_780_000_000_000, {})
        if result.events and not result.dead_letters:
            return path.read_bytes()
    raise AssertionError(f"no clean sample of {partner}")


@pytest.fixture
def namespace(kafka_broker: Any, gateway_home: Path) -> str:
    namespace = f"g{uuid.uuid4().hex[:10]}"
    registry = load_registry(gateway_home)
    ensure_topics(kafka_broker.bootstrap,
                  Topology(StreamConfig(namespace=namespace), registry.ids()).specs())
    return namespace


def test_the_gateway_serves_every_webhook_partner_of_the_repo() -> None:
    assert sorted(webhook_partners(load_registry())) == \
        ["aftership", "easypost", "fedex", "metro_courier", "shippo"]


@pytest.mark.parametrize("partner", WEBHOOK_PARTNERS)
def test_a_signed_webhook_is_durable_in_raw_before_202_and_readable_by_the_worker(
        kafka_broker: Any, gateway_home: Path, namespace: str, tmp_path: Path,
        partner: str) -> None:
    body = _sample(gateway_home, partner)
    headers, query = signed(gateway_home, partner, body)
    headers["X-Partner-Delivery"] = "d-1"
    topic = f"{namespace}.raw.{partner}"

    async def scenario() -> tuple[int, dict[str, Any], list[Any]]:
        async with serve(gateway_home, tmp_path, kafka_broker.bootstrap, namespace) as gw, \
                aiohttp.ClientSession() as client:
            before = time.time()
            async with client.post(f"{gw.url}/ingest/{partner}", data=body, headers=headers,
                                   params=query) as response:
                answer = await response.json()
                # 202 means "already in Kafka": read it back without waiting
                messages = read_topic(kafka_broker.bootstrap, topic, timeout=5)
                assert before <= time.time()
                return response.status, answer, messages

    status, answer, messages = asyncio.run(scenario())
    assert status == 202 and answer["status"] == "accepted"
    assert len(messages) == 1
    message = messages[0]
    assert message.value == body
    assert message.key == answer["request_id"].encode()
    assert message.header("carrierwatch-request-id") == answer["request_id"]
    assert message.header("carrierwatch-partner") == partner
    assert message.header("content-type") == "application/json"
    assert message.header("x-partner-delivery") == "d-1"
    verification = message.header("carrierwatch-verification")
    assert verification is not None and verification.endswith(";key=0")
    # no credential ever lands in the raw log
    stored = b"".join(value for _, value in message.headers)
    assert SECRETS[partner].encode() not in stored
    assert "authorization" not in dict(message.headers)
    assert "x-metro-api-key" not in dict(message.headers)
    # the worker's own readers see our receive time and the partner's headers
    received = received_time_of(message.headers, message.timestamp_s)
    assert abs(received - message.timestamp_s * 1000) < 5000
    partner_headers = headers_to_dict(message.headers)
    assert "carrierwatch-request-id" not in partner_headers
    assert partner_headers["x-partner-delivery"] == "d-1"
    registry = load_registry(gateway_home)
    result = registry.get(partner).transform(message.value, received, partner_headers)
    assert result.events and not result.dead_letters


def _hostile(home: Path, partner: str, body: bytes) -> list[tuple[str, dict[str, str],
                                                                   dict[str, str], bytes, int,
                                                                   str]]:
    """(case, headers, query, body, expected status, expected code) for ``partner``."""
    cases: list[tuple[str, dict[str, str], dict[str, str], bytes, int, str]] = []
    cases.append(("unsigned", {"Content-Type": "application/json"}, {}, body, 401,
                  "missing_credentials"))
    wrong = SECRETS["acme_courier"][:-6] + "AAAAA=" if partner == "acme_courier" else "wrong!"
    headers, query = signed(home, partner, body, secret=wrong)
    cases.append(("wrongly signed", headers, query, body, 401, "bad_signature"))
    other = "easypost" if partner != "easypost" else "aftership"
    headers, query = signed(home, other, body)
    cases.append(("another partner's request", headers, query, body, 403, "wrong_partner"))
    if partner != "acme_courier":
        headers, query = signed(home, partner, body, secret=SECRETS[other])
        cases.append(("this scheme, another partner's secret", headers, query, body, 403,
                      "wrong_partner"))
    headers, query = signed(home, partner, body)
    cases.append(("wrong content type", {**headers, "Content-Type": "text/plain"}, query, body,
                  415, "unsupported_media_type"))
    limit = ACME_MAX_BODY if partner == "acme_courier" else 1_048_576
    big = b'{"pad": "' + b"x" * limit + b'"}'
    headers, query = signed(home, partner, big)
    cases.append(("oversized", headers, query, big, 413, "body_too_large"))
    if partner == "acme_courier":
        headers, query = signed(home, partner, body, timestamp=int(time.time()) - 3600)
        cases.append(("stale timestamp", headers, query, body, 408, "stale_timestamp"))
        headers, query = signed(home, partner, body)
        cases.append(("incomplete headers", {k: v for k, v in headers.items()
                                             if k != "webhook-timestamp"}, query, body, 400,
                      "malformed_auth_header"))
    return cases


@pytest.mark.parametrize("partner", WEBHOOK_PARTNERS)
def test_hostile_requests_are_refused_and_nothing_reaches_any_topic(
        kafka_broker: Any, gateway_home: Path, namespace: str, tmp_path: Path,
        partner: str) -> None:
    body = _sample(gateway_home, partner)
    cases = _hostile(gateway_home, partner, body)
    before = topic_totals(kafka_broker.bootstrap, f"{namespace}.")

    async def scenario() -> list[tuple[str, int, dict[str, Any], str | None]]:
        out = []
        async with serve(gateway_home, tmp_path, kafka_broker.bootstrap, namespace) as gw, \
                aiohttp.ClientSession() as client:
            for case, headers, query, data, _status, _code in cases:
                async with client.post(f"{gw.url}/ingest/{partner}", data=data,
                                       headers=headers, params=query) as response:
                    out.append((case, response.status, await response.json(),
                                response.headers.get("X-Request-Id")))
            async with client.get(f"{gw.url}/metrics") as response:
                metrics = await response.text()
        out.append(("metrics", 0, {"text": metrics}, None))
        return out

    results = asyncio.run(scenario())
    metrics = results.pop()[2]["text"]
    for (case, _h, _q, _b, status, code), (_, got, answer, request_id) in zip(cases, results,
                                                                               strict=True):
        assert (case, got, answer["code"]) == (case, status, code)
        assert answer["request_id"] == request_id and answer["message"]
    assert topic_totals(kafka_broker.bootstrap, f"{namespace}.") == before
    assert f'carrierwatch_gateway_requests_total{{outcome="bad_signature",partner="{partner}"}} 1.0' \
        in metrics
    assert f'carrierwatch_gateway_verification_failures_total{{partner="{partner}",' \
           f'reason="wrong_partner"}}' in metrics


def test_standard_webhooks_replayed_id_is_refused_and_nothing_written(
        kafka_broker: Any, gateway_home: Path, namespace: str, tmp_path: Path) -> None:
    body = _sample(gateway_home, "acme_courier")
    headers, _ = signed(gateway_home, "acme_courier", body, webhook_id="msg_replay_1")
    topic = f"{namespace}.raw.acme_courier"

    async def post(url: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as client, \
                client.post(f"{url}/ingest/acme_courier", data=body, headers=headers) as response:
            return response.status, (await response.json())["code" if response.status != 202
                                                             else "status"]

    async def scenario() -> list[tuple[int, str]]:
        async with serve(gateway_home, tmp_path, kafka_broker.bootstrap, namespace) as gw:
            first = await post(gw.url)
            second = await post(gw.url)
        # the id cache is persisted: a restarted gateway still refuses the replay
        async with serve(gateway_home, tmp_path, kafka_broker.bootstrap, namespace) as gw:
            third = await post(gw.url)
        return [first, second, third]

    assert asyncio.run(scenario()) == [(202, "accepted"), (400, "replayed_id"),
                                       (400, "replayed_id")]
    assert len(read_topic(kafka_broker.bootstrap, topic)) == 1


def test_malformed_json_with_a_valid_signature_is_accepted_unchanged(
        kafka_broker: Any, gateway_home: Path, namespace: str, tmp_path: Path) -> None:
    body = b'{"result": {"tracking_code": "EZ1", '  # cut off: not JSON
    headers, _ = signed(gateway_home, "easypost", body)

    async def scenario() -> int:
        async with serve(gateway_home, tmp_path, kafka_broker.bootstrap, namespace) as gw, \
                aiohttp.ClientSession() as client, \
                client.post(f"{gw.url}/ingest/easypost", data=body, headers=headers) as response:
            return response.status

    assert asyncio.run(scenario()) == 202
    [message] = read_topic(kafka_broker.bootstrap, f"{namespace}.raw.easypost")
    assert message.value == body
    # what the worker's normalize stage does with it: a dead letter with the original bytes
    result = load_registry(gateway_home).get("easypost").transform(
        message.value, received_time_of(message.headers, message.timestamp_s),
        headers_to_dict(message.headers))
    assert not result.events
    [dead] = result.dead_letters
    assert dead.raw == body and "JSON" in dead.error


def test_a_flood_hits_the_partners_rate_limit_only(
        kafka_broker: Any, gateway_home: Path, namespace: str, tmp_path: Path) -> None:
    body = _sample(gateway_home, "acme_courier")
    flood = 4 * ACME_BURST

    async def scenario() -> tuple[list[tuple[int, str | None, str]], int]:
        async with serve(gateway_home, tmp_path, kafka_broker.bootstrap, namespace) as gw, \
                aiohttp.ClientSession() as client:
            requests = [signed(gateway_home, "acme_courier", body)[0] for _ in range(flood)]

            async def post(headers: dict[str, str]) -> tuple[int, str | None, str]:
                async with client.post(f"{gw.url}/ingest/acme_courier", data=body,
                                       headers=headers) as response:
                    return (response.status, response.headers.get("Retry-After"),
                            (await response.json()).get("code", "accepted"))

            # all at once (bounded: a fixed number of requests)
            answers = list(await asyncio.gather(*(post(h) for h in requests)))
            # another partner is not limited by acme_courier's flood
            headers, _query = signed(gateway_home, "easypost", _sample(gateway_home, "easypost"))
            async with client.post(f"{gw.url}/ingest/easypost",
                                   data=_sample(gateway_home, "easypost"),
                                   headers=headers) as response:
                other = response.status
        return answers, other

    answers, other = asyncio.run(scenario())
    accepted = [a for a in answers if a[0] == 202]
    limited = [a for a in answers if a[0] == 429]
    # the burst, plus at most one token refilled at 0.5/s during the flood
    assert ACME_BURST <= len(accepted) <= ACME_BURST + 1
    assert len(accepted) + len(limited) == flood
    assert all(code == "rate_limited" and retry and int(retry) >= 1
               for _, retry, code in limited)
    assert other == 202
    assert len(read_topic(kafka_broker.bootstrap, f"{namespace}.raw.acme_courier",
                          expect=len(accepted))) == len(accepted)


def test_unknown_partner_routes_and_health(kafka_broker: Any, gateway_home: Path,
                                           namespace: str, tmp_path: Path) -> None:
    async def scenario() -> list[tuple[int, Any]]:
        async with serve(gateway_home, tmp_path, kafka_broker.bootstrap, namespace) as gw, \
                aiohttp.ClientSession() as client:
            out = []
            for method, path in (("POST", "/ingest/nobody"), ("POST", "/ingest/ups"),
                                 ("GET", "/ingest/easypost"), ("GET", "/healthz"),
                                 ("GET", "/readyz")):
                async with client.request(method, gw.url + path, data=b"{}") as response:
                    out.append((response.status, orjson.loads(await response.read())))
            return out

    answers = asyncio.run(scenario())
    assert [(s, a.get("code")) for s, a in answers[:3]] == \
        [(404, "unknown_partner"), (404, "unknown_partner"), (405, "method_not_allowed")]
    assert answers[3] == (200, {"status": "ok"})
    assert answers[4][0] == 200 and answers[4][1]["kafka"] is True


def test_without_kafka_requests_are_spooled_and_ready_stays_true_until_the_spool_is_full(
        gateway_home: Path, tmp_path: Path) -> None:
    from gatewaykit import free_port

    body = _sample(gateway_home, "easypost")

    async def scenario() -> list[Any]:
        out: list[Any] = []
        async with serve(gateway_home, tmp_path, f"127.0.0.1:{free_port()}", "nokafka",
                         spool_max_bytes=3 * (len(body) + 600)) as gw, \
                aiohttp.ClientSession() as client:
            for _ in range(4):
                headers, _q = signed(gateway_home, "easypost", body)
                async with client.post(f"{gw.url}/ingest/easypost", data=body,
                                       headers=headers) as response:
                    out.append((response.status, response.headers.get("Retry-After"),
                                (await response.json()).get("code")))
            async with client.get(f"{gw.url}/readyz") as response:
                out.append((response.status, await response.json()))
            async with client.get(f"{gw.url}/metrics") as response:
                out.append(await response.text())
        return out

    *answers, ready, metrics = asyncio.run(scenario())
    assert [a[0] for a in answers[:2]] == [202, 202]
    assert answers[-1] == (503, "30", "spool_full")
    assert ready[1]["kafka"] is False and ready[1]["spool_depth"] >= 2
    assert "carrierwatch_gateway_kafka_up 0.0" in metrics
    assert "\ncarrierwatch_kafka_up 0.0" in metrics  # the name every process exports
    assert 'carrierwatch_gateway_stored_total{partner="easypost",store="spool"}' in metrics
    assert len(list((tmp_path / "gateway" / "spool").glob("*.seg"))) == 1


@pytest.mark.slow
def test_malformed_json_through_the_gateway_ends_in_the_dlq_after_the_real_worker(
        stream_harness: Any, gateway_home: Path, tmp_path: Path) -> None:
    from carrierwatch.streams.records import decode_dead_letter

    harness = stream_harness
    harness.start("worker", "worker", "--stages", "normalize")
    body = b'{"description": "tracker.updated", "result": '  # signed, but not JSON
    headers, _ = signed(gateway_home, "easypost", body)

    async def scenario() -> str:
        async with serve(gateway_home, tmp_path, harness.bootstrap, harness.namespace) as gw, \
                aiohttp.ClientSession() as client, \
                client.post(f"{gw.url}/ingest/easypost", data=body, headers=headers) as response:
            assert response.status == 202
            return str((await response.json())["request_id"])

    asyncio.run(scenario())
    [letter] = read_topic(harness.bootstrap, f"{harness.namespace}.dlq.easypost", expect=1,
                          timeout=120)
    dead = decode_dead_letter(letter.value)
    assert (dead.partner_id, dead.raw) == ("easypost", body)
    assert "JSON" in dead.error
    harness.assert_running()
