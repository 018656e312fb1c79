"""The tracking registry: its sources (track add, POST /v1/trackings, add_trackings for
canaries, open packages of the store), due numbers, and the pending-produce cursor."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from carrierwatch.core.model import CanonicalEvent
from carrierwatch.ingest.trackings import (
    TrackingError,
    TrackingRegistry,
    add_trackings,
    open_trackings_from_store,
)
from carrierwatch.settings import find_project_root
from carrierwatch.transformers.registry import load_registry

REPO = find_project_root()
SPECS = {p.id: p.spec for p in load_registry(REPO)}


def test_add_remove_due_and_expire(tmp_path: Path) -> None:
    with TrackingRegistry(tmp_path / "t.sqlite3") as reg:
        assert reg.add("ups", ["1Z0001", "1Z0002", "1Z0001"], "manual") == 2
        assert reg.add("ups", ["1Z0002"], "api") == 0  # already followed: source kept
        assert [(t.number, t.source) for t in reg.entries("ups")] == [("1Z0001", "manual"),
                                                                      ("1Z0002", "manual")]
        assert reg.due("ups", 60_000, 10, now_ms=10**13) == ["1Z0001", "1Z0002"]
        reg.mark_polled("ups", ["1Z0001"], now_ms=10**13)
        assert reg.due("ups", 60_000, 10, now_ms=10**13 + 1000) == ["1Z0002"]
        assert reg.due("ups", 60_000, 10, now_ms=10**13 + 60_000) == ["1Z0002", "1Z0001"]
        reg.add("ups", ["CWSYN0001"], "canary", synthetic_prefix="CWSYN")
        reg.mark_polled("ups", ["1Z0002", "CWSYN0001"], now_ms=10**13)
        # a canary is due after its own (shorter) interval
        assert reg.due("ups", 60_000, 10, now_ms=10**13 + 5_000, canary_interval_ms=5_000) \
            == ["CWSYN0001"]
        assert reg.remove("ups", ["CWSYN0001"]) == 1
        assert reg.remove("ups", ["1Z0002", "nope"]) == 1
        assert [t.number for t in reg.entries("ups")] == ["1Z0001"]
        assert len(reg.entries("ups", include_inactive=True)) == 3  # the canary too
        assert reg.add("ups", ["1Z0002"], "api") == 1  # followed again
        assert reg.count_active() == {"ups": 2}
        import time

        now = time.time_ns() // 1_000_000
        assert reg.expire("ups", 1, now_ms=now + 3_600_000) == 0  # registered just now
        assert reg.expire("ups", 1, now_ms=now + 2 * 86_400_000) == 2  # a day past max age
        assert reg.count_active() == {}
        with pytest.raises(TrackingError, match="malformed"):
            reg.add("ups", ["bad number!"], "manual")
        with pytest.raises(TrackingError, match="source"):
            reg.add("ups", ["1Z0003"], "carrier-pigeon")


def test_a_digest_moves_only_on_commit(tmp_path: Path) -> None:
    with TrackingRegistry(tmp_path / "t.sqlite3") as reg:
        reg.add("fedex", ["794600000001", "794600000002"], "manual")
        reg.begin("poll-a", "fedex", {"794600000001": "d1"}, {"raw.fedex": {"0": 5}})
        assert reg.digests("fedex", ["794600000001"]) == {"794600000001": None}
        assert reg.pending() == [("poll-a", "fedex", {"raw.fedex": {"0": 5}})]
        assert reg.commit("poll-a") == {"794600000001": "d1"}
        assert reg.digests("fedex", ["794600000001", "794600000002"]) == {
            "794600000001": "d1", "794600000002": None}
        assert reg.pending() == [] and reg.commit("poll-a") == {}
        reg.begin("poll-b", "fedex", {"794600000002": "d2"}, None)
        reg.abandon("poll-b")
        assert reg.pending() == [] and reg.digests("fedex", ["794600000002"]) == {
            "794600000002": None}


def test_add_trackings_checks_partner_and_canary_prefix(tmp_path: Path) -> None:
    prefix = SPECS["ups"].synthetic_tracking_prefix
    assert add_trackings("ups", [prefix + "0001"], source="canary", data_dir=tmp_path,
                         specs=SPECS) == 1
    with TrackingRegistry(tmp_path / "poll" / "trackings.sqlite3") as reg:
        (entry,) = reg.entries("ups")
    assert entry.synthetic and entry.source == "canary"
    with pytest.raises(TrackingError, match="must start with"):
        add_trackings("ups", ["1Z0000000001"], source="canary", data_dir=tmp_path, specs=SPECS)
    with pytest.raises(TrackingError, match="not polled"):
        add_trackings("easypost", ["EZ1000000001"], data_dir=tmp_path, specs=SPECS)
    with pytest.raises(TrackingError, match="unknown partner"):
        add_trackings("nobody", ["EZ1000000001"], data_dir=tmp_path, specs=SPECS)


def _client(tmp_path: Path, token: str | None) -> TestClient[Any, Any]:
    from carrierwatch.ingest.tracking_api import add_tracking_routes

    app = web.Application()
    add_tracking_routes(app, specs=SPECS, data_dir=tmp_path,
                        token=SecretStr(token) if token else None)
    return TestClient(TestServer(app))


@pytest.mark.parametrize(("headers", "body", "status", "code"), [
    ({}, {"partner": "ups", "tracking_numbers": ["1Z0001"]}, 401, "missing_credentials"),
    ({"Authorization": "Bearer wrong"}, {"partner": "ups", "tracking_numbers": ["1Z0001"]},
     401, "bad_token"),
    (None, b"not json", 400, "malformed_body"),
    (None, {"partner": "ups"}, 400, "malformed_body"),
    (None, {"partner": "ups", "tracking_numbers": [1]}, 400, "malformed_body"),
    (None, {"partner": "ups", "tracking_numbers": ["bad number"]}, 400,
     "malformed_tracking_number"),
    (None, {"partner": "nobody", "tracking_numbers": ["1Z0001"]}, 404, "unknown_partner"),
    (None, {"partner": "easypost", "tracking_numbers": ["EZ0001"]}, 422, "not_polled"),
    (None, {"partner": "ups", "tracking_numbers": [f"1Z{i:06d}" for i in range(1001)]}, 413,
     "too_many_numbers"),
])
def test_post_trackings_refusals(tmp_path: Path, headers: dict[str, str] | None, body: Any,
                                 status: int, code: str) -> None:
    import orjson

    async def go() -> None:
        async with _client(tmp_path, "op-token") as client:
            response = await client.post(
                "/v1/trackings", headers=headers if headers is not None else
                {"Authorization": "Bearer op-token"},
                data=body if isinstance(body, bytes) else orjson.dumps(body))
            assert response.status == status
            assert (await response.json())["code"] == code

    asyncio.run(go())
    reg_path = tmp_path / "poll" / "trackings.sqlite3"
    if reg_path.exists():
        with TrackingRegistry(reg_path) as reg:
            assert reg.entries(include_inactive=True) == []


def test_post_trackings_registers_and_without_a_token_is_503(tmp_path: Path) -> None:
    async def go() -> None:
        async with _client(tmp_path, "op-token") as client:
            auth = {"Authorization": "Bearer op-token"}
            first = await client.post("/v1/trackings", headers=auth, json={
                "partner": "fedex", "tracking_numbers": ["794600000001", "794600000002"]})
            assert first.status == 201
            assert await first.json() == {"code": "registered", "message": "fedex: 2 added",
                                          "added": 2, "already_followed": 0}
            again = await client.post("/v1/trackings", headers=auth, json={
                "partner": "fedex", "tracking_numbers": ["794600000002"]})
            assert (await again.json())["already_followed"] == 1
        async with _client(tmp_path / "other", None) as client:
            refused = await client.post("/v1/trackings", json={
                "partner": "fedex", "tracking_numbers": ["794600000001"]})
            assert refused.status == 503
            assert (await refused.json())["code"] == "trackings_not_configured"

    asyncio.run(go())
    with TrackingRegistry(tmp_path / "poll" / "trackings.sqlite3") as reg:
        assert [(t.number, t.source) for t in reg.entries("fedex")] == [
            ("794600000001", "api"), ("794600000002", "api")]


def test_the_gateway_serves_post_trackings(tmp_path: Path) -> None:
    import socket

    from carrierwatch.ingest.gateway import GatewaySettings, create_app
    from carrierwatch.settings import Settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    app = create_app(settings=Settings(home=REPO, data_dir=tmp_path, kafka_bootstrap=closed),
                     gateway_settings=GatewaySettings(operator_token=SecretStr("op")),
                     secrets={})

    async def go() -> None:
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/v1/trackings", headers={"Authorization": "Bearer op"},
                                         json={"partner": "usps",
                                               "tracking_numbers": ["9400100000000000000017"]})
            assert response.status == 201, await response.text()

    asyncio.run(go())
    with TrackingRegistry(tmp_path / "poll" / "trackings.sqlite3") as reg:
        assert [t.number for t in reg.entries("usps")] == ["9400100000000000000017"]


def test_track_commands(tmp_path: Path) -> None:
    env = {**os.environ, "CARRIERWATCH_DATA_DIR": str(tmp_path),
           "PYTHONPATH": str(REPO / "src")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "carrierwatch", "track", *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)

    added = run("add", "--partner", "dhl", "00340434000001", "00340434000002")
    assert added.returncode == 0 and "2 number(s) added" in added.stdout
    listed = run("list", "--partner", "dhl")
    assert [line.split("\t")[:3] for line in listed.stdout.splitlines()[1:]] == [
        ["dhl", "00340434000001", "manual"], ["dhl", "00340434000002", "manual"]]
    removed = run("remove", "--partner", "dhl", "00340434000001")
    assert "1 number(s) no longer followed" in removed.stdout
    refused = run("add", "--partner", "shippo", "SHIPPO_TRANSIT")
    assert refused.returncode == 2 and "not polled" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_open_packages_of_the_store(tmp_path: Path) -> None:
    from carrierwatch.settings import Settings
    from carrierwatch.storage import open_store

    ups = load_registry(REPO).get("ups")
    import time

    now = time.time_ns() // 1_000_000
    events: list[CanonicalEvent] = []
    for name in ("ups/lifecycle_delivered.json", "ups/exception_weather_resolved.json",
                 "ups/out_of_order.json"):
        body = (REPO / "samples" / name).read_bytes()
        events += ups.transform(body, now).events
    open_numbers = {e.tracking_number for e in events} - {
        e.tracking_number for e in events if e.status in ("delivered", "returned", "cancelled")}
    with open_store(Settings(data_dir=tmp_path), migrate=True) as store:
        store.insert_events(events)
        found = open_trackings_from_store(store, ["ups", "fedex"], days=100_000)
    assert open_numbers and len(open_numbers) < len({e.tracking_number for e in events})
    assert set(found.get("ups", [])) == open_numbers
