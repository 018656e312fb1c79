"""Prometheus metrics of the stream processes, the ones alerts are built on (prometheus-client).

Each process owns one :class:`~prometheus_client.CollectorRegistry` (a :class:`WorkerMetrics`
or the sink's :class:`~carrierwatch.streams.sink.SinkMetrics`) and serves it on ``/metrics``
(:func:`serve`). Names, types and labels are the shared contract of docs/metrics.md
("Prometheus metrics"); label values are bounded: partner ids of the registry, the contract's
service levels (anything else is ``other``), stages, SLO names, group and topic names, and at
most five codebook codes per partner — never a package or tracking number.

**SLI counters.** ``carrierwatch_sli_events_total{partner,service_level,slo}`` and
``carrierwatch_sli_good_events_total{...}`` count each package outcome once, when the core
decides it (:attr:`carrierwatch.core.pipeline.PipelineOutput.decisions`), and each accepted
non-synthetic event once for the event-latency SLO:

==========================  =====================================  ==================================
``slo``                     one event per                          good when
==========================  =====================================  ==================================
``on_time``                 package decided on time or late        delivered by promise + grace
``first_attempt``           package with a first attempt           the first attempt delivered
``pickup_compliance``       package with a pickup decided          picked up by the pickup due time
``tracking_compliance``     delivered package                      every required milestone seen
``event_latency``           accepted canonical event               received − event time ≤ the
                                                                   contract's
                                                                   ``event_latency_p95_max_minutes``
==========================  =====================================  ==================================

A counter only goes up, so a decision that a later event retracts or reverses (rare: a
cancellation after a package was counted late, an earlier event with another promise) stays
counted; it is counted in ``carrierwatch_sli_corrections_total`` instead, and the store's
``package_outcomes``/``metric_windows`` hold the corrected figures (scorecards read those).

Examples
--------
>>> from carrierwatch.core.model import CanonicalEvent
>>> from carrierwatch.core.pipeline import PipelineOutput
>>> from carrierwatch.core.partner import SlaContract
>>> rules = sli_rules({"ups": SlaContract(event_latency_p95_max_minutes=10)})
>>> out = PipelineOutput(decisions=[("ups", "ground", 0, 1), ("ups", "ground", 0, 0),
...                                 ("ups", "Express Saver", 1, 1)])
>>> out.events.append(CanonicalEvent("e1", "ups", "1Z", "1Z", "picked_up", 1.0, "P",
...                                  event_time=0, received_time=11 * 60_000))
>>> for key, (total, good) in sorted(sli_counts(out, rules).items()):
...     print(*key, total, good)        # partner, service level, slo, total, good
ups ground event_latency 1 0
ups ground on_time 2 1
ups other first_attempt 1 1
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import start_http_server

from carrierwatch.core.metrics import FACT_DELIVERED, FACT_FIRST_ATTEMPT, FACT_ON_TIME, FACT_PICKUP
from carrierwatch.core.partner import SlaContract

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from carrierwatch.core.model import CanonicalEvent, DeadLetter
    from carrierwatch.core.pipeline import PipelineOutput

__all__ = [
    "DEAD_LETTER_STAGES",
    "GAP_CODES_SHOWN",
    "OTHER",
    "SLOS",
    "SLO_OF_FACT",
    "KafkaLagMonitor",
    "ProcessMetrics",
    "SliRules",
    "WorkerMetrics",
    "correction_counts",
    "serve",
    "sli_counts",
    "sli_rules",
]

log = logging.getLogger(__name__)

#: The SLO label values, in the order of docs/metrics.md.
SLOS = ("on_time", "first_attempt", "pickup_compliance", "tracking_compliance", "event_latency")
#: Core fact kind → SLO label.
SLO_OF_FACT = {FACT_ON_TIME: "on_time", FACT_FIRST_ATTEMPT: "first_attempt",
               FACT_PICKUP: "pickup_compliance", FACT_DELIVERED: "tracking_compliance"}
#: Label value of a service level the contract does not list and of a partner not registered.
OTHER = "other"
UNKNOWN_PARTNER = "unknown"
#: Where a dead letter comes from (``stage`` label).
DEAD_LETTER_STAGES = ("normalize", "track", "store", "gateway", "drop", "poll")
#: Codebook gap codes shown per partner in ``carrierwatch_codebook_gap_info``.
GAP_CODES_SHOWN = 5
#: Distinct unknown codes remembered per partner (the least frequent are forgotten beyond).
_GAP_CODES_KEPT = 1000
#: Longest code shown as a label value.
_CODE_CHARS = 64


@dataclass(frozen=True, slots=True)
class SliRules:
    """What a partner's SLI counters need from its contract."""

    levels: frozenset[str]
    default_level: str
    latency_limit_ms: int

    @classmethod
    def from_contract(cls, contract: SlaContract) -> SliRules:
        return cls(frozenset(contract.transit_days), contract.default_service_level,
                   int(contract.event_latency_p95_max_minutes * 60_000))


def sli_rules(contracts: Mapping[str, SlaContract]) -> dict[str, SliRules]:
    """:class:`SliRules` per partner id."""
    return {partner: SliRules.from_contract(contract) for partner, contract in contracts.items()}


