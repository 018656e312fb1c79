"""alerts/alertmanager.yml with the real tools: ``amtool check-config``, ``amtool config routes
test`` for a table of label sets, and inhibition checked on a real Alertmanager on loopback."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carrierwatch.testing import missing_component

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "alerts" / "alertmanager.yml"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing_component(name, "install Debian's prometheus-alertmanager package")
    return found


def test_amtool_check_config() -> None:
    done = subprocess.run([tool("amtool"), "check-config", str(CONFIG)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "4 inhibit rules" in done.stdout


#: label set -> the receivers Alertmanager must notify, in route order
ROUTES: list[tuple[dict[str, str], str]] = [
    ({"alertname": "PartnerSLOFastBurn", "severity": "page", "partner": "ups",
      "slo": "on_time"}, "partner-managers,oncall-pager"),
    ({"alertname": "PartnerSLOSlowBurn", "severity": "ticket", "partner": "metro_courier",
      "slo": "first_attempt"}, "partner-managers,oncall-tickets"),
    ({"alertname": "PartnerNoEvents", "severity": "page", "partner": "fedex"}, "oncall-pager"),
    ({"alertname": "IntegrationSilent", "severity": "page", "partner": "dhl",
      "integration": "poll"}, "oncall-pager"),
    ({"alertname": "IntegrationSlow", "severity": "ticket", "partner": "dhl",
      "integration": "poll"}, "oncall-tickets"),
    ({"alertname": "DeadLetterRateHigh", "severity": "ticket", "partner": "usps"},
     "oncall-tickets"),
    ({"alertname": "CodebookGapOpened", "severity": "ticket", "partner": "fedex"},
     "oncall-tickets"),
    ({"alertname": "AnomalyActive", "severity": "ticket", "partner": "ups",
      "metric": "volume"}, "oncall-tickets"),
    ({"alertname": "PollerBreakerOpen", "severity": "ticket", "partner": "ups"},
     "oncall-tickets"),
    ({"alertname": "KafkaDown", "severity": "page", "partner": "all-partners"},
     "platform-pager"),
    ({"alertname": "GatewaySpoolNotDraining", "severity": "page", "partner": "all-partners",
      "instance": "g1"}, "platform-pager"),
    ({"alertname": "ConsumerLagGrowing", "severity": "ticket", "partner": "all-partners",
      "group": "carrierwatch-sink", "topic": "events.canonical"}, "platform-tickets"),
    ({"alertname": "SinkBacklogGrowing", "severity": "ticket", "partner": "all-partners"},
     "platform-tickets"),
    # an alert without a severity (a hand-made rule): the chat channel, not silence
    ({"alertname": "SomethingElse", "partner": "ups"}, "oncall-chat"),
]


def routes_test(labels: dict[str, str], receivers: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool"), "config", "routes", "test", f"--config.file={CONFIG}",
         f"--verify.receivers={receivers}", *(f"{k}={v}" for k, v in labels.items())],
        capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("labels", "receivers"), ROUTES,
                         ids=[f"{r[0]['alertname']}-{r[0]['partner']}" for r in ROUTES])
def test_routes(labels: dict[str, str], receivers: str) -> None:
    done = routes_test(labels, receivers)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == receivers


def test_a_wrong_receiver_is_reported() -> None:
    done = routes_test({"alertname": "KafkaDown", "severity": "page",
                        "partner": "all-partners"}, "oncall-pager")
    assert done.returncode == 1
    assert "Expected receivers did not match" in done.stdout + done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    binary = tool("prometheus-alertmanager")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [binary, f"--config.file={CONFIG}", f"--storage.path={tmp_path}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "alertmanager.log").open("wb"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
            assert time.monotonic() < deadline, "alertmanager did not become ready in 30 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def post(url: str, *label_sets: dict[str, str]) -> None:
    now = datetime.now(UTC)
    body = [{"labels": labels, "annotations": {"summary": "test"},
             "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
            for labels in label_sets]
    request = urllib.request.Request(f"{url}/api/v2/alerts", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200


def states(url: str) -> dict[tuple[str, str], str]:
    """(alertname, partner/slo/metric) -> 'active' or 'suppressed'."""
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=10) as answer:
        alerts = json.load(answer)
    out = {}
    for alert in alerts:
        labels = alert["labels"]
        key = "/".join(labels[k] for k in ("partner", "slo", "metric", "integration")
                       if k in labels)
        out[(labels["alertname"], key)] = alert["status"]["state"]
    return out


@pytest.mark.integration
def test_inhibitions_on_a_real_alertmanager(alertmanager: str) -> None:
    silent = {"alertname": "IntegrationSilent", "severity": "page", "partner": "fedex",
              "integration": "webhook"}
    post(alertmanager,
         silent,
         {"alertname": "PartnerNoEvents", "severity": "page", "partner": "fedex"},
         {"alertname": "PartnerSLOFastBurn", "severity": "page", "partner": "fedex",
          "slo": "on_time"},
         {"alertname": "PartnerSLOSlowBurn", "severity": "ticket", "partner": "fedex",
          "slo": "first_attempt"},
         {"alertname": "AnomalyActive", "severity": "ticket", "partner": "fedex",
          "metric": "volume"},
         {"alertname": "AnomalyActive", "severity": "ticket", "partner": "fedex",
          "metric": "latency"},
         {"alertname": "PartnerNoEvents", "severity": "page", "partner": "ups"},
         {"alertname": "PartnerSLOFastBurn", "severity": "page", "partner": "ups",
          "slo": "on_time"},
         {"alertname": "PartnerSLOSlowBurn", "severity": "ticket", "partner": "ups",
          "slo": "on_time"},
         {"alertname": "PartnerSLOSlowBurn", "severity": "ticket", "partner": "ups",
          "slo": "pickup_compliance"})
    assert states(alertmanager) == {
        ("IntegrationSilent", "fedex/webhook"): "active",
        # fedex's silent integration explains its silence, burn and volume anomaly
        ("PartnerNoEvents", "fedex"): "suppressed",
        ("PartnerSLOFastBurn", "fedex/on_time"): "suppressed",
        ("PartnerSLOSlowBurn", "fedex/first_attempt"): "suppressed",
        ("AnomalyActive", "fedex/volume"): "suppressed",
        ("AnomalyActive", "fedex/latency"): "active",  # not a volume alert
        ("PartnerNoEvents", "ups"): "active",  # another partner
        ("PartnerSLOFastBurn", "ups/on_time"): "active",
        ("PartnerSLOSlowBurn", "ups/on_time"): "suppressed",  # its page covers it
        ("PartnerSLOSlowBurn", "ups/pickup_compliance"): "active",
    }
    post(alertmanager, {"alertname": "KafkaDown", "severity": "page",
                        "partner": "all-partners"})
    after = states(alertmanager)
    assert after[("KafkaDown", "all-partners")] == "active"
    assert after[("IntegrationSilent", "fedex/webhook")] == "suppressed"
    assert after[("PartnerNoEvents", "ups")] == "suppressed"
    assert after[("PartnerSLOFastBurn", "ups/on_time")] == "active"  # not a silence alert


def test_every_alert_name_in_the_config_is_a_generated_alert() -> None:
    import re

    import yaml

    from carrierwatch.alerting.rules import ALERT_NAMES

    config = yaml.safe_load(CONFIG.read_text())
    matchers = [m for rule in config["inhibit_rules"]
                for m in rule["source_matchers"] + rule["target_matchers"]]

    def walk(route: dict[str, object]) -> None:
        matchers.extend(route.get("matchers", []))  # type: ignore[arg-type]
        for child in route.get("routes", []):  # type: ignore[attr-defined]
            walk(child)

    walk(config["route"])
    names = set()
    for matcher in matchers:
        found = re.fullmatch(r'alertname=~?"([^"]+)"', matcher)
        if found:
            names.update(found.group(1).split("|"))
    assert len(names) == 9  # the inhibitions and the partner-managers route name 9 alerts
    assert sorted(names - set(ALERT_NAMES)) == []
