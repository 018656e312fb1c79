"""The heartbeat monitor in the sink (``carrierwatch sink``; off with ``--no-heartbeats``).

Why the sink: a heartbeat's latency ends when its canonical events are *stored*, and the sink is
the one process that stores them (chDB serves one process). ``carrierwatch heartbeat``
announces each heartbeat it sends as a ``pending`` row of the ``heartbeats`` table on the sink
topic (a JSON :class:`~carrierwatch.sink.SinkBatch`), so the announcement is written like any
row and reaches the monitor on the same path as the events. The monitor
(:class:`~carrierwatch.synthetic.heartbeat.HeartbeatMonitor`) sees every announcement
(:meth:`SinkHeartbeats.observe`), every write's synthetic events (:meth:`stored`, with the time
the write returned) and the clock (:meth:`tick`, from the sink's loop, so that deadlines pass
while nothing arrives — a stopped worker sends the sink nothing). Its verdict rows join the next
store write; its metrics live in the sink's registry. After a restart it rebuilds from the
``heartbeats`` table (:meth:`restore`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from carrierwatch.sink import SinkBatch
from carrierwatch.storage.base import Store

__all__ = ["SinkHeartbeats"]

log = logging.getLogger(__name__)

#: announcement statuses (what the sender writes); the monitor's own verdicts are not re-read
_ANNOUNCED = ("pending", "rejected")


class SinkHeartbeats:
    """Monitor + exporter + the rows waiting for the next write."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time, tick_seconds: float = 0.5) -> None:
        from carrierwatch.outputs.heartbeats import HeartbeatExporter
        from carrierwatch.synthetic.heartbeat import HeartbeatMonitor

        self.monitor = HeartbeatMonitor()
        self.exporter = HeartbeatExporter(registry)
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.rows: list[dict[str, Any]] = []
        self._ticked = 0.0

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def restore(self, store: Store) -> None:
        """Rebuild the monitor from the table's latest rows of the last hours."""
        try:
            rows = store.query_dicts(
                "SELECT * FROM heartbeats FINAL WHERE sent_at > now64(3) - INTERVAL 6 HOUR")
        except Exception as exc:  # a store without the table yet: start empty
            log.warning("heartbeats: cannot read the heartbeats table (%s); starting empty", exc)
            return
        self.monitor.restore(rows, self._now_ms())
        self.exporter.update(self.monitor)
        log.info("heartbeats: restored %d heartbeats of %d integrations", len(rows),
                 len(self.monitor.integrations))

    def observe(self, batch: SinkBatch) -> None:
        """Announcements among a consumed batch's ``heartbeats`` rows."""
        announced = [row for row in batch.rows.get("heartbeats", ())
                     if row.get("status") in _ANNOUNCED]
        if not announced:
            return
        now = self._now_ms()
        for row in announced:
            self.rows.extend(self.monitor.announce(row, now))
        self.exporter.update(self.monitor)

    def stored(self, batch: SinkBatch, done: float) -> None:
        """The synthetic events of a batch just written (``done``: when the write returned)."""
        synthetic = [(f"{e.partner_id}:{e.tracking_number}", e.event_id)
                     for e in batch.events if e.synthetic]
        if synthetic:
            self.rows.extend(self.monitor.stored(synthetic, round(done * 1000)))
            self.exporter.update(self.monitor)

    def tick(self) -> list[dict[str, Any]]:
        """Decide passed deadlines (at most every ``tick_seconds``); the rows to write now."""
        if self.clock() - self._ticked >= self.tick_seconds:
            self._ticked = self.clock()
            self.rows.extend(self.monitor.tick(self._now_ms()))
            self.exporter.update(self.monitor)
        rows, self.rows = self.rows, []
        return rows
