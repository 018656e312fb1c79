"""Carrier B's beta GraphQL tracking schema, executed by graphql-core for the simulated APIs.

The schema is what the poller's query (:data:`carrierwatch.ingest.pollapis.GRAPHQL_QUERY`)
asks for; :func:`execute` runs a request body against the packages the simulated API renders,
so a query that asks for a field the schema lacks fails as it would at the carrier
(``errors`` with the validation message). A number the carrier does not know is answered with
``null`` in ``trackings`` and an ``errors`` entry (``extensions.code`` ``NOT_FOUND``): a
partial answer, as GraphQL does.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import orjson
from graphql import GraphQLError, GraphQLSchema, build_schema, graphql_sync

__all__ = ["SCHEMA_SDL", "execute", "schema"]

SCHEMA_SDL = """
type Location { city: String region: String postalCode: String country: String }
type Window { from: String to: String }
type TrackingEvent {
  code: String!
  reasonCode: String
  description: String
  occurredAt: String!
  attempt: Int
  proof: String
  location: Location
}
type Tracking {
  trackingNumber: String!
  serviceLevel: String
  promisedBy: String
  estimatedDelivery: Window
  events: [TrackingEvent!]!
}
type Query { trackings(numbers: [String!]!): [Tracking]! }
"""


@cache
def schema() -> GraphQLSchema:
    return build_schema(SCHEMA_SDL)


def execute(body: Any, rendered: Mapping[str, Any]) -> bytes:
    """The JSON response to the GraphQL request ``body`` (``query``, ``variables``,
    ``operationName``); ``rendered`` maps the numbers the carrier knows to their tracking
    objects."""

    def trackings(_root: Any, info: Any, numbers: list[str]) -> list[Any]:
        out: list[Any] = []
        for number in numbers:
            found = rendered.get(number)
            if found is None:
                out.append(GraphQLError("tracking number not found",
                                        extensions={"code": "NOT_FOUND",
                                                    "trackingNumber": number}))
            else:
                out.append(found)
        return out

    query = body.get("query") if isinstance(body, dict) else None
    if not isinstance(query, str):
        return orjson.dumps({"errors": [{"message": "a query string is required"}]})
    result = graphql_sync(schema(), query, root_value={"trackings": trackings},
                          variable_values=body.get("variables"),
                          operation_name=body.get("operationName"),
                          field_resolver=_resolve)
    return orjson.dumps(result.formatted)


def _resolve(source: Any, info: Any, **args: Any) -> Any:
    """Fields of dicts; the root's ``trackings`` calls its resolver; a GraphQLError inside a
    list becomes that item's null and error."""
    value = source.get(info.field_name) if isinstance(source, dict) else None
    if callable(value):
        return value(source, info, **args)
    if isinstance(value, GraphQLError):
        raise value
    return value
