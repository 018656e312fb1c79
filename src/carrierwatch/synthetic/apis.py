"""Simulated partner tracking APIs, served on loopback from the simulator's own state.

``carrierwatch simulate-apis`` and the poller tests run one aiohttp application that answers
every partner with a ``poll:`` block under ``/<partner>``, in that partner's real request and
response shapes (the paths of :mod:`carrierwatch.ingest.pollapis`): FedEx ``POST
/fedex/track/v1/trackingnumbers`` (at most 30 numbers, else 400), UPS ``GET
/ups/api/track/v1/details/{n}``, DHL ``GET /dhl/track/shipments?trackingNumber=``, USPS ``GET
/usps/tracking/v3/tracking/{n}``, and ``POST /<partner>/graphql`` for a GraphQL partner (Carrier
B; executed by graphql-core against its schema). Each partner's token endpoint (its
``poll.auth.token_url``) issues short-lived bearer tokens for the configured client credentials;
an unknown or expired token gets 401, a wrong API key 401.

What a number shows is the simulator's: packages drawn by
:func:`~carrierwatch.synthetic.lifecycle.simulate_package` (:meth:`SimulatedApis.add_packages`),
rendered by the partner's own renderer (:mod:`carrierwatch.synthetic.formats`) with the scans
visible at the API's clock. A number that starts with the partner's
``synthetic_tracking_prefix`` (a heartbeat canary) is answered with a synthetic lifecycle that
starts when the number is first asked for and advances one status every
``canary_step_seconds``. Unknown numbers get the partner's own not-found answer.

Faults (:class:`Faults`, per partner, changeable while serving): a share of 500s, a share of
requests that hang past the client's timeout, a server-side rate limit answered 429 with
``Retry-After``, and a *burst* (a peak-day failure period) during which every tracking request
gets 503. Every request is logged (:attr:`SimulatedApis.log`) for the tests.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import random
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import orjson
from aiohttp import web

from carrierwatch.core.partner import PartnerSpec
from carrierwatch.synthetic.incidents import PartnerIncidents
from carrierwatch.synthetic.lifecycle import PartnerProfile, simulate_package
from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = ["CANARY_STATUSES", "Faults", "RequestRecord", "SimulatedApis", "serve_in_thread"]

#: the synthetic lifecycle of a canary number, one step per ``canary_step_seconds``
CANARY_STATUSES = ("info_received", "picked_up", "in_transit", "out_for_delivery", "delivered")
FEDEX_MAX_NUMBERS = 30


@dataclass
class Faults:
    """What goes wrong at one partner's API (all off by default)."""

    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    #: server-side rate limit (requests per second, a one-second window); None: unlimited
    rate_limit: float | None = None
    retry_after: int = 1
    #: (start, end) in time.time() seconds: every tracking request gets 503 (peak-day burst)
    burst: tuple[float, float] | None = None
    #: lifetime of issued bearer tokens
    token_ttl: float = 3600.0
    #: seconds each tracking answer takes (to observe concurrency)
    latency: float = 0.0


@dataclass(frozen=True)
class RequestRecord:
    at: float
    partner: str
    kind: str          # token, track
    numbers: tuple[str, ...]
    status: int
    token: str | None = None


