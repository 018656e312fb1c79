"""The development Kafka broker, exercised for real: produce, consume, metadata, restarts, CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from carrierwatch.streams.broker import (
    BrokerError,
    KafkaBroker,
    ToolMissingError,
    create_topic,
    ensure_jars,
    ensure_java,
    find_free_ports,
    kafka_dir,
    kafka_version,
)

KAFKA_HOME = kafka_dir()
TopicFactory = Callable[..., str]


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, msg: Message) -> Record:
        partition, offset = msg.partition(), msg.offset()
        assert partition is not None and offset is not None
        headers = msg.headers() or []
        assert isinstance(headers, list)
        return cls(partition, offset, msg.key(), msg.value(), tuple(headers))


def produce(bootstrap: str, topic: str, messages: Sequence[tuple[bytes, bytes]], *,
            partition: Sequence[int] | None = None,
            headers: Sequence[list[tuple[str, bytes]]] | None = None) -> list[tuple[int, int]]:
    """Produce with acks=all and return the (partition, offset) of every delivery, in order."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    delivered: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def report(index: int) -> Any:
        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                delivered[index] = (msg.partition(), msg.offset())
        return on_delivery

    for index, (key, value) in enumerate(messages):
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": report(index)}
        if partition is not None:
            kwargs["partition"] = partition[index]
        if headers is not None:
            kwargs["headers"] = headers[index]
        producer.produce(topic, **kwargs)
        producer.poll(0)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not delivered within 30 s"
    assert errors == []
    return [delivered[i] for i in range(len(messages))]


def consume(bootstrap: str, topic: str, expected: int, *, group: str | None = None,
            timeout: float = 45.0, commit_after: int | None = None) -> list[Record]:
    """Read ``expected`` records (then make sure no more arrive) with a consumer group.

    A fresh group (default) starts from the earliest offset; a known ``group`` resumes from its
    committed offsets. ``commit_after``: commit synchronously right after that many records
    (single-partition topics) and return only those.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap,
                         "group.id": group or f"test-{uuid.uuid4().hex[:8]}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    records: list[Record] = []
    limit = commit_after if commit_after is not None else expected
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while len(records) < limit and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is not None:
                    raise AssertionError(f"consumer error: {msg.error()}")
                records.append(Record.of(msg))
        if commit_after is not None:
            records = records[:commit_after]
            last = records[-1]
            consumer.commit(offsets=[TopicPartition(topic, last.partition, last.offset + 1)],
                            asynchronous=False)
            return records
        # nothing beyond what was expected may show up
        extra_deadline = time.monotonic() + 1.0
        while time.monotonic() < extra_deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.2):
                if msg.error() is None:
                    records.append(Record.of(msg))
    finally:
        consumer.close()
    return records


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie awaiting its reaper counts as exited)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return ") Z" in stat.read_text()
    except OSError:
        return True


def admin(bootstrap: str) -> Any:
    return AdminClient({"bootstrap.servers": bootstrap})


def events(count: int) -> list[tuple[bytes, bytes]]:
    statuses = ["picked_up", "in_transit", "out_for_delivery", "delivered"]
    return [(f"pkg-{i % 17:03d}".encode(),
             json.dumps({"seq": i, "status": statuses[i % 4]}).encode())
            for i in range(count)]


# --------------------------------------------------------------------------------------------
# the shared session broker


@pytest.mark.integration
def test_produce_and_consume_real_messages(kafka_broker: KafkaBroker,
                                           topic_factory: TopicFactory) -> None:
    topic = topic_factory(1)
    sent = events(250)
    headers = [[("partner", b"dhl"), ("seq", str(i).encode())] for i in range(250)]

    delivered = produce(kafka_broker.bootstrap, topic, sent, headers=headers)
    assert delivered == [(0, i) for i in range(250)]

    got = consume(kafka_broker.bootstrap, topic, 250)
    assert len(got) == 250
    assert [(r.key, r.value) for r in got] == sent
    assert [r.offset for r in got] == list(range(250))
    assert [r.headers for r in got] == [tuple(h) for h in headers]
    assert json.loads(got[-1].value or b"") == {"seq": 249, "status": "in_transit"}


@pytest.mark.integration
def test_three_partition_topic_metadata(kafka_broker: KafkaBroker,
                                        topic_factory: TopicFactory) -> None:
    topic = topic_factory(3)
    metadata = admin(kafka_broker.bootstrap).list_topics(topic=topic, timeout=10)
    described = metadata.topics[topic]
    assert described.error is None
    assert sorted(described.partitions) == [0, 1, 2]
    for part in described.partitions.values():
        assert (part.leader, list(part.replicas), list(part.isrs)) == (1, [1], [1])
    assert list(metadata.brokers) == [1]
    broker = metadata.brokers[1]
    assert f"{broker.host}:{broker.port}" == kafka_broker.bootstrap

    # each partition receives exactly what is sent to it
    targets = [i % 3 for i in range(30)] + [2] * 5
    sent = [(b"k", f"to-{p}-{i}".encode()) for i, p in enumerate(targets)]
    delivered = produce(kafka_broker.bootstrap, topic, sent, partition=targets)
    assert [p for p, _ in delivered] == targets
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "watermarks"})
    try:
        marks = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                 for p in range(3)]
    finally:
        consumer.close()
    assert marks == [(0, 10), (0, 10), (0, 15)]
    got = consume(kafka_broker.bootstrap, topic, 35)
    assert len(got) == 35
    assert all((r.value or b"").startswith(f"to-{r.partition}-".encode()) for r in got)

    with pytest.raises(BrokerError, match="already exists"):
        create_topic(kafka_broker.bootstrap, topic, 3)


@pytest.mark.integration
def test_offsets_agree_with_kafkas_own_tool(kafka_broker: KafkaBroker,
                                            topic_factory: TopicFactory) -> None:
    """Kafka's GetOffsetShell (from the kafka-tools jar) is the independent count oracle."""
    topic = topic_factory(2)
    targets = [0] * 7 + [1] * 4
    produce(kafka_broker.bootstrap, topic, [(b"k", b"v")] * len(targets), partition=targets)
    done = subprocess.run(
        [ensure_java(), "-Xmx128m", "-cp", f"{KAFKA_HOME / 'lib'}{os.sep}*",
         f"-Dlog4j2.configurationFile={KAFKA_HOME / 'config' / 'log4j2.xml'}",
         "org.apache.kafka.tools.GetOffsetShell", "--bootstrap-server", kafka_broker.bootstrap,
         "--topic", topic],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith(topic))
    assert lines == [f"{topic}:0:7", f"{topic}:1:4"]


