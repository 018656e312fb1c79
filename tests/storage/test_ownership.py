"""Single ownership of a chDB data path, checked with real second processes."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from carrierwatch.core.errors import StorageError, StoreBusyError
from carrierwatch.core.model import DeadLetter
from carrierwatch.settings import Settings
from carrierwatch.storage import EmbeddedStore, embedded_path, open_store
from carrierwatch.storage.ownership import LOCK_FILE_NAME, read_owner

# A child process that owns the store: migrates, writes, says "ready", holds it until stdin closes.
OWNER_SCRIPT = """
import sys
from pathlib import Path
from carrierwatch.core.model import DeadLetter
from carrierwatch.storage import EmbeddedStore
store = EmbeddedStore.open(Path(sys.argv[1]), command="carrierwatch worker")
store.migrate()
store.insert_dead_letters([DeadLetter("ups", 1, "bad", "$", bytes([0xff, int(sys.argv[2])]))])
print("ready", flush=True)
sys.stdin.read()
store.close()
print("closed", flush=True)
"""

# A child process that reads the store and prints what it finds.
READER_SCRIPT = """
import json, sys
from pathlib import Path
from carrierwatch.storage import EmbeddedStore
with EmbeddedStore.open(Path(sys.argv[1]), command="carrierwatch scorecard") as store:
    letters = store.fetch_dead_letters()
    applied = [m.version for m in store.migration_status()]
print(json.dumps({"raw": [d.raw.hex() for d in letters], "migrations": applied}))
"""


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    try:
        if not selector.select(timeout):
            raise AssertionError(f"no output from PID {process.pid} within {timeout}s")
        return process.stdout.readline().strip()
    finally:
        selector.close()


def start_owner(path: Path, marker: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(path), str(marker)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = read_line(process, timeout=60)
    if line != "ready":
        process.kill()
        raise AssertionError(f"owner process said {line!r}")
    return process


def stop_owner(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        assert read_line(process, timeout=60) == "closed"
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_second_process_gets_a_clear_busy_error(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    owner = start_owner(path, 1)
    try:
        assert read_owner(path / LOCK_FILE_NAME).pid == owner.pid
        started = time.monotonic()
        with pytest.raises(StoreBusyError) as caught:
            open_store(Settings(data_dir=tmp_path, clickhouse_url=None))
        assert time.monotonic() - started < 2.0  # at once, not after a hang
        message = str(caught.value)
        assert f"is in use by PID {owner.pid} (carrierwatch worker)" in message
        assert str(path) in message
        assert "CARRIERWATCH_CLICKHOUSE_URL" in message
        # a short wait still fails while the owner keeps running
        with pytest.raises(StoreBusyError):
            EmbeddedStore.open(path, wait=0.3)
    finally:
        stop_owner(owner)
    # once the owner is gone the store is free, and holds what the owner wrote
    with EmbeddedStore.open(path) as store:
        assert [d.raw for d in store.fetch_dead_letters()] == [b"\xff\x01"]
        assert read_owner(path / LOCK_FILE_NAME).pid == os.getpid()
    assert read_owner(path / LOCK_FILE_NAME).pid is None  # released: record cleared


def test_waiting_opener_gets_the_store_when_the_owner_stops(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    owner = start_owner(path, 2)
    assert owner.stdin is not None
    owner.stdin.close()  # the owner finishes shortly
    try:
        with EmbeddedStore.open(path, wait=60) as store:
            assert store.query("SELECT count() FROM dead_letters FINAL") == [(1,)]
    finally:
        owner.wait(timeout=60)


def test_killed_owner_does_not_leave_a_stale_lock(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    owner = start_owner(path, 3)
    owner.kill()  # kill -9: no cleanup runs
    owner.wait(timeout=30)
    with EmbeddedStore.open(path) as store:
        assert [d.raw for d in store.fetch_dead_letters()] == [b"\xff\x03"]


def test_store_persists_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "clickhouse"
    stop_owner(start_owner(path, 4))
    result = subprocess.run([sys.executable, "-c", READER_SCRIPT, str(path)],
                            capture_output=True, text=True, timeout=120, check=True)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["raw"] == ["ff04"]
    assert found["migrations"][:2] == [1, 2]


def test_one_process_shares_its_path_and_refuses_a_second_one(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "a", clickhouse_url=None)
    with open_store(settings, migrate=True) as first:
        with open_store(settings) as second:  # same path, same process: shared engine
            second.insert_dead_letters([DeadLetter("ups", 1, "e", "$", b"x")])
            assert first.query("SELECT count() FROM dead_letters") == [(1,)]
        assert first.query("SELECT count() FROM dead_letters") == [(1,)]  # still open
        with pytest.raises(StorageError, match="one data path per process") as caught:
            EmbeddedStore.open(tmp_path / "b")
        assert not isinstance(caught.value, StoreBusyError)
    assert embedded_path(settings) == tmp_path / "a" / "clickhouse"
    with EmbeddedStore.open(tmp_path / "b") as other:  # free once the first path is closed
        assert other.query("SELECT 1") == [(1,)]
