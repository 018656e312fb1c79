"""The raw-log format: what the simulator writes is what the replay driver reads back."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from carrierwatch.synthetic.rawlog import (
    RawlogError,
    encode_record,
    iter_rawlog,
    rawlog_name,
    read_rawlog,
)


def test_records_round_trip_byte_for_byte(tmp_path: Path) -> None:
    bodies = [b'{"msg":"Z\xc3\xbcrich \\u2603","n":1}', b"a,b\n\"x, y\",\xe2\x82\xac\n", b""]
    path = tmp_path / rawlog_name("valley_express")
    with path.open("wb") as out:
        for index, body in enumerate(bodies):
            out.write(encode_record("valley_express", 1_000 + index,
                                    {"content-type": "text/csv"}, body))
    records = list(iter_rawlog(path))
    assert [r.body for r in records] == bodies
    assert [r.received_time for r in records] == [1_000, 1_001, 1_002]
    assert {r.partner for r in records} == {"valley_express"}
    assert records[0].headers == {"content-type": "text/csv"}
    # each line is one JSON object with exactly the documented keys, the body as text
    first = orjson.loads(path.read_bytes().splitlines()[0])
    assert list(first) == ["partner", "received_time", "headers", "body"]
    assert first["body"] == bodies[0].decode()


def test_bad_lines_name_the_line() -> None:
    good = encode_record("ups", 1, {}, b"{}")
    with pytest.raises(RawlogError, match=r"log:2: not a raw-log record"):
        list(read_rawlog(io.BytesIO(good + b"{not json}\n"), "log"))
    with pytest.raises(RawlogError, match=r"log:1: received_time is not an integer \(ms\)"):
        list(read_rawlog(io.BytesIO(b'{"partner":"ups","received_time":"1","headers":{},'
                                    b'"body":"{}"}\n'), "log"))
    with pytest.raises(RawlogError, match=r"log:1: not a raw-log record"):
        list(read_rawlog(io.BytesIO(b'{"partner":"ups"}\n'), "log"))
    assert len(list(read_rawlog(io.BytesIO(good + b"\n" + good), "log"))) == 2