@pytest.mark.integration
def test_topics_are_not_created_implicitly(kafka_broker: KafkaBroker) -> None:
    topic = f"never-created-{uuid.uuid4().hex[:8]}"
    errors: list[KafkaError | None] = []
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap,
                         "message.timeout.ms": 3000})
    producer.produce(topic, b"lost?", on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(15) == 0
    assert len(errors) == 1
    assert errors[0] is not None
    assert errors[0].code() in {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT}
    assert topic not in admin(kafka_broker.bootstrap).list_topics(timeout=10).topics


# --------------------------------------------------------------------------------------------
# a broker of the test's own, for restarts and stops


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    try:
        ensure_java()
        ensure_jars()
    except ToolMissingError as exc:
        from carrierwatch.testing import missing_component

        missing_component("kafka", str(exc))
    broker = KafkaBroker(tmp_path / "own-kafka")
    broker.start(timeout=120.0)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_data_survives_graceful_and_hard_restarts(own_broker: KafkaBroker) -> None:
    bootstrap = own_broker.bootstrap
    topic = "durability"
    create_topic(bootstrap, topic, 1)
    first = events(100)
    produce(bootstrap, topic, first)
    # a consumer group reads 40 and commits; its position must survive too
    read = consume(bootstrap, topic, 100, group="resumer", commit_after=40)
    assert [r.offset for r in read] == list(range(40))

    pid_before = own_broker.pid
    own_broker.restart(timeout=120.0)
    assert own_broker.bootstrap == bootstrap
    assert own_broker.pid is not None and own_broker.pid != pid_before

    assert [(r.key, r.value) for r in consume(bootstrap, topic, 100)] == first
    resumed = consume(bootstrap, topic, 60, group="resumer")
    assert [r.offset for r in resumed] == list(range(40, 100))
    assert [(r.key, r.value) for r in resumed] == first[40:]

    second = [(b"late", f"after-restart-{i}".encode()) for i in range(20)]
    produce(bootstrap, topic, second)
    own_broker.restart(timeout=120.0, hard=True)  # kill -9, then start
    everything = consume(bootstrap, topic, 120)
    assert [(r.key, r.value) for r in everything] == first + second
    assert [r.offset for r in everything] == list(range(120))


@pytest.mark.integration
def test_status_and_stop_touch_only_our_process(own_broker: KafkaBroker,
                                                kafka_broker: KafkaBroker,
                                                tmp_path: Path) -> None:
    status = own_broker.status()
    assert (status.running, status.ready) == (True, True)
    assert status.pid == own_broker.pid and status.bootstrap == own_broker.bootstrap
    assert own_broker.pid_file.read_text().strip() == str(own_broker.pid)

    # the controller port is written into the KRaft voter set: it cannot move
    with pytest.raises(BrokerError, match="cannot move"):
        KafkaBroker(own_broker.data_dir, controller_port=own_broker.controller_port + 1)

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    decoys = [
        subprocess.Popen(["sleep", "60"]),
        # looks like a Kafka broker, but of another data dir
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka",
                          str(tmp_path / "elsewhere" / "server.properties")]),
    ]
    try:
        for decoy in decoys:
            stranger = KafkaBroker(other_dir)
            stranger.pid_file.write_text(f"{decoy.pid}\n")
            found = stranger.status()
            assert not found.running and "stale PID file" in found.detail
            assert stranger.stop(timeout=2) is False
            assert not stranger.pid_file.exists()
            assert decoy.poll() is None, "stop() signalled a process that is not its broker"

        pid = own_broker.pid
        assert pid is not None
        assert own_broker.stop() is True
        assert gone(pid)
        stopped = own_broker.status()
        assert (stopped.running, stopped.pid, stopped.detail) == (False, None, "no PID file")
        assert own_broker.stop() is False  # nothing left to stop

        # the session broker and the decoys are untouched
        assert kafka_broker.status().ready is True
        assert all(decoy.poll() is None for decoy in decoys)
    finally:
        for decoy in decoys:
            decoy.kill()
            decoy.wait(10)


