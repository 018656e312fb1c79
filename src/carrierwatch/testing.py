"""Test support shared by the suite: how a test reacts to a missing real component, and real
Prometheus / Alertmanager servers for the tests that need them.

Under ``CARRIERWATCH_REQUIRE_ALL=1`` (CI) a test that would skip because a component (Kafka,
promtool, Chromium, …) is missing fails instead, so a missing install step cannot hide behind a
skip.

:class:`PrometheusServer` and :class:`AlertmanagerServer` run Debian's ``prometheus`` and
``prometheus-alertmanager`` binaries on a free loopback port with a temporary configuration
(short scrape and evaluation intervals, given rule files and scrape targets) and talk to their
HTTP APIs. The pytest fixtures ``prometheus_server`` and ``alertmanager_server`` (in
``tests/conftest.py``) are factories over them that stop every server they started (by PID) at the
end of the test::

    def test_x(prometheus_server):
        prom = prometheus_server(targets={"worker": ["127.0.0.1:9464"]},
                                 rule_files=[Path("alerts/carrierwatch.rules.yml")])
        prom.wait_for_targets_up()
        assert prom.query_value('sum(carrierwatch_sli_events_total)') > 0
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

__all__ = ["AlertmanagerServer", "PrometheusServer", "WebhookReceiver", "free_port",
           "missing_component", "require_all", "require_binary"]


def require_all() -> bool:
    return os.environ.get("CARRIERWATCH_REQUIRE_ALL", "") not in {"", "0", "false", "no"}


def missing_component(name: str, why: str) -> NoReturn:
    """Skip the calling test, or fail it under ``CARRIERWATCH_REQUIRE_ALL=1``."""
    message = f"component {name!r} unavailable: {why}"
    if require_all():
        pytest.fail(f"{message} (CARRIERWATCH_REQUIRE_ALL=1 forbids skipping)", pytrace=False)
    pytest.skip(message)


def require_binary(name: str, package: str) -> str:
    """The path of an installed program, or skip (fail under ``CARRIERWATCH_REQUIRE_ALL=1``)."""
    path = shutil.which(name)
    if path is None:
        missing_component(name, f"{name} is not on PATH (Debian package {package!r})")
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http_json(url: str, *, data: bytes | None = None, method: str | None = None,
               timeout: float = 10.0) -> Any:
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


class _Server:
    """A child process on a loopback port, ended by its PID."""

    name = "server"

    def __init__(self, workdir: Path, port: int | None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: "
                                   f"{self.log()[-2000:]}")
            if self._ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout} s: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s (this server's PID only)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrometheusServer(_Server):
    """Debian's ``prometheus`` on 127.0.0.1 with a generated configuration.

    Parameters
    ----------
    workdir
        Where the configuration, the TSDB and the log go.
    targets
        Scrape targets per job name (``{"worker": ["127.0.0.1:9464"]}``; the job names of the
        metric contract are worker, sink, gateway, poller, heartbeat).
    rule_files
        Rule files to load (copied as they are; paths may be absolute).
    scrape_interval, evaluation_interval
        Seconds (short for tests: 1 s).
    alertmanagers
        ``host:port`` of Alertmanagers to send alerts to.
    port
        Listen port (default: a free one).
    """

    name = "prometheus"

    def __init__(self, workdir: Path, *, targets: Mapping[str, Sequence[str]] | None = None,
                 rule_files: Iterable[Path] = (), scrape_interval: float = 1.0,
                 evaluation_interval: float = 1.0, alertmanagers: Sequence[str] = (),
                 port: int | None = None, binary: str = "prometheus") -> None:
        super().__init__(workdir, port)
        self.binary = binary
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.config: dict[str, Any] = {
            "global": {"scrape_interval": _duration(scrape_interval),
                       "scrape_timeout": _duration(min(scrape_interval, 10.0)),
                       "evaluation_interval": _duration(evaluation_interval)},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
                for job, addresses in (targets or {}).items()],
        }
        if alertmanagers:
            self.config["alerting"] = {"alertmanagers": [
                {"static_configs": [{"targets": list(alertmanagers)}]}]}
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    def _command(self) -> list[str]:
        return [self.binary, f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle", "--log.level=warn"]

    # -- the HTTP API ---------------------------------------------------------------------------

    def api(self, path: str, **params: Any) -> Any:
        """``GET /api/v1/<path>``; the ``data`` of a successful answer."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        answer = _http_json(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else ""))
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {answer}")
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        data = self.api("query", query=expr, time=at)
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def query_value(self, expr: str, at: float | None = None) -> float | None:
        """The value of a query whose answer is one sample (None when it is empty)."""
        result = self.query(expr, at)
        if not result:
            return None
        if len(result) > 1:
            raise ValueError(f"{expr!r} returned {len(result)} series")
        return float(result[0]["value"][1])

    def query_by(self, expr: str, label: str, at: float | None = None) -> dict[str, float]:
        """``{value of label: sample value}`` of a vector query."""
        return {item["metric"].get(label, ""): float(item["value"][1])
                for item in self.query(expr, at)}

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets")["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now (``/api/v1/alerts``)."""
        return list(self.api("alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        return list(self.api("rules")["groups"])

    def wait_for(self, check: Callable[[], Any], timeout: float = 30.0,
                 interval: float = 0.25, what: str = "condition") -> Any:
        """Poll ``check()`` until it returns something truthy; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (urllib.error.URLError, OSError, RuntimeError) as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(interval)
        raise TimeoutError(f"{what} not reached within {timeout} s (last: {last!r})")

    def wait_for_targets_up(self, timeout: float = 30.0) -> None:
        """Until every configured target was scraped successfully at least once."""
        def up() -> bool:
            targets = self.targets()
            return bool(targets) and all(t["health"] == "up" for t in targets)
        self.wait_for(up, timeout, what="every target up")

    def wait_for_rules(self, timeout: float = 30.0) -> None:
        """Until every rule group was evaluated at least once."""
        def evaluated() -> bool:
            groups = self.rules()
            return all(g.get("lastEvaluation", "").startswith("2") and
                       not g["lastEvaluation"].startswith("0001") for g in groups)
        self.wait_for(evaluated, timeout, what="rules evaluated")