_DEFAULT_RULES = SliRules.from_contract(SlaContract())


def _labels(rules: Mapping[str, SliRules], partner: str, level: str | None
            ) -> tuple[str, str, SliRules]:
    found = rules.get(partner)
    if found is None:
        return UNKNOWN_PARTNER, OTHER, _DEFAULT_RULES
    level = level or found.default_level
    return partner, level if level in found.levels else OTHER, found


def sli_counts(output: PipelineOutput, rules: Mapping[str, SliRules]
               ) -> dict[tuple[str, str, str], list[int]]:
    """``(partner, service_level, slo) -> [total, good]`` of one pipeline output (pure).

    Package outcomes come from ``output.decisions`` (the pipeline's observer must be set),
    event latency from ``output.events`` (accepted, unique; synthetic events excluded, as in
    the windows).
    """
    counts: dict[tuple[str, str, str], list[int]] = {}
    for partner, level, kind, good in output.decisions:
        partner_label, level_label, _ = _labels(rules, partner, level)
        key = (partner_label, level_label, SLO_OF_FACT[kind])
        entry = counts.get(key)
        if entry is None:
            entry = counts[key] = [0, 0]
        entry[0] += 1
        entry[1] += 1 if good else 0
    # the hot loop (every accepted event): one dict lookup per event
    slots: dict[tuple[str, str | None], tuple[list[int], int]] = {}
    for event in output.events:
        if event.synthetic:
            continue
        slot = slots.get((event.partner_id, event.service_level))
        if slot is None:
            partner_label, level_label, found = _labels(rules, event.partner_id,
                                                        event.service_level)
            key = (partner_label, level_label, "event_latency")
            entry = counts.get(key)
            if entry is None:
                entry = counts[key] = [0, 0]
            slot = slots[(event.partner_id, event.service_level)] = (entry,
                                                                     found.latency_limit_ms)
        entry, limit = slot
        entry[0] += 1
        if event.received_time - event.event_time <= limit:
            entry[1] += 1
    return counts


