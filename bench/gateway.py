"""Benchmark: the webhook gateway against its ceiling, in one run on one broker.

A Kafka broker is started from the project's jars in a temporary folder. One partner (EasyPost,
hex HMAC-SHA256 of the body) posts its real sample payload, signed with its secret; the partner's
rate limit is lifted in a temporary configuration home. Each gateway runs as its own process
(``carrierwatch gateway``), one after the other, and the load comes from a second process on
loopback:

- **(a) ceiling**: the same server answering 202 without verification or Kafka
  (``--bare``): aiohttp's HTTP cost, routing and the load generator;
- **(b) carrierwatch**: verification + durable produce (``acks=all``, delivery report awaited)
  before each 202;
- **(c) spool path forced**: verification + append to the write-ahead spool, fsynced (group
  commit) before each 202 (``--force-spool``; nothing drains it).

The maximum rate of each is measured closed-loop with ``wrk`` (Debian's package; ``--connections``
connections, one thread) after a one-second warm-up, with its latency percentiles. Then the
latency **at half of (b)'s maximum rate** is measured open-loop (requests sent on a fixed
schedule by an aiohttp client in a second process, latency counted from each request's
scheduled time, so a stall is not hidden by the client waiting) against (b). Without ``wrk`` the
maximum rates are measured with the aiohttp client, closed-loop.

The goal of issue #14: (b) at least 50 % of (a), and p99 under 50 ms at half of (b)'s maximum
rate. On a shared machine the wall-clock figures follow the load of the moment (all three run in
the same minute on the same cores, beside the broker and the load generator); so the bench also
prints the CPU time each gateway process (and the broker) spent per accepted request during the
measurement, and the ceiling's CPU per request over (b)'s (``cpu_share_of_ceiling``): what (b)
would reach of (a) on cores of its own.

The last line printed is one JSON object with all figures.

Usage: ``.venv/bin/python bench/gateway.py [--duration 10] [--connections 128] [--keep]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SECRET = "bench-secret"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# -- the load generators (a second process) -----------------------------------------------------


async def _open_loop(url: str, body: bytes, headers: dict[str, str], rate: float,
                     duration: float, connections: int = 64) -> dict[str, Any]:
    """Requests on a fixed schedule (``rate`` per second) over ``connections`` keep-alive
    connections (plain asyncio streams: the client must stay far cheaper than the server).
    Connection ``c`` owns the requests ``c, c + connections, …``; a request whose connection is
    still busy at its scheduled time goes out when it is free, and its latency is counted from
    the scheduled time (no coordinated omission)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    total = int(rate * duration)
    start = time.perf_counter() + 0.5

    async def connection(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in range(index, total, connections):
                scheduled = start + i / rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                status = int(status_line.split()[1]) if status_line else 0
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - scheduled)
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(connection(c) for c in range(connections))),
                           timeout=duration + 60)
    elapsed = time.perf_counter() - start
    return {"rate_target": round(rate, 1), "sent": total, "statuses": statuses,
            "rate_achieved": round(total / elapsed, 1),
            "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(_percentile(latencies, 99) * 1000, 2),
            "max_ms": round(max(latencies) * 1000, 2) if latencies else None}


async def _closed_loop(url: str, body: bytes, headers: dict[str, str], connections: int,
                       duration: float) -> dict[str, Any]:
    import aiohttp

    statuses: dict[int, int] = {}
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as client:
        async def worker() -> None:
            while time.perf_counter() < stop_at:
                sent = time.perf_counter()
                async with client.post(url, data=body, headers=headers) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - sent)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    ok = statuses.get(202, 0)
    return {"tool": "aiohttp", "requests_per_s": round(ok / elapsed, 1), "statuses": statuses,
            "p50_ms": round(_percentile(latencies, 50) * 1000, 2),
            "p99_ms": round(_percentile(latencies, 99) * 1000, 2)}


def _load_main(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.load).read_text())
    body = Path(spec["body_file"]).read_bytes()
    if args.rate:
        result = asyncio.run(_open_loop(spec["url"], body, spec["headers"], args.rate,
                                        args.duration))
    else:
        result = asyncio.run(_closed_loop(spec["url"], body, spec["headers"], args.connections,
                                          args.duration))
    print(json.dumps(result))


# -- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _wrk(url: str, body_file: Path, headers: dict[str, str], connections: int,
         duration: float, work: Path) -> dict[str, Any]:
    script = work / "post.lua"
    lines = ['wrk.method = "POST"',
             f"local f = io.open({json.dumps(str(body_file))}, 'rb')",
             "wrk.body = f:read('*a')", "f:close()"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s",
                          "--latency", "-s", str(script), url],
                         capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    percentiles = {}
    for q in ("50", "99"):
        found = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        percentiles[q] = round(float(found.group(1)) * _UNITS[found.group(2)], 2) if found \
            else None
    non_2xx = int(errors.group(1)) if errors else 0
    return {"tool": "wrk", "requests": total, "non_2xx": non_2xx,
            "requests_per_s": round(rate * (total - non_2xx) / total, 1) if total else 0.0,
            "p50_ms": percentiles["50"], "p99_ms": percentiles["99"]}


# -- the gateway processes ---------------------------------------------------------------------


