"""Escalations end to end through `carrierwatch replay` (real CLI, chDB store, a webhook
receiver on loopback that verifies the Standard Webhooks signature): once per package and
rule across re-runs, tasks under takeover, dead letters after N failed deliveries, metrics;
`carrierwatch silence` against a real Alertmanager."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from carrierwatch.decisions.dispatch import Dispatcher, Ledger
from carrierwatch.decisions.engine import Escalation, escalation_id
from carrierwatch.testing import WebhookReceiver as Receiver
from carrierwatch.testing import missing_component

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "aftership" / "failed_attempts_then_delivered.json"
DHL = ROOT / "samples" / "dhl" / "failed_attempts_then_delivered.json"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PACKAGE = "aftership:9261200000000000000512:0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET)
    yield r
    r.close()


def run(tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    attributes = tmp / "attributes.csv"
    if not attributes.exists():
        attributes.write_text("partner,tracking_number,value_band,customer_priority\n"
                              "aftership,9261200000000000000512,high,priority\n")
    full.update({"PYTHONPATH": str(ROOT / "src"), "CARRIERWATCH_DATA_DIR": str(tmp / "data"),
                 "CARRIERWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:9",
                 "CARRIERWATCH_DECISIONS_ATTRIBUTES_FILE": str(attributes),
                 "CARRIERWATCH_OPERATOR": "oncall-ana", **env})
    return subprocess.run([sys.executable, "-m", "carrierwatch", *args], env=full,
                          capture_output=True, text=True, timeout=180, check=False)


def webhook_env(url: str, **extra: str) -> dict[str, str]:
    return {"CARRIERWATCH_DECISIONS_WEBHOOK_URL": url,
            "CARRIERWATCH_DECISIONS_WEBHOOK_SECRET": SECRET, **extra}


@pytest.mark.slow
def test_replay_escalates_once_per_package_and_rule_across_reruns(
        tmp_path: Path, receiver: Receiver) -> None:
    env = webhook_env(receiver.url)
    first = run(tmp_path, "replay", "--no-progress", "--no-anomalies", str(SAMPLE), **env)
    assert first.returncode == 0, first.stderr
    assert "escalations: 1 decided, 1 new (1 delivered" in first.stdout
    assert receiver.bad_signatures == 0
    [doc] = receiver.received
    assert doc["id"] == escalation_id("aftership", PACKAGE, "failed_attempts",
                                      "high_value_recipient_absent")
    assert doc["actions"] == ["escalate_manual_contact", "notify"]
    assert doc["facts"]["reason"] == "recipient_not_available"
    assert doc["facts"]["value_band"] == "high"
    # a second process over the same input (a restart re-reading it) and the DHL feed, whose
    # second failed attempt has an address issue on a package of no declared value
    second = run(tmp_path, "replay", "--no-progress", "--no-anomalies", str(SAMPLE), str(DHL),
                 **env)
    assert second.returncode == 0, second.stderr
    assert "1 already escalated" in second.stdout
    assert [d["rule"] for d in receiver.received] == ["high_value_recipient_absent",
                                                       "address_problem"]
    rows = run(tmp_path, "query", "SELECT partner_id, rule, actions FROM escalations FINAL "
                                  "ORDER BY partner_id", "--format", "json")
    assert rows.returncode == 0, rows.stderr
    assert [(r["partner_id"], r["rule"]) for r in json.loads(rows.stdout)] == [
        ("aftership", "high_value_recipient_absent"), ("dhl", "address_problem")]
    listed = run(tmp_path, "escalations", "list", "--state", "delivered")
    assert [json.loads(line)["rule"] for line in listed.stdout.splitlines()] == [
        "high_value_recipient_absent", "address_problem"]


@pytest.mark.slow
def test_takeover_turns_actions_into_tasks_and_failures_into_dead_letters(
        tmp_path: Path) -> None:
    failing = Receiver(SECRET, status=503)
    try:
        started = run(tmp_path, "takeover", "--partner", "aftership", "--reason",
                      "partner outage, calling customers by hand", "--until", "2h")
        assert started.returncode == 0, started.stderr
        [active] = [json.loads(x) for x in run(tmp_path, "takeover", "--list").stdout.split("\n")
                    if x]
        assert (active["partner_id"], active["created_by"]) == ("aftership", "oncall-ana")
        env = webhook_env(failing.url, CARRIERWATCH_DECISIONS_MAX_ATTEMPTS="3",
                          CARRIERWATCH_DECISIONS_BACKOFF_SECONDS="0")
        done = run(tmp_path, "replay", "--no-progress", "--no-anomalies", str(SAMPLE), str(DHL),
                   **env)
        assert done.returncode == 3, done.stderr  # completed with a dead letter
        assert "1 manual tasks, 1 dead-lettered" in done.stdout
        assert "escalations retry" in done.stderr
        # aftership is under takeover: a task, no POST; DHL's 3 attempts all answered 503
        assert [d["partner_id"] for d in failing.received] == ["dhl"] * 3
        [task] = [json.loads(x) for x in run(tmp_path, "tasks", "list").stdout.split("\n") if x]
        assert task["rule"] == "high_value_recipient_absent"
        [dead] = [json.loads(x) for x in run(tmp_path, "escalations", "list", "--state",
                                             "dead").stdout.split("\n") if x]
        assert (dead["partner_id"], dead["attempts"], dead["last_error"]) == ("dhl", 3,
                                                                                "HTTP 503")
        failing.status = 200  # the receiver is back: the dead letter is sent again
        retried = run(tmp_path, "escalations", "retry", **env)
        assert retried.returncode == 0, retried.stderr
        assert "1 escalations retried: 1 delivered" in retried.stdout
        assert [d["partner_id"] for d in failing.received] == ["dhl"] * 4
        assert run(tmp_path, "escalations", "list", "--state", "dead").stdout == ""
        assert run(tmp_path, "escalations", "retry", **env).returncode == 1  # none left
        assert run(tmp_path, "tasks", "done", task["escalation_id"], "--note",
                   "called").returncode == 0
        assert run(tmp_path, "tasks", "list").stdout == ""
        assert run(tmp_path, "tasks", "done", task["escalation_id"]).returncode == 1
        assert run(tmp_path, "takeover", "--partner", "aftership", "--end").returncode == 0
        assert run(tmp_path, "takeover", "--list").stdout == ""
    finally:
        failing.close()


def test_takeover_expires_by_itself_and_metrics_count_actions(tmp_path: Path) -> None:
    from prometheus_client import REGISTRY

    from carrierwatch.decisions.runtime import count_escalation, refresh_task_gauge

    clock = [1_000.0]
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.start_takeover("ups", "test", until=1_100.0, by="me", now=1_000.0)
    dispatcher = Dispatcher(ledger, None, clock=lambda: clock[0], on_executed=count_escalation)

    def esc(package: str) -> Escalation:
        return Escalation(escalation_id("ups", package, "t", "r"), "ups", package, "t", "r",
                          ("notify", "open_ticket"), "high", 0, "event")

    before = REGISTRY.get_sample_value("carrierwatch_escalations_total",
                                       {"partner": "ups", "action": "notify"}) or 0.0
    assert dispatcher.handle([esc("a")]).tasks == 1
    clock[0] = 1_100.0  # the takeover's end: automated again
    summary = dispatcher.handle([esc("b"), esc("a")])
    assert (summary.tasks, summary.recorded, summary.skipped) == (0, 1, 1)
    assert REGISTRY.get_sample_value("carrierwatch_escalations_total",
                                     {"partner": "ups", "action": "notify"}) == before + 1
    refresh_task_gauge(ledger, ["ups", "dhl"])
    assert REGISTRY.get_sample_value("carrierwatch_manual_tasks_open", {"partner": "ups"}) == 1
    assert REGISTRY.get_sample_value("carrierwatch_manual_tasks_open", {"partner": "dhl"}) == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        missing_component("alertmanager", "Debian's prometheus-alertmanager is not installed")
    config = tmp_path / "am.yml"
    config.write_text("route:\n  receiver: none\nreceivers:\n  - name: none\n")
    port = _free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail("alertmanager did not become ready in 10 s")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_silence_creates_an_expiring_alertmanager_silence(tmp_path: Path,
                                                          alertmanager: str) -> None:
    done = run(tmp_path, "silence", "--partner", "ups", "--reason", "partner maintenance",
               "--until", "2h", "--alertmanager-url", alertmanager)
    assert done.returncode == 0, done.stderr
    with urllib.request.urlopen(f"{alertmanager}/api/v2/silences", timeout=5) as answer:
        [silence] = json.loads(answer.read())
    assert silence["status"]["state"] == "active"
    assert silence["matchers"] == [{"name": "partner", "value": "ups", "isRegex": False,
                                    "isEqual": True}]
    assert (silence["comment"], silence["createdBy"]) == ("partner maintenance", "oncall-ana")
    assert silence["id"] in done.stdout
    from datetime import datetime
    ends = datetime.fromisoformat(silence["endsAt"].replace("Z", "+00:00")).timestamp()
    assert abs(ends - (time.time() + 7200)) < 120
    unreachable = run(tmp_path, "silence", "--partner", "ups", "--reason", "x", "--until", "1h",
                      "--alertmanager-url", f"http://127.0.0.1:{_free_port()}")
    assert unreachable.returncode == 69 and "does not answer" in unreachable.stderr
    past = run(tmp_path, "silence", "--partner", "ups", "--reason", "x", "--until",
               "2020-01-01T00:00:00", "--alertmanager-url", alertmanager)
    assert past.returncode == 2 and "in the past" in past.stderr


def test_escalation_metrics_pass_promtool(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from carrierwatch.decisions.runtime import metrics

    promtool = shutil.which("promtool")
    if promtool is None:
        missing_component("promtool", "Debian's prometheus package is not installed")
    own = metrics()
    own.escalations.labels("ups", "notify").inc(0)
    own.tasks_open.labels("ups").set(0)
    registry = CollectorRegistry()
    registry.register(own.escalations)
    registry.register(own.tasks_open)
    text = generate_latest(registry)
    assert b"carrierwatch_escalations_total{" in text
    assert b"carrierwatch_manual_tasks_open{" in text
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             timeout=30, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("until", ["99999999h", "400d", "9999-01-01T00:00:00Z"])
def test_an_until_more_than_a_year_away_is_refused_and_nothing_is_recorded(
        tmp_path: Path, until: str, capsys: pytest.CaptureFixture[str]) -> None:
    from carrierwatch.cli import run

    data = ["--data-dir", str(tmp_path)]
    assert run([*data, "takeover", "--partner", "fedex", "--reason", "x", "--until", until]) == 2
    assert "more than a year away" in capsys.readouterr().err
    assert run([*data, "takeover", "--list", "--all"]) == 0
    assert "fedex" not in capsys.readouterr().out
