from __future__ import annotations

from pathlib import Path

import pytest

from carrierwatch.transformers.registry import PartnerRegistry, load_registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def registry() -> PartnerRegistry:
    loaded = load_registry(ROOT)
    assert not loaded.failures, loaded.failures
    return loaded
