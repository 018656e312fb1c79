"""What travels on the worker's topics, as pure functions (no Kafka, no Faust).

* raw messages: payload bytes; the partner's HTTP headers as Kafka headers; our receive time in
  the header :data:`RECEIVED_TIME_HEADER` (epoch ms), else the message timestamp;
* dead letters (``dlq.<partner>``): one JSON document per dead letter with the reason, the path of
  the bad field, the partner, the receive time, the source position and the original bytes in
  base64;
* checkpoints (``cw.checkpoints``, compacted): incremental. A *full* checkpoint (key ``"<p>"``,
  the canonical partition) holds the core pipeline of one partition (``Pipeline.to_bytes()``,
  zlib-compressed); each *delta* after it (key ``"<p>/d/<seq>"``) holds the changes since the
  checkpoint before (``Pipeline.take_changes()``). Every record carries the offset of the last
  canonical message its state contains, its sequence number in the partition's chain and the
  sequence number of the full checkpoint it builds on (format 2, :func:`encode_checkpoint`;
  format 1 records, full states without sequence numbers, are still read as full checkpoint 0).
  After a new full checkpoint the deltas of the previous chain get tombstones;
* call journals (``cw.checkpoints``, key ``"<p>/calls"``): the offsets at which the track stage
  ended its pipeline calls on partition ``p`` since that partition's last checkpoint, so that a
  re-run after a crash cuts the same calls and re-emits identical rows (see
  :mod:`carrierwatch.streams.app`);
* sink batches (``cw.sink``): a :class:`~carrierwatch.sink.SinkBatch` with typed rows as a
  pickle restricted to the model's classes and :mod:`datetime` (:func:`encode_sink_batch`);
  batches of earlier versions (dict rows, JSON) are still read;
* control markers on ``events.canonical``: a message with the header :data:`CONTROL_HEADER`
  (``flush``) and a JSON body ``{"watermark": ms}`` tells the partition's pipeline that a finite
  input ended — advance the watermark to ``watermark`` and flush (see
  :func:`carrierwatch.streams.kafka.send_flush`). Avro consumers skip messages carrying the header.

Examples
--------
>>> headers_to_dict([("content-type", b"application/json"), (RECEIVED_TIME_HEADER, b"17")])
{'content-type': 'application/json'}
>>> received_time_of([(RECEIVED_TIME_HEADER, b"1772467200000")], 1.0)
1772467200000
>>> received_time_of([], 1772467200.123)
1772467200123
>>> data = encode_checkpoint(41, b"state")
>>> decode_checkpoint(data)
(41, b'state')
>>> decode_checkpoint_record(encode_checkpoint(50, b"delta", seq=3, base=1))
CheckpointRecord(offset=50, state=b'delta', seq=3, base=1)
>>> delta_key(2, 7), parse_delta_key(b"2/d/7"), parse_state_key(b"2/d/7")
(b'2/d/7', (2, 7), (2, 'delta'))
>>> control_kind([(CONTROL_HEADER, b"flush")]), control_kind(None)
('flush', None)
>>> decode_journal(encode_journal([7, 12, 40]))
[7, 12, 40]
>>> checkpoint_key(2), journal_key(2), parse_state_key(b"2"), parse_state_key(b"2/calls")
(b'2', b'2/calls', (2, 'checkpoint'), (2, 'journal'))
"""

from __future__ import annotations

import base64
import copyreg
import io
import pickle
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

import orjson

from carrierwatch.core.model import CanonicalEvent, DeadLetter, Location
from carrierwatch.core.pipeline import PackageOutcomeRow
from carrierwatch.core.windows import MetricWindowRow
from carrierwatch.sink import SinkBatch

__all__ = [
    "CONTROL_FLUSH",
    "CONTROL_HEADER",
    "RECEIVED_TIME_HEADER",
    "SOURCE_FILE_HEADER",
    "CheckpointRecord",
    "HeaderList",
    "checkpoint_key",
    "control_kind",
    "decode_checkpoint",
    "decode_checkpoint_record",
    "decode_dead_letter",
    "decode_journal",
    "decode_sink_batch",
    "delta_key",
    "encode_checkpoint",
    "encode_dead_letter",
    "encode_flush",
    "encode_journal",
    "encode_sink_batch",
    "flush_watermark",
    "headers_to_dict",
    "journal_key",
    "parse_delta_key",
    "parse_state_key",
    "received_time_of",
    "source_file_of",
]

