"""The raw-log file format the simulator writes and the replay driver reads.

One file per partner, ``<partner_id>.rawlog.jsonl``: one JSON object per line and per payload, in
the order the payloads were received (``received_time``, UTC milliseconds)::

    {"partner": "fedex", "received_time": 1772467200000, "headers": {...}, "body": "<payload>"}

``body`` is the payload text exactly as the partner sent it (UTF-8 JSON or CSV); the reader hands
it back as bytes, ready for ``Partner.transform(body, received_time, headers)``.

Examples
--------
>>> import io
>>> line = encode_record("ups", 1_772_467_200_000, {"content-type": "application/json"},
...                      b'{"trackResponse":{}}')
>>> line
b'{"partner":"ups","received_time":1772467200000,"headers":{"content-type":"application/json"},"body":"{\\\\"trackResponse\\\\":{}}"}\\n'
>>> [record.body for record in read_rawlog(io.BytesIO(line))]
[b'{"trackResponse":{}}']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import orjson

__all__ = ["RawRecord", "RawlogError", "encode_record", "iter_rawlog", "rawlog_name",
           "read_rawlog"]

_SUFFIX = ".rawlog.jsonl"


class RawlogError(ValueError):
    """A line of a raw log that is not a valid record (the message names file and line)."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One received payload: who sent it, when we received it, its headers and its bytes."""

    partner: str
    received_time: int
    headers: Mapping[str, str]
    body: bytes


def rawlog_name(partner_id: str) -> str:
    """The file name of a partner's raw log.

    >>> rawlog_name("fedex")
    'fedex.rawlog.jsonl'
    """
    return f"{partner_id}{_SUFFIX}"


def encode_record(partner: str, received_time: int, headers: Mapping[str, str],
                  body: bytes) -> bytes:
    """One raw-log line (with its newline). ``body`` must be UTF-8 text."""
    return orjson.dumps({"partner": partner, "received_time": received_time,
                         "headers": dict(headers), "body": body.decode("utf-8")}) + b"\n"


def read_rawlog(stream: IO[bytes], source: str = "<stream>") -> Iterator[RawRecord]:
    """Records of a raw-log stream; a bad line raises :class:`RawlogError` naming it."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            partner, received, headers, body = (data["partner"], data["received_time"],
                                                data["headers"], data["body"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise RawlogError(f"{source}:{number}: not a raw-log record: {exc}") from None
        if (not isinstance(partner, str) or not isinstance(received, int)
                or not isinstance(headers, dict) or not isinstance(body, str)):
            raise RawlogError(f"{source}:{number}: wrong field types")
        yield RawRecord(partner, received, headers, body.encode("utf-8"))


def iter_rawlog(path: str | Path) -> Iterator[RawRecord]:
    """Records of the raw-log file at ``path``, in file (= received-time) order."""
    source = Path(path)
    with source.open("rb") as stream:
        yield from read_rawlog(stream, str(source))
