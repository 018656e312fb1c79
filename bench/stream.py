"""Benchmark: the stream driver against its baselines, in one run on one broker and one topic set.

A Kafka broker is started from the project's jars in a temporary folder; a simulated feed (JSON
partners) is produced once to the ``raw.<partner>`` topics. Then, over the same messages:

- **(a) ceiling**: a bare confluent-kafka loop, ``consume(1000)`` + ``json.loads`` of each payload;
- **(b) bare Faust**: a Faust agent (``stream.take(1000)``) that only iterates and counts
  (a separate process, like a worker);
- **(c) carrierwatch**: ``carrierwatch worker`` + ``carrierwatch sink`` processes end to end —
  transform, Avro, ``events.canonical``, the core pipelines with checkpoints, ``cw.sink``, chDB —
  timed from the worker's partition assignment until the sink committed its last write (and the
  track stage committed its last checkpoint); with the CPU time the worker and the sink
  processes used by then, per canonical event (start-up included: a robust figure on a shared
  machine, where the wall-clock rates follow the load of the moment), and the CPU time they used
  from the worker's assignment on (start-up excluded: the steady cost, the figure for sizing);
- **(c2) carrierwatch, stages in separate processes**: the same end to end with
  ``carrierwatch worker --stages normalize`` + ``carrierwatch worker --stages track`` +
  ``carrierwatch sink`` (each stage with an interpreter of its own), over a second copy of the
  same raw feed produced up front (namespace ``bench2``: its own topics, groups and chDB), run
  after (c) and its freshness phase, once (c)'s processes have stopped; timed from the later of
  the two workers' assignments (the Faust app of the normalize worker starts seconds after the
  track worker) until the sink and the track stage committed their last offsets, with the CPU
  time of each process per canonical event.

Before that, **Avro costs** on the feed's canonical events, single-threaded, best of five
interleaved rounds: µs per event to serialize and to deserialize with confluent-kafka's
``AvroSerializer``/``AvroDeserializer`` (the serde of earlier versions) and with
:class:`~carrierwatch.registry.serde.CanonicalSerde` (fastavro schemaless with the Confluent
framing), over the same events and the same registry.

**Upper bound of (c) on this machine**: the bare agent's CPU time per event (its consumption
of the raw feed, which (c) does too), plus one Avro serialization and one deserialization
(:class:`~carrierwatch.registry.serde.CanonicalSerde`, measured above), plus the CPU time of the
core itself on the same feed in this process (:func:`carrierwatch.replay.run_replay`:
transform, pipeline and the chDB writes), spread perfectly over every core the bench may use.
The broker, the ``events.canonical`` and ``cw.sink`` round trips, the checkpoints and the sink's
decoding are taken as free, so no worker made of these parts can be faster; the bench also
prints the largest core cost per event under which the bound would reach (b).

Throughput is counted in canonical events (the payloads carry several each): messages/s × events
per payload for (a) and (b). Then **freshness**: a second feed is produced live at half of (c)'s
rate, each payload stamped with its produce time as receive time; the sink's
``carrierwatch_sink_event_freshness_seconds`` histogram (receive → written to chDB, i.e.
queryable) gives p50/p99 (interpolated within buckets, as Prometheus' ``histogram_quantile``).
Both feeds are simulated over the days just before today, so the live feed's receive times follow
the first feed's without a months-long silence (the sink's anomaly monitor would score every
empty 5-minute window of such a gap before writing on).

The last line printed is one JSON object with all figures.

Usage: ``.venv/bin/python bench/stream.py [--days 2] [--packages-per-day 1500] [--partners 5] [--keep]``
(the temporary work folder, ~0.5 GB, is removed at the end unless ``--keep``)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
JSON_PARTNERS = ("easypost", "fedex", "ups", "aftership", "metro_courier", "dhl", "shippo", "usps")


def _faust_bare(topics: list[str], expected: int, bootstrap: str, out: str) -> None:
    """Role (b): count messages with a bare Faust agent; write the timing to ``out``; exit."""
    import faust

    # Faust's data dir (<app id>-data, by default in the current directory) goes next to the
    # timing file, in the bench's temporary work folder
    app_id = f"bench-bare-{os.getpid()}"
    app = faust.App(app_id, broker=f"kafka://{bootstrap}", datadir=str(Path(out).parent / app_id),
                    topic_allow_declare=False, topic_disable_leader=True, web_enabled=False,
                    value_serializer="raw", consumer_auto_offset_reset="earliest",
                    broker_max_poll_records=1000, stream_buffer_maxsize=4000)
    topic = app.topic(*topics, value_serializer="raw")
    state = {"count": 0, "first": 0.0, "first_cpu": 0.0}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for batch in stream.take(1000, within=0.2):
            if not state["count"]:
                state["first"] = time.perf_counter()
                state["first_cpu"] = time.process_time()
            state["count"] += len(batch)
            if state["count"] >= expected:
                elapsed = time.perf_counter() - state["first"]
                cpu = time.process_time() - state["first_cpu"]
                Path(out).write_text(json.dumps({"messages": state["count"], "seconds": elapsed,
                                                 "cpu_seconds": cpu}))
                os._exit(0)

    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


def _ceiling(topics: list[str], expected: int, bootstrap: str) -> tuple[int, float]:
    """Role (a): consume(1000) + json.loads; (messages, seconds from first to last)."""
    from confluent_kafka import Consumer

    consumer: Any = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ceiling-{os.getpid()}",
                              "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe(topics)
    count = 0
    first = 0.0
    loads = json.loads
    deadline = time.monotonic() + 300
    try:
        while count < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    if not count:
                        first = time.perf_counter()
                    loads(message.value())
                    count += 1
        return count, time.perf_counter() - first
    finally:
        consumer.close()


def _serde_costs(events: list[Any], data_dir: Path) -> dict[str, float]:
    """µs per event: confluent-kafka's Avro classes vs CanonicalSerde, on the same events."""
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from carrierwatch.registry.client import registry_client
    from carrierwatch.registry.serde import CanonicalSerde, event_to_record, record_to_event
    from carrierwatch.settings import Settings

    def best(runs: dict[str, Any]) -> dict[str, float]:
        """Best of five rounds each, the contenders interleaved (the machine's load drifts)."""
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(5):
            for name, run in runs.items():
                begin = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - begin)
        return {name: round(min(t) / len(events) * 1e6, 2) for name, t in times.items()}

    with registry_client(Settings(data_dir=data_dir)) as client:
        serde = CanonicalSerde(client)
        context = SerializationContext(serde.topic, MessageField.VALUE)
        strategy = {"subject.name.strategy.type": "TOPIC"}
        serializer = AvroSerializer(client, serde.schema.schema_str, to_dict=event_to_record,
                                    conf=strategy)
        deserializer = AvroDeserializer(client, serde.schema.schema_str, conf=strategy)
        encoded = [serializer(e, context) for e in events]
        if serde.serialize_many(events) != encoded or serde.deserialize_many(encoded) != events:
            raise SystemExit("CanonicalSerde disagrees with confluent-kafka's Avro classes")
        return {
            **best({"confluent_serialize_us": lambda: [serializer(e, context) for e in events],
                    "serde_serialize_us": lambda: serde.serialize_many(events)}),
            **best({"confluent_deserialize_us":
                    lambda: [record_to_event(deserializer(d, None)) for d in encoded],
                    "serde_deserialize_us": lambda: serde.deserialize_many(encoded)}),
        }