RECEIVED_TIME_HEADER = "carrierwatch-received-time"
CONTROL_HEADER = "carrierwatch-control"
CONTROL_FLUSH = "flush"
_INT_MAP_TAG = "__int_keys__"
_CHECKPOINT_MAGIC = b"CWCP"
_CHECKPOINT_HEAD = struct.Struct(">4sBq")  # magic, format version, offset
_CHECKPOINT_V2 = struct.Struct(">4sBqqq")  # magic, format version 2, offset, seq, base seq
_JOURNAL_MAGIC = b"CWJL\x01"
_SINK_MAGIC = b"CWSB\x03"
_SINK_MAGIC_V2 = b"CWSB\x02"
_JOURNAL_SUFFIX = "/calls"
_DELTA_INFIX = "/d/"

HeaderList = Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None


def _pairs(headers: HeaderList) -> Iterable[tuple[str, bytes | None]]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return headers.items()
    return headers


def headers_to_dict(headers: HeaderList) -> dict[str, str]:
    """The partner's headers as text (our own ``carrierwatch-*`` headers left out)."""
    out: dict[str, str] = {}
    for key, value in _pairs(headers):
        if key.startswith("carrierwatch-"):
            continue
        out[key] = "" if value is None else value.decode("utf-8", errors="replace")
    return out


#: the raw message header naming the dropped file a raw message holds (``carrierwatch watch``)
SOURCE_FILE_HEADER = "carrierwatch-source"


def source_file_of(headers: HeaderList) -> str | None:
    """The dropped file's name a raw message came from, or None (a webhook, a poll)."""
    for key, value in _pairs(headers):
        if key == SOURCE_FILE_HEADER and value:
            return value.decode("utf-8", errors="replace")
    return None


def received_time_of(headers: HeaderList, timestamp_s: float | None) -> int:
    """Our receive time (ms): the header if present and valid, else the message timestamp."""
    for key, value in _pairs(headers):
        if key == RECEIVED_TIME_HEADER and value:
            try:
                return int(value)
            except ValueError:
                break
    return round((timestamp_s or 0.0) * 1000)


def control_kind(headers: HeaderList) -> str | None:
    """The control marker a canonical message carries (``"flush"``), or None for an event."""
    for key, value in _pairs(headers):
        if key == CONTROL_HEADER:
            return (value or b"").decode("ascii", errors="replace")
    return None


def encode_flush(watermark: int) -> bytes:
    """The body of a flush marker.

    >>> flush_watermark(encode_flush(5))
    5
    """
    return orjson.dumps({"watermark": watermark})


def flush_watermark(body: bytes | None) -> int | None:
    """The watermark of a flush marker body (None when absent or unreadable)."""
    try:
        value = orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        return None
    mark = value.get("watermark") if isinstance(value, dict) else None
    return mark if isinstance(mark, int) else None


def encode_dead_letter(dead: DeadLetter, *, topic: str | None = None,
                       partition: int | None = None, offset: int | None = None,
                       file: str | None = None, line: int | None = None) -> bytes:
    """The ``dlq.<partner>`` message of a dead letter (``file`` and ``line``: where a dropped
    file's bad row is, added to ``source`` when known).

    >>> dead = DeadLetter("fedex", 1000, "invalid JSON: x", "$", b"\\xff")
    >>> doc = orjson.loads(encode_dead_letter(dead, topic="raw.fedex", partition=0, offset=7))
    >>> doc["reason"], doc["path"], doc["raw"], doc["source"]["offset"]
    ('invalid JSON: x', '$', '/w==', 7)
    >>> decode_dead_letter(encode_dead_letter(dead)) == dead
    True
    """
    return orjson.dumps({
        "partner_id": dead.partner_id, "received_time": dead.received_time,
        "reason": dead.error, "path": dead.path,
        "raw": base64.b64encode(dead.raw).decode("ascii"),
        "source": {"topic": topic, "partition": partition, "offset": offset,
                   **({"file": file} if file is not None else {}),
                   **({"line": line} if line is not None else {})},
    })


def decode_dead_letter(data: bytes) -> DeadLetter:
    """The dead letter of a ``dlq.<partner>`` message."""
    doc: dict[str, Any] = orjson.loads(data)
    return DeadLetter(doc["partner_id"], doc["received_time"], doc["reason"], doc["path"],
                      base64.b64decode(doc["raw"]))


