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
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from carrierwatch.core.errors import CarrierwatchError
from carrierwatch.core.model import CanonicalEvent, DeadLetter
from carrierwatch.core.pipeline import Pipeline, arrival_order
from carrierwatch.sink import SinkBatch, write_batch
from carrierwatch.synthetic.rawlog import (
    RawlogError,
    RawRecord,
    parse_line,
    partner_of_rawlog,
)
from carrierwatch.transformers.registry import PartnerRegistry

if TYPE_CHECKING:
    from carrierwatch.anomaly.monitor import AnomalyMonitor
    from carrierwatch.decisions.engine import Escalator
    from carrierwatch.storage.base import Store

__all__ = ["BadInput", "NoInputError", "ReplayInputs", "ReplaySummary", "iter_inputs",
           "pipeline_for", "result_snapshot", "run_replay"]

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
    bad_inputs: list[BadInput] = field(default_factory=list)
    #: what the decision tables decided (carrierwatch.decisions), in decision order
    escalations: list[Any] = field(default_factory=list)
    #: event-time span of the events replayed (UTC ms), ``None`` before the first
    first_event_time: int | None = None
    last_event_time: int | None = None
    allowed_lateness_ms: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def too_late_share(self) -> float:
        """The share of distinct events that were not applied because they came too late."""
        considered = self.accepted + self.too_late
        return self.too_late / considered if considered else 0.0


def pipeline_for(registry: PartnerRegistry, *, shard: int = 0, version_base: int | None = None,
                 **options: Any) -> Pipeline:
    """A core pipeline configured with every partner's SLA contract.

    ``version_base`` defaults to now (ms × 1000), so rows of a later replay supersede those of an
    earlier one in the store; their content is a function of the input alone. Both drivers
    (replay and the stream worker) measure lateness per package (``lateness_scope="package"``,
    see docs/metrics.md §3), so their results do not depend on how packages are spread over
    shards or how the partners' feeds interleave.
    """
    contracts = {partner.id: partner.spec.contract for partner in registry}
    base = int(time.time() * 1000) * 1000 if version_base is None else version_base
    options.setdefault("lateness_scope", "package")
    return Pipeline(contracts, shard=shard, version_base=base, **options)


@dataclass(frozen=True, slots=True)
class BadInput:
    """A raw-log line (or input file) that is no record: it becomes a dead letter.

    ``path`` of its dead letter is ``<file name>:<line>``, its error names file and line, and
    ``raw`` keeps the line's bytes.
    """

    source: str
    line: int
    partner: str
    error: str
    raw: bytes

    def dead_letter(self, received_time: int) -> DeadLetter:
        return DeadLetter(self.partner, received_time, self.error,
                          f"{Path(self.source).name}:{self.line}", self.raw)


class NoInputError(CarrierwatchError):
    """The inputs hold no raw log and no payload file."""


# one entry per record: (received or arrival time, partner, body digest, file, offset, length)
_Entry = tuple[int, str, bytes, int, int, int]
_LOOSE = -1  # the file index that stands for the batch of loose payload files


class ReplayInputs:
    """The records of replay inputs, in arrival order, and the lines that are no records.

    Raw logs (``*.rawlog.jsonl``) are indexed first: each line is parsed and checked, a bad one
    is kept as a :class:`BadInput` (it never stops the others), and every good one is placed by
    ``(received_time, partner, digest of its body)``. Records come out in that order, whatever
    the order of the lines within and across the files, so a shuffled or unsorted raw log (a
    partner export, several logs that overlap in time) replays exactly as the sorted one. The
    index holds about 150 bytes per record; bodies are read again, by offset, when iterated.

    Any other file is one payload of ``partner`` (or of the partner named by its parent folder).
    Loose payload files carry no receive order (a modification time says when a file was
    copied, not when its data arrived), so all of them form one *arrival*: their events are
    applied together in event-time order (:func:`~carrierwatch.core.pipeline.arrival_order`),
    at the earliest modification time among them, each with its own as the received time.

    A folder stands for the raw logs in it, or, when it has none, for the payload files in it.
    """

    def __init__(self, paths: Sequence[Path], *, partner: str | None = None,
                 registry: PartnerRegistry | None = None) -> None:
        self.files: list[Path] = []
        self.bad: list[BadInput] = []
        self._logs: list[Path] = []
        self._loose: list[tuple[str, Path]] = []
        for path in paths:
            if path.is_dir():
                logs = sorted(path.glob(f"*{RAWLOG_SUFFIX}"))
                found = logs or sorted(p for p in path.iterdir() if p.is_file())
                if not found:
                    raise NoInputError(f"{path} holds no raw logs (*{RAWLOG_SUFFIX}) and no "
                                       "payload files")
                self.files.extend(found)
            else:
                self.files.append(path)
        for path in self.files:
            if path.name.endswith(RAWLOG_SUFFIX):
                self._logs.append(path)
            else:
                partner_id = partner or path.parent.name
                if registry is not None:
                    registry.get(partner_id)  # unknown partner: a usage error, raised early
                self._loose.append((partner_id, path))
        self._index = self._build_index()

    def __len__(self) -> int:
        """How many records (payloads) the inputs hold, bad lines not counted."""
        return len(self._index) - (1 if self._loose else 0) + len(self._loose)

    def _build_index(self) -> list[_Entry]:
        index: list[_Entry] = []
        for number, path in enumerate(self._logs):
            offset = 0
            with path.open("rb") as stream:
                for line_number, line in enumerate(stream, start=1):
                    length = len(line)
                    if line.strip():
                        try:
                            record = parse_line(line, str(path), line_number)
                        except RawlogError as exc:
                            self.bad.append(BadInput(
                                str(path), line_number,
                                _partner_of_line(line) or partner_of_rawlog(path) or "unknown",
                                str(exc), line.rstrip(b"\n")))
                        else:
                            index.append((record.received_time, record.partner,
                                          _digest(record.body), number, offset, length))
                    offset += length
        if self._loose:
            first = min(int(p.stat().st_mtime * 1000) for _, p in self._loose)
            index.append((first, "", b"", _LOOSE, 0, 0))
        index.sort()
        return index

    def __iter__(self) -> Iterator[RawRecord]:
        handles: dict[int, Any] = {}
        try:
            for received, _, _, number, offset, length in self._index:
                if number == _LOOSE:
                    yield from self._loose_records(received)
                    continue
                stream = handles.get(number)
                if stream is None:
                    stream = handles[number] = self._logs[number].open("rb")
                stream.seek(offset)
                yield parse_line(stream.read(length), str(self._logs[number]))
        finally:
            for stream in handles.values():
                stream.close()

    def _loose_records(self, arrival: int) -> list[RawRecord]:
        records = [RawRecord(partner_id, int(path.stat().st_mtime * 1000), {},
                             path.read_bytes(), arrival)
                   for partner_id, path in self._loose]
        records.sort(key=lambda r: (r.partner, _digest(r.body)))
        return records


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=8).digest()


