"""Fixtures of the ingest tests: the session's real Kafka broker (the stream tests' fixture,
loaded from tests/streams/conftest.py) and a configuration home with a Standard Webhooks partner.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_STREAMS = Path(__file__).resolve().parents[1] / "streams"
if str(_STREAMS) not in sys.path:
    sys.path.insert(0, str(_STREAMS))  # streamkit
_spec = importlib.util.spec_from_file_location("_carrierwatch_streams_conftest",
                                               _STREAMS / "conftest.py")
assert _spec is not None and _spec.loader is not None
_streams_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_streams_conftest)

kafka_broker = _streams_conftest.kafka_broker
schema_registry_url = _streams_conftest.schema_registry_url
stream_harness = _streams_conftest.stream_harness


@pytest.fixture(scope="session")
def gateway_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gatewaykit import build_home

    return build_home(tmp_path_factory.mktemp("gateway-home"))
