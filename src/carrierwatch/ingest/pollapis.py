"""What one tracking API request looks like and what its response says, per API style.

Pure functions, no I/O: :func:`build_request` turns a batch of numbers into an HTTP request
(method, path, query, JSON body) and :func:`split_response` reads a response body into the part
that belongs to each number, as a digest (``None``: the API does not know the number yet). The
poller produces a response to ``raw.<partner>`` only when a number's digest changed; the body it
produces is the API's own bytes, so the partner's transformer reads it as it reads every sample.

| api | request | per-number part |
|---|---|---|
| ``fedex`` | ``POST /track/v1/trackingnumbers``, up to 30 numbers | ``output.completeTrackResults[]`` |
| ``ups`` | ``GET /api/track/v1/details/{n}`` | ``trackResponse.shipment[].package[]`` |
| ``dhl`` | ``GET /track/shipments?trackingNumber={n}`` | ``shipments[]`` (``id``) |
| ``usps`` | ``GET /tracking/v3/tracking/{n}?expand=DETAIL`` | the whole body (``trackingNumber``) |
| ``graphql`` | ``POST /graphql`` ``trackings(numbers: [...])`` | ``data.trackings[]`` |

Examples
--------
>>> build_request("dhl", ["00340434000001"]).params
{'trackingNumber': '00340434000001'}
>>> body = b'{"shipments": [{"id": "A1", "events": [{"statusCode": "transit"}]}]}'
>>> list(split_response("dhl", body, ["A1", "B2"]))
['A1', 'B2']
>>> split_response("dhl", body, ["A1", "B2"])["B2"] is None
True
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["GRAPHQL_QUERY", "ApiRequest", "ResponseError", "build_request", "split_response"]

#: the Carrier B tracking query (its beta GraphQL API); numbers go in ``$numbers``
GRAPHQL_QUERY = """query Track($numbers: [String!]!) {
  trackings(numbers: $numbers) {
    trackingNumber
    serviceLevel
    promisedBy
    estimatedDelivery { from to }
    events {
      code
      reasonCode
      description
      occurredAt
      attempt
      proof
      location { city region postalCode country }
    }
  }
}"""


class ResponseError(ValueError):
    """A 2xx response whose body is not what the API returns (not JSON, wrong shape)."""


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    numbers: tuple[str, ...]
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def build_request(api: str, numbers: Sequence[str]) -> ApiRequest:
    """The request asking ``api`` about ``numbers`` (at most the partner's batch size)."""
    batch = tuple(numbers)
    if api == "fedex":
        return ApiRequest("POST", "/track/v1/trackingnumbers", batch, json={
            "includeDetailedScans": True,
            "trackingInfo": [{"trackingNumberInfo": {"trackingNumber": n}} for n in batch]})
    if api == "ups":
        (number,) = batch
        return ApiRequest("GET", f"/api/track/v1/details/{number}", batch,
                          params={"locale": "en_US", "returnSignature": "false"},
                          headers={"transId": uuid.uuid4().hex[:32],
                                   "transactionSrc": "carrierwatch"})
    if api == "dhl":
        (number,) = batch
        return ApiRequest("GET", "/track/shipments", batch, params={"trackingNumber": number})
    if api == "usps":
        (number,) = batch
        return ApiRequest("GET", f"/tracking/v3/tracking/{number}", batch,
                          params={"expand": "DETAIL"})
    if api == "graphql":
        return ApiRequest("POST", "/graphql", batch, json={
            "query": GRAPHQL_QUERY, "operationName": "Track", "variables": {"numbers": list(batch)}})
    raise ValueError(f"unknown poll api {api!r}")


def _digest(part: Any) -> str:
    return hashlib.sha256(orjson.dumps(part, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc


def split_response(api: str, body: bytes, numbers: Sequence[str]) -> dict[str, str | None]:
    """Each asked number → the digest of its part of ``body`` (None: not in it, or an error).

    Raises
    ------
    ResponseError
        The body is not JSON, or not an object.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ResponseError(f"response is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ResponseError(f"response is a JSON {type(doc).__name__}, not an object")
    parts: dict[str, list[Any]] = {}
    if api == "fedex":
        for result in _dicts(_get(doc, "output", "completeTrackResults")):
            tracks = _dicts(result.get("trackResults"))
            if tracks and all("error" in t and not t.get("scanEvents") for t in tracks):
                continue
            parts.setdefault(str(result.get("trackingNumber")), []).append(result)
    elif api == "ups":
        for shipment in _dicts(_get(doc, "trackResponse", "shipment")):
            for package in _dicts(shipment.get("package")):
                parts.setdefault(str(package.get("trackingNumber")), []).append(package)
    elif api == "dhl":
        for shipment in _dicts(doc.get("shipments")):
            parts.setdefault(str(shipment.get("id")), []).append(shipment)
    elif api == "usps":
        if isinstance(doc.get("trackingEvents"), list) and doc.get("trackingNumber"):
            parts.setdefault(str(doc["trackingNumber"]), []).append(doc)
    elif api == "graphql":
        for tracking in _dicts(_get(doc, "data", "trackings")):
            parts.setdefault(str(tracking.get("trackingNumber")), []).append(tracking)
    else:
        raise ValueError(f"unknown poll api {api!r}")
    return {n: _digest(parts[n]) if n in parts else None for n in numbers}
