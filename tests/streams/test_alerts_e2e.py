"""On-call end to end with real processes on loopback (issue #15, section 3).

The simulator's feed (UPS with an injected latency drift, AfterShip healthy) goes through Kafka to a
worker serving ``/metrics``; Debian's prometheus scrapes it every second and evaluates the alert
rules every second; Debian's prometheus-alertmanager routes what fires to a webhook receiver
run by the test. UPS must be paged (``PartnerSLOFastBurn``, slo ``event_latency``) within the
expected time, AfterShip never, and a silence on UPS must stop the repeated notifications.

The rules and the Alertmanager configuration are the repository's generated ones
(``alerts/rules/*.yml`` from ``carrierwatch alerts generate``, ``alerts/alertmanager.yml``;
another directory with ``CARRIERWATCH_E2E_ALERTS_DIR``), with the receivers' URLs pointed at
the test's webhook and the grouping intervals shortened. Where they do not exist the test uses
``tests/streams/e2e/minimal.rules.yml`` (the workbook's fast-burn page, 1 h and 5 min error
ratios above 14.4 × a 5 % budget, over the same metric names) and a minimal routing by
severity.

The feed's history (all but its last 6 hours) is tracked before Prometheus starts, so its
first scrape is the counters' baseline and the rates see only the live part: a partner's first
simulated day is also the day its webhook histories are first sent, full of old events.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from streamkit import StreamHarness

from carrierwatch.replay import iter_inputs
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.testing import AlertmanagerServer, PrometheusServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
FALLBACK = Path(__file__).resolve().parent / "e2e"
#: seconds from the end of the input to the page, at most (scrape 1 s + rule evaluation 1 s +
#: Alertmanager group_wait 1 s, on 2 shared cores with a worker catching up)
PAGE_WITHIN = 60.0


class Webhook:
    """An Alertmanager webhook receiver: every POSTed notification, with its arrival time."""

    def __init__(self) -> None:
        self.notifications: list[tuple[float, dict[str, Any]]] = []
        lock = self.lock = threading.Lock()
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, since: float = 0.0, **labels: str) -> list[tuple[float, dict[str, Any]]]:
        """(arrival time, alert) of every firing alert notified since ``since`` whose labels
        include ``labels``."""
        with self.lock:
            items = list(self.notifications)
        return [(at, alert) for at, note in items if at >= since for alert in note["alerts"]
                if alert["status"] == "firing"
                and all(alert["labels"].get(k) == v for k, v in labels.items())]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.server.shutdown()


def alerting_config(webhook_url: str) -> tuple[list[Path], dict[str, Any], str]:
    """Rule files, Alertmanager configuration (receivers → the webhook, short intervals) and
    where they come from."""
    chosen = os.environ.get("CARRIERWATCH_E2E_ALERTS_DIR")
    folder = Path(chosen) if chosen else ROOT / "alerts"
    rules = sorted((folder / "rules").glob("*.yml"))
    source = str(folder)
    if not rules:
        rules, source = [FALLBACK / "minimal.rules.yml"], str(FALLBACK)
    manager = folder / "alertmanager.yml"
    if manager.exists():
        config = yaml.safe_load(manager.read_text())
        for receiver in config.get("receivers", []):
            for key in [k for k in receiver if k.endswith("_configs")]:
                if key != "webhook_configs":
                    del receiver[key]
            receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": False}]

        def shorten(route: dict[str, Any]) -> None:
            for key, value in (("group_wait", "1s"), ("group_interval", "1s"),
                               ("repeat_interval", "3s")):
                if key in route or route is config["route"]:
                    route[key] = value
            for child in route.get("routes", []):
                shorten(child)
        shorten(config["route"])
        config.pop("templates", None)
    else:
        config = {
            "route": {"receiver": "tickets", "group_by": ["alertname", "partner"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "3s",
                      "routes": [{"matchers": ['severity="page"'], "receiver": "pager"}]},
            "receivers": [{"name": "pager",
                           "webhook_configs": [{"url": webhook_url, "send_resolved": False}]},
                          {"name": "tickets"}],
        }
    return rules, config, source


def test_an_outage_pages_the_partner_a_healthy_one_stays_quiet_and_a_silence_stops_it(
        stream_harness: StreamHarness, prometheus_server: Callable[..., PrometheusServer],
        alertmanager_server: Callable[..., AlertmanagerServer], webhook: Webhook,
        tmp_path: Path) -> None:
    harness = stream_harness
    now = time.time()
    # three days up to tomorrow, of which what was received until now is fed: the feed's last
    # events are minutes old, as in a live system. What came before the last 6 hours is
    # history, tracked before Prometheus starts: its first scrape is the counters' baseline,
    # so the rates see only the live part (a partner's first day in the simulation is also
    # the day its histories are first sent, so it starts with old events: not what a system
    # that saw the earlier copies would count)
    start = (datetime.fromtimestamp(now, UTC) - timedelta(days=2)).date()
    out = tmp_path / "simulation"
    simulate(["ups", "aftership"], days=3, seed=41, out_dir=out, packages_per_day=150,
             start=start, incidents=["latency_drift@ups:0d+3d,max=1d"])
    feed = [r for r in iter_inputs([out]) if r.received_time <= now * 1000]
    split = (now - 6 * 3600) * 1000
    history = [r for r in feed if r.received_time < split]
    live = [r for r in feed if r.received_time >= split]
    rules, config, source = alerting_config(webhook.url)
    worker_port = free_port()
    harness.start("worker", "worker", "--metrics-port", str(worker_port))
    harness.produce(history)
    harness.wait(harness.topology.app_id, harness.topology.raw_topics, timeout=180)
    harness.wait(harness.topology.track_group, [harness.topology.events], timeout=180)
    am = alertmanager_server(config)
    prom = prometheus_server(targets={"worker": [f"127.0.0.1:{worker_port}"]},
                             rule_files=rules, alertmanagers=[am.address],
                             scrape_interval=1.0, evaluation_interval=1.0)
    prom.wait_for_targets_up(timeout=90)
    prom.wait_for(lambda: prom.query_value(
        'count(carrierwatch_sli_events_total{job="worker"})'), what="SLI series scraped")
    time.sleep(2.0)  # a second sample of the baseline
    produced = time.time()
    harness.produce(live)
    harness.wait(harness.topology.app_id, harness.topology.raw_topics, timeout=180)
    harness.wait(harness.topology.track_group, [harness.topology.events], timeout=180)
    fed = time.time()

    def paged() -> list[tuple[float, dict[str, Any]]]:
        return webhook.alerts(partner="ups", severity="page", alertname="PartnerSLOFastBurn")
    assert paged() == [] or paged()[0][0] > produced  # not paged before the live input
    pages = prom.wait_for(paged, timeout=PAGE_WITHIN + 30, interval=0.5, what="UPS paged")
    delay = pages[0][0] - fed  # from the moment the worker had tracked the whole input
    page = pages[0][1]
    assert page["labels"]["slo"] == "event_latency", page
    assert page["annotations"].get("runbook_url", "").startswith("runbooks/")
    ratio, healthy_ratio = (prom.query_value(
        f'1 - sum(increase(carrierwatch_sli_good_events_total{{partner="{p}",'
        f'slo="event_latency"}}[10m])) / sum(increase(carrierwatch_sli_events_total'
        f'{{partner="{p}",slo="event_latency"}}[10m]))') for p in ("ups", "aftership"))
    assert delay <= PAGE_WITHIN, delay
    # the page repeats (repeat_interval 3 s) until it is silenced; then it stops
    prom.wait_for(lambda: len(paged()) >= 2, timeout=30, interval=0.5, what="page repeated")
    silence = am.silence({"partner": "ups"}, seconds=600, comment="e2e test: outage acknowledged")
    time.sleep(3.0)  # a notification already on its way may still arrive
    silenced_at = time.time()
    time.sleep(10.0)
    after = webhook.alerts(silenced_at, partner="ups")
    repeats_before = len([a for a in paged() if a[0] < silenced_at])
    # AfterShip is healthy: no page for it at any time
    healthy_pages = webhook.alerts(partner="aftership", severity="page")
    firing = {(a["labels"].get("alertname"), a["labels"].get("partner"),
               a["labels"].get("slo"), a["labels"].get("severity")) for a in prom.alerts()
              if a["state"] == "firing"}
    print(f"rules from {source}; page {pages[0][0] - produced:.1f} s after the input started, "
          f"{delay:.1f} s after it was all tracked; UPS "
          f"event_latency error ratio {ratio:.3f}, AfterShip {healthy_ratio:.3f}; {repeats_before} "
          f"UPS notifications before the silence {silence}, {len(after)} after; firing: "
          f"{sorted(map(str, firing))}; {len(history)} payloads of history, {len(live)} live")
    assert after == []
    assert repeats_before >= 2  # repeat_interval 3 s: the page kept coming until silenced
    assert healthy_pages == [], healthy_pages
    assert not any(p == "aftership" and s == "page" for _, p, _, s in firing), firing
    assert harness.stop("worker") == 0
