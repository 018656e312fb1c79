"""``POST /v1/trackings`` on the gateway: register numbers for ``carrierwatch poll``.

Authenticated with an *operator* token, not a partner's secret (partners do not choose what
we poll): ``Authorization: Bearer <token>``, the token in ``CARRIERWATCH_GATEWAY_OPERATOR_TOKEN``
(compared in constant time; without it the route answers 503 ``trackings_not_configured``).
Body: ``{"partner": "ups", "tracking_numbers": ["1Z...", ...]}`` (at most
:data:`MAX_NUMBERS`). Answers, JSON ``{"code", "message", ...}``: 201 ``registered`` with
``added`` and ``already_followed``; 400 ``malformed_body`` / ``malformed_tracking_number``; 401
``missing_credentials`` / ``bad_token``; 404 ``unknown_partner``; 413 ``too_many_numbers``;
422 ``not_polled`` (the partner has no ``poll:`` block); 503 ``trackings_not_configured``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from pydantic import SecretStr

from carrierwatch.ingest.trackings import TRACKING_NUMBER, TrackingError, add_trackings

__all__ = ["MAX_NUMBERS", "add_tracking_routes"]

log = logging.getLogger(__name__)

MAX_NUMBERS = 1000
_MAX_BODY = 128 * 1024


def _answer(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"code": code, "message": message, **extra}, status=status)


def add_tracking_routes(app: web.Application, *, specs: Mapping[str, Any], data_dir: Path,
                        token: SecretStr | None) -> None:
    """Add ``POST /v1/trackings`` to ``app`` (see the module docstring)."""

    async def register(request: web.Request) -> web.Response:
        if token is None:
            return _answer(503, "trackings_not_configured", "set "
                           "CARRIERWATCH_GATEWAY_OPERATOR_TOKEN to accept registrations")
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return _answer(401, "missing_credentials", "Authorization: Bearer <operator token>")
        if not hmac.compare_digest(header[7:].strip().encode(),
                                   token.get_secret_value().encode()):
            return _answer(401, "bad_token", "the operator token does not match")
        if request.content_length is not None and request.content_length > _MAX_BODY:
            return _answer(413, "too_many_numbers", f"body over {_MAX_BODY} bytes")
        try:
            body = await request.content.read(_MAX_BODY + 1)
            if len(body) > _MAX_BODY:
                return _answer(413, "too_many_numbers", f"body over {_MAX_BODY} bytes")
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _answer(400, "malformed_body", "the body is not JSON")
        if not isinstance(doc, dict) or not isinstance(doc.get("partner"), str) \
                or not isinstance(doc.get("tracking_numbers"), list) \
                or not all(isinstance(n, str) for n in doc["tracking_numbers"]) \
                or not doc["tracking_numbers"]:
            return _answer(400, "malformed_body", 'expected {"partner": "<id>", '
                           '"tracking_numbers": ["<number>", ...]}')
        partner, numbers = doc["partner"], list(dict.fromkeys(doc["tracking_numbers"]))
        if len(numbers) > MAX_NUMBERS:
            return _answer(413, "too_many_numbers", f"at most {MAX_NUMBERS} numbers per request")
        spec = specs.get(partner)
        if spec is None:
            return _answer(404, "unknown_partner", f"no partner {partner[:64]!r}")
        if spec.poll is None:
            return _answer(422, "not_polled", f"{partner} is not polled (no poll: block)")
        bad = [n for n in numbers if not TRACKING_NUMBER.match(n)]
        if bad:
            return _answer(400, "malformed_tracking_number",
                           f"{len(bad)} malformed tracking number(s), e.g. {bad[0][:80]!r}: "
                           "4-64 letters, digits, '-' or '_'")
        try:
            added = await asyncio.to_thread(add_trackings, partner, numbers, source="api",
                                            data_dir=data_dir, specs=specs)
        except TrackingError as exc:  # pragma: no cover - checked above
            return _answer(400, "malformed_tracking_number", str(exc))
        log.info("trackings: %s: %d registered, %d already followed", partner, added,
                 len(numbers) - added)
        return _answer(201, "registered", f"{partner}: {added} added",
                       added=added, already_followed=len(numbers) - added)

    app.router.add_post("/v1/trackings", register)
