"""Decision tables in the stream: the track stage's hook writes escalations to the
``escalations`` topic and (through the sink) the store; ``carrierwatch escalations run`` posts
them, signed, once per package and rule, also after the worker and the dispatcher restart and
the partner resends its history."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from streamkit import StreamHarness, max_event_time

from carrierwatch.synthetic.rawlog import RawRecord
from carrierwatch.testing import WebhookReceiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

ROOT = Path(__file__).resolve().parents[2]
BASE_TIME = 1_772_900_000_000  # 2026-03-07, after the samples' events


def records() -> list[RawRecord]:
    return [RawRecord(partner, BASE_TIME + 1000 * i, {"content-type": "application/json"},
                      (ROOT / "samples" / partner / "failed_attempts_then_delivered.json")
                      .read_bytes())
            for i, partner in enumerate(["aftership", "dhl"])]


def dispatch(harness: StreamHarness, receiver: WebhookReceiver, seconds: float) -> str:
    env = harness.env(harness.root / "dispatcher-data")
    env.update({"CARRIERWATCH_DECISIONS_WEBHOOK_URL": receiver.url,
                "CARRIERWATCH_DECISIONS_WEBHOOK_SECRET": SECRET})
    done = subprocess.run([sys.executable, "-m", "carrierwatch", "escalations", "run",
                           "--namespace", harness.namespace, "--max-seconds", str(seconds)],
                          env=env, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_stream_escalates_once_across_worker_and_dispatcher_restarts(
        stream_harness: StreamHarness, tmp_path: Path) -> None:
    attributes = tmp_path / "attributes.csv"
    attributes.write_text("partner,tracking_number,value_band,customer_priority\n"
                          "aftership,9261200000000000000512,high,priority\n")
    stream_harness.extra_env["CARRIERWATCH_DECISIONS_ATTRIBUTES_FILE"] = str(attributes)
    feed = records()
    watermark = max_event_time(feed, stream_harness.registry)
    stream_harness.start("worker", "worker")
    stream_harness.start("sink", "sink")
    stream_harness.produce(feed)
    stream_harness.finish_input(watermark)
    assert stream_harness.stop("worker") == 0, stream_harness.log("worker")[-3000:]
    receiver = WebhookReceiver(SECRET)
    try:
        assert "escalation messages handled" in dispatch(stream_harness, receiver, 6)
        # the worker restarts and the partners resend their whole histories
        stream_harness.start("worker2", "worker")
        stream_harness.produce(feed)
        stream_harness.finish_input(watermark)
        assert stream_harness.stop("worker2") == 0, stream_harness.log("worker2")[-3000:]
        dispatch(stream_harness, receiver, 4)  # the dispatcher restarts
        assert receiver.bad_signatures == 0
        assert sorted((d["partner_id"], d["rule"]) for d in receiver.received) == [
            ("aftership", "high_value_recipient_absent"), ("dhl", "address_problem")]
    finally:
        receiver.close()
    assert stream_harness.stop("sink") == 0
    from carrierwatch.settings import Settings
    from carrierwatch.storage import open_store

    with open_store(Settings(data_dir=stream_harness.sink_dir), command="pytest") as store:
        rows = store.query("SELECT partner_id, rule, actions, facts['value_band'] "
                           "FROM escalations FINAL ORDER BY partner_id")
    assert [(r[0], r[1], list(r[2]), r[3]) for r in rows] == [
        ("aftership", "high_value_recipient_absent", ["escalate_manual_contact", "notify"],
         "high"),
        ("dhl", "address_problem", ["escalate_manual_contact"], "")]
