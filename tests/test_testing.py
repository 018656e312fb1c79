"""The real Prometheus and Alertmanager fixtures of carrierwatch.testing work as documented."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, start_http_server

from carrierwatch.testing import AlertmanagerServer, PrometheusServer, free_port


def test_prometheus_scrapes_a_target_and_evaluates_rules(
        prometheus_server: Callable[..., PrometheusServer], tmp_path) -> None:
    registry = CollectorRegistry()
    counter = Counter("carrierwatch_fixture_probe", "probe", ["partner"], registry=registry)
    counter.labels("ups").inc(7)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    rules = tmp_path / "probe.rules.yml"
    rules.write_text("groups:\n- name: probe\n  rules:\n"
                     "  - record: partner:carrierwatch_fixture_probe:sum\n"
                     "    expr: sum by (partner) (carrierwatch_fixture_probe_total)\n")
    try:
        prom = prometheus_server(targets={"worker": [f"127.0.0.1:{port}"]}, rule_files=[rules])
        prom.wait_for_targets_up()
        assert prom.query_value('carrierwatch_fixture_probe_total{job="worker"}') == 7.0
        prom.wait_for(lambda: prom.query("partner:carrierwatch_fixture_probe:sum"),
                      what="recording rule")
        assert prom.query_by("partner:carrierwatch_fixture_probe:sum", "partner") == {"ups": 7.0}
    finally:
        server.shutdown()


def test_alertmanager_takes_alerts_and_silences(
        alertmanager_server: Callable[..., AlertmanagerServer]) -> None:
    am = alertmanager_server({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
    silence = am.silence({"partner": "ups"}, seconds=60)
    assert len(silence) > 8
    assert am.alerts() == []
