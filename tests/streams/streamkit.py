"""Run the stream driver as real processes for tests: workers, the sink, and the replay oracle.

A :class:`StreamHarness` owns one namespace (unique topics and consumer groups) on the session
broker, starts ``python -m carrierwatch.streams.cli worker|sink`` subprocesses with their own data
dirs, and ends them by their PID only (SIGTERM, or SIGKILL for the crash tests). Every wait is
bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carrierwatch.replay import pipeline_for, result_snapshot, run_replay
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.streams.broker import die_with_parent
from carrierwatch.streams.kafka import produce_raw, send_flush, wait_caught_up
from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics
from carrierwatch.synthetic.rawlog import RawRecord
from carrierwatch.transformers.registry import PartnerRegistry, load_registry

__all__ = ["EQUIVALENCE_LATENESS_MS", "StreamHarness", "max_event_time", "replay_snapshot"]


def max_event_time(records: Iterable[RawRecord], registry: PartnerRegistry) -> int:
    """The newest event time the input yields (the watermark replay's final flush reaches)."""
    newest = 0
    for record in records:
        result = registry.get(record.partner).transform(record.body, record.received_time,
                                                        record.headers)
        for event in result.events:
            newest = max(newest, event.event_time)
    return newest


#: Allowed lateness of most equivalence tests: larger than any event's delay in their input.
#: (Under the former per-shard watermark an event near the bound was too late or not depending
#: on what arrived before it; lateness is now measured per package, and the tests named
#: ``*default_lateness*`` check equality with the drivers' default 2 days.)
EQUIVALENCE_LATENESS_MS = 30 * 86_400_000


def replay_snapshot(records: Sequence[RawRecord], data_dir: Path, registry: PartnerRegistry,
                    *, allowed_lateness_ms: int = EQUIVALENCE_LATENESS_MS) -> dict[str, Any]:
    """``result_snapshot`` of an in-process replay of ``records`` into a fresh chDB store."""
    with open_store(Settings(data_dir=data_dir), command="pytest replay", migrate=True) as store:
        run_replay(records, store, registry,
                   pipeline=pipeline_for(registry, allowed_lateness_ms=allowed_lateness_ms))
        return result_snapshot(store)


@dataclass
class StreamHarness:
    """Worker and sink processes of one namespace on the test broker."""

    bootstrap: str
    registry_url: str
    root: Path
    namespace: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.registry = load_registry()
        self.config = StreamConfig(namespace=self.namespace)
        self.topology = Topology(self.config, self.registry.ids())
        self.sink_dir = self.root / "sink-data"
        ensure_topics(self.bootstrap, self.topology.specs())

    # -- processes ------------------------------------------------------------------------------

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CARRIERWATCH_")}
        env.update({
            "CARRIERWATCH_KAFKA_BOOTSTRAP": self.bootstrap,
            "CARRIERWATCH_SCHEMA_REGISTRY_URL": self.registry_url,
            "CARRIERWATCH_DATA_DIR": str(data_dir),
            "CARRIERWATCH_STREAM_NAMESPACE": self.namespace,
            "CARRIERWATCH_STREAM_ALLOWED_LATENESS_MS": str(EQUIVALENCE_LATENESS_MS),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def start(self, name: str, role: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``carrierwatch <role>`` as process ``name`` (log in ``root/<name>.log``)."""
        data_dir = self.sink_dir if role == "sink" else self.root / f"{name}-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.root / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "carrierwatch.streams.cli", role, "-l", "info", *args],
            env=self.env(data_dir), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        log.close()
        self.processes[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str, timeout: float = 60.0) -> int:
        """SIGTERM process ``name`` and wait for it; its exit code."""
        proc = self.processes.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)
                raise AssertionError(f"{name} ignored SIGTERM for {timeout:.0f} s:\n"
                                     f"{self.log(name)[-3000:]}") from None
        return int(proc.returncode)

    def kill(self, name: str) -> None:
        """``kill -9`` process ``name``."""
        proc = self.processes.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(15)

    def stop_all(self) -> None:
        for name in list(self.processes):
            proc = self.processes[name]
            if proc.poll() is None:
                with contextlib.suppress(AssertionError):
                    self.stop(name, timeout=30)
            else:
                self.processes.pop(name)

    def assert_running(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n"
                                     f"{self.log(name)[-4000:]}")

    # -- input and progress ---------------------------------------------------------------------

    def produce(self, records: Iterable[RawRecord]) -> int:
        topic_of = {p: self.topology.raw(p) for p in self.topology.partners}
        return produce_raw(self.bootstrap, topic_of, records)

    def wait(self, group: str, topics: Sequence[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running()
            remaining = deadline - time.monotonic()
            try:
                wait_caught_up(self.bootstrap, group, topics, timeout=min(5.0, max(remaining, 0.1)))
                return
            except TimeoutError:
                if remaining <= 0:
                    raise

    def finish_input(self, watermark: int, timeout: float = 120.0) -> None:
        """Wait until the raw input is normalized, mark the end of input, wait until the sink
        committed everything."""
        topology = self.topology
        self.wait(topology.app_id, topology.raw_topics, timeout)
        send_flush(self.bootstrap, topology.events, watermark)
        self.wait(topology.track_group, [topology.events], timeout)
        self.wait(topology.sink_group, [topology.sink], timeout)

    def snapshot(self) -> dict[str, Any]:
        """``result_snapshot`` of the sink's store (the sink process must have stopped)."""
        with open_store(Settings(data_dir=self.sink_dir), command="pytest snapshot",
                        wait=30) as store:
            return result_snapshot(store)
