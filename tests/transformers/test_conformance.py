"""Conformance suite: the same checks over every registered partner and every sample payload.

- the registry loads every partner (no failures) and has the nine required feeds;
- transform is deterministic and mutates nothing it is given (codebook, headers);
- every event is valid against the current canonical Avro schema, its event id is the hash of
  partner, package, status and event time, and unknown status ⇔ confidence 0 ⇔ a counted gap;
- every dead letter names a path and an error and keeps the original bytes;
- events carry no personal data fields (no street address, no names).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import fastavro
import pytest

from carrierwatch.core.model import CanonicalStatus, event_id
from carrierwatch.transformers.base import (
    PayloadError,
    TransformContext,
    Transformer,
    TransformResult,
    run_transform,
)
from carrierwatch.transformers.registry import PartnerRegistry, load_registry

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
REQUIRED = {"easypost", "aftership", "shippo", "fedex", "ups", "dhl", "usps"}

_REGISTRY = load_registry(ROOT)
PARTNERS = _REGISTRY.ids()
SAMPLES = [(p.id, s) for p in _REGISTRY for s in sorted((ROOT / "samples" / p.id).glob("*"))]
SCHEMA = fastavro.parse_schema(
    json.loads(max((ROOT / "schemas" / "canonical_event").glob("v*.avsc"),
                   key=lambda p: int(p.stem[1:])).read_text()))


def _transform_without_safety_net(transformer: Transformer, raw: bytes,
                                  ctx: TransformContext) -> TransformResult:
    """Call the transformer itself: only PayloadError (the designed "bad payload" signal, which
    run_transform turns into a dead letter) may escape; anything else fails the test."""
    try:
        return transformer(raw, ctx)
    except PayloadError:
        return run_transform(transformer, raw, ctx)


def test_registry_has_all_feeds(registry: PartnerRegistry) -> None:
    assert set(registry.ids()) >= REQUIRED
    assert len(registry) >= 9
    formats = {p.spec.format for p in registry}
    assert "csv" in formats
    assert any(p.spec.transformer == "json_mapping" for p in registry), "a config-only partner"


@pytest.mark.parametrize("partner_id", PARTNERS)
def test_codebook_matches_partner(registry: PartnerRegistry, partner_id: str) -> None:
    partner = registry.get(partner_id)
    assert partner.codebook.partner == partner_id
    assert partner.codebook.codes, "a codebook must map at least one code"
    for code in partner.codebook.required:
        assert code in partner.codebook.codes


@pytest.mark.parametrize(("partner_id", "sample"), SAMPLES,
                         ids=[f"{p}/{s.name}" for p, s in SAMPLES])
def test_sample_conforms(registry: PartnerRegistry, partner_id: str, sample: Path) -> None:
    partner = registry.get(partner_id)
    raw = sample.read_bytes()
    headers = {"content-type": "application/json"}
    ctx = partner.context(RECEIVED, headers)
    codes_before = copy.deepcopy(partner.codebook.codes)
    headers_before = dict(headers)

    first = _transform_without_safety_net(partner.transformer, raw, ctx)
    second = _transform_without_safety_net(partner.transformer, raw, ctx)

    assert first.events == second.events
    assert first.dead_letters == second.dead_letters
    assert first.gaps == second.gaps
    assert partner.codebook.codes == codes_before
    assert headers == headers_before
    assert first.events or first.dead_letters, "every payload ends as events or dead letters"

    for event in first.events:
        record = event.to_record()
        assert fastavro.validation.validate(record, SCHEMA, raise_errors=True)
        assert event.partner_id == partner_id
        assert event.package_id.startswith(f"{partner_id}:{event.tracking_number}")
        assert event.event_id == event_id(partner_id, event.package_id, event.status,
                                          event.event_time)
        assert 0.0 <= event.confidence <= 1.0
        assert event.received_time == RECEIVED
        assert event.status in {s.value for s in CanonicalStatus}
        if event.status == CanonicalStatus.UNKNOWN:
            assert event.confidence == 0.0 or partner.codebook.lookup(event.raw_code)
        assert event.raw_code
        # a plausible time: 2000-01-01 .. 2100-01-01
        assert 946_684_800_000 <= event.event_time < 4_102_444_800_000
        if event.location is not None and event.location.postal_prefix is not None:
            assert len(event.location.postal_prefix) <= 3
    # every unmapped status is a gap; a feed may also count an unknown reason code as a gap
    unmapped = [e.raw_code for e in first.events
                if e.confidence == 0.0 and e.status == CanonicalStatus.UNKNOWN]
    assert len(first.gaps) >= len(unmapped)
    for code in unmapped:
        assert code in first.gaps
    for dead in first.dead_letters:
        assert dead.partner_id == partner_id
        assert dead.raw == raw
        assert dead.path
        assert dead.error
        assert dead.received_time == RECEIVED
