"""From what the core produces to what the store keeps: one adapter for every driver.

The replay driver and the Faust worker both turn a :class:`~carrierwatch.core.pipeline.PipelineOutput`
(plus dead letters and raw payloads) into :class:`SinkBatch` — rows per table — and write it with
:func:`write_batch`. Every table is keyed deterministically (ReplacingMergeTree), so writing the same
batch twice changes no query result: that is what makes at-least-once delivery safe.

A batch also travels between processes (the worker's sink topic), typed rows and all, as a restricted
pickle (:func:`carrierwatch.streams.records.encode_sink_batch`), or as JSON: :meth:`SinkBatch.to_json`
and :meth:`SinkBatch.from_json` keep it lossless (times as epoch milliseconds, bytes as base64).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from carrierwatch.core.model import CanonicalEvent, DeadLetter

if TYPE_CHECKING:
    from carrierwatch.core.pipeline import PackageOutcomeRow, PipelineOutput
    from carrierwatch.core.windows import MetricWindowRow
    from carrierwatch.storage.base import Store

__all__ = ["TABLE_ORDER", "SinkBatch", "write_batch"]

# Written in this order: facts first, derived rows last, so a crash between tables never leaves
# metrics that point at events the store does not have.
TABLE_ORDER = ("raw_events", "dead_letters", "canonical_events", "package_outcomes",
               "metric_windows", "anomalies", "alerts", "heartbeats")


@dataclass
class SinkBatch:
    """Rows to write, per table. Events and dead letters stay typed until they are written.

    Package outcomes and metric windows are dict rows in :attr:`rows`, or, added with
    ``add_output(output, typed=True)`` (both drivers), typed rows in :attr:`outcomes` and
    :attr:`windows`, written column by column without building a dict or a datetime per row
    (several times cheaper). :meth:`to_json` turns typed rows into dict rows.
    """

    events: list[CanonicalEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    outcomes: list[PackageOutcomeRow] = field(default_factory=list)
    windows: list[MetricWindowRow] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.events) + len(self.dead_letters) + sum(map(len, self.rows.values()))
                + len(self.outcomes) + len(self.windows))

    def add_output(self, output: PipelineOutput, *, typed: bool = False) -> None:
        """Add what one pipeline call produced (accepted and too-late events are both kept).

        ``typed``: keep outcome and window rows as objects (see the class docstring).
        """
        self.events.extend(output.events)
        self.events.extend(record.event for record in output.too_late)
        if typed:
            self.outcomes.extend(output.outcomes)
            self.windows.extend(output.windows)
            return
        if output.outcomes:
            self.rows.setdefault("package_outcomes", []).extend(o.to_row() for o in output.outcomes)
        if output.windows:
            self.rows.setdefault("metric_windows", []).extend(w.to_row() for w in output.windows)

    def compact(self) -> None:
        """Keep only the latest version of each typed outcome and window row (by row key).

        Rows are replacement rows (the store keeps the highest version per key), so a row that a
        later one of the same key supersedes changes no query result: dropping it before the
        write only saves the work. Dict rows and events are left as they are.
        """
        self.outcomes = _latest(self.outcomes, _outcome_key)
        self.windows = _latest(self.windows, _window_key)

    def clear(self) -> None:
        """Empty the batch (after it was written)."""
        self.events.clear()
        self.dead_letters.clear()
        self.rows.clear()
        self.outcomes.clear()
        self.windows.clear()

    def add_rows(self, table: str, rows: Iterable[dict[str, Any]]) -> None:
        self.rows.setdefault(table, []).extend(rows)

    def extend(self, other: SinkBatch) -> None:
        self.events.extend(other.events)
        self.dead_letters.extend(other.dead_letters)
        for table, rows in other.rows.items():
            self.rows.setdefault(table, []).extend(rows)
        self.outcomes.extend(other.outcomes)
        self.windows.extend(other.windows)

    def to_json(self) -> bytes:
        from carrierwatch.registry.serde import event_to_record

        rows = {t: list(r) for t, r in self.rows.items()}
        if self.outcomes:
            rows.setdefault("package_outcomes", []).extend(o.to_row() for o in self.outcomes)
        if self.windows:
            rows.setdefault("metric_windows", []).extend(w.to_row() for w in self.windows)
        return orjson.dumps({
            "events": [event_to_record(e) for e in self.events],
            "dead_letters": [_dead_letter_record(d) for d in self.dead_letters],
            "rows": {t: [_jsonable(r) for r in table_rows] for t, table_rows in rows.items()},
        })

    @classmethod
    def from_json(cls, data: bytes) -> SinkBatch:
        from carrierwatch.registry.serde import record_to_event

        doc = orjson.loads(data)
        return cls(
            events=[record_to_event(r) for r in doc["events"]],
            dead_letters=[DeadLetter(d["partner_id"], d["received_time"], d["error"], d["path"],
                                     base64.b64decode(d["raw"])) for d in doc["dead_letters"]],
            rows={t: [_restore(r) for r in rows] for t, rows in doc["rows"].items()},
        )


_outcome_key = attrgetter("partner_id", "package_id")
_window_key = attrgetter("partner_id", "region", "service_level", "granularity", "window_start",
                         "shard")
_version = attrgetter("version")

_Row = TypeVar("_Row", "PackageOutcomeRow", "MetricWindowRow")


def _latest(rows: list[_Row], key: Callable[[_Row], Any]) -> list[_Row]:
    """The highest version of each key among ``rows`` (the later row on a tie).

    Rows of one pipeline come in version order, so the stable sort is a linear check.
    """
    return list({key(row): row for row in sorted(rows, key=_version)}.values())


def write_batch(store: Store, batch: SinkBatch) -> int:
    """Write a batch (idempotent); the number of rows written."""
    written = 0
    for table in TABLE_ORDER:
        if table == "dead_letters" and batch.dead_letters:
            written += store.insert_dead_letters(batch.dead_letters)
        elif table == "canonical_events" and batch.events:
            written += store.insert_events(batch.events)
        elif batch.rows.get(table):
            written += store.insert(table, batch.rows[table])
        if table == "package_outcomes" and batch.outcomes:
            written += store.insert_outcomes(batch.outcomes)
        elif table == "metric_windows" and batch.windows:
            written += store.insert_windows(batch.windows)
    for table in batch.rows.keys() - set(TABLE_ORDER):
        written += store.insert(table, batch.rows[table])
    return written


def _dead_letter_record(dead: DeadLetter) -> dict[str, Any]:
    return {"partner_id": dead.partner_id, "received_time": dead.received_time,
            "error": dead.error, "path": dead.path, "raw": base64.b64encode(dead.raw).decode()}


_DATETIME_TAG = "__datetime_ms__"
_PAIRS_TAG = "__pairs__"
_BIGINT_TAG = "__bigint__"


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A row JSON can carry losslessly: datetimes as epoch ms, maps whose keys are not strings
    (histograms, ``Map(UInt16, Int64)``) as key/value pairs, integers beyond 64 bits (``Int128``
    sums of squares) as decimal strings."""
    from datetime import datetime

    from carrierwatch.core.timeutil import to_ms

    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, datetime):
            out[key] = {_DATETIME_TAG: to_ms(value)}
        elif isinstance(value, dict) and any(not isinstance(k, str) for k in value):
            out[key] = {_PAIRS_TAG: [[k, v] for k, v in value.items()]}
        elif isinstance(value, int) and not -(2**63) <= value < 2**64:
            out[key] = {_BIGINT_TAG: str(value)}
        else:
            out[key] = value
    return out


def _restore(row: dict[str, Any]) -> dict[str, Any]:
    from datetime import UTC, datetime, timedelta

    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict) and _DATETIME_TAG in value:
            out[key] = epoch + timedelta(milliseconds=value[_DATETIME_TAG])
        elif isinstance(value, dict) and _PAIRS_TAG in value:
            out[key] = {k: v for k, v in value[_PAIRS_TAG]}
        elif isinstance(value, dict) and _BIGINT_TAG in value:
            out[key] = int(value[_BIGINT_TAG])
        else:
            out[key] = value
    return out


def batches(items: Sequence[SinkBatch]) -> SinkBatch:
    """Merge several batches into one."""
    merged = SinkBatch()
    for item in items:
        merged.extend(item)
    return merged
