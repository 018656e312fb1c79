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

__all__ = ["RawRecord", "RawlogError", "encode_record", "iter_rawlog", "parse_line",
           "partner_of_rawlog", "rawlog_name", "read_rawlog"]

_SUFFIX = ".rawlog.jsonl"
_MIN_MS = 0
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class RawlogError(ValueError):
    """A line of a raw log that is not a valid record (the message names file and line)."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One received payload: who sent it, when we received it, its headers and its bytes.

    ``arrival`` groups records that arrived together (a batch of loose files); ``None`` means
    the record's own received time.
    """

    partner: str
    received_time: int
    headers: Mapping[str, str]
    body: bytes
    arrival: int | None = None


def rawlog_name(partner_id: str) -> str:
    """The file name of a partner's raw log.

    >>> rawlog_name("fedex")
    'fedex.rawlog.jsonl'
    """
    return f"{partner_id}{_SUFFIX}"


def partner_of_rawlog(path: str | Path) -> str | None:
    """The partner a raw-log file name stands for (``None`` for another file).

    >>> partner_of_rawlog("sim/fedex.rawlog.jsonl"), partner_of_rawlog("notes.txt")
    ('fedex', None)
    """
    name = Path(path).name
    return name[: -len(_SUFFIX)] if name.endswith(_SUFFIX) else None


def encode_record(partner: str, received_time: int, headers: Mapping[str, str],
                  body: bytes) -> bytes:
    """One raw-log line (with its newline). ``body`` must be UTF-8 text."""
    return orjson.dumps({"partner": partner, "received_time": received_time,
                         "headers": dict(headers), "body": body.decode("utf-8")}) + b"\n"


def parse_line(line: bytes, source: str = "<stream>", number: int = 0) -> RawRecord:
    """The record of one raw-log line; a bad line raises :class:`RawlogError` naming it.

    >>> parse_line(b'{"partner":"ups","received_time":"soon","headers":{},"body":""}', "x", 3)
    Traceback (most recent call last):
    ...
    carrierwatch.synthetic.rawlog.RawlogError: x:3: received_time is not an integer (ms): 'soon'
    """
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise RawlogError(f"{source}:{number}: not a raw-log record: {exc}") from None
    if not isinstance(data, dict):
        raise RawlogError(f"{source}:{number}: not a raw-log record: a JSON "
                          f"{type(data).__name__}, not an object")
    missing = [key for key in ("partner", "received_time", "headers", "body") if key not in data]
    if missing:
        raise RawlogError(f"{source}:{number}: not a raw-log record: missing "
                          f"{', '.join(missing)}")
    partner, received, headers, body = (data["partner"], data["received_time"],
                                        data["headers"], data["body"])
    if not isinstance(partner, str) or not partner:
        raise RawlogError(f"{source}:{number}: partner is not a partner id: {partner!r:.60}")
    if isinstance(received, bool) or not isinstance(received, int):
        raise RawlogError(f"{source}:{number}: received_time is not an integer (ms): "
                          f"{received!r:.60}")
    if not _MIN_MS <= received <= _MAX_MS:
        raise RawlogError(f"{source}:{number}: received_time {received} is outside years "
                          "1970-9999")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise RawlogError(f"{source}:{number}: headers is not an object of strings")
    if not isinstance(body, str):
        raise RawlogError(f"{source}:{number}: body is not a string")
    return RawRecord(partner, received, headers, body.encode("utf-8"))


def read_rawlog(stream: IO[bytes], source: str = "<stream>") -> Iterator[RawRecord]:
    """Records of a raw-log stream; a bad line raises :class:`RawlogError` naming it."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        yield parse_line(line, source, number)


def iter_rawlog(path: str | Path) -> Iterator[RawRecord]:
    """Records of the raw-log file at ``path``, in file (= received-time) order."""
    source = Path(path)
    with source.open("rb") as stream:
        yield from read_rawlog(stream, str(source))
