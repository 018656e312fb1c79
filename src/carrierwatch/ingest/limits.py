"""Per-partner admission: a token bucket (429) and the persisted Standard Webhooks id cache.

Examples
--------
>>> bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
>>> bucket.take(now=0.0), bucket.take(now=0.0), bucket.take(now=0.0)
(0.0, 0.0, 0.5)
>>> bucket.take(now=0.5)
0.0
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

__all__ = ["ReplayCache", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, *, now: float | None = None) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic() if now is None else now

    def take(self, *, now: float | None = None) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is one (nothing
        taken)."""
        current = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (current - self._at) * self.rate)
        self._at = current
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class ReplayCache:
    """The ``webhook-id`` values accepted per partner, kept until their timestamp can no longer
    pass the tolerance check (sqlite, WAL: a committed id survives kill -9 of the gateway).

    An id is *remembered* only once its request is durable (Kafka or the spool), so a sender's
    retry after a 503 is not mistaken for a replay; an id being processed is *reserved* in memory
    so that two concurrent copies cannot both pass.

    >>> cache = ReplayCache(":memory:")
    >>> cache.reserve("acme", "msg_1", now=100.0)
    True
    >>> cache.reserve("acme", "msg_1", now=100.0)
    False
    >>> cache.remember("acme", "msg_1", expires=400.0); cache.release("acme", "msg_1")
    >>> cache.reserve("acme", "msg_1", now=200.0), cache.reserve("other", "msg_1", now=200.0)
    (False, True)
    >>> cache.purge(now=500.0), cache.reserve("acme", "msg_1", now=500.0)
    (1, True)
    """

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS webhook_ids (partner TEXT NOT NULL, "
                         "id TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (partner, id)) "
                         "WITHOUT ROWID")
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def reserve(self, partner: str, webhook_id: str, *, now: float | None = None) -> bool:
        """False if the id was accepted before (and has not expired) or is being processed."""
        current = time.time() if now is None else now
        key = (partner, webhook_id)
        with self._lock:
            if key in self._pending:
                return False
            row = self._db.execute("SELECT expires FROM webhook_ids WHERE partner=? AND id=?",
                                   key).fetchone()
            if row is not None and row[0] > current:
                return False
            self._pending.add(key)
            return True

    def remember(self, partner: str, webhook_id: str, *, expires: float) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO webhook_ids VALUES (?, ?, ?)",
                             (partner, webhook_id, expires))

    def release(self, partner: str, webhook_id: str) -> None:
        with self._lock:
            self._pending.discard((partner, webhook_id))

    def purge(self, *, now: float | None = None) -> int:
        """Forget expired ids; return how many."""
        current = time.time() if now is None else now
        with self._lock:
            return self._db.execute("DELETE FROM webhook_ids WHERE expires <= ?",
                                    (current,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
