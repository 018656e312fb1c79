"""Benchmark: ``CanonicalSerde`` against the plain fastavro path it replaced, in one run.

Over the canonical events of a simulated feed (the JSON partners of ``bench/stream.py``), single
threaded, best of ``--rounds`` interleaved rounds (the machine's load drifts, both contenders
see it alike), µs per event:

- **serialize**: *plain* = the Confluent header + fastavro's ``schemaless_writer`` of
  :func:`~carrierwatch.registry.serde.event_to_record` (fastavro chooses every union branch,
  validating the ``location`` record to do so), against :meth:`CanonicalSerde.serialize` (the
  ``["null", record]`` branches named in tuple notation). The bytes are checked equal first.
- **deserialize**: *plain* = fastavro's ``schemaless_reader`` +
  :func:`~carrierwatch.registry.serde.record_to_event` (keyword construction, time fields
  checked one by one), against :meth:`CanonicalSerde.deserialize` (positional construction when
  the writer schema is the current one). The events are checked equal first.

The last line printed is one JSON object.

Usage: ``.venv/bin/python bench/serde.py [--days 1] [--packages-per-day 1500] [--events 20000]
[--rounds 7]``
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro

from carrierwatch.core.model import CanonicalEvent
from carrierwatch.registry.client import registry_client
from carrierwatch.registry.serde import (
    CanonicalSerde,
    event_to_record,
    parse_without_time_types,
    record_to_event,
)
from carrierwatch.replay import iter_inputs
from carrierwatch.settings import Settings
from carrierwatch.synthetic.simulator import simulate
from carrierwatch.transformers.registry import load_registry

JSON_PARTNERS = ("easypost", "fedex", "ups", "aftership", "metro_courier")


def _feed_events(days: int, packages_per_day: float, work: Path) -> list[CanonicalEvent]:
    registry = load_registry()
    partners = [p for p in JSON_PARTNERS if p in registry]
    start = (datetime.now(UTC) - timedelta(days=days)).date()
    simulate(partners, days=days, seed=1, out_dir=work / "sim",
             packages_per_day=packages_per_day, start=start)
    return [e for r in iter_inputs([work / "sim"])
            for e in registry.get(r.partner).transform(r.body, r.received_time, r.headers).events]


def _best(runs: dict[str, Callable[[], object]], rounds: int, units: int) -> dict[str, float]:
    """µs per unit of each workload: best of ``rounds``, the workloads interleaved."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            gc.collect()
            begin = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - begin)
    return {name: round(min(t) / units * 1e6, 2) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--packages-per-day", type=float, default=1500)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="cw-bench-serde-") as tmp:
        work = Path(tmp)
        events = _feed_events(args.days, args.packages_per_day, work)[:args.events]
        with registry_client(Settings(data_dir=work / "data")) as client:
            serde = CanonicalSerde(client)
            parsed = parse_without_time_types(serde.schema.schema_dict)
            header = serde.serialize(events[0])[:5]
            writer = fastavro.schemaless_writer
            reader = fastavro.schemaless_reader

            def plain_serialize(event: CanonicalEvent) -> bytes:
                out = io.BytesIO()
                out.write(header)
                writer(out, parsed, event_to_record(event))
                return out.getvalue()

            def plain_deserialize(data: bytes) -> CanonicalEvent:
                body = io.BytesIO(data)
                body.seek(5)
                record: Any = reader(body, parsed, None)
                return record_to_event(record)

            encoded = [plain_serialize(e) for e in events]
            if serde.serialize_many(events) != encoded:
                raise SystemExit("CanonicalSerde.serialize disagrees with plain fastavro")
            decoded = serde.deserialize_many(encoded)
            if decoded != events or [plain_deserialize(d) for d in encoded] != events:
                raise SystemExit("CanonicalSerde.deserialize disagrees with plain fastavro")
            figures = {
                "events": len(events),
                "with_location": sum(e.location is not None for e in events),
                **_best({"plain_serialize_us": lambda: [plain_serialize(e) for e in events],
                         "serde_serialize_us": lambda: serde.serialize_many(events)},
                        args.rounds, len(events)),
                **_best({"plain_deserialize_us": lambda: [plain_deserialize(d) for d in encoded],
                         "serde_deserialize_us": lambda: serde.deserialize_many(encoded)},
                        args.rounds, len(events)),
            }
    figures["serialize_speedup"] = round(figures["plain_serialize_us"]
                                         / figures["serde_serialize_us"], 3)
    figures["deserialize_speedup"] = round(figures["plain_deserialize_us"]
                                           / figures["serde_deserialize_us"], 3)
    print(f"{figures['events']} events ({figures['with_location']} with a location), µs per "
          f"event: serialize plain {figures['plain_serialize_us']} → serde "
          f"{figures['serde_serialize_us']}; deserialize plain {figures['plain_deserialize_us']} "
          f"→ serde {figures['serde_deserialize_us']}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
