"""The gateway's write-ahead spool: accepted requests kept on local disk while Kafka is away.

Append-only segment files under the spool directory (``<data dir>/gateway/spool`` by default),
each a sequence of frames::

    magic "CWS1" | length u32 | crc32 u32 | meta length u32 | meta (JSON) | body

``meta`` holds the arrival sequence number, the request id, the partner, the target topic, the
received time and the headers; ``body`` is the raw request body, byte for byte. :meth:`Spool.append`
returns only after the frames are written and ``fsync``-ed, which is when the gateway may answer
202. A segment is named after the sequence number of its first entry and closed at
``segment_bytes``.

Draining is in arrival order: :meth:`Spool.head` reads the oldest pending entries and
:meth:`Spool.commit` moves the durable cursor (``cursor.json``, replaced atomically) past them
and deletes the segments left behind. A frame torn by a crash (short or with a bad CRC) can only
be the tail of the newest segment, and was never acknowledged: it is cut off when the spool is
opened. The drain protocol that makes the hand-over to Kafka exact across crashes (the *intent*
file) lives in :mod:`carrierwatch.ingest.kafka`; the spool only stores its intent record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Spool", "SpoolEntry", "SpoolFull", "fsync_dir"]

log = logging.getLogger(__name__)

_MAGIC = b"CWS1"
_HEAD = struct.Struct(">4sIII")  # magic, length of the rest (meta + body), crc32, meta length
_CURSOR = "cursor.json"
_INTENT = "intent.json"
_SUFFIX = ".seg"


class SpoolFull(Exception):
    """The spool holds its configured maximum; the request must be refused (503)."""


@dataclass(frozen=True)
class SpoolEntry:
    """One accepted request waiting for Kafka."""

    request_id: str
    partner: str
    topic: str
    received_ms: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: arrival sequence number (assigned by :meth:`Spool.append`)
    seq: int = 0

    def frame(self, seq: int) -> bytes:
        meta = orjson.dumps({"seq": seq, "rid": self.request_id, "partner": self.partner,
                             "topic": self.topic, "received": self.received_ms,
                             "headers": self.headers})
        payload = meta + self.body
        return _HEAD.pack(_MAGIC, len(payload), zlib.crc32(payload), len(meta)) + payload


@dataclass(frozen=True)
class _Slot:
    seq: int
    segment: Path
    offset: int
    size: int
    received_ms: int


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a file created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _read_frame(handle: Any, offset: int) -> tuple[dict[str, Any], bytes, int] | None:
    """The frame at ``offset`` (meta, body, its size), or None if it is torn or absent."""
    handle.seek(offset)
    head = handle.read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    magic, length, crc, meta_length = _HEAD.unpack(head)
    if magic != _MAGIC or meta_length > length:
        return None
    payload = handle.read(length)
    if len(payload) < length or zlib.crc32(payload) != crc:
        return None
    return orjson.loads(payload[:meta_length]), payload[meta_length:], _HEAD.size + length


class Spool:
    """The spool directory (thread-safe: appends and drains may run in executor threads)."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 16 * 2**20) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._slots: deque[_Slot] = deque()
        self._bytes = 0
        self._next_seq = 1
        self._segment: Path | None = None
        self._handle: Any = None
        self._segment_size = 0
        self._open()

    # -- opening and recovery -------------------------------------------------------------------

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def _open(self) -> None:
        cursor_file = self.directory / _CURSOR
        cursor = orjson.loads(cursor_file.read_bytes())["next"] if cursor_file.exists() else 1
        self._next_seq = cursor
        segments = self._segments()
        for index, segment in enumerate(segments):
            offset = 0
            last_seq: int | None = None
            with open(segment, "rb") as handle:
                while True:
                    frame = _read_frame(handle, offset)
                    if frame is None:
                        break
                    meta, _body, size = frame
                    last_seq = meta["seq"]
                    if meta["seq"] >= cursor:
                        self._slots.append(_Slot(meta["seq"], segment, offset, size,
                                                 meta["received"]))
                        self._bytes += size
                    offset += size
                end = handle.seek(0, os.SEEK_END)
            if offset < end:
                if index == len(segments) - 1:
                    log.warning("spool: cutting a torn frame (%d bytes) off %s", end - offset,
                                segment.name)
                    with open(segment, "r+b") as handle:
                        handle.truncate(offset)
                        os.fsync(handle.fileno())
                else:  # pragma: no cover - only a disk fault can do this
                    log.error("spool: %s is damaged after byte %d", segment.name, offset)
            if last_seq is not None:
                self._next_seq = max(self._next_seq, last_seq + 1)
            if not (self._slots and self._slots[-1].segment == segment):
                segment.unlink()  # drained (or empty): nothing in it is pending
        if self._slots:
            log.warning("spool: %d accepted requests (%d bytes) wait for Kafka",
                        len(self._slots), self._bytes)

    # -- appending ------------------------------------------------------------------------------

    def append(self, entries: Sequence[SpoolEntry]) -> list[int]:
        """Write ``entries`` durably (fsync); return their sequence numbers.

        Raises
        ------
        SpoolFull
            If they do not fit under ``max_bytes`` (nothing is written then).
        """
        with self._lock:
            frames = []
            seqs = []
            for entry in entries:
                seqs.append(self._next_seq)
                frames.append(entry.frame(self._next_seq))
                self._next_seq += 1
            size = sum(len(f) for f in frames)
            if self._bytes + size > self.max_bytes:
                self._next_seq -= len(entries)
                raise SpoolFull(f"spool holds {self._bytes} bytes, limit {self.max_bytes}")
            if self._handle is None or self._segment_size >= self.segment_bytes:
                self._roll(seqs[0])
            assert self._segment is not None
            offset = self._segment_size
            self._handle.write(b"".join(frames))
            self._handle.flush()
            os.fsync(self._handle.fileno())
            for seq, frame, entry in zip(seqs, frames, entries, strict=True):
                self._slots.append(_Slot(seq, self._segment, offset, len(frame),
                                         entry.received_ms))
                offset += len(frame)
            self._segment_size = offset
            self._bytes += size
            return seqs

    def _roll(self, first_seq: int) -> None:
        if self._handle is not None:
            self._handle.close()
        self._segment = self.directory / f"{first_seq:020d}{_SUFFIX}"
        self._handle = open(self._segment, "ab")  # noqa: SIM115 - kept open between appends
        self._segment_size = self._handle.seek(0, os.SEEK_END)
        fsync_dir(self.directory)

    def fits(self, size: int) -> bool:
        """Whether a body of ``size`` bytes would still fit (a hint; :meth:`append` decides)."""
        return self._bytes + size + _HEAD.size + 512 <= self.max_bytes

    # -- draining -------------------------------------------------------------------------------

    def head(self, limit: int) -> list[SpoolEntry]:
        """The oldest ``limit`` pending entries, in arrival order."""
        with self._lock:
            slots = [self._slots[i] for i in range(min(limit, len(self._slots)))]
        out: list[SpoolEntry] = []
        handles: dict[Path, Any] = {}
        try:
            for slot in slots:
                handle = handles.get(slot.segment)
                if handle is None:
                    handle = handles[slot.segment] = open(slot.segment, "rb")  # noqa: SIM115
                frame = _read_frame(handle, slot.offset)
                if frame is None:  # pragma: no cover - written and fsynced before
                    raise OSError(f"spool frame {slot.seq} unreadable in {slot.segment}")
                meta, body, _size = frame
                out.append(SpoolEntry(meta["rid"], meta["partner"], meta["topic"],
                                      meta["received"],
                                      tuple((k, v) for k, v in meta["headers"]), body,
                                      seq=meta["seq"]))
        finally:
            for handle in handles.values():
                handle.close()
        return out

    def commit(self, last_seq: int) -> None:
        """Every entry up to ``last_seq`` is in Kafka: move the cursor, delete drained segments."""
        with self._lock:
            _write_atomic(self.directory / _CURSOR, orjson.dumps({"next": last_seq + 1}))
            while self._slots and self._slots[0].seq <= last_seq:
                self._bytes -= self._slots.popleft().size
            live = {slot.segment for slot in self._slots}
            for segment in self._segments():
                if segment not in live and segment != self._segment:
                    segment.unlink()
            if not self._slots and self._segment is not None and self._handle is not None:
                # everything drained: start the next append on a fresh segment
                self._handle.close()
                self._handle = None
                with contextlib.suppress(FileNotFoundError):
                    self._segment.unlink()
                self._segment = None
                self._segment_size = 0

    # -- state ----------------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Entries waiting for Kafka."""
        return len(self._slots)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def oldest_received_ms(self) -> int | None:
        slots = self._slots
        return slots[0].received_ms if slots else None

    def writable(self) -> bool:
        """Whether an append could succeed now (room left and the directory writable)."""
        return self._bytes < self.max_bytes and os.access(self.directory, os.W_OK)

    # -- the drain intent (see carrierwatch.ingest.kafka) -----------------------------------------

    def write_intent(self, intent: dict[str, Any]) -> None:
        _write_atomic(self.directory / _INTENT, orjson.dumps(intent))

    def read_intent(self) -> dict[str, Any] | None:
        path = self.directory / _INTENT
        return orjson.loads(path.read_bytes()) if path.exists() else None  # type: ignore[no-any-return]

    def clear_intent(self) -> None:
        path = self.directory / _INTENT
        if path.exists():
            path.unlink()
            fsync_dir(self.directory)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
