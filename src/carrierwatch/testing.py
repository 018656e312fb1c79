"""Test support shared by the suite: how a test reacts to a missing real component.

Under ``CARRIERWATCH_REQUIRE_ALL=1`` (CI) a test that would skip because a component (Kafka,
promtool, Chromium, …) is missing fails instead, so a missing install step cannot hide behind a
skip.
"""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn

import pytest

__all__ = ["WebhookReceiver", "missing_component", "require_all"]


def require_all() -> bool:
    return os.environ.get("CARRIERWATCH_REQUIRE_ALL", "") not in {"", "0", "false", "no"}


def missing_component(name: str, why: str) -> NoReturn:
    """Skip the calling test, or fail it under ``CARRIERWATCH_REQUIRE_ALL=1``."""
    message = f"component {name!r} unavailable: {why}"
    if require_all():
        pytest.fail(f"{message} (CARRIERWATCH_REQUIRE_ALL=1 forbids skipping)", pytrace=False)
    pytest.skip(message)


class WebhookReceiver:
    """A Standard Webhooks receiver on loopback for tests: verifies each request's signature
    with ``secret`` (``bad_signatures`` counts failures), keeps the verified bodies (plus their
    ``webhook-id`` as ``id``) in ``received`` and answers ``status``. :meth:`close` ends it."""

    def __init__(self, secret: str, status: int = 204) -> None:
        self.status = status
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                from standardwebhooks.webhooks import Webhook, WebhookVerificationError

                try:
                    doc = Webhook(secret).verify(body, dict(self.headers))
                except WebhookVerificationError:
                    receiver.bad_signatures += 1
                    doc = None
                if doc is not None:
                    receiver.received.append({"id": self.headers["webhook-id"], **doc})
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
