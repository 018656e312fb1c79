"""Batch drops (#14 section 3): ``carrierwatch ingest-file`` and ``carrierwatch watch`` against the
session's real Kafka broker; the worker reads what they write."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from gatewaykit import read_topic

from carrierwatch.cli import run
from carrierwatch.ingest.drops import Dropper, DropSettings
from carrierwatch.settings import find_project_root, get_settings
from carrierwatch.streams.records import headers_to_dict, received_time_of
from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics
from carrierwatch.transformers.base import TransformResult
from carrierwatch.transformers.registry import load_registry

ROOT = find_project_root()
SAMPLES = ROOT / "samples" / "valley_express"
PARTNER = "valley_express"


@pytest.fixture
def namespace(kafka_broker: Any) -> str:
    namespace = f"d{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_broker.bootstrap,
                  Topology(StreamConfig(namespace=namespace), load_registry().ids()).specs())
    return namespace


@pytest.fixture
def cli_env(kafka_broker: Any, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The CLI in this process, on the test broker, with a data directory of the test's own."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("CARRIERWATCH_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    monkeypatch.setenv("CARRIERWATCH_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()


def _raw(bootstrap: str, namespace: str, expect: int | None = None,
         timeout: float = 30.0) -> list[Any]:
    return read_topic(bootstrap, f"{namespace}.raw.{PARTNER}", expect=expect, timeout=timeout)


def _transform(body: bytes, received: int, headers: dict[str, str]) -> TransformResult:
    result: TransformResult = load_registry().get(PARTNER).transform(body, received, headers)
    return result


def test_ingest_file_of_the_samples_lands_on_raw_readable_by_the_worker(
        kafka_broker: Any, namespace: str, cli_env: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(SAMPLES.glob("*.csv"))
    assert len(files) >= 5
    assert run(["ingest-file", "--partner", PARTNER, "--namespace", namespace,
                *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert out.count("ingested into raw.valley_express") == len(files)
    messages = _raw(kafka_broker.bootstrap, namespace, expect=len(files))
    assert len(messages) == len(files)
    by_name = {m.header("carrierwatch-source"): m for m in messages}
    assert sorted(by_name) == sorted(f.name for f in files)
    ids = set()
    for path in files:
        message = by_name[path.name]
        assert message.value == path.read_bytes()  # the file, byte for byte
        assert message.key is not None and message.key.decode() == \
            message.header("carrierwatch-request-id")
        ids.add(message.key)
        assert message.header("carrierwatch-partner") == PARTNER
        assert message.header("content-type") == "text/csv"
        received = received_time_of(message.headers, message.timestamp_s)
        assert received == int(message.header("carrierwatch-received-time") or 0)
        assert abs(received / 1000 - time.time()) < 120
        # what the worker's normalize stage does with it: the same as with the file itself
        headers = headers_to_dict(message.headers)
        assert headers == {"content-type": "text/csv"}
        through_kafka = _transform(message.value, received, headers)
        direct = _transform(path.read_bytes(), received, {})
        assert [e.event_id for e in through_kafka.events] == \
            [e.event_id for e in direct.events]
        assert [(d.path, d.error) for d in through_kafka.dead_letters] == \
            [(d.path, d.error) for d in direct.dead_letters]
    assert len(ids) == len(files)
    good = by_name["lifecycle_delivered.csv"]
    assert len(_transform(good.value, int(time.time() * 1000), {}).events) >= 3
    # the samples stay where they are
    assert all(f.exists() for f in files)


def test_a_redropped_file_under_another_name_is_skipped_across_restarts(
        kafka_broker: Any, namespace: str, cli_env: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    drop = tmp_path / "drop"
    (drop / PARTNER).mkdir(parents=True)
    content = (SAMPLES / "lifecycle_delivered.csv").read_bytes()
    (drop / PARTNER / "monday.csv").write_bytes(content)
    watch = ["watch", str(drop), "--once", "--settle-seconds", "0", "--namespace", namespace]
    assert run(watch) == 0
    assert (drop / "done" / PARTNER / "monday.csv").read_bytes() == content
    # a new process (a restart): the same content under another name, and once more
    (drop / PARTNER / "monday-resent.csv").write_bytes(content)
    assert run(watch) == 0
    (drop / PARTNER / "again.csv").write_bytes(content)
    assert run(["ingest-file", "--namespace", namespace, str(drop / PARTNER / "again.csv")]) == 0
    out = capsys.readouterr().out
    assert "duplicate" in out and "'monday.csv'" in out
    note = (drop / "done" / PARTNER / "monday-resent.csv.reason.txt").read_text()
    assert "same content" in note and "'monday.csv'" in note
    assert not (drop / PARTNER / "monday-resent.csv").exists()
    time.sleep(1)
    messages = _raw(kafka_broker.bootstrap, namespace, timeout=5)
    assert [m.header("carrierwatch-source") for m in messages] == ["monday.csv"]


def test_partial_names_are_ignored_until_renamed(
        kafka_broker: Any, namespace: str, cli_env: Path, tmp_path: Path) -> None:
    drop = tmp_path / PARTNER  # the folder's name is the partner
    drop.mkdir()
    content = (SAMPLES / "lifecycle_delivered.csv").read_bytes()
    for name in ("upload.csv.part", ".upload.csv", "upload.csv.tmp"):
        (drop / name).write_bytes(content[: len(content) // 2])
    watch = ["watch", str(drop), "--once", "--settle-seconds", "0", "--namespace", namespace]
    assert run(watch) == 0
    assert sorted(p.name for p in drop.iterdir()) == [".upload.csv", "upload.csv.part",
                                                      "upload.csv.tmp"]
    assert _raw(kafka_broker.bootstrap, namespace, timeout=3) == []
    # the sender finishes and renames: now it is read, whole
    (drop / "upload.csv.part").write_bytes(content)
    (drop / "upload.csv.part").rename(drop / "upload.csv")
    assert run(watch) == 0
    [message] = _raw(kafka_broker.bootstrap, namespace, expect=1)
    assert message.value == content and message.header("carrierwatch-source") == "upload.csv"
    assert (drop / "done" / "upload.csv").exists()


def test_a_growing_file_is_read_only_once_settled_and_sigterm_stops_cleanly(
        kafka_broker: Any, namespace: str, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    (drop / PARTNER).mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    env.update({"CARRIERWATCH_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
                "CARRIERWATCH_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT / "src")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "carrierwatch", "watch", str(drop), "--settle-seconds", "2",
         "--interval", "0.2", "--max-seconds", "120", "--namespace", namespace],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = (SAMPLES / "lifecycle_delivered.csv").read_bytes().splitlines(keepends=True)
        target = drop / PARTNER / "growing.csv"
        with open(target, "wb") as handle:
            for line in lines:  # a slow writer: one line every 0.5 s, under its final name
                handle.write(line)
                handle.flush()
                time.sleep(0.5)
                assert not (drop / "done" / PARTNER / "growing.csv").exists()
        deadline = time.monotonic() + 60
        while not (drop / "done" / PARTNER / "growing.csv").exists():
            assert time.monotonic() < deadline, "the settled file was not ingested"
            assert proc.poll() is None
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    [message] = _raw(kafka_broker.bootstrap, namespace, expect=1)
    assert message.value == b"".join(lines)  # the whole file, not a prefix of it


def test_unknown_or_non_batch_partners_and_wrong_types_go_to_failed_with_a_reason(
        kafka_broker: Any, namespace: str, cli_env: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    drop = tmp_path / "drop"
    for folder, name, body in (("nobody", "a.csv", b"x,y\n1,2\n"),
                               ("fedex", "b.json", b"{}"),
                               (PARTNER, "c.json", b"{}"),
                               (PARTNER, "d.csv", b"")):
        (drop / folder).mkdir(parents=True, exist_ok=True)
        (drop / folder / name).write_bytes(body)
    code = run(["watch", str(drop), "--once", "--settle-seconds", "0", "--namespace", namespace])
    assert code == 1
    err = capsys.readouterr().err
    assert "carrierwatch: error: 4 file(s) moved to" in err
    failed = drop / "failed"
    reasons = {str(p.relative_to(failed)): p.read_text().strip()
               for p in failed.rglob("*.reason.txt")}
    assert reasons.keys() == {"nobody/a.csv.reason.txt", "fedex/b.json.reason.txt",
                              f"{PARTNER}/c.json.reason.txt", f"{PARTNER}/d.csv.reason.txt"}
    assert reasons["nobody/a.csv.reason.txt"].startswith("unknown partner 'nobody'")
    assert reasons["fedex/b.json.reason.txt"] == \
        "fedex is not a batch partner (its delivery is webhook)"
    assert "unsupported file type '.json'" in reasons[f"{PARTNER}/c.json.reason.txt"]
    assert reasons[f"{PARTNER}/d.csv.reason.txt"] == "empty file"
    assert (failed / "nobody" / "a.csv").read_bytes() == b"x,y\n1,2\n"  # kept, not lost
    assert _raw(kafka_broker.bootstrap, namespace, timeout=3) == []


def test_a_crash_after_the_produce_does_not_ingest_the_file_twice(
        kafka_broker: Any, namespace: str, cli_env: Path, tmp_path: Path) -> None:
    """kill -9 between the durable produce and the ledger's ``done``: the file is still in the
    drop folder, the ledger says ``pending``; the restart finds the file id in the raw topic."""
    drop = tmp_path / PARTNER
    drop.mkdir()
    path = drop / "crash.csv"
    shutil.copy(SAMPLES / "lifecycle_delivered.csv", path)
    settings = get_settings()

    async def crash_after_produce() -> str:
        dropper = Dropper.open(settings=settings, drop_settings=DropSettings(),
                               registry=load_registry(), namespace=namespace)
        await dropper.connect()
        done = dropper.ledger.done
        dropper.ledger.done = lambda sha, store: None  # type: ignore[method-assign]
        outcome = await dropper.ingest(path)
        dropper.ledger.done = done  # type: ignore[method-assign]
        await dropper.close()
        return outcome.file_id

    file_id = asyncio.run(crash_after_produce())
    assert path.exists()
    assert run(["watch", str(drop), "--once", "--settle-seconds", "0",
                "--namespace", namespace]) == 0
    assert (drop / "done" / "crash.csv").exists()
    time.sleep(1)
    messages = _raw(kafka_broker.bootstrap, namespace, timeout=5)
    assert [m.header("carrierwatch-request-id") for m in messages] == [file_id]


def test_bad_rows_of_a_dropped_file_end_in_the_dlq_with_file_and_line_good_rows_as_events(
        stream_harness: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from carrierwatch.streams.records import decode_dead_letter

    harness = stream_harness
    harness.start("worker", "worker", "--stages", "normalize")
    monkeypatch.setenv("CARRIERWATCH_KAFKA_BOOTSTRAP", harness.bootstrap)
    monkeypatch.setenv("CARRIERWATCH_DATA_DIR", str(tmp_path / "drops-data"))
    get_settings.cache_clear()
    drop = tmp_path / PARTNER
    drop.mkdir()
    path = drop / "scans-0302.csv"
    shutil.copy(SAMPLES / "malformed_rows.csv", path)
    try:
        assert run(["ingest-file", "--namespace", harness.namespace, str(path)]) == 0
    finally:
        get_settings.cache_clear()
    expected = _transform(path.read_bytes(), int(time.time() * 1000), {})
    assert expected.events and expected.dead_letters
    letters = read_topic(harness.bootstrap, f"{harness.namespace}.dlq.{PARTNER}",
                         expect=len(expected.dead_letters), timeout=120)
    assert len(letters) == len(expected.dead_letters)
    file_lines = path.read_text().splitlines()
    seen = []
    for letter in letters:
        doc = orjson.loads(letter.value)
        dead = decode_dead_letter(letter.value)
        assert doc["source"]["file"] == "scans-0302.csv"
        assert dead.raw == path.read_bytes()
        row = int(dead.path.split("]")[0].removeprefix("row["))
        line = doc["source"]["line"]
        assert line == row + 1  # the header is line 1; this file has no blank lines
        seen.append((dead.path, line, file_lines[line - 1].split(",")[0]))
    assert sorted((p, n) for p, n, _ in seen) == \
        sorted((d.path, int(d.path.split("]")[0][4:]) + 1) for d in expected.dead_letters)
    # the good rows of the same file are canonical events, keyed by package id
    events = read_topic(harness.bootstrap, harness.topology.events,
                        expect=len(expected.events), timeout=120)
    assert sorted(m.key for m in events) == \
        sorted(e.package_id.encode() for e in expected.events)
    harness.assert_running()


def test_a_file_over_the_size_limit_goes_to_failed(
        kafka_broker: Any, namespace: str, cli_env: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARRIERWATCH_DROPS_MAX_FILE_BYTES", "100")
    drop = tmp_path / PARTNER
    drop.mkdir()
    shutil.copy(SAMPLES / "lifecycle_delivered.csv", drop / "big.csv")
    assert run(["watch", str(drop), "--once", "--settle-seconds", "0",
                "--namespace", namespace]) == 1
    note = (drop / "failed" / "big.csv.reason.txt").read_text()
    assert note.startswith("too large: ") and "the limit is 100" in note
    assert _raw(kafka_broker.bootstrap, namespace, timeout=3) == []


def test_without_kafka_the_file_is_spooled_and_the_next_run_delivers_it_once(
        kafka_broker: Any, namespace: str, cli_env: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gatewaykit import free_port

    drop = tmp_path / PARTNER
    drop.mkdir()
    shutil.copy(SAMPLES / "lifecycle_delivered.csv", drop / "offline.csv")
    monkeypatch.setenv("CARRIERWATCH_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nobody
    monkeypatch.setenv("CARRIERWATCH_DROPS_DELIVERY_TIMEOUT", "2")
    get_settings.cache_clear()
    watch = ["watch", str(drop), "--once", "--settle-seconds", "0", "--namespace", namespace]
    assert run(watch) == 0
    assert "(spool)" in capsys.readouterr().out
    assert (drop / "done" / "offline.csv").exists()  # durable in the spool: done
    # Kafka is back: the next run (nothing new to ingest) drains the spool, exactly once
    monkeypatch.setenv("CARRIERWATCH_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    get_settings.cache_clear()
    assert run(watch) == 0
    assert run(watch) == 0
    messages = _raw(kafka_broker.bootstrap, namespace, expect=1)
    time.sleep(1)
    messages = _raw(kafka_broker.bootstrap, namespace, timeout=5)
    assert [m.header("carrierwatch-source") for m in messages] == ["offline.csv"]
    assert messages[0].value == (SAMPLES / "lifecycle_delivered.csv").read_bytes()


def test_kill_9_in_the_middle_of_a_drop_folder_loses_and_doubles_nothing(
        kafka_broker: Any, namespace: str, tmp_path: Path) -> None:
    drop = tmp_path / PARTNER
    drop.mkdir()
    base = (SAMPLES / "lifecycle_delivered.csv").read_bytes()
    count = 40
    for n in range(count):  # distinct contents: a trailing blank line count of its own
        (drop / f"batch-{n:03d}.csv").write_bytes(base + b"\n" * n)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    env.update({"CARRIERWATCH_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
                "CARRIERWATCH_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT / "src")})
    command = [sys.executable, "-m", "carrierwatch", "watch", str(drop), "--settle-seconds", "0",
               "--namespace", namespace]
    proc = subprocess.Popen([*command, "--max-seconds", "120"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(list((drop / "done").glob("*.csv"))) < 3:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        proc.kill()  # SIGKILL, mid-folder
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = sorted(p.name for p in drop.glob("*.csv"))
    assert 0 < len(left) < count, "kill -9 should land in the middle of the folder"
    assert subprocess.run([*command, "--once"], env=env, capture_output=True,
                          timeout=120).returncode == 0
    assert sorted(p.name for p in (drop / "done").glob("*.csv")) == \
        [f"batch-{n:03d}.csv" for n in range(count)]
    messages = _raw(kafka_broker.bootstrap, namespace, expect=count)
    time.sleep(1)
    messages = _raw(kafka_broker.bootstrap, namespace, timeout=5)
    names = [m.header("carrierwatch-source") for m in messages]
    assert sorted(names) == [f"batch-{n:03d}.csv" for n in range(count)]  # each exactly once