class AlertmanagerServer(_Server):
    """Debian's ``prometheus-alertmanager`` on 127.0.0.1 (no cluster) with a given config.

    ``config`` is the alertmanager.yml content (a mapping, or a path to a file). The API is v2.
    """

    name = "alertmanager"

    def __init__(self, workdir: Path, config: Mapping[str, Any] | Path, *,
                 port: int | None = None, binary: str = "prometheus-alertmanager") -> None:
        super().__init__(workdir, port)
        self.binary = binary
        self.config_path = workdir / "alertmanager.yml"
        if isinstance(config, Path):
            self.config_path.write_text(config.read_text())
        else:
            self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))

    def _command(self) -> list[str]:
        return [self.binary, f"--config.file={self.config_path}",
                f"--storage.path={self.workdir / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=", "--log.level=warn"]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (``filter`` matchers as ``label="value"`` pairs)."""
        params = [("filter", f'{k}="{v}"') for k, v in filters.items()]
        query = urllib.parse.urlencode(params)
        return list(_http_json(f"{self.url}/api/v2/alerts" + (f"?{query}" if query else "")))

    def silence(self, matchers: Mapping[str, str], *, seconds: float = 3600.0,
                created_by: str = "carrierwatch tests", comment: str = "test") -> str:
        """Create a silence for equality ``matchers``; returns its id."""
        now = time.time()
        body = {
            "matchers": [{"name": k, "value": v, "isRegex": False, "isEqual": True}
                         for k, v in matchers.items()],
            "startsAt": _rfc3339(now - 1), "endsAt": _rfc3339(now + seconds),
            "createdBy": created_by, "comment": comment,
        }
        answer = _http_json(f"{self.url}/api/v2/silences", data=json.dumps(body).encode(),
                            method="POST")
        return str(answer["silenceID"])


def _duration(seconds: float) -> str:
    """A Prometheus duration: whole seconds as ``Ns``, else milliseconds."""
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{int(seconds * 1000)}ms"


def _rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + \
        f".{int(epoch % 1 * 1000):03d}Z"

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