def _start_gateway(repo: Path, home: Path, data_dir: Path, bootstrap: str, port: int,
                   log: Path, *flags: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    env.update({"CARRIERWATCH_HOME": str(home), "CARRIERWATCH_DATA_DIR": str(data_dir),
                "CARRIERWATCH_KAFKA_BOOTSTRAP": bootstrap,
                "CARRIERWATCH_STREAM_NAMESPACE": "bench",
                "CARRIERWATCH_SECRET_EASYPOST": SECRET,
                "PYTHONPATH": os.pathsep.join([str(repo / "src"), env.get("PYTHONPATH", "")])})
    handle = log.open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "carrierwatch", "gateway", "--port",
                             str(port), "-l", "warn", *flags], env=env, stdout=handle,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    handle.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if f":{port}" in log.read_text(errors="replace"):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"gateway did not start:\n{log.read_text()[-2000:]}")


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0.0 where unavailable)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _topic_total(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer: Any = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-totals"})
    try:
        for attempt in range(30):  # a new topic's leader may still be moving in
            try:
                metadata = consumer.list_topics(topic, timeout=10)
                return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                          cached=False)[1]
                           for p in metadata.topics[topic].partitions)
            except KafkaException:
                if attempt == 29:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # internal: run as the load process
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        _load_main(args)
        return

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "src"))
    from carrierwatch.core.partner import AuthSpec
    from carrierwatch.ingest.auth import sign_request
    from carrierwatch.streams.broker import KafkaBroker
    from carrierwatch.streams.topology import StreamConfig, Topology, ensure_topics
    from carrierwatch.transformers.registry import load_registry

    work = Path(tempfile.mkdtemp(prefix="cw-bench-gateway-"))
    figures: dict[str, Any] = {"duration_s": args.duration, "connections": args.connections,
                               "cpus": os.cpu_count()}
    broker = KafkaBroker(work / "kafka", heap="512m")
    try:
        broker.start(timeout=120)
        home = work / "home"
        for name in ("partners", "codebooks", "schemas"):
            shutil.copytree(repo / name, home / name)
        with (home / "partners" / "easypost.yaml").open("a") as handle:
            handle.write("webhook: {rate_per_second: 1000000000, burst: 1000000000}\n")
        registry = load_registry(home)
        ensure_topics(broker.bootstrap,
                      Topology(StreamConfig(namespace="bench"), registry.ids()).specs())
        body_file = sorted((repo / "samples" / "easypost").glob("*.json"))[0]
        body = body_file.read_bytes()
        spec: AuthSpec = registry.get("easypost").spec.auth
        signature, _ = sign_request(spec, SECRET, body)
        headers = {"Content-Type": "application/json", **signature}
        figures["body_bytes"] = len(body)
        use_wrk = shutil.which("wrk") is not None

        def measure(name: str, *flags: str) -> dict[str, Any]:
            port = _free_port()
            data_dir = work / f"data-{name}"
            proc = _start_gateway(repo, home, data_dir, broker.bootstrap, port,
                                  work / f"{name}.log", *flags)
            url = f"http://127.0.0.1:{port}/ingest/easypost"
            load = work / f"{name}.json"
            load.write_text(json.dumps({"url": url, "headers": headers,
                                        "body_file": str(body_file)}))
            try:
                def run(duration: float, rate: float = 0.0) -> dict[str, Any]:
                    if use_wrk and not rate:
                        return _wrk(url, body_file, headers, args.connections, duration, work)
                    out = subprocess.run(
                        [sys.executable, __file__, "--load", str(load), "--duration",
                         str(duration), "--connections", str(args.connections), "--rate",
                         str(rate)], capture_output=True, text=True, check=True,
                        timeout=duration + 120).stdout
                    return dict(json.loads(out.strip().splitlines()[-1]))

                run(1.0)  # warm-up
                cpu = _cpu_seconds(proc.pid), _cpu_seconds(broker.pid)
                result = run(args.duration)
                done = result.get("requests", 0) - result.get("non_2xx", 0) or \
                    sum(result.get("statuses", {}).values())
                if done:
                    # CPU per request: robust where the wall-clock rates follow other users
                    result["gateway_cpu_us_per_request"] = round(
                        (_cpu_seconds(proc.pid) - cpu[0]) / done * 1e6, 1)
                    result["broker_cpu_us_per_request"] = round(
                        (_cpu_seconds(broker.pid) - cpu[1]) / done * 1e6, 1)
                if name == "verified_kafka":
                    result["half_rate"] = run(args.duration,
                                              rate=max(1.0, result["requests_per_s"] / 2))
                print(f"{name}: {result}", flush=True)
                return result
            finally:
                _stop(proc)

        before = _topic_total(broker.bootstrap, "bench.raw.easypost")
        figures["ceiling"] = measure("ceiling", "--bare")
        figures["verified_kafka"] = measure("verified_kafka")
        figures["raw_messages_written"] = _topic_total(broker.bootstrap,
                                                       "bench.raw.easypost") - before
        figures["verified_spool"] = measure("verified_spool", "--force-spool")
        ceiling = figures["ceiling"]["requests_per_s"] or float("nan")
        kafka = figures["verified_kafka"]
        figures["kafka_share_of_ceiling"] = round(kafka["requests_per_s"] / ceiling, 3)
        figures["spool_share_of_ceiling"] = round(
            figures["verified_spool"]["requests_per_s"] / ceiling, 3)
        figures["cpu_share_of_ceiling"] = round(
            figures["ceiling"]["gateway_cpu_us_per_request"]
            / kafka["gateway_cpu_us_per_request"], 3)
        figures["goal_half_of_ceiling_met"] = figures["kafka_share_of_ceiling"] >= 0.5
        figures["goal_p99_under_50ms_at_half_rate_met"] = kafka["half_rate"]["p99_ms"] < 50
    finally:
        broker.stop()
        if args.keep:
            print(f"work folder kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