def _core_cpu(records: list[Any], data_dir: Path) -> float:
    """CPU seconds of the whole core in this process over ``records``: the replay driver
    (transform, pipeline, chDB store) into a fresh store, the work a worker and its sink share."""
    from carrierwatch.replay import pipeline_for, run_replay
    from carrierwatch.settings import Settings
    from carrierwatch.storage import open_store
    from carrierwatch.transformers.base import clear_parse_caches
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry()
    with open_store(Settings(data_dir=data_dir), migrate=True) as store:
        clear_parse_caches()
        cpu = time.process_time()
        run_replay(records, store, registry, pipeline=pipeline_for(registry))
        return time.process_time() - cpu


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus ``histogram_quantile`` over cumulative ``(upper bound, count)`` buckets."""
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, cumulative
    return lower


def _scrape_freshness(port: int) -> tuple[list[tuple[float, float]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    buckets = []
    count = 0.0
    for line in text.splitlines():
        if line.startswith("carrierwatch_sink_event_freshness_seconds_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("carrierwatch_sink_event_freshness_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    return sorted(buckets), count


def _wait_marker(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """The time (epoch seconds, group ``at``) of the first line of ``log`` matching ``pattern``
    whose group ``count``, if the pattern has one, is positive."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        for match in re.finditer(pattern, text):
            found = match.groupdict()
            if int(found.get("count") or 1) > 0:
                return float(found["at"])
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"{log.stem} did not start:\n{text[-3000:]}")
        time.sleep(0.05)


