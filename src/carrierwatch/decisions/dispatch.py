"""Executing escalations: the ledger, the signed webhook, manual takeover and the task queue.

The **ledger** (SQLite, ``<data dir>/decisions/ledger.sqlite3``, WAL) records every escalation
by its deterministic id before anything is done with it: an id already in the ledger is never
executed again, whatever re-delivers it (a replay of the same files, a restarted worker that
re-reads its topic). An escalation is ``pending`` until its webhook was answered 2xx
(``delivered``), it failed ``max_attempts`` times (``dead``: dead-lettered, with the last
error, and shown by ``carrierwatch escalations list --state dead``), or its partner was under
manual takeover (``task``: a row of the manual queue instead of the webhook). Pending rows left
by a crash are retried by the next :meth:`Dispatcher.handle`.

The webhook is signed as Standard Webhooks (the ``standardwebhooks`` package: ``webhook-id`` =
the escalation id, so a receiver can drop a repeat, ``webhook-timestamp``,
``webhook-signature``) and retried with exponential backoff (tenacity).

**Takeover**: ``carrierwatch takeover --partner P --reason R --until T`` records who, when, why
and until when; while one is active (now < until, not ended) that partner's escalations become
tasks. Expiry needs no process: "active" is evaluated at the time of each decision.
"""

from __future__ import annotations

import getpass
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from carrierwatch.core.errors import CarrierwatchError, ConfigurationError
from carrierwatch.decisions.engine import Escalation

__all__ = ["DispatchSummary", "Dispatcher", "Ledger", "WebhookTarget", "who"]

log = logging.getLogger("carrierwatch.decisions")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS escalations (
    escalation_id TEXT PRIMARY KEY, partner_id TEXT NOT NULL, body TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    recorded_at REAL NOT NULL, done_at REAL);
CREATE TABLE IF NOT EXISTS takeovers (
    takeover_id INTEGER PRIMARY KEY AUTOINCREMENT, partner_id TEXT NOT NULL,
    reason TEXT NOT NULL, created_by TEXT NOT NULL, created_at REAL NOT NULL,
    until REAL NOT NULL, ended_at REAL, ended_by TEXT);
CREATE TABLE IF NOT EXISTS tasks (
    escalation_id TEXT PRIMARY KEY, partner_id TEXT NOT NULL, takeover_id INTEGER,
    body TEXT NOT NULL, created_at REAL NOT NULL, done_at REAL, done_by TEXT, note TEXT);
CREATE TABLE IF NOT EXISTS silences (
    silence_id TEXT PRIMARY KEY, partner_id TEXT NOT NULL, reason TEXT NOT NULL,
    created_by TEXT NOT NULL, created_at REAL NOT NULL, until REAL NOT NULL, url TEXT NOT NULL);