def correction_counts(output: PipelineOutput, rules: Mapping[str, SliRules]
                      ) -> dict[tuple[str, str, str], int]:
    """``(partner, service_level, slo) -> n`` of decisions retracted or reversed (pure)."""
    counts: dict[tuple[str, str, str], int] = {}
    for partner, level, kind in output.corrections:
        partner_label, level_label, _ = _labels(rules, partner, level)
        key = (partner_label, level_label, SLO_OF_FACT[kind])
        counts[key] = counts.get(key, 0) + 1
    return counts


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve ``/metrics`` of ``registry`` over HTTP in a daemon thread (prometheus-client's
    server); returns the server (``shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


class ProcessMetrics:
    """What every Kafka-using process exports: ``carrierwatch_kafka_up`` and
    ``carrierwatch_consumer_lag_messages{group,topic}`` (set by :class:`KafkaLagMonitor`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.kafka_up = Gauge("carrierwatch_kafka_up",
                              "1 while this process's last Kafka probe succeeded, else 0.",
                              registry=r)
        self.consumer_lag = Gauge("carrierwatch_consumer_lag_messages",
                                  "Messages in the topic not yet committed by the consumer "
                                  "group (sum over partitions).", ["group", "topic"], registry=r)

    def exposition(self) -> bytes:
        """The text exposition of this registry (what ``/metrics`` serves)."""
        return generate_latest(self.registry)

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


class WorkerMetrics(ProcessMetrics):
    """The worker's metrics: the normalize stage's volumes, dead letters and codebook gaps, and
    the track stage's SLI counters.

    Parameters
    ----------
    contracts
        Contract per partner id (the registry's): service levels and latency limits.
    """

    def __init__(self, contracts: Mapping[str, SlaContract] | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.rules = sli_rules(contracts or {})
        r = self.registry
        sli = ["partner", "service_level", "slo"]
        self.sli_events = Counter("carrierwatch_sli_events",
                                  "SLI events: package outcomes decided and accepted canonical "
                                  "events (event_latency), per contract objective.", sli,
                                  registry=r)
        self.sli_good = Counter("carrierwatch_sli_good_events",
                                "SLI events that met the objective.", sli, registry=r)
        self.sli_corrections = Counter("carrierwatch_sli_corrections",
                                       "Decisions counted in the SLI counters that a later "
                                       "event retracted or reversed.", sli, registry=r)
        self.raw_payloads = Counter("carrierwatch_raw_payloads",
                                    "Raw payloads normalized.", ["partner"], registry=r)
        self.canonical_events = Counter("carrierwatch_canonical_events",
                                        "Canonical events produced.", ["partner"], registry=r)
        self.last_event = Gauge("carrierwatch_last_event_timestamp_seconds",
                                "Received time of the partner's latest canonical event (Unix "
                                "seconds).", ["partner"], registry=r)
        self.dead_letters = Counter("carrierwatch_dead_letters",
                                    "Dead letters (bad input with its reason).",
                                    ["partner", "stage"], registry=r)
        self.unknown_codes = Counter("carrierwatch_codebook_unknown_codes",
                                     "Canonical events whose partner code is not in the "
                                     "codebook (status unknown).", ["partner"], registry=r)
        self.gap_info = Gauge("carrierwatch_codebook_gap_info",
                              f"1 for each of the partner's {GAP_CODES_SHOWN} most frequent "
                              "unknown codes since the process started.", ["partner", "code"],
                              registry=r)
        for partner, found in self.rules.items():
            # every SLI series exists from the start at 0: Prometheus's increase() counts from
            # a series' first sample, so a series born with a value would lose that value
            for level in (*sorted(found.levels), OTHER):
                for slo in SLOS:
                    self.sli_events.labels(partner, level, slo)
                    self.sli_good.labels(partner, level, slo)
            for name in ("normalize", "track"):
                self.dead_letters.labels(partner, name)
            self.raw_payloads.labels(partner)
            self.canonical_events.labels(partner)
            self.unknown_codes.labels(partner)
        self._codes: dict[str, Tally[str]] = {}
        self._shown: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def partner_label(self, partner: str) -> str:
        return partner if partner in self.rules else UNKNOWN_PARTNER

    # -- track ----------------------------------------------------------------------------------

    def observe_output(self, output: PipelineOutput) -> None:
        """Count one pipeline output's decisions and events (the pipeline's observer)."""
        for (partner, level, slo), (total, good) in sli_counts(output, self.rules).items():
            self.sli_events.labels(partner, level, slo).inc(total)
            if good:
                self.sli_good.labels(partner, level, slo).inc(good)
            else:  # the series exists from the first event on (a ratio needs both)
                self.sli_good.labels(partner, level, slo)
        for (partner, level, slo), n in correction_counts(output, self.rules).items():
            self.sli_corrections.labels(partner, level, slo).inc(n)

    # -- normalize ------------------------------------------------------------------------------

    def observe_payload(self, partner: str, events: Sequence[CanonicalEvent],
                        dead_letters: Sequence[DeadLetter]) -> None:
        """Count one raw payload's normalization."""
        label = self.partner_label(partner)
        self.raw_payloads.labels(label).inc()
        if dead_letters:
            self.dead_letters.labels(label, "normalize").inc(len(dead_letters))
        if not events:
            return
        self.canonical_events.labels(label).inc(len(events))
        self.last_event.labels(label).set(max(e.received_time for e in events) / 1000)
        unknown = [e.raw_code for e in events if e.status == "unknown"]
        if unknown:
            self.unknown_codes.labels(label).inc(len(unknown))
            self._count_codes(label, unknown)

    def dead_letter(self, partner: str, stage: str, n: int = 1) -> None:
        self.dead_letters.labels(self.partner_label(partner), stage).inc(n)

    def _count_codes(self, partner: str, codes: Iterable[str]) -> None:
        with self._lock:
            tally = self._codes.setdefault(partner, Tally())
            tally.update(code[:_CODE_CHARS] for code in codes)
            if len(tally) > _GAP_CODES_KEPT:  # forget the rarest half
                for code, _ in tally.most_common()[_GAP_CODES_KEPT // 2:]:
                    del tally[code]
            top = {code for code, _ in heapq.nlargest(GAP_CODES_SHOWN, tally.items(),
                                                      key=lambda item: (item[1], item[0]))}
            shown = self._shown.setdefault(partner, set())
            for code in shown - top:
                self.gap_info.remove(partner, code)
            for code in top - shown:
                self.gap_info.labels(partner, code).set(1)
            self._shown[partner] = top


class KafkaLagMonitor:
    """A daemon thread that every ``interval`` seconds reads the lag of consumer groups
    (:func:`carrierwatch.streams.kafka.group_lag`: end offset − committed offset, summed per
    topic) into ``carrierwatch_consumer_lag_messages`` and sets ``carrierwatch_kafka_up`` to 1
    when the broker answered, 0 when it did not.

    ``groups``: ``{group: [topic, ...]}``.
    """

    def __init__(self, metrics: ProcessMetrics, bootstrap: str,
                 groups: Mapping[str, Sequence[str]], interval: float = 5.0) -> None:
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.groups = {group: list(topics) for group, topics in groups.items()}
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def probe(self) -> bool:
        """One reading; True when the broker answered."""
        from carrierwatch.streams.kafka import group_lag

        try:
            readings: dict[tuple[str, str], int] = {}
            for group, topics in self.groups.items():
                for (topic, _partition), lag in group_lag(self.bootstrap, group, topics,
                                                          timeout=min(10.0, self.interval * 2)
                                                          ).items():
                    readings[(group, topic)] = readings.get((group, topic), 0) + lag
        except Exception as exc:  # broker away: say so, keep the last lag readings
            log.debug("kafka probe failed: %s", exc)
            self.metrics.kafka_up.set(0)
            return False
        for (group, topic), lag in readings.items():
            self.metrics.consumer_lag.labels(group, topic).set(lag)
        self.metrics.kafka_up.set(1)
        return True

    def start(self) -> KafkaLagMonitor:
        self._thread = threading.Thread(target=self._run, name="carrierwatch-kafka-lag",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.probe()
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

