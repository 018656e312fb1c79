"""Error translation: transient faults carry retry_after, secrets never reach messages."""

from __future__ import annotations

import socket

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from carrierwatch.core.errors import StorageError
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store
from carrierwatch.storage.clickhouse import TRANSIENT_ERROR_CODES, storage_error


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_server_is_transient_and_password_is_hidden() -> None:
    url = f"http://carrierwatch:s3cret-pw@127.0.0.1:{free_port()}/carrierwatch"
    with pytest.raises(StorageError) as caught:
        open_store(Settings(clickhouse_url=url))
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "http://carrierwatch:***@127.0.0.1:" in message
    assert caught.value.retry_after is not None and caught.value.retry_after > 0


@pytest.mark.parametrize(("error", "retry_after"), [
    (DatabaseError("Code: 252. DB::Exception: Too many parts (TOO_MANY_PARTS)", code=252), 10.0),
    (DatabaseError("Code: 202. DB::Exception: Too many simultaneous queries"), 1.0),
    (OperationalError("connection reset by peer"), 2.0),
    (DatabaseError("Code: 62. DB::Exception: Syntax error (SYNTAX_ERROR)", code=62), None),
])
def test_transient_codes_get_retry_after(error: Exception, retry_after: float | None) -> None:
    translated = storage_error(error, "somewhere", "query")
    assert translated.retry_after == retry_after
    assert str(translated).startswith("query failed on somewhere: ")


def test_transient_code_table_is_sane() -> None:
    assert all(0 < pause <= 60 for pause in TRANSIENT_ERROR_CODES.values())
    assert 62 not in TRANSIENT_ERROR_CODES and 60 not in TRANSIENT_ERROR_CODES
