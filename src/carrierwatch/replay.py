"""The replay driver: the whole core, in-process, over raw partner files.

transform (per partner) → dedup, package state, SLA windows (:class:`~carrierwatch.core.pipeline.Pipeline`)
→ store (:func:`~carrierwatch.sink.write_batch`). It is the embedded default behind ``carrierwatch
replay`` and ``carrierwatch demo``, the tool for backfills and audits, and the reference the Faust
worker must equal (:func:`result_snapshot`).

Inputs are simulator raw logs (``<partner>.rawlog.jsonl``: received time, headers, body per line)
or single payload files named ``<partner_id>/<anything>`` or given with ``--partner``. Records of
all inputs are merged in received-time order, which is the order a live system would have seen.
"""

from __future__ import annotations

import gc
import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carrierwatch.core.model import CanonicalEvent, DeadLetter
from carrierwatch.core.pipeline import Pipeline
from carrierwatch.sink import SinkBatch, write_batch
from carrierwatch.synthetic.rawlog import RawRecord, iter_rawlog
from carrierwatch.transformers.registry import PartnerRegistry

if TYPE_CHECKING:
    from carrierwatch.anomaly.monitor import AnomalyMonitor
    from carrierwatch.storage.base import Store

__all__ = ["ReplaySummary", "iter_inputs", "pipeline_for", "result_snapshot", "run_replay"]

RAWLOG_SUFFIX = ".rawlog.jsonl"


@dataclass
class ReplaySummary:
    """What a replay did.

    ``transform_seconds``, ``pipeline_seconds`` and ``store_seconds`` split ``seconds``: partner
    transforms; the core pipeline (``process`` and the final ``flush``); rows built for the store
    and written to it. The rest is the driver itself (reading input, batching).
    """

    payloads: int = 0
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    too_late: int = 0
    dead_letters: int = 0
    gaps: Counter[str] = field(default_factory=Counter)
    empty_payloads: int = 0  # payloads whose event list the partner legitimately sent empty
    packages: int = 0
    rows_written: int = 0
    anomalies: int = 0
    seconds: float = 0.0
    transform_seconds: float = 0.0
    pipeline_seconds: float = 0.0
    store_seconds: float = 0.0
    per_partner: Counter[str] = field(default_factory=Counter)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def pipeline_for(registry: PartnerRegistry, *, shard: int = 0, version_base: int | None = None,
                 **options: Any) -> Pipeline:
    """A core pipeline configured with every partner's SLA contract.

    ``version_base`` defaults to now (ms × 1000), so rows of a later replay supersede those of an
    earlier one in the store; their content is a function of the input alone.
    """
    contracts = {partner.id: partner.spec.contract for partner in registry}
    base = int(time.time() * 1000) * 1000 if version_base is None else version_base
    return Pipeline(contracts, shard=shard, version_base=base, **options)


def iter_inputs(paths: Sequence[Path], *, partner: str | None = None,
                registry: PartnerRegistry | None = None) -> Iterator[RawRecord]:
    """Raw records of every input, merged in received-time order.

    A ``*.rawlog.jsonl`` file is a simulator/raw log; any other file is one payload of
    ``partner`` (or of the partner named by its parent folder), received at its modification time.
    A folder stands for the raw logs in it, or, when it has none, for the payload files in it.
    """
    streams: list[Iterator[RawRecord]] = []
    singles: list[RawRecord] = []
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            logs = sorted(path.glob(f"*{RAWLOG_SUFFIX}"))
            files.extend(logs or sorted(p for p in path.iterdir() if p.is_file()))
        else:
            files.append(path)
    for path in files:
        if path.name.endswith(RAWLOG_SUFFIX):
            streams.append(iter_rawlog(path))
        else:
            partner_id = partner or path.parent.name
            if registry is not None:
                registry.get(partner_id)  # unknown partner: a usage error, raised early
            singles.append(RawRecord(partner_id, int(path.stat().st_mtime * 1000), {},
                                     path.read_bytes()))
    streams.append(iter(sorted(singles, key=lambda r: r.received_time)))
    return heapq.merge(*streams, key=lambda r: r.received_time)


