"""The write-ahead spool: durable appends, arrival order, crash recovery, size limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from carrierwatch.ingest.limits import ReplayCache, TokenBucket
from carrierwatch.ingest.spool import Spool, SpoolEntry, SpoolFull


def _entry(i: int, size: int = 40) -> SpoolEntry:
    return SpoolEntry(f"rid{i:04d}", "easypost", "raw.easypost", 1_700_000_000_000 + i,
                      (("content-type", "application/json"), ("x-n", str(i))),
                      bytes([i % 256]) * size)


def test_append_head_commit_in_arrival_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20, segment_bytes=500)
    assert spool.append([_entry(1), _entry(2)]) == [1, 2]
    assert spool.append([_entry(3)]) == [3]
    for i in range(4, 30):
        spool.append([_entry(i)])
    assert spool.depth == 29
    assert len(list(tmp_path.glob("*.seg"))) > 3  # rolled at 500 bytes
    head = spool.head(5)
    assert [e.request_id for e in head] == ["rid0001", "rid0002", "rid0003", "rid0004", "rid0005"]
    assert head[2] == _entry(3).__class__(**{**_entry(3).__dict__, "seq": 3})
    assert spool.oldest_received_ms() == 1_700_000_000_001
    spool.commit(5)
    assert spool.depth == 24 and spool.head(1)[0].request_id == "rid0006"
    spool.commit(29)
    assert spool.depth == 0 and spool.size_bytes == 0
    assert list(tmp_path.glob("*.seg")) == []
    assert spool.append([_entry(30)]) == [30]  # numbering goes on
    spool.close()


def test_reopen_keeps_pending_entries_and_cuts_a_torn_tail(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    for i in range(1, 11):
        spool.append([_entry(i)])
    spool.commit(3)
    spool.close()
    # a crash in the middle of the 11th write: half a frame at the end of the segment
    segment = sorted(tmp_path.glob("*.seg"))[-1]
    with open(segment, "ab") as handle:
        handle.write(_entry(11).frame(11)[:37])
    reopened = Spool(tmp_path, max_bytes=1 << 20)
    assert [e.request_id for e in reopened.head(100)] == [f"rid{i:04d}" for i in range(4, 11)]
    assert [e.body for e in reopened.head(100)] == [_entry(i).body for i in range(4, 11)]
    assert reopened.append([_entry(12)]) == [11]
    assert reopened.depth == 8
    reopened.close()
    again = Spool(tmp_path, max_bytes=1 << 20)
    assert [e.seq for e in again.head(100)] == list(range(4, 12))
    again.close()


def test_spool_full_writes_nothing(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=2000)
    spool.append([_entry(1, size=200)])
    assert spool.fits(100) and not spool.fits(1500)
    with pytest.raises(SpoolFull):
        spool.append([_entry(2, size=1800)])
    assert spool.depth == 1
    assert spool.append([_entry(3, size=10)]) == [2]


def test_intent_roundtrip(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    assert spool.read_intent() is None
    spool.write_intent({"first": 1, "last": 2, "offsets": {"t": {"0": 5}}, "delivered": []})
    assert Spool(tmp_path, max_bytes=1 << 20).read_intent() == \
        {"first": 1, "last": 2, "offsets": {"t": {"0": 5}}, "delivered": []}
    spool.clear_intent()
    assert spool.read_intent() is None


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert [bucket.take(now=0.0) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.1)]
    assert bucket.take(now=0.1) == 0.0
    assert bucket.take(now=0.1) == pytest.approx(0.1)
    assert [bucket.take(now=10.0) for _ in range(4)][-1] > 0  # never more than the burst


def test_replay_cache_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ids.sqlite3"
    cache = ReplayCache(path)
    assert cache.reserve("acme", "msg_1", now=1000.0)
    cache.remember("acme", "msg_1", expires=1400.0)
    cache.release("acme", "msg_1")
    cache.close()
    reopened = ReplayCache(path)
    assert not reopened.reserve("acme", "msg_1", now=1300.0)
    assert reopened.reserve("acme", "msg_1", now=1401.0)  # expired: its timestamp is stale now
    reopened.close()
