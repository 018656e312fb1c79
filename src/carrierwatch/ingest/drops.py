"""Batch drops: ``carrierwatch ingest-file`` and ``carrierwatch watch``.

A partner whose ``partners/<id>.yaml`` says ``delivery: batch`` (Valley Express) hands over
files, CSV or JSON. Each file becomes **one raw message** on ``raw.<partner>``, exactly as the
gateway writes a webhook: the body is the file byte for byte, the key and
``carrierwatch-request-id`` header a file id, plus ``carrierwatch-received-time`` (epoch ms),
``carrierwatch-partner``, ``carrierwatch-source`` (the file's name), ``carrierwatch-sha256``
and ``content-type`` (``text/csv`` or ``application/json``). The worker reads it unchanged
(:func:`~carrierwatch.streams.records.received_time_of`, ``headers_to_dict`` and the partner's
transformer); its dead letters for bad rows go to ``dlq.<partner>`` with the file name and line
in their ``source`` (see :func:`carrierwatch.transformers.csv_mapping.data_row_lines`).

Durability is the gateway's: produced with ``acks=all`` and the delivery report awaited, or,
while Kafka is unreachable, appended to a write-ahead spool (``<data dir>/drops/spool``, fsynced)
that :class:`~carrierwatch.ingest.kafka.Drainer` moves into Kafka exactly once by file id. Only
then is the file recorded as done and moved.

Exactly once per content: a ledger (sqlite, ``<data dir>/drops/ledger.sqlite3``) keyed by the
SHA-256 of the file's bytes. Before producing, the file id and the raw topic's high watermarks
are recorded (``pending``); after the hand-off the entry is ``done``. A file whose content is
``done`` is a duplicate (moved to ``done/`` with a note, not produced again). A ``pending``
entry found after a crash is settled by reading the raw topic from the recorded watermarks
(and the spool) for its file id: found, it is ``done``; not found, it is produced again under
the same id.

Partially written files are never read: names starting with ``.`` or ending in ``.part`` or
``.tmp`` are ignored (write under such a name, then rename), and ``watch`` takes a file only
once its size and modification time have not changed for ``settle_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from carrierwatch.core.partner import PartnerSpec
from carrierwatch.ingest.kafka import (
    REQUEST_ID_HEADER,
    Drainer,
    RawProducer,
    read_request_ids,
)
from carrierwatch.ingest.spool import Spool, SpoolEntry, SpoolFull, fsync_dir
from carrierwatch.streams.records import RECEIVED_TIME_HEADER, SOURCE_FILE_HEADER

__all__ = ["CONTENT_TYPES", "DONE", "FAILED", "SOURCE_HEADER", "DropSettings", "Dropper",
           "FileOutcome", "Ledger", "is_partial_name", "settled"]

log = logging.getLogger(__name__)

PARTNER_HEADER = "carrierwatch-partner"
#: the raw message header holding the dropped file's name
SOURCE_HEADER = SOURCE_FILE_HEADER
SHA256_HEADER = "carrierwatch-sha256"
#: file suffix -> content type of the raw message
CONTENT_TYPES = {".csv": "text/csv", ".json": "application/json"}
#: partner ``format`` -> the suffixes it may drop
_FORMAT_SUFFIXES = {"csv": {".csv"}, "json": {".json"}}
DONE = "done"
FAILED = "failed"
_PARTIAL_SUFFIXES = (".part", ".tmp")


class DropSettings(BaseSettings):
    """Settings of ``ingest-file`` and ``watch`` (``CARRIERWATCH_DROPS_*``; options win)."""

    model_config = SettingsConfigDict(env_prefix="CARRIERWATCH_DROPS_", extra="ignore")

    settle_seconds: float = Field(
        5.0, ge=0, description="A watched file is read once its size and modification time "
                               "have not changed for this long.")
    interval: float = Field(2.0, gt=0, description="Seconds between two scans of a watched "
                                                   "folder.")
    max_file_bytes: int = Field(
        768 * 2**10, gt=0, description="Larger files go to failed/. A file is one Kafka "
                                       "message: keep this under the raw topics' "
                                       "max.message.bytes (1 MiB on a default broker).")
    ledger: Path | None = Field(None, description="Checksum ledger [<data dir>/drops/"
                                                  "ledger.sqlite3].")
    spool_dir: Path | None = Field(None, description="Write-ahead spool [<data dir>/drops/"
                                                     "spool].")
    spool_max_bytes: int = Field(1024 * 2**20, gt=0)
    delivery_timeout: float = Field(10.0, gt=0, description="Seconds to wait for Kafka's "
                                                           "acknowledgement before spooling.")
    declare_topics: bool = Field(True, description="Create missing raw.<partner> topics.")


def is_partial_name(name: str) -> bool:
    """Whether a file name says the file is still being written (never read).

    >>> [is_partial_name(n) for n in ("a.csv", "a.csv.part", ".a.csv", "a.tmp", "A.PART")]
    [False, True, True, True, True]
    """
    return name.startswith(".") or name.lower().endswith(_PARTIAL_SUFFIXES)


def settled(stat: os.stat_result, settle_seconds: float, now: float | None = None) -> bool:
    """Whether a file was last modified at least ``settle_seconds`` ago."""
    now = time.time() if now is None else now
    return now - stat.st_mtime >= settle_seconds


class Ledger:
    """The checksum ledger: one row per file content ever handed over (sqlite, WAL)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS files (sha256 TEXT PRIMARY KEY, partner TEXT NOT NULL, "
            "name TEXT NOT NULL, file_id TEXT NOT NULL, state TEXT NOT NULL, "
            "offsets TEXT, store TEXT, at_ms INTEGER NOT NULL)")

    def get(self, sha256: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT partner, name, file_id, state, offsets, store, at_ms "
                               "FROM files WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            return None
        keys = ("partner", "name", "file_id", "state", "offsets", "store", "at_ms")
        out = dict(zip(keys, row, strict=True))
        out["offsets"] = orjson.loads(out["offsets"]) if out["offsets"] else None
        return out

    def pending(self, sha256: str, partner: str, name: str, file_id: str,
                offsets: dict[str, dict[str, int]] | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, 'pending', ?, NULL, ?)",
            (sha256, partner, name, file_id,
             orjson.dumps(offsets).decode() if offsets is not None else None,
             time.time_ns() // 1_000_000))

    def pending_entries(self) -> list[tuple[str, str]]:
        """(sha256, file id) of every entry not known to be handed over."""
        return [(row[0], row[1]) for row in self._db.execute(
            "SELECT sha256, file_id FROM files WHERE state = 'pending'")]

    def done(self, sha256: str, store: str) -> None:
        self._db.execute("UPDATE files SET state = 'done', store = ?, at_ms = ? "
                         "WHERE sha256 = ?", (store, time.time_ns() // 1_000_000, sha256))

    def close(self) -> None:
        self._db.close()


@dataclass
class FileOutcome:
    """What happened to one file."""

    path: Path
    #: ingested, duplicate, failed, skipped (partial or not settled: left where it is)
    status: str
    partner: str | None = None
    reason: str = ""
    file_id: str = ""
    #: where the raw message was made durable: kafka or spool
    store: str = ""
    moved_to: Path | None = None

    def describe(self) -> str:
        if self.status == "ingested":
            return (f"{self.path}: ingested into raw.{self.partner} as {self.file_id} "
                    f"({self.store})")
        return f"{self.path}: {self.status}: {self.reason}"


def _unique(target: Path) -> Path:
    if not target.exists():
        return target
    stem, suffix = target.name, ""
    if "." in target.name:
        stem, _, rest = target.name.partition(".")
        suffix = "." + rest
    for n in range(1, 10_000):
        candidate = target.with_name(f"{stem}~{n}{suffix}")
        if not candidate.exists():
            return candidate
    return target.with_name(f"{target.name}~{uuid.uuid4().hex}")  # pragma: no cover


@dataclass
class Dropper:
    """Hands files over to ``raw.<partner>`` (see the module docstring). Async: one event loop."""

    partners: dict[str, PartnerSpec]
    batch_partners: set[str]
    topics: dict[str, str]
    producer: RawProducer
    spool: Spool
    ledger: Ledger
    settings: DropSettings
    topic_specs: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.drainer = Drainer(self.spool, self.producer)
        self._topics_declared = False

    @classmethod
    def open(cls, *, settings: Any, drop_settings: DropSettings, registry: Any,
             namespace: str | None = None) -> Dropper:
        from carrierwatch.streams.topology import StreamConfig, TopicSpec, Topology

        config = StreamConfig()
        if namespace is not None:
            config = config.model_copy(update={"namespace": namespace})
        topology = Topology(config, registry.ids())
        partners = {p.id: p.spec for p in registry}
        batch = {p for p, spec in partners.items() if spec.delivery == "batch"}
        data_dir = Path(settings.data_dir).expanduser()
        return cls(
            partners=partners, batch_partners=batch,
            topics={p: topology.raw(p) for p in partners},
            producer=RawProducer(settings.kafka_bootstrap,
                                 delivery_timeout=drop_settings.delivery_timeout),
            spool=Spool(drop_settings.spool_dir or data_dir / "drops" / "spool",
                        max_bytes=drop_settings.spool_max_bytes),
            ledger=Ledger(drop_settings.ledger or data_dir / "drops" / "ledger.sqlite3"),
            settings=drop_settings,
            topic_specs=[TopicSpec(topology.raw(p), config.raw_partitions, {})
                         for p in sorted(batch)])

    # -- Kafka ----------------------------------------------------------------------------------

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    async def connect(self) -> bool:
        """Probe Kafka, declare the raw topics, drain what the spool holds; whether Kafka is up."""
        await self._settle_spooled()
        up = await self.producer.probe(min(5.0, self.settings.delivery_timeout))
        if up and not self._topics_declared and self.settings.declare_topics:
            from carrierwatch.streams.topology import ensure_topics

            try:
                await self._run(lambda: ensure_topics(self.producer.bootstrap, self.topic_specs,
                                                      timeout=10.0))
                self._topics_declared = True
            except Exception as exc:
                log.warning("drops: cannot declare the raw topics yet: %s", exc)
        if up:
            await self.drain()
        return self.producer.up

    async def _settle_spooled(self) -> None:
        """A crash between a spool append and the ledger's ``done``: the spool holds the file
        id. Record it before the drain takes it out of the spool."""
        pending = self.ledger.pending_entries()
        if not pending or not self.spool.depth:
            return
        spooled = {e.request_id for e in await self._run(self.spool.head, self.spool.depth)}
        for sha, file_id in pending:
            if file_id in spooled:
                log.warning("drops: %s was spooled before a crash; recorded now", file_id)
                self.ledger.done(sha, "spool")

    async def drain(self) -> int:
        """Move the spool into Kafka (as far as it goes); return the number moved."""
        moved = await self.drainer.drain_all("drops")
        return moved

    async def _watermarks(self, topic: str) -> dict[str, dict[str, int]] | None:
        if not self.producer.up:
            return None
        try:
            offsets: dict[str, dict[str, int]] = await self._run(
                self.drainer._watermarks, [topic])
            return offsets
        except Exception as exc:
            log.warning("drops: cannot read the watermarks of %s: %s", topic, exc)
            self.producer.up = False
            return None

    async def _already_delivered(self, entry: dict[str, Any]) -> bool:
        """Whether a ``pending`` ledger entry's file id is in Kafka or in the spool."""
        file_id = entry["file_id"]
        spooled = await self._run(self.spool.head, max(1, self.spool.depth))
        if any(e.request_id == file_id for e in spooled):
            return True
        if entry["offsets"] is None:
            return False  # nothing was produced before the spool append (not found there)
        found: set[str] = await self._run(read_request_ids, self.producer.bootstrap,
                                          entry["offsets"])
        return file_id in found

    async def _persist(self, entry: SpoolEntry) -> str:
        return str(await self.drainer.persist(entry, "drops"))

    # -- one file -------------------------------------------------------------------------------

    def partner_of(self, path: Path, partner: str | None) -> str:
        return partner or path.parent.name

    async def ingest(self, path: Path, partner: str | None = None, *,
                     move_under: Path | None = None) -> FileOutcome:
        """Hand ``path`` over (see the module docstring). With ``move_under``, the file then
        moves to ``<move_under>/done/`` or ``<move_under>/failed/`` (with a reason file),
        keeping its path relative to ``move_under``."""
        outcome = await self._ingest(path, self.partner_of(path, partner))
        if move_under is not None and outcome.status in ("ingested", "duplicate", "failed"):
            outcome.moved_to = self._move(path, move_under, outcome)
        return outcome

    async def _ingest(self, path: Path, partner: str) -> FileOutcome:
        def failed(reason: str) -> FileOutcome:
            return FileOutcome(path, "failed", partner, reason)

        if is_partial_name(path.name):
            return FileOutcome(path, "skipped", partner,
                               "partially written (a name starting with '.' or ending in "
                               ".part/.tmp); rename it when it is complete")
        spec = self.partners.get(partner)
        if spec is None:
            return failed(f"unknown partner {partner!r} (from --partner or the folder name); "
                          f"batch partners: {', '.join(sorted(self.batch_partners)) or 'none'}")
        if partner not in self.batch_partners:
            return failed(f"{partner} is not a batch partner (its delivery is {spec.delivery})")
        suffix = path.suffix.lower()
        allowed = _FORMAT_SUFFIXES.get(spec.format, set(CONTENT_TYPES))
        if suffix not in allowed:
            return failed(f"unsupported file type {suffix or '(none)'!r}: {partner} drops "
                          f"{', '.join(sorted(allowed))} files")
        try:
            size = path.stat().st_size
            if size > self.settings.max_file_bytes:
                return failed(f"too large: {size} bytes, the limit is "
                              f"{self.settings.max_file_bytes} (CARRIERWATCH_DROPS_MAX_FILE_BYTES)")
            body = path.read_bytes()
        except OSError as exc:
            return failed(f"unreadable: {exc.strerror or exc}")
        if not body:
            return failed("empty file")
        if len(body) > self.settings.max_file_bytes:
            return failed(f"too large: {len(body)} bytes")
        sha = hashlib.sha256(body).hexdigest()
        known = self.ledger.get(sha)
        if known is not None and known["state"] == "pending" \
                and await self._already_delivered(known):
            log.warning("drops: %s was handed over before a crash as %s; recorded now",
                        path.name, known["file_id"])
            self.ledger.done(sha, "recovered")
            known = self.ledger.get(sha)
        if known is not None and known["state"] == "done":
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(known["at_ms"] / 1000))
            return FileOutcome(path, "duplicate", partner,
                               f"same content (sha256 {sha}) as {known['name']!r}, ingested "
                               f"into raw.{known['partner']} as {known['file_id']} at {when}; "
                               f"not ingested again", known["file_id"])
        file_id = known["file_id"] if known is not None else f"file-{uuid.uuid4().hex}"
        topic = self.topics[partner]
        received_ms = time.time_ns() // 1_000_000
        headers = ((RECEIVED_TIME_HEADER, str(received_ms)), (PARTNER_HEADER, partner),
                   (REQUEST_ID_HEADER, file_id), (SOURCE_HEADER, path.name),
                   (SHA256_HEADER, sha), ("content-type", CONTENT_TYPES[suffix]))
        entry = SpoolEntry(file_id, partner, topic, received_ms, headers, body)
        self.ledger.pending(sha, partner, path.name, file_id, await self._watermarks(topic))
        try:
            store = await self._persist(entry)
        except (SpoolFull, OSError) as exc:
            # nothing durable: the ledger entry stays pending (the next try finds it not
            # delivered and produces it under the same id); the file stays where it is
            return FileOutcome(path, "skipped", partner,
                               f"Kafka is unreachable and the spool cannot take it: {exc}")
        self.ledger.done(sha, store)
        return FileOutcome(path, "ingested", partner, "", file_id, store)

    @staticmethod
    def _move(path: Path, root: Path, outcome: FileOutcome) -> Path | None:
        try:
            relative = path.relative_to(root)
        except ValueError:
            relative = Path(path.name)
        folder = DONE if outcome.status in ("ingested", "duplicate") else FAILED
        target = _unique(root / folder / relative)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            if outcome.reason:
                note = target.with_name(target.name + ".reason.txt")
                note.write_text(outcome.reason + "\n", encoding="utf-8")
            fsync_dir(target.parent)
        except OSError as exc:
            log.error("drops: cannot move %s to %s/: %s", path, folder, exc)
            return None
        return target

    # -- a watched folder -----------------------------------------------------------------------

    def candidates(self, root: Path, partner: str | None) -> Iterator[tuple[Path, str | None]]:
        """The files of a watched folder: its own (partner from ``partner`` or the folder's
        name) and those of its sub-folders (partner: the sub-folder's name), except ``done/``
        and ``failed/``."""
        try:
            children = sorted(root.iterdir())
        except OSError as exc:
            log.error("drops: cannot list %s: %s", root, exc)
            return
        for child in children:
            if child.is_file():
                yield child, partner or root.name
            elif child.is_dir() and child.name not in (DONE, FAILED) \
                    and not child.name.startswith("."):
                with contextlib.suppress(OSError):
                    for sub in sorted(child.iterdir()):
                        if sub.is_file():
                            yield sub, child.name

    async def scan(self, root: Path, partner: str | None,
                   seen: dict[Path, tuple[int, int]]) -> tuple[list[FileOutcome], int]:
        """Ingest every settled file of ``root``; return the outcomes and how many files wait
        (partial names or not settled yet). ``seen`` keeps (size, mtime) between scans."""
        outcomes: list[FileOutcome] = []
        waiting = 0
        now = time.time()
        present: set[Path] = set()
        for path, owner in self.candidates(root, partner):
            present.add(path)
            if is_partial_name(path.name):
                waiting += 1
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = seen.get(path)
            seen[path] = signature
            if (previous is not None and previous != signature) \
                    or not settled(stat, self.settings.settle_seconds, now):
                waiting += 1
                continue
            outcomes.append(await self.ingest(path, owner, move_under=root))
        for gone in set(seen) - present:
            del seen[gone]
        return outcomes, waiting

    async def close(self) -> None:
        left = self.producer.close()
        if left:
            log.warning("drops: %d messages still unacknowledged at shutdown", left)
        self.spool.close()
        self.ledger.close()


def summarize(outcomes: Sequence[FileOutcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return counts
