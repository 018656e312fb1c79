"""Fixtures for the feed simulator tests: one small simulation with every kind of incident."""

from __future__ import annotations

import pytest
from synthetic_helpers import ROOT, Run, build_run

from carrierwatch.transformers.registry import PartnerRegistry, load_registry


@pytest.fixture(scope="session")
def registry() -> PartnerRegistry:
    loaded = load_registry(ROOT)
    assert not loaded.failures, loaded.failures
    return loaded


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory, registry: PartnerRegistry) -> Run:
    return build_run(tmp_path_factory.mktemp("simulation"), registry)
