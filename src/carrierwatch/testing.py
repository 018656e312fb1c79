"""Test support shared by the suite: how a test reacts to a missing real component.

Under ``CARRIERWATCH_REQUIRE_ALL=1`` (CI) a test that would skip because a component (Kafka,
promtool, Chromium, …) is missing fails instead, so a missing install step cannot hide behind a
skip.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

__all__ = ["missing_component", "require_all"]


def require_all() -> bool:
    return os.environ.get("CARRIERWATCH_REQUIRE_ALL", "") not in {"", "0", "false", "no"}


def missing_component(name: str, why: str) -> NoReturn:
    """Skip the calling test, or fail it under ``CARRIERWATCH_REQUIRE_ALL=1``."""
    message = f"component {name!r} unavailable: {why}"
    if require_all():
        pytest.fail(f"{message} (CARRIERWATCH_REQUIRE_ALL=1 forbids skipping)", pytrace=False)
    pytest.skip(message)