@dataclass
class _PartnerState:
    spec: PartnerSpec
    renderer: ModuleType
    packages: dict[str, tuple[SimPackage, list[SimScan]]] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    window: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class SimulatedApis:
    """The simulated APIs' state and aiohttp application (see the module docstring).

    ``clock`` gives the simulated time in ms (what is visible); ``credentials`` maps a partner
    to its ``(client id, client secret)`` or API key (``"<key>"``).
    """

    def __init__(self, specs: Mapping[str, PartnerSpec], *, clock: Callable[[], int],
                 credentials: Mapping[str, str], seed: int = 1,
                 canary_step_seconds: float = 60.0) -> None:
        self.clock = clock
        self.credentials = dict(credentials)
        self.seed = seed
        self.canary_step_ms = round(canary_step_seconds * 1000)
        self.partners: dict[str, _PartnerState] = {}
        for pid, spec in specs.items():
            if spec.poll is None:
                continue
            renderer = importlib.import_module(f"carrierwatch.synthetic.formats.{pid}")
            self.partners[pid] = _PartnerState(spec, renderer)
        self.tokens: dict[str, tuple[str, float]] = {}
        self.log: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    # -- state ----------------------------------------------------------------------------------

    def faults(self, partner: str) -> Faults:
        return self.partners[partner].faults

    def add_packages(self, partner: str, count: int, ship_time: int) -> list[str]:
        """Draw ``count`` packages shipped at ``ship_time`` (ms); return their numbers."""
        state = self.partners[partner]
        profile = PartnerProfile.build(partner, state.spec.contract)
        numbers = []
        for index in range(count):
            rng = random.Random(f"{self.seed}:{partner}:api:{index}:{ship_time}")
            number = f"{_number_prefix(partner)}{ship_time // 1000 % 10**6:06d}{index:05d}"
            package, scans = simulate_package(rng, profile, number, ship_time + index * 1000,
                                              PartnerIncidents([]))
            state.packages[number] = (package, list(scans))
            numbers.append(number)
        return numbers

    def _canary(self, state: _PartnerState, number: str, now: int
                ) -> tuple[SimPackage, list[SimScan]]:
        known = state.packages.get(number)
        if known is not None:
            return known
        contract = state.spec.contract
        package = SimPackage(state.spec.id, number, contract.default_service_level, now,
                             promised_by=now + 3 * 86_400_000, synthetic=True)
        scans = [SimScan(status, now + i * self.canary_step_ms, "America/Chicago", "US", "IL",
                         "Chicago", "60601", visible_at=now + i * self.canary_step_ms,
                         proof_of_delivery="photo" if status == "delivered" else None)
                 for i, status in enumerate(CANARY_STATUSES)]
        state.packages[number] = (package, scans)
        return package, scans

    def visible(self, partner: str, number: str, now: int | None = None
                ) -> tuple[SimPackage, list[SimScan]] | None:
        """The package and its scans visible at ``now`` (None: unknown or nothing visible)."""
        state = self.partners[partner]
        now = self.clock() if now is None else now
        if number.startswith(state.spec.synthetic_tracking_prefix):
            package, scans = self._canary(state, number, now)
        elif number in state.packages:
            package, scans = state.packages[number]
        else:
            return None
        shown = [s for s in scans if (s.visible_at or s.event_time) <= now]
        return (package, shown) if shown else None

    def max_in_flight(self, partner: str) -> int:
        return self.partners[partner].max_in_flight

    # -- HTTP -----------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{partner}/{tail:.*}", self._handle)
        return app

    def _record(self, partner: str, kind: str, numbers: tuple[str, ...], status: int,
                token: str | None = None) -> None:
        with self._lock:
            self.log.append(RequestRecord(time.time(), partner, kind, numbers, status, token))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        partner = request.match_info["partner"]
        state = self.partners.get(partner)
        if state is None:
            return web.json_response({"error": "unknown partner"}, status=404)
        assert state.spec.poll is not None
        path = "/" + request.match_info["tail"]
        auth = state.spec.poll.auth
        if auth.scheme == "oauth2_client_credentials" and path == auth.token_url:
            return await self._token(request, state)
        return await self._track(request, state, path)

    async def _token(self, request: web.Request, state: _PartnerState) -> web.Response:
        pid = state.spec.id
        form = await request.post()
        client_id, client_secret = str(form.get("client_id")), str(form.get("client_secret"))
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                client_id = client_secret = ""
        expected = self.credentials.get(pid, "")
        if form.get("grant_type") != "client_credentials" or \
                f"{client_id}:{client_secret}" != expected:
            self._record(pid, "token", (), 401)
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        ttl = state.faults.token_ttl
        self.tokens[token] = (pid, time.monotonic() + ttl)
        self._record(pid, "token", (), 200, token)
        return web.json_response({"access_token": token, "token_type": "Bearer",
                                  "expires_in": ttl})

    def _authorized(self, request: web.Request, state: _PartnerState) -> str | bool:
        """The token used (or True for an API key); False when refused."""
        assert state.spec.poll is not None
        auth = state.spec.poll.auth
        if auth.scheme == "none":
            return True
        value = request.headers.get(auth.header, "")
        if not value.startswith(auth.prefix):
            return False
        value = value[len(auth.prefix):]
        if auth.scheme == "api_key":
            return secrets.compare_digest(value, self.credentials.get(state.spec.id, ""))
        found = self.tokens.get(value)
        if found is None or found[0] != state.spec.id or found[1] < time.monotonic():
            return False
        return value

    async def _numbers(self, request: web.Request, state: _PartnerState, path: str
                       ) -> tuple[tuple[str, ...], Any] | web.Response:
        assert state.spec.poll is not None
        api = state.spec.poll.api
        if api == "fedex" and request.method == "POST" and path == "/track/v1/trackingnumbers":
            try:
                body = orjson.loads(await request.read())
                numbers = tuple(str(i["trackingNumberInfo"]["trackingNumber"])
                                for i in body["trackingInfo"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return web.json_response({"errors": [{"code": "BAD.REQUEST.ERROR",
                                                      "message": "Invalid request"}]}, status=400)
            if not numbers or len(numbers) > FEDEX_MAX_NUMBERS:
                return web.json_response({"errors": [{
                    "code": "TRACKING.TRACKINGNUMBER.LIMIT.EXCEEDED",
                    "message": f"At most {FEDEX_MAX_NUMBERS} tracking numbers per request"}]},
                    status=400)
            return numbers, None
        if api == "ups" and request.method == "GET" and path.startswith("/api/track/v1/details/"):
            return (path.rsplit("/", 1)[1],), None
        if api == "dhl" and request.method == "GET" and path == "/track/shipments":
            number = request.query.get("trackingNumber", "")
            if not number or "," in number:
                return web.json_response({"title": "Bad request", "status": 400,
                                          "detail": "one trackingNumber is required"},
                                         status=400, content_type="application/problem+json")
            return (number,), None
        if api == "usps" and request.method == "GET" and path.startswith("/tracking/v3/tracking/"):
            return (path.rsplit("/", 1)[1],), None
        if api == "graphql" and request.method == "POST" and path == "/graphql":
            try:
                body = orjson.loads(await request.read())
                numbers = tuple(str(n) for n in body["variables"]["numbers"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return web.json_response({"errors": [{"message": "a query with "
                                                      "variables.numbers is required"}]},
                                         status=400)
            return numbers, body
        return web.json_response({"error": f"no route {request.method} {path}"}, status=404)

    async def _track(self, request: web.Request, state: _PartnerState, path: str
                     ) -> web.StreamResponse:
        pid = state.spec.id
        faults = state.faults
        token = self._authorized(request, state)
        if token is False:
            self._record(pid, "track", (), 401)
            return web.json_response({"error": "unauthorized"}, status=401)
        parsed = await self._numbers(request, state, path)
        if isinstance(parsed, web.Response):
            self._record(pid, "track", (), parsed.status)
            return parsed
        numbers, graphql_body = parsed
        now_s = time.time()
        if faults.rate_limit is not None:
            with self._lock:
                state.window[:] = [t for t in state.window if t > now_s - 1.0]
                over = len(state.window) >= faults.rate_limit
                if not over:
                    state.window.append(now_s)
            if over:
                self._record(pid, "track", numbers, 429)
                return web.json_response({"error": "rate limit exceeded"}, status=429,
                                         headers={"Retry-After": str(faults.retry_after)})
        if faults.burst is not None and faults.burst[0] <= now_s < faults.burst[1]:
            self._record(pid, "track", numbers, 503)
            return web.json_response({"error": "service unavailable (peak)"}, status=503)
        draw = self._rng.random()
        if draw < faults.timeout_rate:
            self._record(pid, "track", numbers, 0)
            await asyncio.sleep(faults.hang_seconds)
            return web.json_response({"error": "late"}, status=504)
        if draw < faults.timeout_rate + faults.error_rate:
            self._record(pid, "track", numbers, 500)
            return web.json_response({"error": "internal error"}, status=500)
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            if faults.latency:
                await asyncio.sleep(faults.latency)
            status, body = self._answer(state, numbers, graphql_body)
        finally:
            state.in_flight -= 1
        self._record(pid, "track", numbers, status, token if isinstance(token, str) else None)
        return web.Response(body=body, status=status, content_type="application/json")

    def _answer(self, state: _PartnerState, numbers: tuple[str, ...], graphql_body: Any
                ) -> tuple[int, bytes]:
        assert state.spec.poll is not None
        api = state.spec.poll.api
        now = self.clock()
        found = {n: self.visible(state.spec.id, n, now) for n in numbers}
        known = [(n, v) for n, v in found.items() if v is not None]
        render = state.renderer.render
        if api == "fedex":
            doc: dict[str, Any] = orjson.loads(render([v for _, v in known], now)) if known \
                else {"transactionId": "sim", "output": {"completeTrackResults": []}}
            results = doc["output"]["completeTrackResults"]
            for number, value in found.items():
                if value is None:
                    results.append({"trackingNumber": number, "trackResults": [{
                        "trackingNumberInfo": {"trackingNumber": number},
                        "error": {"code": "TRACKING.TRACKINGNUMBER.NOTFOUND",
                                  "message": "Tracking number cannot be found. Please correct "
                                             "the tracking number and try again."}}]})
            return 200, orjson.dumps(doc)
        if api == "graphql":
            return 200, self._graphql(state, graphql_body, found, now)
        (number,) = numbers
        value = found[number]
        if value is not None:
            return 200, render([value], now)
        if api == "ups":
            return 404, orjson.dumps({"response": {"errors": [{
                "code": "151044", "message": "Tracking Information Not Found"}]}})
        if api == "dhl":
            return 404, orjson.dumps({"title": "No result found", "status": 404,
                                      "detail": "No shipment with given tracking number "
                                                "found."})
        return 404, orjson.dumps({"apiVersion": "v3", "error": {
            "code": "404", "message": f"The tracking number {number} is not known"}})

    def _graphql(self, state: _PartnerState, body: Any,
                 found: Mapping[str, tuple[SimPackage, list[SimScan]] | None], now: int) -> bytes:
        from carrierwatch.synthetic.graphql_api import execute

        rendered: dict[str, Any] = {}
        for number, value in found.items():
            if value is not None:
                doc = orjson.loads(state.renderer.render([value], now))
                rendered[number] = doc["data"]["trackings"][0]
        return execute(body, rendered)


def _number_prefix(partner: str) -> str:
    return {"fedex": "7946", "ups": "1Z5R89W103", "dhl": "00340434", "usps": "9400111899",
            "carrier_b": "CB"}.get(partner, partner[:3].upper())


def serve_in_thread(apis: SimulatedApis, host: str = "127.0.0.1", port: int = 0
                    ) -> tuple[str, Callable[[], None]]:
    """Serve ``apis`` from a thread of its own (its own event loop); return the root URL and a
    function that stops it. For tests and benchmarks that drive the poller in a subprocess."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        runner = web.AppRunner(apis.app(), access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, host, port)
        loop.run_until_complete(site.start())
        address = runner.addresses[0]
        box["url"] = f"http://{address[0]}:{address[1]}"
        box["stop"] = asyncio.Event()
        ready.set()
        loop.run_until_complete(box["stop"].wait())
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="simulated-apis", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the simulated APIs did not start within 10 s")

    def stop() -> None:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)

    return box["url"], stop


def _simulate_apis_command() -> Any:
    import click

    @click.command("simulate-apis")
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
    @click.option("--port", type=click.IntRange(0, 65535), default=8480, show_default=True,
                  help="Port (0: any free port).")
    @click.option("--packages", type=click.IntRange(0, 100_000), default=20, show_default=True,
                  help="Packages drawn per polled partner (their numbers are printed).")
    @click.option("--speed", type=click.FloatRange(min=0.001), default=60.0, show_default=True,
                  help="Simulated seconds per real second (how fast packages move).")
    @click.option("--seed", type=int, default=1, show_default=True)
    @click.option("--canary-step-seconds", type=click.FloatRange(min=0.001), default=60.0,
                  show_default=True, help="Real seconds between two statuses of a canary "
                                          "(synthetic-prefix) number.")
    @click.option("--error-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                  help="Share of tracking requests answered 500.")
    @click.option("--timeout-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                  help="Share of tracking requests that hang for 30 s.")
    @click.option("--rate-limit", type=click.FloatRange(min=0.1), default=None,
                  help="Requests per second per partner above which 429 + Retry-After.")
    @click.option("--burst", type=click.FloatRange(min=0), nargs=2, default=None,
                  metavar="AFTER SECONDS", help="A peak-day failure burst: 503 to every "
                  "tracking request from AFTER s after the start, for SECONDS s.")
    @click.option("--max-seconds", type=click.FloatRange(min=0), default=None,
                  help="Stop after this many seconds [run until SIGTERM/SIGINT].")
    def simulate_apis(host: str, port: int, packages: int, speed: float, seed: int,
                      canary_step_seconds: float, error_rate: float, timeout_rate: float,
                      rate_limit: float | None, burst: tuple[float, float] | None,
                      max_seconds: float | None) -> None:
        """Serve simulated tracking APIs of every polled partner on loopback.

        REST in each carrier's real shapes (FedEx, UPS, DHL, USPS) and GraphQL for Carrier B,
        under http://HOST:PORT/<partner>; token endpoints for OAuth partners. Credentials are
        read as `carrierwatch poll` reads them (CARRIERWATCH_SECRET_<ID>_API); missing ones are
        generated and printed as export lines. Point the poller at it with
        `carrierwatch poll --base-url <partner>=http://HOST:PORT/<partner>`.
        """
        import signal as signals

        from carrierwatch.ingest.poller import base_url_env, credentials_id
        from carrierwatch.ingest.secrets import load_secrets
        from carrierwatch.settings import get_settings
        from carrierwatch.transformers.registry import load_registry

        specs = {p.id: p.spec for p in load_registry(get_settings().home)}
        polled = sorted(p for p, s in specs.items() if s.poll is not None)
        found = load_secrets([credentials_id(p) for p in polled])
        credentials: dict[str, str] = {}
        exports = []
        for pid in polled:
            secret = found.get(credentials_id(pid))
            if secret is not None:
                credentials[pid] = secret[0].get_secret_value()
                continue
            scheme = specs[pid].poll.auth.scheme  # type: ignore[union-attr]
            value = secrets.token_hex(8) if scheme == "api_key" else \
                f"sim-{pid}:{secrets.token_hex(12)}"
            credentials[pid] = value
            exports.append(f"export CARRIERWATCH_SECRET_{credentials_id(pid).upper()}={value}")
        started_real = time.time()
        started_sim = int(started_real * 1000)

        def clock() -> int:
            return started_sim + int((time.time() - started_real) * speed * 1000)

        apis = SimulatedApis(specs, clock=clock, credentials=credentials, seed=seed,
                             canary_step_seconds=canary_step_seconds)
        for pid in polled:
            faults = apis.faults(pid)
            faults.error_rate, faults.timeout_rate = error_rate, timeout_rate
            faults.rate_limit = rate_limit
            if burst is not None:
                faults.burst = (started_real + burst[0], started_real + burst[0] + burst[1])
        numbers = {pid: apis.add_packages(pid, packages, started_sim - 86_400_000)
                   for pid in polled}

        async def serve() -> None:
            runner = web.AppRunner(apis.app(), access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                raise click.ClickException(f"cannot listen on {host}:{port}: "
                                           f"{exc.strerror or exc}") from None
            address = runner.addresses[0]
            root = f"http://{address[0]}:{address[1]}"
            for line in exports:
                click.echo(line)
            for pid in polled:
                click.echo(f"export {base_url_env(pid)}={root}/{pid}")
            for pid in polled:
                shown = " ".join(numbers[pid][:5])
                click.echo(f"# {pid}: {len(numbers[pid])} packages, e.g. carrierwatch track add "
                           f"--partner {pid} {shown}")
            sys.stdout.flush()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signals.SIGTERM, signals.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            if max_seconds is not None:
                loop.call_later(max_seconds, stop.set)
            try:
                await stop.wait()
            finally:
                await runner.cleanup()

        asyncio.run(serve())

    return simulate_apis


simulate_apis = _simulate_apis_command()
