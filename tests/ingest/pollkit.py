"""Helpers of the poller tests: simulated APIs with a clock the test moves, a poller built on
them with test-speed settings, and the simulator's truth to compare the topic with."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from carrierwatch.ingest.poller import Poller, PollSettings, credentials_id, open_poller
from carrierwatch.settings import Settings, find_project_root
from carrierwatch.synthetic.apis import SimulatedApis
from carrierwatch.transformers.registry import PartnerRegistry, load_registry

REPO = find_project_root()
#: 2026-03-02T00:00:00Z
T0 = 1_772_409_600_000
DAY = 86_400_000
#: the credentials the simulated APIs accept and the poller presents
CREDENTIALS = {"ups": "ups-client:ups-secret", "fedex": "fx-client:fx-secret",
               "dhl": "dhl-api-key-0001", "usps": "usps-client:usps-secret",
               "carrier_b": "cb-client:cb-secret"}
#: test-speed poll settings, applied to every polled partner
FAST = {"rate_per_second": 200.0, "concurrency": 8, "interval_seconds": 0.2,
        "canary_interval_seconds": 0.2,
        "timeout_seconds": 2.0, "max_attempts": 3, "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.5, "breaker_threshold": 5, "breaker_reset_seconds": 0.5}


class Clock:
    """The simulated APIs' clock (ms), moved by the test."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def environ() -> dict[str, str]:
    return {f"CARRIERWATCH_SECRET_{credentials_id(p).upper()}": v for p, v in CREDENTIALS.items()}


def fast_home(root: Path, **overrides: Mapping[str, Any]) -> Path:
    """A copy of the repo's configuration whose poll blocks use :data:`FAST` (plus
    ``overrides[partner]``)."""
    for name in ("partners", "codebooks", "schemas"):
        shutil.copytree(REPO / name, root / name, dirs_exist_ok=True)
    for path in (root / "partners").glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        if "poll" in doc:
            doc["poll"].update(FAST)
            doc["poll"].update(overrides.get(doc["id"], {}))
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def registry_of(home: Path) -> PartnerRegistry:
    return load_registry(home)


def make_apis(registry: PartnerRegistry, clock: Clock, **kwargs: Any) -> SimulatedApis:
    return SimulatedApis({p.id: p.spec for p in registry}, clock=clock,
                         credentials=CREDENTIALS, **kwargs)


def make_poller(registry: PartnerRegistry, data_dir: Path, bootstrap: str, namespace: str,
                url: str, partners: Iterable[str]) -> Poller:
    settings = Settings(data_dir=data_dir, kafka_bootstrap=bootstrap)
    poll_settings = PollSettings(idle_seconds=0.05, delivery_timeout=5.0)
    names = list(partners)
    return open_poller(settings=settings, poll_settings=poll_settings, registry=registry,
                       namespace=namespace, base_urls={p: f"{url}/{p}" for p in names},
                       partners=names, environ=environ())


async def run_until(poller: Poller, done: Callable[[], bool], timeout: float = 30.0) -> float:
    """Run ``poller`` until ``done()`` (checked every 50 ms) or ``timeout``; return seconds."""
    stop = asyncio.Event()
    task = asyncio.create_task(poller.run(stop))
    started = time.monotonic()
    try:
        while not done():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not done within {timeout} s")
            if task.done():
                task.result()
                raise AssertionError("the poller stopped")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return time.monotonic() - started


def truth(apis: SimulatedApis, partner: str, numbers: Iterable[str]) -> set[tuple[str, str, int]]:
    """(number, canonical status, event time) of every scan visible now."""
    out = set()
    for number in numbers:
        found = apis.visible(partner, number)
        if found is not None:
            out |= {(number, s.status, s.event_time // 1000 * 1000) for s in found[1]}
    return out


def observed(registry: PartnerRegistry, partner: str, bodies: Iterable[tuple[bytes, int]]
             ) -> tuple[set[tuple[str, str, int]], list[str]]:
    """(number, status, event time) of the events the partner's transformer reads from
    ``bodies`` (body, received ms), and the errors of its dead letters."""
    loaded = registry.get(partner)
    out = set()
    dead: list[str] = []
    for body, received in bodies:
        result = loaded.transform(body, received)
        dead += [d.error for d in result.dead_letters]
        out |= {(e.tracking_number, e.status, e.event_time) for e in result.events}
    return out, dead