@pytest.mark.integration
def test_start_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        broker = KafkaBroker(tmp_path / "k", port=port)
        with pytest.raises(BrokerError, match=f"client port 127.0.0.1:{port} is already in use"):
            broker.start(timeout=5)
        assert broker.pid is None and not broker.pid_file.exists()


def run_cli(*args: str, timeout: float = 150.0) -> subprocess.CompletedProcess[str]:
    # through `carrierwatch kafka`, whose main() must pass on the exit codes (status: 0 and 3)
    return subprocess.run([sys.executable, "-m", "carrierwatch", "kafka", *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.integration
def test_cli_start_status_stop(tmp_path: Path) -> None:
    try:
        ensure_java()
        ensure_jars()
    except ToolMissingError as exc:
        from carrierwatch.testing import missing_component

        missing_component("kafka", str(exc))
    data = tmp_path / "cli-kafka"
    port, controller = find_free_ports(2)
    where = ["--data-dir", str(data)]
    try:
        started = run_cli("start", "--port", str(port), "--controller-port", str(controller),
                          *where)
        assert started.returncode == 0, started.stderr + started.stdout
        assert f"bootstrap: 127.0.0.1:{port}" in started.stdout
        # the CLI has exited; the broker runs on, detached, under the PID it recorded
        pid = int((data / "kafka.pid").read_text())
        assert f"pid {pid}" in started.stdout

        status = run_cli("status", *where)
        assert status.returncode == 0
        assert f"running pid={pid} bootstrap=127.0.0.1:{port} ready" in status.stdout

        bootstrap = f"127.0.0.1:{port}"
        create_topic(bootstrap, "cli-check", 1)
        produce(bootstrap, "cli-check", [(b"a", b"hello")])
        assert [(r.key, r.value) for r in consume(bootstrap, "cli-check", 1)] == [(b"a", b"hello")]

        again = run_cli("start", *where)
        assert again.returncode == 0 and f"already running: pid {pid}" in again.stdout

        stopped = run_cli("stop", *where)
        assert (stopped.returncode, stopped.stdout.strip()) == (0, "stopped")
        assert gone(pid)
        after = run_cli("status", *where)
        assert after.returncode == 3 and after.stdout.startswith("stopped")
    finally:
        KafkaBroker(data).stop()


# --------------------------------------------------------------------------------------------
# the jars and the tools


def _pom_kafka_version() -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(KAFKA_HOME / "pom.xml").getroot()
    found = root.find("m:properties/m:kafka.version", ns)
    assert found is not None and found.text
    return found.text


@pytest.mark.integration
def test_jars_match_the_pom() -> None:
    try:
        lib = ensure_jars()
    except ToolMissingError as exc:
        from carrierwatch.testing import missing_component

        missing_component("kafka", str(exc))
    version = _pom_kafka_version()
    assert re.fullmatch(r"4\.\d+\.\d+", version)
    assert kafka_version(lib) == version
    marker = json.loads((lib / ".carrierwatch-jars.json").read_text())
    on_disk = sorted(p.name for p in lib.glob("*.jar"))
    assert marker["jars"] == on_disk
    for jar in (f"kafka_2.13-{version}.jar", f"kafka-tools-{version}.jar",
                f"kafka-clients-{version}.jar"):
        assert jar in on_disk
    assert any(n.startswith("log4j-slf4j2-impl-") for n in on_disk)
    assert any(n.startswith("log4j-core-") for n in on_disk)
    # exactly one SLF4J API, and it is 2.x (what the log4j2 bridge needs)
    slf4j = [n for n in on_disk if n.startswith("slf4j-api-")]
    assert len(slf4j) == 1 and slf4j[0].startswith("slf4j-api-2.")
    mtime = (lib / ".carrierwatch-jars.json").stat().st_mtime_ns
    assert ensure_jars() == lib  # complete: Maven is not run again
    assert (lib / ".carrierwatch-jars.json").stat().st_mtime_ns == mtime


def _copy_kafka_home(tmp_path: Path, *, with_lib: bool) -> Path:
    home = tmp_path / "kafka"
    home.mkdir()
    shutil.copy(KAFKA_HOME / "pom.xml", home / "pom.xml")
    shutil.copytree(KAFKA_HOME / "config", home / "config")
    if with_lib:
        shutil.copytree(KAFKA_HOME / "lib", home / "lib")
    return home


def test_missing_tools_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ToolMissingError, match="Java 17"):
        ensure_java(str(tmp_path / "no-such-java"))
    home = _copy_kafka_home(tmp_path, with_lib=False)
    with pytest.raises(ToolMissingError, match="Maven"):
        ensure_jars(home, maven=str(tmp_path / "no-such-mvn"))


@pytest.mark.integration
@pytest.mark.slow
def test_incomplete_lib_is_fetched_again(tmp_path: Path) -> None:
    try:
        ensure_jars()
    except ToolMissingError as exc:
        from carrierwatch.testing import missing_component

        missing_component("kafka", str(exc))
    home = _copy_kafka_home(tmp_path, with_lib=True)
    version = _pom_kafka_version()
    (home / "lib" / f"kafka_2.13-{version}.jar").unlink()
    (home / "lib" / "stray-old-1.0.jar").write_bytes(b"not a jar")
    lib = ensure_jars(home)
    assert (lib / f"kafka_2.13-{version}.jar").stat().st_size > 1_000_000
    assert not (lib / "stray-old-1.0.jar").exists()  # the folder was replaced whole
    assert sorted(p.name for p in lib.glob("*.jar")) == \
        sorted(p.name for p in (KAFKA_HOME / "lib").glob("*.jar"))


@pytest.mark.skipif(sys.platform != "linux", reason="prctl(PR_SET_PDEATHSIG) is Linux only")
def test_a_child_started_with_die_with_parent_ends_with_its_parent() -> None:
    """What keeps a killed test session from leaving its broker and workers behind: a parent
    killed with SIGKILL (no cleanup of its own) takes its child along; a child started without
    it lives on (the control)."""
    script = (
        "import subprocess, sys, time\n"
        "from carrierwatch.streams.broker import die_with_parent\n"
        "bound = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent)\n"
        "free = subprocess.Popen(['sleep', '60'])\n"
        "print(bound.pid, free.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    bound, free = map(int, parent.stdout.readline().split())
    try:
        assert not gone(bound) and not gone(free)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while not gone(bound) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone(bound), "the child with die_with_parent outlived its killed parent"
        assert not gone(free)
    finally:
        for pid in (bound, free):
            if not gone(pid):
                os.kill(pid, 9)
