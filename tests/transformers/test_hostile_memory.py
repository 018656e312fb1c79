"""The parse caches are bounded in bytes, not only in entries (issue #13, "hostile sizes and
shapes": 300 valid UPS payloads, each with ten unique 1 MB city strings, grew a process from
39 MB to 4.6 GB with 0 dead letters).

Two defences, each tested on its own: the caches key only on strings of at most
``CACHE_KEY_LIMIT`` characters (tested with a partner whose text limit lets 100 KB values in),
and the partner's text limit drops longer values before anything caches them (tested with the
default limits)."""

from __future__ import annotations

import copy
import gc
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest

from carrierwatch.core.partner import TextLimits
from carrierwatch.transformers.base import TransformContext, clear_parse_caches
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
REGISTRY = load_registry(ROOT)
RETAINED_BUDGET = 4_000_000  # bytes; today's code keeps more than 60 MB of these inputs


def _ups_payloads(count: int, size: int) -> list[bytes]:
    """Valid UPS payloads whose activities carry unique ``size``-character city and state names."""
    sample = orjson.loads((ROOT / "samples" / "ups" / "lifecycle_delivered.json").read_bytes())
    payloads = []
    for n in range(count):
        doc: Any = copy.deepcopy(sample)
        for k, activity in enumerate(doc["trackResponse"]["shipment"][0]["package"][0]["activity"]):
            address = activity["location"]["address"]
            tag = f"{n:04d}{k:02d}"
            address["city"] = (tag + "Springfield ") * (size // 18)
            address["stateProvince"] = (tag + "NY") * (size // 8)
        payloads.append(orjson.dumps(doc))
    return payloads


def _retained_after(ctx_of: Any, payloads: list[bytes]) -> tuple[int, int, int]:
    """Bytes still allocated after transforming ``payloads`` and dropping the results, and the
    events and dead letters they gave."""
    ups = REGISTRY.get("ups")
    clear_parse_caches()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        events = dead = 0
        for raw in payloads:
            result = ups.transformer(raw, ctx_of())
            events += len(result.events)
            dead += len(result.dead_letters)
            del result
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        clear_parse_caches()
    return retained, events, dead


def test_caches_key_only_on_short_strings() -> None:
    ups = REGISTRY.get("ups")
    lenient = ups.spec.model_copy(update={"limits": TextLimits(max_chars=10_000_000)})
    base = ups.context(RECEIVED)
    payloads = _ups_payloads(30, 100_000)   # 300 values of 100 KB
    retained, events, dead = _retained_after(
        lambda: TransformContext(lenient, base.codebook, RECEIVED, base.headers), payloads)
    assert events == 30 * 8 and dead == 0    # valid payloads: read, not rejected
    assert retained < RETAINED_BUDGET, f"the parse caches kept {retained:,} bytes"


def test_default_limits_drop_huge_values_before_any_cache() -> None:
    ups = REGISTRY.get("ups")
    payloads = _ups_payloads(20, 300_000)
    retained, events, dead = _retained_after(lambda: ups.context(RECEIVED), payloads)
    assert dead == 20                      # one dead letter per payload names the values
    assert events == 20 * 8                # ... and the events are read without them
    assert retained < RETAINED_BUDGET, f"{retained:,} bytes kept"


@pytest.mark.parametrize("size", [101, 10_000])
def test_each_cache_skips_long_keys(size: int) -> None:
    """Three different long values make no entry of their own in any cache (the zone cache may
    hold one entry for the bounded place they all read as: the country alone)."""
    from carrierwatch.core import timeutil
    from carrierwatch.core.timeutil import zone_for
    from carrierwatch.transformers import _aggregators
    from carrierwatch.transformers._aggregators import place_zone
    from carrierwatch.transformers.base import _coarse_location, location

    clear_parse_caches()
    for n in range(3):
        long = f"{n}" + "x" * size
        location("US", "TN", long, "38118")
        location("US", long, "Memphis", "38118")
        zone_for("US", long)
        place_zone("US", long)
    # (times: a long string is never a valid time, and what is stripped to one is short)
    assert _coarse_location.cache_info().currsize == 0
    assert _aggregators._place_zone.cache_info().currsize == 0
    assert timeutil._zone_for.cache_info().currsize <= 1
    # short keys are still cached
    clear_parse_caches()
    location("US", "TN", "Memphis", "38118")
    zone_for("US", "TN")
    assert _coarse_location.cache_info().currsize == 1
    assert timeutil._zone_for.cache_info().currsize == 1
