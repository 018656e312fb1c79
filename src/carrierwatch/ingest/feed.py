"""``carrierwatch feed``: post raw logs (a simulation) into a running gateway, as the partners do.

Each record of ``<partner>.rawlog.jsonl`` is POSTed to ``<gateway>/ingest/<partner>`` with its
content type and the signature the partner's auth scheme asks for
(:func:`carrierwatch.ingest.auth.sign_request`, with the partner's secret from
``CARRIERWATCH_SECRET_<ID>``), paced to ``--rate`` requests per second. A 429 or 503 answer is
retried after its ``Retry-After`` (bounded); any other refusal is counted and makes the command
exit 1. Partners that do not deliver by webhook (pollers, batch drops) are skipped and named.
This is the docker-compose ``demo`` profile: the simulator's week into the real ingest path.
"""

from __future__ import annotations

import http.client
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from carrierwatch.core.errors import EXIT_ERROR, EXIT_UNAVAILABLE

__all__ = ["FeedSummary", "feed", "post_rawlogs"]

#: retries of one request answered 429/503 before it counts as refused
MAX_RETRIES = 20


@dataclass
class FeedSummary:
    """What a feed did: answers by HTTP status, and the partners skipped (not webhook)."""

    statuses: Counter[int] = field(default_factory=Counter)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def refused(self) -> int:
        return sum(self.statuses.values()) - self.accepted


class GatewayUnavailableError(ConnectionError):
    """The gateway could not be reached."""


def post_rawlogs(paths: Sequence[Path], gateway_url: str, registry: object,
                 secrets: dict[str, str], *, rate: float = 150.0,
                 limit: int | None = None) -> FeedSummary:
    """Post every record of the raw logs in ``paths`` (files, or folders of ``*.rawlog.jsonl``)
    to the gateway; ``secrets`` maps partner id → secret. Records go in received-time order
    across partners."""
    import heapq

    from carrierwatch.ingest.auth import sign_request
    from carrierwatch.synthetic.rawlog import iter_rawlog, partner_of_rawlog

    summary = FeedSummary()
    files = []
    for path in paths:
        files += sorted(path.glob("*.rawlog.jsonl")) if path.is_dir() else [path]
    streams = []
    for file in files:
        partner_id = partner_of_rawlog(file) or file.name.removesuffix(".rawlog.jsonl")
        spec = registry.get(partner_id).spec  # type: ignore[attr-defined]
        if spec.delivery != "webhook":
            summary.skipped[partner_id] = f"delivers by {spec.delivery}, not webhook"
            continue
        if partner_id not in secrets:
            summary.skipped[partner_id] = f"no secret (set CARRIERWATCH_SECRET_{partner_id.upper()})"
            continue
        streams.append(((r.received_time, n, r) for n, r in enumerate(iter_rawlog(file))))
    target = urllib.parse.urlsplit(gateway_url)
    connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port or 80,
                                            timeout=30)
    interval = 1.0 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    sent = 0
    try:
        for _, _, record in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            if limit is not None and sent >= limit:
                break
            spec = registry.get(record.partner).spec  # type: ignore[attr-defined]
            status = 0
            for _attempt in range(MAX_RETRIES + 1):
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + interval, time.monotonic())
                headers, query = sign_request(spec.auth, secrets[record.partner], record.body)
                content_type = next((v for k, v in record.headers.items()
                                     if k.lower() == "content-type"), "application/json")
                url = f"{target.path.rstrip('/')}/ingest/{record.partner}"
                if query:
                    url += "?" + urllib.parse.urlencode(query)
                try:
                    connection.request("POST", url, body=record.body,
                                       headers={"Content-Type": content_type, **headers})
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    raise GatewayUnavailableError(f"gateway {gateway_url}: {exc}") from exc
                status = response.status
                if status not in (429, 503):
                    break
                time.sleep(min(float(response.getheader("Retry-After") or 1), 30.0))
            summary.statuses[status] += 1
            sent += 1
    finally:
        connection.close()
    return summary


@click.command("feed")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--gateway", "gateway_url", default="http://127.0.0.1:8470", show_default=True,
              help="base URL of the running gateway")
@click.option("--rate", type=click.FloatRange(min=0), default=150.0, show_default=True,
              help="requests per second (0: as fast as the gateway answers)")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="stop after this many requests")
@click.option("--webhook-only", is_flag=True,
              help="skip the raw logs of partners that do not deliver by webhook (otherwise "
                   "they make the command fail: their data would not be posted)")
def feed(paths: tuple[Path, ...], gateway_url: str, rate: float, limit: int | None,
         webhook_only: bool) -> None:
    """Post raw logs (e.g. `carrierwatch simulate --out DIR`) into a running gateway.

    Each payload is signed as its partner signs (secret from CARRIERWATCH_SECRET_<ID>).
    Exit codes: 0 every request accepted; 1 some were refused (counted by status), or a raw
    log was skipped (no secret for its partner, or not a webhook partner without
    --webhook-only); 69 the gateway cannot be reached.
    """
    import os

    from carrierwatch.ingest.secrets import env_name
    from carrierwatch.synthetic.rawlog import RawlogError
    from carrierwatch.transformers.registry import load_registry

    registry = load_registry()
    secrets = {pid: os.environ[env_name(pid)] for pid in registry.ids()
               if os.environ.get(env_name(pid))}
    if not urllib.parse.urlsplit(gateway_url).scheme == "http":
        raise click.BadParameter("only http:// URLs (the gateway behind TLS termination)",
                                 param_hint="'--gateway'")
    for path in paths:
        if path.is_file() and not path.name.endswith(".rawlog.jsonl"):
            raise click.BadParameter(f"{path} is not a raw log (<partner>.rawlog.jsonl)",
                                     param_hint="'PATHS'")
    try:
        registry.require({p.name.removesuffix(".rawlog.jsonl") for p in paths if p.is_file()})
        summary = post_rawlogs(list(paths), gateway_url, registry, secrets, rate=rate,
                               limit=limit)
    except GatewayUnavailableError as exc:
        click.echo(f"carrierwatch: error: {exc}", err=True)
        sys.exit(EXIT_UNAVAILABLE)
    except RawlogError as exc:
        click.echo(f"carrierwatch: error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    for partner_id, why in sorted(summary.skipped.items()):
        click.echo(f"skipped {partner_id}: {why}", err=True)
    by_status = ", ".join(f"{status}: {n}" for status, n in sorted(summary.statuses.items()))
    click.echo(f"{summary.accepted} accepted, {summary.refused} refused ({by_status or 'none'})")
    not_posted = [p for p, why in summary.skipped.items()
                  if not (webhook_only and why.startswith("delivers by"))]
    if summary.refused or not_posted:
        sys.exit(EXIT_ERROR)
    if not summary.statuses:
        click.echo("carrierwatch: error: nothing was posted", err=True)
        sys.exit(EXIT_ERROR)

