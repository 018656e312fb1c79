"""Heartbeat senders without a broker: the drop file's naming, the poll seam's answer."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

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


@pytest.mark.skipif(importlib.util.find_spec("carrierwatch.ingest.trackings") is not None,
                    reason="the pollers' tracking registry is installed: the e2e tests use it")
def test_without_the_pollers_registry_a_poll_heartbeat_is_refused_with_the_reason() -> None:
    partner = load_registry().get("ups")
    payload = render_heartbeat(partner, SENT)
    assert payload.integration == "poll" and not poll_registry_available()
    result = asyncio.run(PollSender().send(partner.spec, payload, "hb-1"))
    assert not result.ok and "carrierwatch.ingest.trackings" in result.detail
