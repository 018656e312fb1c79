"""The decision tables in the stream: a hook of the track stage and the dispatcher process.

**Hook** (:class:`StreamEscalations`): the track stage calls :meth:`StreamEscalations.observe`
once per partition and batch, after the batch's pipeline calls and before the sink batch is
queued (``WorkerRuntime.run``). It evaluates the tables on the batch's newly accepted events
and the open exceptions, adds the ``escalations`` rows to the sink batch (the sink writes
them, ReplacingMergeTree by escalation id) and queues one JSON message per escalation on the
``escalations`` topic (key: the escalation id) with the track stage's producer, which is
flushed before the stage commits. A re-run after a crash repeats the same calls and so the
same escalation ids.

**Dispatcher** (``carrierwatch escalations run``): consumes ``escalations``, hands each batch to
:class:`~carrierwatch.decisions.dispatch.Dispatcher` (the ledger executes an id once: webhook,
task under takeover, or dead letter), commits the offsets only afterwards, and serves
``carrierwatch_escalations_total`` and ``carrierwatch_manual_tasks_open`` on ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from carrierwatch.core.state import event_key
from carrierwatch.decisions.engine import Escalation, Escalator

if TYPE_CHECKING:
    from carrierwatch.core.pipeline import Pipeline
    from carrierwatch.decisions.dispatch import Dispatcher
    from carrierwatch.sink import SinkBatch

__all__ = ["StreamEscalations", "run_dispatcher", "stream_hook"]

log = logging.getLogger("carrierwatch.decisions")


class StreamEscalations:
    """The track stage's hook (see the module docstring)."""

    def __init__(self, escalator: Escalator, produce: Callable[..., None], topic: str) -> None:
        self.escalator = escalator
        self.produce = produce
        self.topic = topic

    def observe(self, pipeline: Pipeline, batch: SinkBatch) -> list[Escalation]:
        packages = pipeline.packages
        accepted = []  # the batch's events the package state holds (too-late ones are not)
        for event in batch.events:
            state = packages.get(event.package_id)
            if state is None:
                continue
            try:
                key = event_key(event.event_time, event.status, event.event_id)
            except ValueError:
                continue
            if state.has(key):
                accepted.append(event)
        decided = self.escalator.observe_events(pipeline, accepted)
        if decided:
            batch.add_rows("escalations", (e.to_row() for e in decided))
            for esc in decided:
                self.produce(self.topic, json.dumps(esc.to_json_dict()).encode(),
                             esc.escalation_id.encode())
        return decided


def stream_hook(runtime: Any) -> StreamEscalations | None:
    """The hook for a worker runtime (None when no decision table is configured)."""
    from carrierwatch.decisions.runtime import escalator_for

    partners = list(runtime.registry)
    escalator = escalator_for(runtime.settings, {p.id: p.spec.contract for p in partners},
                              [p.id for p in partners])
    if escalator is None:
        return None
    return StreamEscalations(escalator, lambda *a: runtime.track_output.produce(*a),
                             escalations_topic(runtime.topology))


def escalations_topic(topology: Any) -> str:
    return f"{topology.config.prefix}escalations"


def run_dispatcher(bootstrap: str, topic: str, group: str, dispatcher: Dispatcher, *,
                   partners: list[str], max_seconds: float | None = None,
                   stop: Callable[[], bool] = lambda: False, batch_size: int = 500) -> int:
    """Consume ``topic`` and dispatch until ``stop()`` or ``max_seconds``; messages handled."""
    from confluent_kafka import Consumer, KafkaException

    from carrierwatch.decisions.runtime import refresh_task_gauge

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    handled = 0
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    try:
        consumer.subscribe([topic])
        while not stop() and (deadline is None or time.monotonic() < deadline):
            messages = consumer.consume(batch_size, timeout=0.5)
            refresh_task_gauge(dispatcher.ledger, partners)
            if not messages:
                continue
            escalations: list[Escalation] = []
            for message in messages:
                if message.error() is not None:
                    raise KafkaException(message.error())
                value = message.value()
                try:
                    escalations.append(Escalation.from_json_dict(json.loads(value or b"")))
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("escalations[%d]@%d is no escalation (%s): skipped",
                              message.partition(), message.offset(), exc)
            summary = dispatcher.handle(escalations)
            if summary.delivered or summary.tasks or summary.dead or summary.recorded:
                log.info("escalations: %d delivered, %d tasks, %d dead, %d recorded, "
                         "%d already done", summary.delivered, summary.tasks, summary.dead,
                         summary.recorded, summary.skipped)
            consumer.commit(asynchronous=False)
            handled += len(messages)
    finally:
        consumer.close()
    return handled
