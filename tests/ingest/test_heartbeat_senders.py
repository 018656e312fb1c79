"""Heartbeat senders without a broker: the drop file's naming, the poll seam's answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from carrierwatch.ingest.heartbeat import DropSender, PollSender, poll_registry_available
from carrierwatch.synthetic.heartbeat import render_heartbeat
from carrierwatch.transformers.registry import load_registry

SENT = 1_796_688_000_000


def test_a_drop_heartbeat_is_one_settled_file_in_the_partners_folder(tmp_path: Path) -> None:
    partner = load_registry().get("valley_express")
    payload = render_heartbeat(partner, SENT)
    result = asyncio.run(DropSender(tmp_path).send(partner.spec, payload, "hb-1"))
    assert result.ok
    [written] = list((tmp_path / "valley_express").iterdir())  # no partial file left behind
    assert written.name == f"heartbeat-{payload.tracking_number}.csv"
    assert written.read_bytes() == payload.body
    # an unwritable folder is a refused heartbeat with the reason, not an exception
    blocked = tmp_path / "file"
    blocked.write_text("x")
    refused = asyncio.run(DropSender(blocked).send(partner.spec, payload, "hb-2"))
    assert not refused.ok and "cannot write" in refused.detail


def test_a_poll_heartbeat_registers_its_canary_with_the_pollers_registry(tmp_path: Path) -> None:
    from carrierwatch.ingest.trackings import TrackingRegistry, default_path

    partner = load_registry().get("ups")
    payload = render_heartbeat(partner, SENT)
    assert payload.integration == "poll" and poll_registry_available()
    assert payload.tracking_number.startswith(partner.spec.synthetic_tracking_prefix)
    result = asyncio.run(PollSender(tmp_path).send(partner.spec, payload, "hb-1"))
    assert result.ok, result.detail
    with TrackingRegistry(default_path(tmp_path)) as registry:
        entries = registry.entries("ups")
    assert [(e.number, e.source, e.synthetic) for e in entries] == [
        (payload.tracking_number, "canary", True)]
