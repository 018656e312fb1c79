"""SLI counters through a kill -9 of the worker, scraped by a real Prometheus.

The simulator's feed goes through Kafka to a worker and the sink that serve ``/metrics``; Debian's
prometheus scrapes both every second. The worker is killed with SIGKILL mid-stream and
restarted. Afterwards ``increase(carrierwatch_sli_events_total[...])`` (and the good events)
over the run must equal the totals of an uninterrupted in-process replay within one scrape
interval's worth (what the killed worker counted after its last scrape is lost with it), and
never exceed them (the restarted worker does not count again the journaled calls it repeats).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from streamkit import EQUIVALENCE_LATENESS_MS, StreamHarness, max_event_time

from carrierwatch.outputs.metrics import SLOS, WorkerMetrics
from carrierwatch.replay import iter_inputs, pipeline_for
from carrierwatch.synthetic.rawlog import RawRecord
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.testing import PrometheusServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTNERS = ["ups", "fedex", "metro_courier"]
SCRAPE_SECONDS = 1.0
Key = tuple[str, str]  # (partner, slo)


def expected_totals(records: list[RawRecord], harness: StreamHarness
                    ) -> tuple[dict[Key, int], dict[Key, int]]:
    """SLI totals of an uninterrupted in-process run over the same input (one pipeline, each
    payload's events in arrival order, flushed at the newest event time like the stream)."""
    from carrierwatch.core.pipeline import arrival_order

    registry = harness.registry
    metrics = WorkerMetrics({p.id: p.spec.contract for p in registry})
    pipeline = pipeline_for(registry, allowed_lateness_ms=EQUIVALENCE_LATENESS_MS)
    pipeline.observer = metrics.observe_output
    for record in records:
        result = registry.get(record.partner).transform(record.body, record.received_time,
                                                        record.headers)
        pipeline.process(arrival_order(result.events))
    pipeline.advance_watermark(max_event_time(records, registry))
    pipeline.flush()
    out: list[dict[Key, int]] = [{}, {}]
    for family in metrics.registry.collect():
        for sample in family.samples:
            for index, name in enumerate(("carrierwatch_sli_events_total",
                                          "carrierwatch_sli_good_events_total")):
                if sample.name == name:
                    key = (sample.labels["partner"], sample.labels["slo"])
                    out[index][key] = out[index].get(key, 0) + int(sample.value)
    return out[0], out[1]


def scraped(prom: PrometheusServer, metric: str, seconds: int
            ) -> tuple[dict[Key, float], dict[Key, float], float]:
    """From the raw samples of the worker's series over the last ``seconds``: per key (summed
    over service levels) the counter increase with Prometheus's reset rule (a drop is a restart
    from 0) and the largest increase between two consecutive scrapes; and the newest sample's
    time."""
    steps: dict[Key, dict[float, float]] = {}
    newest = 0.0
    for series in prom.query(f'{metric}{{job="worker"}}[{seconds}s]'):
        key = (series["metric"]["partner"], series["metric"]["slo"])
        values = [(float(t), float(v)) for t, v in series["values"]]
        newest = max(newest, values[-1][0])
        by_time = steps.setdefault(key, {})
        for (_, before), (at, after) in pairwise(values):
            by_time[at] = by_time.get(at, 0.0) + (after - before if after >= before else after)
    increase = {key: sum(by_time.values()) for key, by_time in steps.items()}
    largest = {key: max(by_time.values(), default=0.0) for key, by_time in steps.items()}
    return increase, largest, newest


def test_sli_increase_through_a_kill_9_equals_the_replay(
        stream_harness: StreamHarness, prometheus_server: Callable[..., PrometheusServer],
        tmp_path: Path) -> None:
    harness = stream_harness
    out = tmp_path / "simulation"
    simulate(PARTNERS, days=2, seed=31, out_dir=out, packages_per_day=150)
    feed = list(iter_inputs([out]))
    expected_total, expected_good = expected_totals(feed, harness)
    worker_port, sink_port = free_port(), free_port()
    prom = prometheus_server(targets={"worker": [f"127.0.0.1:{worker_port}"],
                                      "sink": [f"127.0.0.1:{sink_port}"]},
                             scrape_interval=SCRAPE_SECONDS)
    started = time.time()
    harness.start("sink", "sink", "--metrics-port", str(sink_port))
    harness.start("worker", "worker", "--metrics-port", str(worker_port))
    prom.wait_for_targets_up(timeout=90)
    # every SLI series is scraped at 0 before anything is counted
    prom.wait_for(lambda: prom.query_value(
        'count(carrierwatch_sli_events_total{job="worker"})'), what="SLI series scraped")
    half = len(feed) // 2
    harness.produce(feed[:half])
    prom.wait_for(lambda: (prom.query_value(
        'sum(carrierwatch_sli_events_total{job="worker"})') or 0) > 0, timeout=120,
        what="SLI counted before the kill")
    before_kill = prom.query_value('sum(carrierwatch_sli_events_total{job="worker"})')
    harness.kill("worker")
    harness.produce(feed[half:])
    harness.start("worker", "worker", "--metrics-port", str(worker_port))
    harness.finish_input(max_event_time(feed, harness.registry), timeout=180)
    want = sum(expected_total.values())

    def settled() -> bool:  # the counters stopped moving for two scrapes
        now = prom.query_value('sum(carrierwatch_sli_events_total{job="worker"})') or 0
        time.sleep(2.5 * SCRAPE_SECONDS)
        return now == prom.query_value('sum(carrierwatch_sli_events_total{job="worker"})')
    prom.wait_for(settled, timeout=60, what="SLI counters settled")
    # the sink's and the worker's process metrics, while both run
    assert prom.query_value('carrierwatch_kafka_up{job="sink"}') == 1.0
    assert prom.query_value('carrierwatch_kafka_up{job="worker"}') == 1.0
    assert prom.query_value('carrierwatch_sink_backlog_rows{job="sink"}') is not None
    lags: dict[str, Any] = prom.query_by('carrierwatch_consumer_lag_messages', "group")
    assert set(lags) == {harness.topology.app_id, harness.topology.track_group,
                         harness.topology.sink_group}
    assert prom.query_value('sum(carrierwatch_raw_payloads_total{job="worker"})') is not None
    log = harness.log("worker")
    assert harness.stop("worker") == 0
    assert harness.stop("sink") == 0
    repeated = sum(int(n) for n in re.findall(r"(\d+) journaled calls to repeat", log))
    seconds = int(time.time() - started) + 5
    for metric, expected in (("carrierwatch_sli_events_total", expected_total),
                             ("carrierwatch_sli_good_events_total", expected_good)):
        raw, largest, newest = scraped(prom, metric, seconds)
        promql = {(item["metric"]["partner"], item["metric"]["slo"]): float(item["value"][1])
                  for item in prom.query(
                      f'sum by (partner, slo) (increase({metric}{{job="worker"}}[{seconds}s]))',
                      at=newest)}
        for partner in PARTNERS:
            for slo in SLOS:
                key = (partner, slo)
                want_n = expected.get(key, 0)
                lost = want_n - raw.get(key, 0.0)
                # lost: what the killed worker counted after its last scrape (one interval)
                assert 0 <= lost <= largest.get(key, 0.0), (metric, key, want_n, raw.get(key))
                assert abs(promql.get(key, 0.0) - raw.get(key, 0.0)) < 1e-6, (metric, key)
    lost_total = want - sum(scraped(prom, "carrierwatch_sli_events_total", seconds)[0].values())
    print(f"SLI events: replay {want}, Prometheus increase() {want - lost_total:.0f} "
          f"(lost with the kill: {lost_total:.0f}); counted before the kill: {before_kill}; "
          f"journaled calls repeated uncounted after the restart: {repeated}")
    assert want > 3000
    assert before_kill is not None and 0 < before_kill < want
