"""Heartbeats, pure: each partner's heartbeat in its own format, and the monitor's verdicts."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carrierwatch.core.partner import HeartbeatSpec, PartnerSpec
from carrierwatch.outputs.heartbeats import HeartbeatExporter
from carrierwatch.synthetic.heartbeat import (
    LIFECYCLE,
    HeartbeatMonitor,
    announcement,
    render_heartbeat,
)
from carrierwatch.transformers.registry import PartnerRegistry

SENT = 1_796_688_000_000


@pytest.mark.parametrize("partner_id", ["aftership", "dhl", "easypost", "fedex",
                                        "metro_courier", "shippo", "ups", "usps",
                                        "valley_express"])
def test_every_partner_heartbeat_is_its_own_format_read_back_as_synthetic_events(
        registry: PartnerRegistry, partner_id: str) -> None:
    partner = registry.get(partner_id)
    payload = render_heartbeat(partner, SENT, 7)
    assert payload.tracking_number.startswith(partner.spec.synthetic_tracking_prefix)
    assert payload.integration == {"webhook": "webhook", "poll": "poll",
                                   "batch": "drop"}[partner.spec.delivery]
    # an independent read of the bytes: the partner's transformer, as the worker runs it
    result = partner.transform(payload.body, SENT + 500, {})
    assert not result.dead_letters
    ours = [e for e in result.events if e.tracking_number == payload.tracking_number]
    assert [e.status for e in sorted(ours, key=lambda e: e.event_time)] == list(LIFECYCLE)
    assert all(e.synthetic for e in ours)
    assert {e.event_id for e in ours} == set(payload.event_ids)
    assert {e.package_id for e in ours} == {payload.package_id}
    # the scans end before the send time, a second apart: heartbeat_latency ~ the path's
    assert max(e.event_time for e in ours) <= SENT
    assert SENT - min(e.event_time for e in ours) <= 10_000
    # two heartbeats of one partner never share a package
    assert render_heartbeat(partner, SENT, 8).package_id != payload.package_id


def test_a_real_tracking_number_is_not_synthetic_and_a_prefixed_one_is(
        registry: PartnerRegistry) -> None:
    partner = registry.get("fedex")
    payload = render_heartbeat(partner, SENT)
    real = payload.body.replace(payload.tracking_number.encode(), b"794612345678")
    result = partner.transform(real, SENT, {})
    assert result.events and not any(e.synthetic for e in result.events)


def test_heartbeat_settings_are_validated() -> None:
    assert HeartbeatSpec().interval_seconds == 300
    with pytest.raises(ValueError, match="deadline_seconds must not exceed"):
        HeartbeatSpec(interval_seconds=10, deadline_seconds=20)
    with pytest.raises(ValueError, match="slow_seconds must not exceed"):
        HeartbeatSpec(deadline_seconds=10, slow_seconds=20)


def _spec(partner_id: str = "fedex") -> PartnerSpec:
    return PartnerSpec(id=partner_id, display_name=partner_id, transformer=partner_id,
                       heartbeat=HeartbeatSpec(interval_seconds=60, deadline_seconds=20,
                                               slow_seconds=5))


def _announce(monitor: HeartbeatMonitor, registry: PartnerRegistry, heartbeat_id: str,
              sent: int, partner_id: str = "fedex", **extra: Any) -> tuple[Any, list[Any]]:
    payload = render_heartbeat(registry.get(partner_id), sent)
    row = announcement(payload, heartbeat_id, _spec(partner_id), **extra)
    return payload, monitor.announce(row, sent)


def _events(payload: Any) -> list[tuple[str, str]]:
    return [(f"{payload.partner_id}:{payload.tracking_number}", event_id)
            for event_id in payload.event_ids]


def test_verdicts_seen_slow_missing_late_rejected_and_the_state_of_the_newest(
        registry: PartnerRegistry) -> None:
    monitor = HeartbeatMonitor()
    # seen: all five events within slow (5 s)
    p1, rows = _announce(monitor, registry, "h1", SENT)
    assert rows == []
    assert monitor.stored(_events(p1)[:4], SENT + 1_000) == []  # not all of them yet
    [row] = monitor.stored(_events(p1)[4:], SENT + 2_000)
    assert (row["status"], row["state"], row["latency_ms"]) == ("seen", "healthy", 2000.0)
    assert row["seen_at"] == datetime.fromtimestamp((SENT + 2_000) / 1000, tz=UTC)
    assert monitor.state("fedex", "webhook") == "healthy"
    # slow: after 5 s, within the 20 s deadline
    p2, _ = _announce(monitor, registry, "h2", SENT + 60_000)
    [row] = monitor.stored(_events(p2), SENT + 60_000 + 8_000)
    assert (row["status"], row["state"]) == ("slow", "slow")
    # missing: the deadline passes first; a tick before it decides nothing
    p3, _ = _announce(monitor, registry, "h3", SENT + 120_000)
    assert monitor.tick(SENT + 120_000 + 19_999) == []
    [row] = monitor.tick(SENT + 120_000 + 20_000)
    assert (row["status"], row["state"], row["latency_ms"]) == ("missing", "silent", None)
    # a newer heartbeat seen; then the old one arrives late: the newer verdict stands
    p4, _ = _announce(monitor, registry, "h4", SENT + 180_000)
    [row] = monitor.stored(_events(p4), SENT + 181_000)
    assert row["state"] == "healthy"
    [row] = monitor.stored(_events(p3), SENT + 182_000)
    assert (row["status"], row["latency_ms"], row["state"]) == ("late", 62_000.0, "healthy")
    assert monitor.state("fedex", "webhook") == "healthy"
    # rejected by the gateway: the sender's second announcement decides it at once
    p5, _ = _announce(monitor, registry, "h5", SENT + 240_000)
    [row] = monitor.announce(announcement(p5, "h5", _spec(), status="rejected",
                                          detail="gateway answered 401 bad_signature"),
                             SENT + 240_100)
    assert (row["status"], row["state"], row["detail"]) == \
        ("rejected", "silent", "gateway answered 401 bad_signature")
    # a redelivered announcement changes nothing
    assert monitor.announce(announcement(p5, "h5", _spec()), SENT + 240_200) == []
    exporter = HeartbeatExporter()
    exporter.update(monitor)
    labels = {"partner": "fedex", "integration": "webhook"}
    assert exporter.sample("carrierwatch_heartbeat_state", **labels, state="silent") == 1
    assert exporter.sample("carrierwatch_heartbeat_state", **labels, state="healthy") == 0
    assert exporter.sample("carrierwatch_heartbeat_last_success_timestamp_seconds",
                           **labels) == (SENT + 182_000) / 1000
    assert exporter.sample("carrierwatch_heartbeat_latency_seconds_count", **labels) == 4
    assert exporter.sample("carrierwatch_heartbeat_latency_seconds_sum", **labels) == \
        2 + 8 + 1 + 62
    for status, count in (("seen", 2), ("slow", 1), ("missing", 1), ("late", 1),
                          ("rejected", 1)):
        assert exporter.sample("carrierwatch_heartbeats_total", **labels,
                               status=status) == count


def test_a_stopped_sender_turns_the_integration_silent(registry: PartnerRegistry) -> None:
    monitor = HeartbeatMonitor()
    p1, _ = _announce(monitor, registry, "h1", SENT)
    monitor.stored(_events(p1), SENT + 1_000)
    # interval 60 s + deadline 20 s with no new heartbeat
    monitor.tick(SENT + 80_000)
    assert monitor.state("fedex", "webhook") == "healthy"
    monitor.tick(SENT + 80_001)
    assert monitor.state("fedex", "webhook") == "silent"


def test_restore_from_the_table_rows_continues_the_verdicts(registry: PartnerRegistry) -> None:
    monitor = HeartbeatMonitor()
    p1, _ = _announce(monitor, registry, "h1", SENT)
    [seen] = monitor.stored(_events(p1), SENT + 1_000)
    p2, _ = _announce(monitor, registry, "h2", SENT + 60_000)
    pending = announcement(p2, "h2", _spec())
    again = HeartbeatMonitor()
    again.restore([seen, pending], SENT + 61_000)
    assert again.state("fedex", "webhook") == "healthy"
    [row] = again.stored(_events(p2), SENT + 62_000)
    assert (row["status"], row["latency_ms"]) == ("seen", 2_000.0)


@settings(max_examples=40, deadline=None)
@given(order=st.permutations(range(6)), split=st.integers(0, 5))
def test_events_stored_before_their_announcement_count_the_same(
        registry: PartnerRegistry, order: list[int], split: int) -> None:
    """Whatever the interleaving of the announcement and the writes, one verdict: seen at the
    time of the write that completed the set."""
    monitor = HeartbeatMonitor()
    payload = render_heartbeat(registry.get("fedex"), SENT)
    events = [_events(payload)[i] for i in order if i < 5]
    verdicts: list[dict[str, Any]] = []
    clock = itertools.count(SENT + 100, 100)
    verdicts += monitor.stored(events[:split], next(clock))
    verdicts += monitor.announce(announcement(payload, "h", _spec()), next(clock))
    last = next(clock)
    verdicts += monitor.stored(events[split:], last)
    [row] = verdicts
    assert row["status"] == "seen"
    # split == 5: every event was stored (at SENT + 100) before the announcement came
    assert row["latency_ms"] == (last if split < 5 else SENT + 100) - SENT


@pytest.mark.parametrize("module_name", ["carrierwatch.synthetic.heartbeat",
                                         "carrierwatch.outputs.heartbeats"])
def test_docstring_examples(module_name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name))
    assert result.attempted > 0 and result.failed == 0
