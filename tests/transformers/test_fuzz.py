"""Hypothesis fuzzing of every transformer: arbitrary bytes, byte-level mutations of the samples
and structural mutations of the JSON samples. Every input must end as canonical events or
dead-letter records; no exception may escape the transformer itself (it is called directly, not
through the safety net)."""

from __future__ import annotations

import gc
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierwatch.transformers.base import PayloadError, run_transform
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
REGISTRY = load_registry(ROOT)
PARTNERS = REGISTRY.ids()
JSON_PARTNERS = [p.id for p in REGISTRY if p.spec.format == "json"]
SCHEMA = fastavro.parse_schema(
    json.loads(max((ROOT / "schemas" / "canonical_event").glob("v*.avsc"),
                   key=lambda p: int(p.stem[1:])).read_text()))
BUDGET_SECONDS = 2.0  # CPU seconds per input (the largest inputs here are 1 MB)
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _samples(partner_id: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((ROOT / "samples" / partner_id).glob("*"))]


def _check(partner_id: str, raw: bytes) -> None:
    partner = REGISTRY.get(partner_id)
    ctx = partner.context(RECEIVED)
    start = time.process_time()  # the per-input budget: a hang fails the test
    try:
        result = partner.transformer(raw, ctx)
    except PayloadError:
        # the designed signal for "this payload is bad": run_transform makes it a dead letter.
        # Any other exception is a bug and fails the test.
        result = run_transform(partner.transformer, raw, ctx)
        assert len(result.dead_letters) == 1 and not result.events
    assert time.process_time() - start < BUDGET_SECONDS, f"{partner_id}: input over the budget"
    for event in result.events:
        fastavro.validation.validate(event.to_record(), SCHEMA, raise_errors=True)
    for dead in result.dead_letters:
        assert dead.raw == raw and dead.path and dead.error


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value if action != "delete" else {}
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    else:
        parent[last] = value
    return doc


@pytest.mark.parametrize("partner_id", PARTNERS)
@FUZZ
@given(raw=st.binary(max_size=400))
def test_arbitrary_bytes(partner_id: str, raw: bytes) -> None:
    _check(partner_id, raw)


@pytest.mark.parametrize("partner_id", PARTNERS)
@FUZZ
@given(data=st.data())
def test_byte_mutations(partner_id: str, data: st.DataObject) -> None:
    sample = bytearray(data.draw(st.sampled_from(_samples(partner_id))))
    for _ in range(data.draw(st.integers(1, 6))):
        if not sample:
            break
        index = data.draw(st.integers(0, len(sample) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if op == "flip":
            sample[index] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del sample[index]
        else:
            sample.insert(index, data.draw(st.sampled_from(b'{}[],:"0aZ-\n\xff')))
    _check(partner_id, bytes(sample))


@pytest.mark.parametrize("partner_id", JSON_PARTNERS)
@FUZZ
@given(data=st.data())
def test_structural_mutations(partner_id: str, data: st.DataObject) -> None:
    docs = []
    for raw in _samples(partner_id):
        try:
            docs.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    assert docs, f"{partner_id} is a JSON feed without parseable JSON samples"
    doc = data.draw(st.sampled_from(docs))
    doc = orjson.loads(orjson.dumps(doc))
    for _ in range(data.draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths))
        action = data.draw(st.sampled_from(["delete", "replace"])) if path else "replace"
        doc = _mutate(doc, path, action, data.draw(json_values))
    _check(partner_id, orjson.dumps(doc))


HOSTILE_UNITS = ["a", "A", " ", "a,", "Ab, ", "ab ", "1", "\u00e9", "\\", "-",
                 "failure: delivery attempt ", "2026-03-02T14:05:00", "US-", "Memphis, TN - "]


@pytest.mark.parametrize("partner_id", JSON_PARTNERS)
@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_huge_values_are_neither_slow_nor_kept(partner_id: str, data: st.DataObject) -> None:
    """A sample with one value replaced by 20 KB to 1 MB of text made to slow down backtracking
    patterns: within the time budget, and nothing of it kept once the result is dropped (the
    memory check: tracemalloc around one input)."""
    docs = []
    for raw in _samples(partner_id):
        try:
            docs.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    doc = orjson.loads(orjson.dumps(data.draw(st.sampled_from(docs))))
    path = data.draw(st.sampled_from([p for p in _paths(doc) if p]))
    unit = data.draw(st.sampled_from(HOSTILE_UNITS))
    size = data.draw(st.sampled_from([20_000, 200_000, 1_000_000]))
    text = (unit * (size // len(unit) + 1))[:size] + str(data.draw(st.integers(0, 10**9)))
    raw = orjson.dumps(_mutate(doc, path, "replace", text))
    del doc, text
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _check(partner_id, raw)
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < max(64_000, size // 4), f"{partner_id}: {kept:,} bytes kept of a {size:,} input"