@dataclass(frozen=True)
class CheckpointRecord:
    """A decoded ``cw.checkpoints`` state record.

    ``state`` is a full pipeline state when ``seq == base`` and a delta on top of the record
    ``seq - 1`` of the chain that starts at the full checkpoint ``base`` otherwise.
    """

    offset: int
    state: bytes
    seq: int
    base: int

    @property
    def full(self) -> bool:
        return self.seq == self.base


def encode_checkpoint(offset: int, state: bytes, *, seq: int = 0, base: int | None = None
                      ) -> bytes:
    """A checkpoint message (format 2): magic, format version, offset, sequence number, the
    sequence number of the full checkpoint it builds on (``base``; its own ``seq``, the
    default, for a full checkpoint), zlib-compressed state."""
    return (_CHECKPOINT_V2.pack(_CHECKPOINT_MAGIC, 2, offset, seq, seq if base is None else base)
            + zlib.compress(state, 1))


def decode_checkpoint_record(data: bytes) -> CheckpointRecord:
    """A checkpoint message of format 2, or of format 1 (a full state, read as sequence
    number 0); ValueError if it is neither."""
    if len(data) < _CHECKPOINT_HEAD.size:
        raise ValueError("checkpoint message too short")
    magic, version, offset = _CHECKPOINT_HEAD.unpack_from(data)
    if magic == _CHECKPOINT_MAGIC and version == 1:
        return CheckpointRecord(offset, zlib.decompress(data[_CHECKPOINT_HEAD.size:]), 0, 0)
    if magic == _CHECKPOINT_MAGIC and version == 2 and len(data) >= _CHECKPOINT_V2.size:
        _, _, offset, seq, base = _CHECKPOINT_V2.unpack_from(data)
        return CheckpointRecord(offset, zlib.decompress(data[_CHECKPOINT_V2.size:]), seq, base)
    raise ValueError("not a carrierwatch checkpoint (format 1 or 2)")


def decode_checkpoint(data: bytes) -> tuple[int, bytes]:
    """``(offset, state)`` of a checkpoint message; ValueError if it is not one."""
    record = decode_checkpoint_record(data)
    return record.offset, record.state


def checkpoint_key(partition: int) -> bytes:
    """The ``cw.checkpoints`` key of a canonical partition's checkpoint."""
    return str(partition).encode()


def journal_key(partition: int) -> bytes:
    """The ``cw.checkpoints`` key of a canonical partition's call journal."""
    return f"{partition}{_JOURNAL_SUFFIX}".encode()


def delta_key(partition: int, seq: int) -> bytes:
    """The ``cw.checkpoints`` key of the delta ``seq`` of a canonical partition."""
    return f"{partition}{_DELTA_INFIX}{seq}".encode()


def parse_delta_key(key: bytes) -> tuple[int, int]:
    """``(partition, seq)`` of a delta key; ValueError if it is not one."""
    partition, found, seq = key.decode("ascii").partition(_DELTA_INFIX)
    if not found:
        raise ValueError(f"not a delta key: {key!r}")
    return int(partition), int(seq)


def parse_state_key(key: bytes) -> tuple[int, str]:
    """``(partition, "checkpoint" | "delta" | "journal")`` of a ``cw.checkpoints`` key;
    ValueError else."""
    text = key.decode("ascii")
    if text.endswith(_JOURNAL_SUFFIX):
        return int(text[:-len(_JOURNAL_SUFFIX)]), "journal"
    if _DELTA_INFIX in text:
        return parse_delta_key(key)[0], "delta"
    return int(text), "checkpoint"


def encode_journal(boundaries: Iterable[int]) -> bytes:
    """A call journal: the last offsets of the pipeline calls since the partition's checkpoint."""
    values = list(boundaries)
    return _JOURNAL_MAGIC + struct.pack(f">{len(values)}q", *values)


def decode_journal(data: bytes) -> list[int]:
    """The boundaries of a call journal message; ValueError if it is not one."""
    if not data.startswith(_JOURNAL_MAGIC) or (len(data) - len(_JOURNAL_MAGIC)) % 8:
        raise ValueError("not a carrierwatch call journal (format 1)")
    count = (len(data) - len(_JOURNAL_MAGIC)) // 8
    return list(struct.unpack_from(f">{count}q", data, len(_JOURNAL_MAGIC)))


