"""What travels on the worker's topics, as pure functions (no Kafka, no Faust).

* raw messages: payload bytes; the partner's HTTP headers as Kafka headers; our receive time in
  the header :data:`RECEIVED_TIME_HEADER` (epoch ms), else the message timestamp;
* dead letters (``dlq.<partner>``): one JSON document per dead letter with the reason, the path of
  the bad field, the partner, the receive time, the source position and the original bytes in
  base64;
* checkpoints (``cw.checkpoints``, compacted, keyed by canonical partition): the core pipeline of
  one partition (``Pipeline.to_bytes()``, zlib-compressed) and the offset of the last canonical
  message it contains;
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
>>> control_kind([(CONTROL_HEADER, b"flush")]), control_kind(None)
('flush', None)
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from carrierwatch.core.model import DeadLetter
from carrierwatch.sink import SinkBatch

__all__ = [
    "CONTROL_FLUSH",
    "CONTROL_HEADER",
    "RECEIVED_TIME_HEADER",
    "HeaderList",
    "control_kind",
    "decode_checkpoint",
    "decode_dead_letter",
    "decode_sink_batch",
    "encode_checkpoint",
    "encode_dead_letter",
    "encode_flush",
    "encode_sink_batch",
    "flush_watermark",
    "headers_to_dict",
    "received_time_of",
]

RECEIVED_TIME_HEADER = "carrierwatch-received-time"
CONTROL_HEADER = "carrierwatch-control"
CONTROL_FLUSH = "flush"
_INT_MAP_TAG = "__int_keys__"
_CHECKPOINT_MAGIC = b"CWCP"
_CHECKPOINT_HEAD = struct.Struct(">4sBq")  # magic, format version, offset

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
                       partition: int | None = None, offset: int | None = None) -> bytes:
    """The ``dlq.<partner>`` message of a dead letter.

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
        "source": {"topic": topic, "partition": partition, "offset": offset},
    })


def decode_dead_letter(data: bytes) -> DeadLetter:
    """The dead letter of a ``dlq.<partner>`` message."""
    doc: dict[str, Any] = orjson.loads(data)
    return DeadLetter(doc["partner_id"], doc["received_time"], doc["reason"], doc["path"],
                      base64.b64decode(doc["raw"]))


def encode_checkpoint(offset: int, state: bytes) -> bytes:
    """A checkpoint message: magic, format version, offset, zlib-compressed state."""
    return _CHECKPOINT_HEAD.pack(_CHECKPOINT_MAGIC, 1, offset) + zlib.compress(state, 1)


def decode_checkpoint(data: bytes) -> tuple[int, bytes]:
    """``(offset, state)`` of a checkpoint message; ValueError if it is not one."""
    if len(data) < _CHECKPOINT_HEAD.size:
        raise ValueError("checkpoint message too short")
    magic, version, offset = _CHECKPOINT_HEAD.unpack_from(data)
    if magic != _CHECKPOINT_MAGIC or version != 1:
        raise ValueError("not a carrierwatch checkpoint (format 1)")
    return offset, zlib.decompress(data[_CHECKPOINT_HEAD.size:])


def encode_sink_batch(batch: SinkBatch) -> bytes:
    """A ``cw.sink`` message: :meth:`SinkBatch.to_json` (lossless: datetimes and integer-keyed
    histogram maps survive the trip).

    >>> batch = SinkBatch(rows={"metric_windows": [{"latency_hist": {3: 1}, "events": 2}]})
    >>> decode_sink_batch(encode_sink_batch(batch)).rows
    {'metric_windows': [{'latency_hist': {3: 1}, 'events': 2}]}
    """
    return batch.to_json()


def decode_sink_batch(data: bytes) -> SinkBatch:
    """The batch of a ``cw.sink`` message (see :func:`encode_sink_batch`)."""
    return SinkBatch.from_json(data)
