"""The tracking registry: which numbers ``carrierwatch poll`` follows per partner, and how far.

One sqlite database (WAL, ``synchronous=FULL``), ``<data dir>/poll/trackings.sqlite3`` by default
(``CARRIERWATCH_POLL_TRACKINGS``), shared by the poller, ``carrierwatch track`` and the gateway's
``POST /v1/trackings`` (several processes may write it; sqlite serialises them).

Numbers come from three sources, recorded in ``source``: ``manual`` (``carrierwatch track add``),
``api`` (``POST /v1/trackings``), ``store`` (packages still open in the store, ``carrierwatch track
sync``) and ``canary`` (the heartbeat's synthetic numbers, which start with the partner's
``synthetic_tracking_prefix``; :func:`add_trackings`).

The *cursor* is per number: ``digest``, the SHA-256 of that number's part of the last response
that is durable in ``raw.<partner>``. A response is produced only when a number's part changed,
and a digest moves only after the produce's delivery report (or the spool's fsync). In between,
the produce is recorded in ``pending`` (its request id, the new digests and the raw topic's
high watermarks), so that a poller killed with -9 settles it on restart by reading the topic from
those watermarks: found, the digests move without producing again; not found, the row goes and the
next poll produces the same content under the same request id.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from carrierwatch.core.errors import CarrierwatchError

__all__ = ["SOURCES", "TRACKING_NUMBER", "Tracking", "TrackingError", "TrackingRegistry",
           "add_trackings", "default_path", "open_trackings_from_store"]

#: where a followed number came from
SOURCES = ("manual", "api", "store", "canary")
#: what a tracking number may look like (every partner's numbers fit; anything else is refused)
TRACKING_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{3,63}$")
#: statuses after which a package is no longer open
TERMINAL_STATUSES = ("delivered", "returned", "cancelled")


class TrackingError(CarrierwatchError, ValueError):
    """A registration was refused (unknown or non-polled partner, malformed number)."""


@dataclass(frozen=True)
class Tracking:
    """One followed number."""

    partner: str
    number: str
    source: str
    added_ms: int
    active: bool
    synthetic: bool
    digest: str | None
    polled_ms: int | None
    changed_ms: int | None


def default_path(data_dir: Path | None = None) -> Path:
    """``CARRIERWATCH_POLL_TRACKINGS``, else ``<data dir>/poll/trackings.sqlite3``."""
    override = os.environ.get("CARRIERWATCH_POLL_TRACKINGS")
    if override:
        return Path(override).expanduser()
    if data_dir is None:
        from carrierwatch.settings import get_settings

        data_dir = get_settings().data_dir
    return Path(data_dir).expanduser() / "poll" / "trackings.sqlite3"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class TrackingRegistry:
    """The registry's database (see the module docstring). Not thread-safe: one per thread."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS trackings (partner TEXT NOT NULL, number TEXT NOT NULL, "
            "source TEXT NOT NULL, added_ms INTEGER NOT NULL, active INTEGER NOT NULL, "
            "synthetic INTEGER NOT NULL, digest TEXT, polled_ms INTEGER, changed_ms INTEGER, "
            "PRIMARY KEY (partner, number))")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (request_id TEXT PRIMARY KEY, "
            "partner TEXT NOT NULL, digests TEXT NOT NULL, offsets TEXT, at_ms INTEGER NOT NULL)")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TrackingRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registrations --------------------------------------------------------------------------

    def add(self, partner: str, numbers: Iterable[str], source: str, *,
            synthetic_prefix: str | None = None) -> int:
        """Follow ``numbers`` (again, if removed); return how many were not followed before."""
        if source not in SOURCES:
            raise TrackingError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
        rows = []
        for number in numbers:
            if not TRACKING_NUMBER.match(number):
                raise TrackingError(f"malformed tracking number {number[:80]!r}: 4-64 letters, "
                                    "digits, '-' or '_'")
            rows.append(number)
        now = _now_ms()
        added = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for number in rows:
                synthetic = bool(synthetic_prefix) and number.startswith(synthetic_prefix or "")
                cursor = self._db.execute(
                    "INSERT INTO trackings VALUES (?, ?, ?, ?, 1, ?, NULL, NULL, NULL) "
                    "ON CONFLICT (partner, number) DO UPDATE SET active = 1, added_ms = "
                    "excluded.added_ms WHERE trackings.active = 0",
                    (partner, number, source, now, int(synthetic)))
                added += cursor.rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return added

    def remove(self, partner: str, numbers: Iterable[str]) -> int:
        """Stop following ``numbers``; return how many were followed."""
        removed = 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for number in numbers:
                removed += self._db.execute(
                    "UPDATE trackings SET active = 0 WHERE partner = ? AND number = ? "
                    "AND active = 1", (partner, number)).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return removed

    def entries(self, partner: str | None = None, *, include_inactive: bool = False
                ) -> list[Tracking]:
        sql = ("SELECT partner, number, source, added_ms, active, synthetic, digest, polled_ms, "
               "changed_ms FROM trackings WHERE 1 = 1")
        args: list[Any] = []
        if partner is not None:
            sql += " AND partner = ?"
            args.append(partner)
        if not include_inactive:
            sql += " AND active = 1"
        sql += " ORDER BY partner, number"
        return [Tracking(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5]), r[6], r[7], r[8])
                for r in self._db.execute(sql, args)]

    def count_active(self) -> dict[str, int]:
        return dict(self._db.execute(
            "SELECT partner, count(*) FROM trackings WHERE active = 1 GROUP BY partner"))

    def expire(self, partner: str, max_age_days: int, now_ms: int | None = None) -> int:
        """Stop following numbers registered more than ``max_age_days`` ago."""
        cutoff = (now_ms or _now_ms()) - max_age_days * 86_400_000
        return self._db.execute("UPDATE trackings SET active = 0 WHERE partner = ? AND active = 1 "
                                "AND added_ms < ?", (partner, cutoff)).rowcount

    # -- polling --------------------------------------------------------------------------------

    def due(self, partner: str, interval_ms: int, limit: int, now_ms: int | None = None,
            canary_interval_ms: int | None = None) -> list[str]:
        """Active numbers not polled within ``interval_ms`` (canaries: ``canary_interval_ms``,
        default the same), the longest waiting first."""
        now = now_ms or _now_ms()
        cutoff = now - interval_ms
        canary_cutoff = now - (interval_ms if canary_interval_ms is None else canary_interval_ms)
        return [r[0] for r in self._db.execute(
            "SELECT number FROM trackings WHERE partner = ? AND active = 1 AND "
            "(polled_ms IS NULL OR polled_ms <= CASE WHEN synthetic = 1 THEN ? ELSE ? END) "
            "ORDER BY coalesce(polled_ms, 0), number LIMIT ?",
            (partner, canary_cutoff, cutoff, limit))]

    def digests(self, partner: str, numbers: Sequence[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for start in range(0, len(numbers), 500):
            chunk = list(numbers[start:start + 500])
            marks = ",".join("?" * len(chunk))
            out.update(self._db.execute(
                f"SELECT number, digest FROM trackings WHERE partner = ? AND number IN ({marks})",
                [partner, *chunk]))
        return out

    def mark_polled(self, partner: str, numbers: Iterable[str], now_ms: int | None = None) -> None:
        now = now_ms or _now_ms()
        self._db.executemany("UPDATE trackings SET polled_ms = ? WHERE partner = ? AND number = ?",
                             [(now, partner, n) for n in numbers])

    def close_numbers(self, partner: str, numbers: Iterable[str]) -> int:
        """Stop following numbers whose package reached a terminal status (their last response
        is durable: called after :meth:`commit`)."""
        return self.remove(partner, numbers)

    # -- the cursor: pending produces and their commit ------------------------------------------

    def begin(self, request_id: str, partner: str, digests: Mapping[str, str],
              offsets: dict[str, dict[str, int]] | None) -> None:
        """Record a produce about to happen (before it is sent)."""
        self._db.execute("INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?)",
                         (request_id, partner, orjson.dumps(dict(digests)).decode(),
                          None if offsets is None else orjson.dumps(offsets).decode(), _now_ms()))

    def commit(self, request_id: str, now_ms: int | None = None) -> dict[str, str]:
        """The produce ``request_id`` is durable: move its numbers' digests, drop the row.
        Returns the digests moved (empty when the row is unknown)."""
        now = now_ms or _now_ms()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT partner, digests FROM pending WHERE request_id = ?",
                                   (request_id,)).fetchone()
            if row is None:
                self._db.execute("COMMIT")
                return {}
            partner, digests = row[0], orjson.loads(row[1])
            self._db.executemany(
                "UPDATE trackings SET digest = ?, changed_ms = ?, polled_ms = ? "
                "WHERE partner = ? AND number = ?",
                [(digest, now, now, partner, number) for number, digest in digests.items()])
            self._db.execute("DELETE FROM pending WHERE request_id = ?", (request_id,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return dict(digests)

    def abandon(self, request_id: str) -> None:
        """The produce did not happen: forget it (the next poll produces again)."""
        self._db.execute("DELETE FROM pending WHERE request_id = ?", (request_id,))

    def pending(self) -> list[tuple[str, str, dict[str, dict[str, int]] | None]]:
        """(request id, partner, offsets) of every produce not known to be durable."""
        return [(r[0], r[1], None if r[2] is None else orjson.loads(r[2]))
                for r in self._db.execute("SELECT request_id, partner, offsets FROM pending "
                                          "ORDER BY at_ms")]


def add_trackings(partner: str, numbers: Sequence[str], *, source: str = "api",
                  data_dir: Path | None = None, home: Path | None = None,
                  specs: Mapping[str, Any] | None = None) -> int:
    """Register ``numbers`` for ``partner``'s poller; return how many were new.

    The heartbeat producer calls this with ``source="canary"`` for its canary numbers (they
    must start with the partner's ``synthetic_tracking_prefix``); ``specs`` (partner id →
    :class:`~carrierwatch.core.partner.PartnerSpec`) spares loading the partner registry.

    Raises
    ------
    TrackingError
        An unknown partner, a partner without a ``poll:`` block, a malformed number, or a
        canary number without the synthetic prefix.
    """
    if specs is None:
        from carrierwatch.transformers.registry import load_registry

        specs = {p.id: p.spec for p in load_registry(home)}
    spec = specs.get(partner)
    if spec is None:
        raise TrackingError(f"unknown partner {partner!r}")
    if spec.poll is None:
        polled = sorted(p for p, s in specs.items() if s.poll is not None)
        raise TrackingError(f"{partner} is not polled (no poll: block in partners/{partner}.yaml);"
                            f" polled partners: {', '.join(polled) or 'none'}")
    prefix = spec.synthetic_tracking_prefix
    if source == "canary":
        bad = [n for n in numbers if not n.startswith(prefix)]
        if bad:
            raise TrackingError(f"canary numbers must start with {prefix!r}: {bad[0]!r}")
    with TrackingRegistry(default_path(data_dir)) as registry:
        return registry.add(partner, numbers, source, synthetic_prefix=prefix)


def open_trackings_from_store(store: Any, partners: Sequence[str], *, days: int = 45
                              ) -> dict[str, list[str]]:
    """Packages of ``partners`` still open in the store: not synthetic, no terminal status,
    an event within ``days`` days. Returns partner → tracking numbers."""
    if not partners:
        return {}
    rows = store.query(
        "SELECT partner_id, tracking_number FROM canonical_events FINAL "
        "WHERE partner_id IN {partners:Array(String)} AND NOT synthetic "
        "GROUP BY partner_id, tracking_number "
        "HAVING countIf(status IN {terminal:Array(String)}) = 0 "
        "AND max(event_time) >= now64(3) - toIntervalDay({days:UInt32}) "
        "ORDER BY partner_id, tracking_number",
        {"partners": list(partners), "terminal": list(TERMINAL_STATUSES), "days": days})
    out: dict[str, list[str]] = {}
    for partner, number in rows:
        if TRACKING_NUMBER.match(number):
            out.setdefault(partner, []).append(number)
    return out
