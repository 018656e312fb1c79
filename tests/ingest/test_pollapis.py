"""The per-API request builder and response splitter (pure): Hypothesis over hostile bodies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carrierwatch.ingest.pollapis import ResponseError, build_request, split_response
from carrierwatch.settings import find_project_root

APIS = ("fedex", "ups", "dhl", "usps", "graphql")
SAMPLES = {"fedex": "fedex/lifecycle_delivered.json", "ups": "ups/lifecycle_delivered.json",
           "dhl": "dhl/lifecycle_delivered.json", "usps": "usps/lifecycle_delivered.json",
           "graphql": "carrier_b/partial_errors_not_found.json"}
NUMBER = {"fedex": "794600000011"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["output", "completeTrackResults", "trackResults", "trackingNumber",
                         "trackResponse", "shipment", "package", "shipments", "id", "data",
                         "trackings", "trackingEvents", "error", "scanEvents", "x"]),
        inner, max_size=4), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(api=st.sampled_from(APIS), doc=json_values,
       numbers=st.lists(st.text("AB12", min_size=1, max_size=4), min_size=1, max_size=3,
                        unique=True))
def test_any_json_splits_or_is_refused_never_crashes(api: str, doc: object,
                                                     numbers: list[str]) -> None:
    body = json.dumps(doc).encode()
    try:
        parts = split_response(api, body, numbers)
    except ResponseError:
        assert not isinstance(doc, dict)
        return
    assert list(parts) == numbers
    assert all(d is None or len(d) == 64 for d in parts.values())


@pytest.mark.parametrize("api", APIS)
def test_the_samples_split_per_number_and_requests_carry_them(api: str) -> None:
    body = (find_project_root() / "samples" / SAMPLES[api]).read_bytes()
    doc = json.loads(body)
    if api == "fedex":
        number = doc["output"]["completeTrackResults"][0]["trackingNumber"]
    elif api == "ups":
        number = doc["trackResponse"]["shipment"][0]["package"][0]["trackingNumber"]
    elif api == "dhl":
        number = doc["shipments"][0]["id"]
    elif api == "usps":
        number = doc["trackingNumber"]
    else:
        number = doc["data"]["trackings"][0]["trackingNumber"]
    parts = split_response(api, body, [number, "NOT-IN-IT"])
    assert parts[number] is not None and parts["NOT-IN-IT"] is None
    request = build_request(api, [number])
    assert number in json.dumps([request.path, request.params, request.json])
    with pytest.raises(ResponseError):
        split_response(api, b"<html>busy</html>", [number])


def test_a_fedex_digest_follows_the_numbers_part_not_the_envelope() -> None:
    body = (find_project_root() / "samples" / SAMPLES["fedex"]).read_bytes()
    doc = json.loads(body)
    result = doc["output"]["completeTrackResults"][0]
    number = result["trackingNumber"]
    before = split_response("fedex", body, [number])[number]
    doc["transactionId"] = "another-transaction"
    assert split_response("fedex", json.dumps(doc).encode(), [number])[number] == before
    result["trackResults"][0]["scanEvents"][0]["eventType"] = "ZZ"
    assert split_response("fedex", json.dumps(doc).encode(), [number])[number] != before
