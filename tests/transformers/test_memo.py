"""The parse memos change speed, never results: warm and cold transforms are identical."""

from __future__ import annotations

from pathlib import Path

import orjson

from carrierwatch.transformers import aftership, dhl, easypost, fedex, ups
from carrierwatch.transformers.base import ParseMemo, TransformResult, element_key
from carrierwatch.transformers.registry import PartnerRegistry

ROOT = Path(__file__).resolve().parents[2]

_MEMOS = (ups._ACTIVITIES, fedex._SCANS, dhl._READINGS, easypost._DETAILS,
          aftership._READINGS, aftership._DETAILS)
RECEIVED = 1_772_712_000_000


def _forget() -> None:
    for memo in _MEMOS:
        memo._items.clear()


def _outcome(result: TransformResult) -> tuple[object, ...]:
    return (result.events, [(d.path, d.error) for d in result.dead_letters], result.gaps)


def test_memo_keys_tell_types_and_context_apart() -> None:
    assert element_key({"a": 1}) != element_key({"a": 1.0}) != element_key({"a": True})
    assert element_key({"a": "1"}, "US") != element_key({"a": "1"}, "CA")
    assert element_key({"a": 1 << 70}) is None  # not serializable: no memo


def test_memo_is_bounded_and_ignores_missing_keys() -> None:
    memo: ParseMemo[int] = ParseMemo(limit=2)
    memo.put(None, 1)
    assert memo.get(None) is None
    memo.put(("x", b"1"), 1)
    memo.put(("x", b"2"), 2)
    assert memo.get(("x", b"2")) == 2
    memo.put(("x", b"3"), 3)  # full: forgets, then stores
    assert memo.get(("x", b"1")) is None and memo.get(("x", b"3")) == 3


def test_warm_and_cold_transforms_agree_on_every_sample(registry: PartnerRegistry) -> None:
    for partner in registry:
        samples = [p.read_bytes() for p in sorted((ROOT / "samples" / partner.id).glob("*"))]
        for raw in samples:
            _forget()
            cold = _outcome(partner.transform(raw, RECEIVED))
            warm = _outcome(partner.transform(raw, RECEIVED))
            assert warm == cold, (partner.id, raw[:80])


def test_a_bad_copy_of_a_memoized_element_is_still_dead_lettered(
        registry: PartnerRegistry) -> None:
    """A good scan is memoized; the same scan with its date broken must not hit the memo."""
    partner = registry.get("fedex")
    raw = (ROOT / "samples" / "fedex" / "lifecycle_delivered.json").read_bytes()
    good = partner.transform(raw, RECEIVED)
    assert good.events and not good.dead_letters
    doc = orjson.loads(raw)
    scan = doc["output"]["completeTrackResults"][0]["trackResults"][0]["scanEvents"][0]
    scan["date"] = 20260302  # a number where a string belongs
    bad = partner.transform(orjson.dumps(doc), RECEIVED)
    assert len(bad.events) == len(good.events) - 1
    assert [d.path for d in bad.dead_letters] == [
        "$.output.completeTrackResults[0].trackResults[0].scanEvents[0].date"]
