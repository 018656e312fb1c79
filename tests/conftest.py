"""Suite-wide settings: the tests never touch the user's own data directory.

Commands and stores that a test opens without a data directory of its own use one temporary
directory for the whole session (``CARRIERWATCH_DATA_DIR``), not the per-user default.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _session_data_dir() -> Iterator[None]:
    if os.environ.get("CARRIERWATCH_DATA_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="carrierwatch-tests-") as folder:
        os.environ["CARRIERWATCH_DATA_DIR"] = folder
        from carrierwatch.settings import get_settings

        get_settings.cache_clear()
        try:
            yield
        finally:
            os.environ.pop("CARRIERWATCH_DATA_DIR", None)
            get_settings.cache_clear()