"""


def who() -> str:
    """The person acting (``CARRIERWATCH_OPERATOR``, else the login name)."""
    import os

    name = os.environ.get("CARRIERWATCH_OPERATOR")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Ledger:
    """The persisted record of escalations, takeovers, tasks and silences (SQLite)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigurationError(f"cannot open the decisions ledger {path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    # -- escalations -----------------------------------------------------------------------
    def record(self, escalations: Iterable[Escalation], now: float) -> list[Escalation]:
        """Record new escalations as pending; the ones that were not in the ledger yet."""
        new: list[Escalation] = []
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for esc in escalations:
                cursor = self.db.execute(
                    "INSERT OR IGNORE INTO escalations (escalation_id, partner_id, body, state, "
                    "recorded_at) VALUES (?, ?, ?, 'pending', ?)",
                    (esc.escalation_id, esc.partner_id, json.dumps(esc.to_json_dict()), now))
                if cursor.rowcount:
                    new.append(esc)
        return new

    def requeue(self, ids: Sequence[str] = ()) -> int:
        """Dead escalations (all, or those of ``ids``) back to pending; how many."""
        if ids:
            marks = ",".join("?" * len(ids))
            cursor = self.db.execute(f"UPDATE escalations SET state = 'pending' WHERE state = "
                                     f"'dead' AND escalation_id IN ({marks})", tuple(ids))
        else:
            cursor = self.db.execute("UPDATE escalations SET state = 'pending' "
                                     "WHERE state = 'dead'")
        return cursor.rowcount

    def pending(self) -> list[Escalation]:
        rows = self.db.execute("SELECT body FROM escalations WHERE state = 'pending' "
                               "ORDER BY recorded_at, escalation_id").fetchall()
        return [Escalation.from_json_dict(json.loads(body)) for (body,) in rows]

    def finish(self, escalation_id: str, state: str, attempts: int, error: str | None,
               now: float) -> None:
        self.db.execute("UPDATE escalations SET state = ?, attempts = ?, last_error = ?, "
                        "done_at = ? WHERE escalation_id = ?",
                        (state, attempts, error, now, escalation_id))

    def escalations(self, state: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT escalation_id, partner_id, state, attempts, last_error, recorded_at, "
               "body FROM escalations")
        rows = self.db.execute(sql + (" WHERE state = ?" if state else "") + " ORDER BY "
                               "recorded_at, escalation_id", (state,) if state else ()).fetchall()
        names = ("escalation_id", "partner_id", "state", "attempts", "last_error",
                 "recorded_at", "body")
        return [dict(zip(names, row, strict=True)) for row in rows]

    # -- takeovers -------------------------------------------------------------------------
    def start_takeover(self, partner_id: str, reason: str, until: float, by: str,
                       now: float) -> int:
        cursor = self.db.execute(
            "INSERT INTO takeovers (partner_id, reason, created_by, created_at, until) "
            "VALUES (?, ?, ?, ?, ?)", (partner_id, reason, by, now, until))
        return int(cursor.lastrowid or 0)

    def end_takeover(self, partner_id: str, by: str, now: float) -> int:
        cursor = self.db.execute(
            "UPDATE takeovers SET ended_at = ?, ended_by = ? WHERE partner_id = ? AND "
            "ended_at IS NULL AND until > ?", (now, by, partner_id, now))
        return cursor.rowcount

    def active_takeover(self, partner_id: str, now: float) -> int | None:
        row = self.db.execute(
            "SELECT takeover_id FROM takeovers WHERE partner_id = ? AND ended_at IS NULL AND "
            "created_at <= ? AND until > ? ORDER BY takeover_id DESC LIMIT 1",
            (partner_id, now, now)).fetchone()
        return None if row is None else int(row[0])

    def takeovers(self, *, active_at: float | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT takeover_id, partner_id, reason, created_by, created_at, until, ended_at, "
               "ended_by FROM takeovers")
        params: tuple[Any, ...] = ()
        if active_at is not None:
            sql += " WHERE ended_at IS NULL AND until > ?"
            params = (active_at,)
        names = ("takeover_id", "partner_id", "reason", "created_by", "created_at", "until",
                 "ended_at", "ended_by")
        return [dict(zip(names, row, strict=True))
                for row in self.db.execute(sql + " ORDER BY takeover_id", params).fetchall()]

    # -- tasks -----------------------------------------------------------------------------
    def add_task(self, esc: Escalation, takeover_id: int, now: float) -> None:
        self.db.execute("INSERT OR IGNORE INTO tasks (escalation_id, partner_id, takeover_id, "
                        "body, created_at) VALUES (?, ?, ?, ?, ?)",
                        (esc.escalation_id, esc.partner_id, takeover_id,
                         json.dumps(esc.to_json_dict()), now))

    def tasks(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        sql = ("SELECT escalation_id, partner_id, takeover_id, body, created_at, done_at, "
               "done_by, note FROM tasks")
        if open_only:
            sql += " WHERE done_at IS NULL"
        names = ("escalation_id", "partner_id", "takeover_id", "body", "created_at",
                 "done_at", "done_by", "note")
        return [dict(zip(names, row, strict=True))
                for row in self.db.execute(sql + " ORDER BY created_at, escalation_id")]

    def finish_task(self, escalation_id: str, by: str, note: str, now: float) -> bool:
        cursor = self.db.execute("UPDATE tasks SET done_at = ?, done_by = ?, note = ? "
                                 "WHERE escalation_id = ? AND done_at IS NULL",
                                 (now, by, note, escalation_id))
        return bool(cursor.rowcount)

    def open_tasks_by_partner(self) -> dict[str, int]:
        return {str(p): int(n) for p, n in self.db.execute(
            "SELECT partner_id, count(*) FROM tasks WHERE done_at IS NULL GROUP BY partner_id")}

    # -- silences --------------------------------------------------------------------------
    def record_silence(self, silence_id: str, partner_id: str, reason: str, by: str,
                       now: float, until: float, url: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO silences VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (silence_id, partner_id, reason, by, now, until, url))


@dataclass(frozen=True)
class WebhookTarget:
    """Where escalations are POSTed, the Standard Webhooks secret and the retry policy."""

    url: str
    secret: str  # whsec_<base64>
    max_attempts: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    timeout: float = 10.0


class WebhookError(CarrierwatchError):
    """One failed delivery attempt (a non-2xx answer or a transport error)."""


@dataclass
class DispatchSummary:
    delivered: int = 0
    tasks: int = 0
    dead: int = 0
    skipped: int = 0  # already in the ledger
    recorded: int = 0  # new ones without a webhook configured


class Dispatcher:
    """Records escalations in the ledger and executes the new ones (see the module docstring).

    ``on_executed(partner, action, state)`` is called per action of each executed escalation
    (the Prometheus counters hang there).
    """

    def __init__(self, ledger: Ledger, webhook: WebhookTarget | None = None, *,
                 clock: Callable[[], float] = time.time,
                 on_executed: Callable[[Escalation, str], None] | None = None) -> None:
        self.ledger = ledger
        self.webhook = webhook
        self.clock = clock
        self.on_executed = on_executed

    def handle(self, escalations: Sequence[Escalation]) -> DispatchSummary:
        summary = DispatchSummary()
        now = self.clock()
        new = self.ledger.record(escalations, now)
        summary.skipped = len(escalations) - len(new)
        for esc in self.ledger.pending():
            takeover = self.ledger.active_takeover(esc.partner_id, self.clock())
            if takeover is not None:
                self.ledger.add_task(esc, takeover, self.clock())
                self.ledger.finish(esc.escalation_id, "task", 0, None, self.clock())
                summary.tasks += 1
                self._executed(esc, "task")
                continue
            if self.webhook is None:
                self.ledger.finish(esc.escalation_id, "recorded", 0, None, self.clock())
                summary.recorded += 1
                self._executed(esc, "recorded")
                continue
            attempts, error = self._deliver(esc)
            if error is None:
                self.ledger.finish(esc.escalation_id, "delivered", attempts, None, self.clock())
                summary.delivered += 1
                self._executed(esc, "delivered")
            else:
                self.ledger.finish(esc.escalation_id, "dead", attempts, error, self.clock())
                log.error("escalation %s (%s, %s/%s) dead-lettered after %d attempts: %s; "
                          "`carrierwatch escalations retry` sends it again",
                          esc.escalation_id, esc.partner_id, esc.table, esc.rule, attempts,
                          error)
                summary.dead += 1
                self._executed(esc, "dead")
        return summary

    def _executed(self, esc: Escalation, state: str) -> None:
        if self.on_executed is not None:
            self.on_executed(esc, state)

    def _deliver(self, esc: Escalation) -> tuple[int, str | None]:
        import urllib.error
        import urllib.request

        from standardwebhooks.webhooks import Webhook
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_exponential,
        )

        target = self.webhook
        assert target is not None
        signer = Webhook(target.secret)
        payload = json.dumps(esc.to_json_dict(), separators=(",", ":"))
        attempts = 0

        def post() -> None:
            nonlocal attempts
            attempts += 1
            stamp = datetime.now(UTC)
            signature = signer.sign(esc.escalation_id, stamp, payload)
            headers = {"content-type": "application/json", "webhook-id": esc.escalation_id,
                       "webhook-timestamp": str(int(stamp.timestamp())),
                       "webhook-signature": signature}
            request = urllib.request.Request(target.url, data=payload.encode(), headers=headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=target.timeout) as answer:
                    status = int(answer.status)
            except urllib.error.HTTPError as exc:
                raise WebhookError(f"HTTP {exc.code}") from None
            except (urllib.error.URLError, OSError) as exc:
                raise WebhookError(f"{type(exc).__name__}: {exc}") from None
            if not 200 <= status < 300:
                raise WebhookError(f"HTTP {status}")

        try:
            for attempt in Retrying(stop=stop_after_attempt(target.max_attempts),
                                    wait=wait_exponential(multiplier=target.backoff_initial,
                                                          max=target.backoff_max),
                                    retry=retry_if_exception_type(WebhookError), reraise=False):
                with attempt:
                    post()
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            return attempts, str(cause)
        return attempts, None