def _partner_of_line(line: bytes) -> str | None:
    """The partner a bad raw-log line names, when it parses that far."""
    try:
        partner = orjson.loads(line).get("partner")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return partner if isinstance(partner, str) and partner else None


def iter_inputs(paths: Sequence[Path], *, partner: str | None = None,
                registry: PartnerRegistry | None = None) -> ReplayInputs:
    """The records of every input in arrival order (:class:`ReplayInputs`)."""
    return ReplayInputs(paths, partner=partner, registry=registry)


def run_replay(records: Iterable[RawRecord], store: Store, registry: PartnerRegistry, *,
               pipeline: Pipeline | None = None, batch_events: int = 20_000,
               write_rows: int = 200_000,
               progress: Callable[[int], object] | None = None,
               monitor: AnomalyMonitor | None = None,
               escalator: Escalator | None = None) -> ReplaySummary:
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
        if escalator is not None:  # decision tables: rows for the escalations table
            decided = escalator.observe(pipe, output) + (
                escalator.observe(pipe, flushed) if flushed is not None else [])
            sink.add_rows("escalations", (e.to_row() for e in decided))
            summary.escalations.extend(decided)
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

    group: list[CanonicalEvent] = []  # the events of the current arrival
    group_key: int | None = None

    def end_arrival() -> None:
        if group:
            ordered = arrival_order(group)
            first, last = ordered[0].event_time, ordered[-1].event_time
            if summary.first_event_time is None or first < summary.first_event_time:
                summary.first_event_time = first
            if summary.last_event_time is None or last > summary.last_event_time:
                summary.last_event_time = last
            pending.extend(ordered)
            group.clear()
            if len(pending) >= batch_events:
                drain()

    if isinstance(records, ReplayInputs) and records.bad:
        # straight to the store: a line that is no record has no received time of its own
        # (it is stamped now), so it does not feed the monitor's dead-letter stream
        now = int(time.time() * 1000)
        summary.bad_inputs.extend(records.bad)
        sink.dead_letters.extend(bad.dead_letter(now) for bad in records.bad)
        summary.dead_letters += len(records.bad)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for record in records:
            key = record.received_time if record.arrival is None else record.arrival
            if key != group_key:
                end_arrival()
                group_key = key
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
            group.extend(result.events)
            dead_letters.extend(result.dead_letters)
            summary.events += len(result.events)
            summary.dead_letters += len(result.dead_letters)
            summary.per_partner[record.partner] += len(result.events)
            if result.gaps:
                summary.gaps.update(f"{record.partner}:{code}" for code in result.gaps)
            if result.empty and not result.events:
                summary.empty_payloads += 1
            if progress is not None:
                progress(1)
        end_arrival()
        drain(final=True)
    finally:
        if enabled:
            gc.enable()
    stats = pipe.stats
    summary.accepted = stats["accepted"]
    summary.duplicates = stats["duplicates"]
    summary.too_late = stats["too_late"] + stats["package_closed"] + stats["invalid_time"]
    summary.packages = len(pipe.packages)
    summary.allowed_lateness_ms = pipe.allowed_lateness_ms
    summary.seconds = time.perf_counter() - started
    return summary


def result_snapshot(store: Store) -> dict[str, Any]:
    """What a run left in the store, in a form two runs can be compared by (``==``).

    Metric windows are summed over shards (so one worker equals two), outcomes and events are
    taken at their latest version, versions and shard numbers are left out. A window whose
    totals are all zero is left out too: it changes no query result, and whether one exists
    depends on when decisions were taken and retracted (a package decided late by absence on
    one shard's watermark, then delivered on time), not on the input.
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
    plain_windows = [tuple(_plain(v) for v in row) for row in windows]
    return {"metric_windows": [row for row in plain_windows if any(row[len(keys):])],
            "package_outcomes": [tuple(_plain(v) for v in row) for row in outcomes],
            "canonical_events": events, "dead_letters": dead_letters}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, v) for k, v in value.items() if v))
    return value