def run_replay(records: Iterable[RawRecord], store: Store, registry: PartnerRegistry, *,
               pipeline: Pipeline | None = None, batch_events: int = 20_000,
               write_rows: int = 200_000,
               progress: Callable[[int], object] | None = None,
               monitor: AnomalyMonitor | None = None) -> ReplaySummary:
    """Run the core over ``records`` and write everything to ``store``; return a summary.

    Events are handed to the pipeline in arrival order in batches of about ``batch_events``, and
    a final flush decides what the data allows (outcomes whose promise passed, windows that
    closed). Rows are buffered and written once about ``write_rows`` of them have gathered (and
    at the end): a chDB insert has a large fixed cost per insert and part, and the rows a later
    batch re-emits with a higher version (the same window or package again) replace the earlier
    ones in the buffer, so fewer rows are written for the same query results
    (:meth:`~carrierwatch.sink.SinkBatch.compact`).

    The cyclic garbage collector is paused while the replay runs and collects the young
    generations after every write instead: the state the pipeline builds up is long-lived and
    acyclic, and automatic full collections that rescan it again and again would otherwise cost
    a large share of the run.
    """
    started = time.perf_counter()
    pipe = pipeline if pipeline is not None else pipeline_for(registry)
    summary = ReplaySummary()
    partners = {p.id: p for p in registry}
    pending: list[CanonicalEvent] = []
    dead_letters: list[DeadLetter] = []  # since the last pipeline call (for the monitor)
    sink = SinkBatch()

    clock = time.perf_counter

    def drain(final: bool = False) -> None:
        start = clock()
        output = pipe.process(pending)
        pending.clear()
        flushed = pipe.flush() if final else None
        middle = clock()
        sink.add_output(output, typed=True)
        if flushed is not None:
            sink.add_output(flushed, typed=True)
        sink.dead_letters.extend(dead_letters)
        if monitor is not None:
            # the last windows stay pending (as in a live worker): no monitor flush at the end
            windows = output.windows + (flushed.windows if flushed is not None else [])
            arrivals = output.events + (flushed.events if flushed is not None else [])
            verdicts = monitor.observe(windows, dead_letters, arrivals=arrivals)
            sink.add_rows("anomalies", verdicts.anomalies)
            sink.add_rows("alerts", verdicts.alerts)
            summary.anomalies += sum(1 for row in verdicts.anomalies if row.get("is_anomaly"))
        dead_letters.clear()
        if final or len(sink) >= write_rows:
            sink.compact()
            summary.rows_written += write_batch(store, sink)
            sink.clear()
            # after the write, when the buffered rows are gone: a collection scans every young
            # object still alive, and rows about to be dropped need no scan
            gc.collect(1)
        summary.pipeline_seconds += middle - start
        summary.store_seconds += clock() - middle

    enabled = gc.isenabled()
    gc.disable()
    try:
        for record in records:
            partner = partners.get(record.partner)
            summary.payloads += 1
            if partner is None:
                dead_letters.append(DeadLetter(record.partner, record.received_time,
                                                    f"unknown partner {record.partner!r}", "$",
                                                    record.body))
                summary.dead_letters += 1
                continue
            start = clock()
            result = partner.transform(record.body, record.received_time, record.headers)
            summary.transform_seconds += clock() - start
            pending.extend(result.events)
            dead_letters.extend(result.dead_letters)
            summary.events += len(result.events)
            summary.dead_letters += len(result.dead_letters)
            summary.per_partner[record.partner] += len(result.events)
            if result.gaps:
                summary.gaps.update(f"{record.partner}:{code}" for code in result.gaps)
            if result.empty and not result.events:
                summary.empty_payloads += 1
            if progress is not None:
                progress(len(result.events))
            if len(pending) >= batch_events:
                drain()
        drain(final=True)
    finally:
        if enabled:
            gc.enable()
    stats = pipe.stats
    summary.accepted = stats["accepted"]
    summary.duplicates = stats["duplicates"]
    summary.too_late = stats["too_late"] + stats["package_closed"] + stats["invalid_time"]
    summary.packages = len(pipe.packages)
    summary.seconds = time.perf_counter() - started
    return summary


def result_snapshot(store: Store) -> dict[str, Any]:
    """What a run left in the store, in a form two runs can be compared by (``==``).

    Metric windows are summed over shards (so one worker equals two), outcomes and events are
    taken at their latest version, versions and shard numbers are left out.
    """
    types = store.column_types("metric_windows")
    keys = ["partner_id", "region", "service_level", "granularity", "window_start"]
    measures = [c for c in types if c not in {*keys, "shard", "version"}]
    aggregates = []
    for column in measures:
        if types[column].startswith("Map("):
            aggregates.append(f"sumMap({column}) AS {column}")
        else:
            aggregates.append(f"sum({column}) AS {column}")
    windows = store.query(
        f"SELECT {', '.join(keys)}, {', '.join(aggregates)} FROM metric_windows FINAL "
        f"GROUP BY {', '.join(keys)} ORDER BY {', '.join(keys)}")
    outcome_columns = [c for c in store.column_types("package_outcomes")
                       if c not in {"shard", "version"}]
    outcomes = store.query(
        f"SELECT {', '.join(outcome_columns)} FROM package_outcomes FINAL "
        "ORDER BY partner_id, package_id")
    events = store.query(
        "SELECT partner_id, count(), uniqExact(event_id), groupBitXor(cityHash64(event_id)) "
        "FROM canonical_events FINAL GROUP BY partner_id ORDER BY partner_id")
    dead_letters = store.query(
        "SELECT partner_id, path, error, count() FROM dead_letters FINAL "
        "GROUP BY partner_id, path, error ORDER BY partner_id, path, error")
    return {"metric_windows": [tuple(_plain(v) for v in row) for row in windows],
            "package_outcomes": [tuple(_plain(v) for v in row) for row in outcomes],
            "canonical_events": events, "dead_letters": dead_letters}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, v) for k, v in value.items() if v))
    return value