#: The only globals a ``cw.sink`` pickle may name: the typed rows and what row values hold.
_SINK_CLASSES = frozenset({
    ("carrierwatch.core.model", "CanonicalEvent"), ("carrierwatch.core.model", "Location"),
    ("carrierwatch.core.model", "DeadLetter"),
    ("carrierwatch.core.pipeline", "PackageOutcomeRow"),
    ("carrierwatch.core.windows", "MetricWindowRow"), ("datetime", "datetime"),
    ("datetime", "timezone"), ("datetime", "timedelta"), ("datetime", "date"),
})


def _by_fields(cls: type) -> Any:
    """A reducer that pickles a dataclass instance as ``cls(*field values)``."""
    values = attrgetter(*(f.name for f in fields(cls)))
    return lambda obj: (cls, values(obj))


#: How the sink pickle writes the row classes: as a call of the class with its field values
#: (a tuple pickled in C), not through ``dataclasses``' per-field ``__getstate__`` in Python
#: (about twice as cheap to encode; the restricted unpickler still admits only these classes).
_ROW_CLASSES: tuple[type, ...] = (CanonicalEvent, Location, DeadLetter, PackageOutcomeRow,
                                  MetricWindowRow)
_SINK_DISPATCH: dict[type, Any] = {**copyreg.dispatch_table,
                                   **{cls: _by_fields(cls) for cls in _ROW_CLASSES}}


class _SinkUnpickler(pickle.Unpickler):
    """An unpickler that builds only :data:`_SINK_CLASSES` (no other callable can run)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SINK_CLASSES:
            raise pickle.UnpicklingError(f"cw.sink batches may not contain {module}.{name}")
        return super().find_class(module, name)


def encode_sink_batch(batch: SinkBatch) -> bytes:
    """A ``cw.sink`` message: the batch's events, dead letters, dict rows and typed outcome and
    window rows (:meth:`SinkBatch.add_output` with ``typed=True``) as a pickle (protocol 5).

    Typed rows cost the worker no dict and no ``datetime`` per row, and the sink writes them
    column by column (:meth:`~carrierwatch.storage.base.Store.insert_outcomes`); with the
    row classes pickled as calls of the class (:data:`_SINK_DISPATCH`), about half the
    encoding time and half the bytes of the dict rows of format 2, and several times cheaper
    than :meth:`SinkBatch.to_json`; lossless by construction. The decoder admits only the
    model's classes and :mod:`datetime` (:class:`pickle.UnpicklingError` for anything else), so
    a foreign message on ``cw.sink`` cannot run code in the sink. Format 2 (dict rows only) and
    JSON batches of earlier versions are still read.

    >>> batch = SinkBatch(rows={"metric_windows": [{"latency_hist": {3: 1}, "events": 2}]})
    >>> decode_sink_batch(encode_sink_batch(batch)).rows
    {'metric_windows': [{'latency_hist': {3: 1}, 'events': 2}]}
    >>> decode_sink_batch(batch.to_json()).rows  # JSON batches of earlier versions
    {'metric_windows': [{'latency_hist': {3: 1}, 'events': 2}]}
    >>> decode_sink_batch(_SINK_MAGIC + pickle.dumps(print))
    Traceback (most recent call last):
    ...
    _pickle.UnpicklingError: cw.sink batches may not contain builtins.print
    """
    out = io.BytesIO()
    out.write(_SINK_MAGIC)
    pickler = pickle.Pickler(out, protocol=5)
    pickler.dispatch_table = _SINK_DISPATCH
    pickler.dump((batch.events, batch.dead_letters, batch.rows, batch.outcomes, batch.windows))
    return out.getvalue()


def decode_sink_batch(data: bytes) -> SinkBatch:
    """The batch of a ``cw.sink`` message (see :func:`encode_sink_batch`)."""
    if data.startswith(_SINK_MAGIC):
        events, dead_letters, rows, outcomes, windows = _SinkUnpickler(
            io.BytesIO(memoryview(data)[len(_SINK_MAGIC):])).load()
        return SinkBatch(events=events, dead_letters=dead_letters, rows=rows,
                         outcomes=outcomes, windows=windows)
    if data.startswith(_SINK_MAGIC_V2):
        events, dead_letters, rows = _SinkUnpickler(
            io.BytesIO(memoryview(data)[len(_SINK_MAGIC_V2):])).load()
        return SinkBatch(events=events, dead_letters=dead_letters, rows=rows)
    return SinkBatch.from_json(data)
