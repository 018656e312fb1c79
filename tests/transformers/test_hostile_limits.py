"""Length limits of free-text fields (issue #13, "hostile sizes and shapes").

Every string of a JSON payload has a limit: ``limits.max_chars`` of the partner's YAML (default
1,024), overridden per key name by ``limits.fields``. A value over it is dropped, the rest of the
payload is read without it, and one dead letter names its path. (CSV partners: a cell over
``mapping.csv.max_cell_chars`` makes its row a dead letter, the other rows are read.)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from carrierwatch.core.partner import PartnerSpec, TextLimits
from carrierwatch.transformers.base import may_hold_text_over, oversized_strings
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
REGISTRY = load_registry(ROOT)
JSON_PARTNERS = [p.spec.id for p in REGISTRY if p.spec.format == "json"]


def _leaves(doc: Any, path: str = "$") -> list[tuple[str, tuple[Any, ...], str]]:
    """(JSON path, key path, value) of every string of ``doc``."""
    found: list[tuple[str, tuple[Any, ...], str]] = []

    def walk(node: Any, where: str, keys: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}", (*keys, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}[{index}]", (*keys, index))
        elif isinstance(node, str):
            found.append((where, keys, node))

    walk(doc, path, ())
    return found


def _set(doc: Any, keys: tuple[Any, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = value
    return doc


def _json_samples(partner_id: str) -> list[tuple[str, Any]]:
    docs = []
    for path in sorted((ROOT / "samples" / partner_id).glob("*.json")):
        try:
            docs.append((path.name, orjson.loads(path.read_bytes())))
        except orjson.JSONDecodeError:
            continue
    return docs


def _strings_of(event: Any) -> list[str]:
    found = []
    for value in event.to_json_dict().values():
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            found.extend(v for v in value.values() if isinstance(v, str))
    return found


@pytest.mark.parametrize("partner_id", JSON_PARTNERS)
def test_an_oversized_value_is_dropped_and_named_and_the_rest_is_read(partner_id: str) -> None:
    partner = REGISTRY.get(partner_id)
    limits = partner.spec.limits
    checked = 0
    for name, doc in _json_samples(partner_id):
        for where, keys, _value in _leaves(doc):
            key = keys[-1]
            limit = limits.fields.get(key, limits.max_chars) if isinstance(key, str) \
                else limits.max_chars
            hostile = _set(doc, keys, "Memphis, TN " * (limit // 12 + 1))
            result = partner.transform(orjson.dumps(hostile), RECEIVED)
            without = partner.transform(orjson.dumps(_set(doc, keys, None)), RECEIVED)
            named = [d for d in result.dead_letters if "length limit" in d.error]
            assert [d.path for d in named] == [where], (name, where, result.dead_letters)
            assert f"partners/{partner_id}.yaml" in named[0].error
            # the rest of the payload reads as if the value had not been sent
            assert result.events == without.events, (name, where)
            assert [(d.path, d.error) for d in result.dead_letters if d not in named] == [
                (d.path, d.error) for d in without.dead_letters]
            assert all(len(s) <= limits.max_chars for e in result.events for s in _strings_of(e))
            checked += 1
    assert checked > 20


def test_the_limit_comes_from_the_partner_yaml() -> None:
    dhl = REGISTRY.get("dhl")
    doc = orjson.loads((ROOT / "samples" / "dhl" / "lifecycle_delivered.json").read_bytes())
    long_city = "Springfield Township North, IL"  # 30 characters: under the default
    doc["shipments"][0]["events"][0]["location"]["address"]["addressLocality"] = long_city
    raw = orjson.dumps(doc)
    assert not any("length limit" in d.error for d in dhl.transform(raw, RECEIVED).dead_letters)

    strict = dhl.spec.model_copy(update={"limits": TextLimits(fields={"addressLocality": 24})})
    ctx = dhl.context(RECEIVED)
    ctx = type(ctx)(strict, ctx.codebook, ctx.received_time, ctx.headers)
    result = dhl.transformer(raw, ctx)
    named = [d for d in result.dead_letters if "length limit" in d.error]
    assert len(named) == 1
    assert ("$.shipments[0].events[0].location.address.addressLocality has 30 characters "
            "(limit 24)") in named[0].error
    assert result.events  # the shipment is still read


def test_ups_signature_images_have_their_own_limit() -> None:
    ups = REGISTRY.get("ups")
    assert ups.spec.limits.fields["image"] >= 1_000_000
    doc = orjson.loads((ROOT / "samples" / "ups" / "lifecycle_delivered.json").read_bytes())
    package = doc["trackResponse"]["shipment"][0]["package"][0]
    package["deliveryInformation"] = {"signature": {"image": "R0lGOD" * 20_000}}
    result = ups.transform(orjson.dumps(doc), RECEIVED)
    assert not result.dead_letters
    assert any(e.proof_of_delivery == "signature" for e in result.events)


def test_limits_are_validated_on_load() -> None:
    base = {"id": "demo", "display_name": "Demo", "transformer": "json_mapping"}
    assert PartnerSpec.model_validate(base).limits.max_chars == 1024
    spec = PartnerSpec.model_validate({**base, "limits": {"max_chars": 200,
                                                          "fields": {"notes": 4000}}})
    assert (spec.limits.max_chars, spec.limits.fields, spec.limits.smallest) == (
        200, {"notes": 4000}, 200)
    for bad in ({"max_chars": 0}, {"fields": {"city": 3}}, {"max_length": 10}):
        with pytest.raises(ValidationError):
            PartnerSpec.model_validate({**base, "limits": bad})


def test_csv_cells_over_the_limit_are_named_and_the_other_rows_read() -> None:
    valley = REGISTRY.get("valley_express")
    header = ("tracking_number,status_code,local_timestamp,time_zone,location,reason,"
              "service_level,promised_by\n")
    good = "VX1,DLV,2026-03-03 13:15,America/Boise,\"Meridian, ID 83642\",,STD,\n"
    hostile = f"VX2,OFD,2026-03-03 08:20,America/Boise,\"{'A' * 5000}, ID\",,STD,\n"
    result = valley.transform((header + good + hostile).encode(), RECEIVED)
    assert [e.tracking_number for e in result.events] == ["VX1"]
    assert [(d.path, "5,004 characters" in d.error)
            for d in result.dead_letters] == [("row[2].location", True)]


json_text = st.text(alphabet=st.sampled_from('ab"\\\u00e9\u2028 \n/'), max_size=80)
json_docs = st.recursive(
    st.none() | st.integers(-2**63, 2**63 - 1) | json_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(json_text, children,
                                                                       max_size=5),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(doc=json_docs, limit=st.integers(16, 40), indent=st.booleans())
def test_the_byte_level_prefilter_never_misses_a_long_string(doc: Any, limit: int,
                                                             indent: bool) -> None:
    raw = orjson.dumps(doc, option=orjson.OPT_INDENT_2 if indent else 0)
    copied = orjson.loads(raw)
    found = oversized_strings(copied, TextLimits(max_chars=limit))
    if found:
        assert may_hold_text_over(raw, limit)
    assert all(len(s) <= limit for _, _, s in _leaves(copied)
               if isinstance(s, str))


@pytest.mark.parametrize("partner_id", JSON_PARTNERS)
@pytest.mark.parametrize("depth", [129, 1_000])
def test_payloads_nested_too_deep_are_dead_letters(partner_id: str, depth: int) -> None:
    """orjson reads 1,024 levels, Python's repr and JMESPath break near 1,000: over 128 levels
    the payload is a dead letter at $, whichever field holds the nesting."""
    partner = REGISTRY.get(partner_id)
    name, doc = _json_samples(partner_id)[0]
    assert isinstance(doc, dict), name
    doc["extra"] = "DEEP"
    raw = orjson.dumps(doc).replace(b'"DEEP"', b"[" * depth + b"]" * depth)
    result = partner.transform(raw, RECEIVED)
    assert [(d.path, d.error) for d in result.dead_letters] == [
        ("$", "JSON nested deeper than 128 levels")]
    assert not result.events
    # ... while every sample, as the partners send them, is far from the limit
    assert partner.transform(orjson.dumps(_set(doc, ("extra",), [[[]]])), RECEIVED).events or \
        name.startswith(("error", "malformed", "wrong", "not_"))