def _split_stages(bootstrap: str, work: Path, topology: Any, raw_topics: list[str], events: int,
                  processes: list[subprocess.Popen[bytes]], stack: ExitStack) -> dict[str, float]:
    """(c2): normalize-only + track-only workers + sink over ``topology``'s pre-produced raw
    topics; events/s and CPU seconds of each process.

    The two workers share a schema registry served by this process (each worker's embedded
    registry is exclusive to its data dir, as in any deployment of several workers); each
    process has a data dir of its own.
    """
    from carrierwatch.registry.server import EmbeddedSchemaRegistry
    from carrierwatch.streams.broker import die_with_parent
    from carrierwatch.streams.kafka import wait_caught_up

    registry = stack.enter_context(EmbeddedSchemaRegistry(work / "registry2" / "registry.json"))
    commands = {"sink2": ["sink"], "normalize2": ["worker", "--stages", "normalize"],
                "track2": ["worker", "--stages", "track"]}
    started: dict[str, subprocess.Popen[bytes]] = {}
    for name, command in commands.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
        env.update({"CARRIERWATCH_KAFKA_BOOTSTRAP": bootstrap,
                    "CARRIERWATCH_SCHEMA_REGISTRY_URL": registry.url,
                    "CARRIERWATCH_DATA_DIR": str(work / f"data-{name}"),
                    "CARRIERWATCH_STREAM_NAMESPACE": topology.config.namespace})
        with (work / f"{name}.log").open("wb") as log:
            started[name] = subprocess.Popen(
                [sys.executable, "-m", "carrierwatch.streams.cli", *command, "-l", "info"],
                env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        processes.append(started[name])
    begin = max(
        _wait_marker(work / "track2.log",
                     r"assigned canonical partitions \[0, 1, 2\] at (?P<at>[0-9.]+)",
                     started["track2"], 120),
        _wait_marker(work / "normalize2.log",
                     r"normalize: assigned (?P<count>\d+) raw partitions at (?P<at>[0-9.]+)",
                     started["normalize2"], 120))
    at_start = {name: _cpu_seconds(proc.pid) for name, proc in started.items()}
    wait_caught_up(bootstrap, topology.app_id, raw_topics, timeout=900, poll=0.2)
    wait_caught_up(bootstrap, topology.track_group, [topology.events], timeout=900, poll=0.2)
    wait_caught_up(bootstrap, topology.sink_group, [topology.sink], timeout=900, poll=0.2)
    elapsed = time.time() - begin
    at_end = {name: _cpu_seconds(proc.pid) for name, proc in started.items()}
    return {"rate": events / elapsed, "seconds": elapsed, **at_end,
            **{f"{name}_running": at_end[name] - at_start[name] for name in started}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--packages-per-day", type=float, default=1500)
    parser.add_argument("--partners", type=int, default=5)
    parser.add_argument("--freshness-seconds", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (broker data, logs, chDB) for inspection")
    parser.add_argument("--role", choices=["bench", "faust-bare"], default="bench",
                        help=argparse.SUPPRESS)
    parser.add_argument("--topics", default="", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "faust-bare":
        _faust_bare(args.topics.split(","), args.expect, args.bootstrap, args.out)
        return

    from carrierwatch.replay import iter_inputs
    from carrierwatch.streams.broker import KafkaBroker, die_with_parent, find_free_ports
    from carrierwatch.streams.kafka import OutputProducer, produce_raw, wait_caught_up
    from carrierwatch.streams.records import RECEIVED_TIME_HEADER
    from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics
    from carrierwatch.synthetic.simulator import simulate
    from carrierwatch.transformers.registry import load_registry

    work = Path(tempfile.mkdtemp(prefix="cw-bench-stream-"))
    registry = load_registry()
    partners = [p for p in JSON_PARTNERS if p in registry][:args.partners]
    # the simulated days end today: the live feed of the freshness phase (received "now") then
    # follows the first feed without a gap of months, which the sink's anomaly monitor would
    # spend minutes scoring window by empty window (a pause no real feed has)
    start = (datetime.now(UTC) - timedelta(days=args.days)).date()
    simulate(partners, days=args.days, seed=1, out_dir=work / "sim",
             packages_per_day=args.packages_per_day, start=start)
    records = list(iter_inputs([work / "sim"]))
    canonical = [e for r in records
                 for e in registry.get(r.partner).transform(r.body, r.received_time,
                                                            r.headers).events]
    events = len(canonical)
    per_payload = events / len(records)
    print(f"feed: {len(records)} payloads, {events} canonical events "
          f"({per_payload:.2f} per payload), partners {partners}", flush=True)
    avro = _serde_costs(canonical[:20_000], work / "serde")
    del canonical
    print(f"Avro µs/event: confluent-kafka serialize {avro['confluent_serialize_us']}, "
          f"deserialize {avro['confluent_deserialize_us']}; CanonicalSerde serialize "
          f"{avro['serde_serialize_us']}, deserialize {avro['serde_deserialize_us']}", flush=True)

    core_us = _core_cpu(records, work / "core") / events * 1e6
    print(f"core in-process (replay into chDB): {core_us:.1f} CPU µs per event", flush=True)

    broker = KafkaBroker(work / "kafka", heap="1g")
    broker.start(timeout=120)
    processes: list[subprocess.Popen[bytes]] = []
    stack = ExitStack()
    try:
        bootstrap = broker.bootstrap
        topology = Topology(StreamConfig(namespace="bench"), registry.ids())
        ensure_topics(bootstrap, topology.specs())
        produce_raw(bootstrap, {p: topology.raw(p) for p in registry.ids()}, records)
        raw_topics = [topology.raw(p) for p in partners]
        # the same feed once more for (c2), in topics, groups and a store of its own
        split_topology = Topology(StreamConfig(namespace="bench2"), registry.ids())
        ensure_topics(bootstrap, split_topology.specs())
        produce_raw(bootstrap, {p: split_topology.raw(p) for p in registry.ids()}, records)

        # (a) ceiling
        count, seconds = _ceiling(raw_topics, len(records), bootstrap)
        ceiling = count / seconds * per_payload
        print(f"(a) confluent-kafka consume+json.loads: {count / seconds:,.0f} msg/s = "
              f"{ceiling:,.0f} events/s", flush=True)

        # (b) bare Faust agent
        out = work / "faust-bare.json"
        done = subprocess.run(
            [sys.executable, __file__, "--role", "faust-bare", "--topics", ",".join(raw_topics),
             "--expect", str(len(records)), "--bootstrap", bootstrap, "--out", str(out)],
            timeout=600, capture_output=True, check=False)
        if not out.exists():
            raise SystemExit(f"bare Faust run failed: {done.stderr.decode()[-2000:]}")
        bare_doc = json.loads(out.read_text())
        bare_msgs = bare_doc["messages"] / bare_doc["seconds"]
        bare = bare_msgs * per_payload
        bare_us = bare_doc["cpu_seconds"] / bare_doc["messages"] / per_payload * 1e6
        print(f"(b) bare Faust agent: {bare_msgs:,.0f} msg/s = {bare:,.0f} events/s "
              f"({bare_us:.1f} CPU µs per event)", flush=True)
        # An upper bound of (c) on this machine: every canonical event costs at least the bare
        # agent's consumption, one Avro serialization and one deserialization (CanonicalSerde)
        # and the core's work, spread perfectly over all cores, with the broker, the canonical
        # and sink topics, the checkpoints and the sink's own decoding taken as free.
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
        floor_us = bare_us + avro["serde_serialize_us"] + avro["serde_deserialize_us"] + core_us
        bound = cores * 1e6 / floor_us
        core_budget_us = cores * 1e6 / bare - (floor_us - core_us)
        print(f"upper bound of (c) on {cores} cores: {bound:,.0f} events/s = "
              f"{bound / bare:.2f} x (b), {bound / ceiling:.2f} x (a) (at least {floor_us:.1f} "
              f"CPU µs per event: Faust {bare_us:.1f} + Avro "
              f"{avro['serde_serialize_us'] + avro['serde_deserialize_us']:.1f}"
              f" + core {core_us:.1f}); " + (
                  f"(c) = (b) would need the core's work under {core_budget_us:.1f} µs per event"
                  if core_budget_us > 0 else "(c) = (b) is out of reach even with a free core"),
              flush=True)

        # (c) carrierwatch worker + sink
        metrics_port = find_free_ports(1)[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
        env.update({"CARRIERWATCH_KAFKA_BOOTSTRAP": bootstrap,
                    "CARRIERWATCH_DATA_DIR": str(work / "data"),
                    "CARRIERWATCH_STREAM_NAMESPACE": "bench"})
        logs = {name: (work / f"{name}.log").open("wb") for name in ("sink", "worker")}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "carrierwatch.streams.cli", "sink", "-l", "info",
             "--web-port", str(metrics_port)], env=env, stdout=logs["sink"],
            stderr=subprocess.STDOUT, preexec_fn=die_with_parent))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "carrierwatch.streams.cli", "worker", "-l", "info"],
            env=env, stdout=logs["worker"], stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent))
        started = None
        deadline = time.monotonic() + 120
        while started is None:
            text = (work / "worker.log").read_text(errors="replace")
            marker = "assigned canonical partitions [0, 1, 2] at "
            if marker in text:
                started = float(text.split(marker, 1)[1].split()[0])
                # CPU spent on start-up (imports, store, registry, group join) until now
                startup_cpu = [_cpu_seconds(proc.pid) for proc in processes]
            elif time.monotonic() > deadline or processes[-1].poll() is not None:
                raise SystemExit(f"worker did not start:\n{text[-3000:]}")
            time.sleep(0.05)
        wait_caught_up(bootstrap, topology.app_id, raw_topics, timeout=900, poll=0.2)
        wait_caught_up(bootstrap, topology.track_group, [topology.events], timeout=900, poll=0.2)
        wait_caught_up(bootstrap, topology.sink_group, [topology.sink], timeout=900, poll=0.2)
        elapsed = time.time() - started
        worker_rate = events / elapsed
        sink_cpu, worker_cpu = (_cpu_seconds(proc.pid) for proc in processes)
        sink_running, worker_running = sink_cpu - startup_cpu[0], worker_cpu - startup_cpu[1]
        normalize_lag = _wait_marker(
            work / "worker.log",
            r"normalize: assigned (?P<count>\d+) raw partitions at (?P<at>[0-9.]+)",
            processes[-1], 5) - started
        print(f"(c) carrierwatch worker+sink end to end: {worker_rate:,.0f} events/s "
              f"({elapsed:.1f} s); CPU µs per event: worker {worker_cpu / events * 1e6:.0f}, "
              f"sink {sink_cpu / events * 1e6:.0f} (start-up included; from the assignment on: "
              f"worker {worker_running / events * 1e6:.0f}, sink "
              f"{sink_running / events * 1e6:.0f}); the normalize agent was "
              f"assigned {normalize_lag:.2f} s after the track stage", flush=True)

        # freshness at half of (c)'s rate
        before, before_count = _scrape_freshness(metrics_port)
        rate = worker_rate / 2 / per_payload  # payloads/s
        # a second feed (other seed: new packages, so no event is a duplicate the core drops)
        simulate(partners, days=1, seed=2, out_dir=work / "sim-live",
                 packages_per_day=args.packages_per_day,
                 start=(datetime.now(UTC) - timedelta(days=1)).date())
        fresh = list(iter_inputs([work / "sim-live"]))
        producer = OutputProducer(bootstrap, **{"linger.ms": 1})
        begin = time.perf_counter()
        sent = 0
        while time.perf_counter() - begin < args.freshness_seconds and sent < len(fresh):
            due = int((time.perf_counter() - begin) * rate)
            while sent < min(due, len(fresh)):
                record = fresh[sent]
                headers = [(k, str(v).encode()) for k, v in record.headers.items()]
                headers.append((RECEIVED_TIME_HEADER, str(int(time.time() * 1000)).encode()))
                producer.produce(topology.raw(record.partner), record.body, None,
                                 headers=headers)
                sent += 1
            producer.poll()
            time.sleep(0.002)
        producer.flush()
        wait_caught_up(bootstrap, topology.app_id, raw_topics, timeout=300, poll=0.2)
        wait_caught_up(bootstrap, topology.track_group, [topology.events], timeout=300, poll=0.2)
        wait_caught_up(bootstrap, topology.sink_group, [topology.sink], timeout=300, poll=0.2)
        after, after_count = _scrape_freshness(metrics_port)
        old = dict(before)
        delta = [(bound, count_ - old.get(bound, 0.0)) for bound, count_ in after]
        p50, p99 = _quantile(delta, 0.5), _quantile(delta, 0.99)
        print(f"freshness at {rate * per_payload:,.0f} events/s ({sent} payloads live, "
              f"{after_count - before_count:.0f} events): p50 {p50:.3f} s, p99 {p99:.3f} s",
              flush=True)

        # (c2) the stages in separate processes, once (c)'s processes have stopped
        for proc in processes:
            proc.send_signal(signal.SIGTERM)
        for proc in processes:
            proc.wait(120)
        split = _split_stages(bootstrap, work, split_topology,
                              [split_topology.raw(p) for p in partners], events, processes,
                              stack)
        split_rate = split["rate"]
        split_cpu = split["normalize2"] + split["track2"]
        print(f"(c2) normalize-only + track-only workers + sink end to end: {split_rate:,.0f} "
              f"events/s ({split['seconds']:.1f} s) = {split_rate / worker_rate:.2f} x (c); "
              f"CPU µs per event: workers {split_cpu / events * 1e6:.0f} (normalize "
              f"{split['normalize2'] / events * 1e6:.0f}, track "
              f"{split['track2'] / events * 1e6:.0f}), sink "
              f"{split['sink2'] / events * 1e6:.0f}; from the assignments on: normalize "
              f"{split['normalize2_running'] / events * 1e6:.0f}, track "
              f"{split['track2_running'] / events * 1e6:.0f}, sink "
              f"{split['sink2_running'] / events * 1e6:.0f}", flush=True)
        figures = {
            "payloads": len(records), "events": events, "events_per_payload": round(per_payload, 3),
            "ceiling_msgs_per_s": round(count / seconds), "ceiling_events_per_s": round(ceiling),
            "faust_bare_msgs_per_s": round(bare_msgs), "faust_bare_events_per_s": round(bare),
            "worker_events_per_s": round(worker_rate),
            "worker_cpu_us_per_event": round(worker_cpu / events * 1e6),
            "sink_cpu_us_per_event": round(sink_cpu / events * 1e6),
            "worker_running_cpu_us_per_event": round(worker_running / events * 1e6),
            "sink_running_cpu_us_per_event": round(sink_running / events * 1e6),
            "worker_vs_faust_bare_events": round(worker_rate / bare, 3),
            "worker_vs_faust_bare_msgs": round(worker_rate / bare_msgs, 3),
            "worker_vs_ceiling_events": round(worker_rate / ceiling, 3),
            "freshness_rate_events_per_s": round(rate * per_payload),
            "freshness_p50_s": round(p50, 3), "freshness_p99_s": round(p99, 3),
            **avro,
            "faust_bare_cpu_us_per_event": round(bare_us, 2),
            "core_cpu_us_per_event": round(core_us, 2),
            "cores": cores, "bound_cpu_us_per_event": round(floor_us, 2),
            "bound_events_per_s": round(bound), "bound_vs_faust_bare": round(bound / bare, 3),
            "bound_vs_ceiling": round(bound / ceiling, 3),
            "core_budget_for_faust_bare_us": round(core_budget_us, 2),
            "goal_worker_ge_faust_bare": worker_rate >= bare,
            "goal_worker_ge_25pct_ceiling": worker_rate >= 0.25 * ceiling,
            "goal_p99_lt_2s": p99 < 2.0,
            "worker_normalize_lag_s": round(normalize_lag, 2),
            "split_events_per_s": round(split_rate),
            "split_cpu_us_per_event": round(split_cpu / events * 1e6),
            "split_normalize_cpu_us_per_event": round(split["normalize2"] / events * 1e6),
            "split_track_cpu_us_per_event": round(split["track2"] / events * 1e6),
            "split_sink_cpu_us_per_event": round(split["sink2"] / events * 1e6),
            **{f"split_{name[:-1]}_running_cpu_us_per_event": round(split[f"{name}_running"]
                                                                    / events * 1e6)
               for name in ("normalize2", "track2", "sink2")},
            "split_vs_worker": round(split_rate / worker_rate, 3),
            "split_vs_faust_bare_events": round(split_rate / bare, 3),
            "split_vs_faust_bare_msgs": round(split_rate / bare_msgs, 3),
            "split_vs_ceiling_events": round(split_rate / ceiling, 3),
            "goal_split_ge_faust_bare": split_rate >= bare,
            "goal_split_ge_25pct_ceiling": split_rate >= 0.25 * ceiling,
        }
        print(json.dumps(figures))
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        stack.close()
        broker.stop()
        if args.keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
