"""``carrierwatch feed``: a simulation posted into a real gateway process (the compose demo).

Kafka is away (a closed port), so the gateway spools each accepted request durably and answers
202: what the gateway counted is read from its own /metrics.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from gatewaykit import SECRETS, free_port, start_gateway_process

from carrierwatch.synthetic.simulator import simulate

REPO = Path(__file__).resolve().parents[2]


def _feed(home: Path, *args: str, secrets: dict[str, str] = SECRETS
          ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    env.update({"CARRIERWATCH_HOME": str(home), "PYTHONPATH": str(REPO / "src")})
    env.update({f"CARRIERWATCH_SECRET_{p.upper()}": s for p, s in secrets.items()})
    return subprocess.run([sys.executable, "-m", "carrierwatch", "feed", *args], env=env,
                          capture_output=True, text=True, timeout=180)


def _accepted(url: str) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r'carrierwatch_gateway_requests_total\{outcome="(\w+)",partner="(\w+)"\} '
                       r"(\S+)", text)
    return {(partner, outcome): float(n) for outcome, partner, n in found}


@pytest.mark.slow
def test_feed_posts_every_payload_signed(gateway_home: Path, tmp_path: Path) -> None:
    simulate(["easypost", "fedex", "ups"], 1, 3, out_dir=tmp_path / "sim", packages_per_day=15,
             warmup_days=0, home=gateway_home)
    lines = {p: sum(1 for _ in (tmp_path / "sim" / f"{p}.rawlog.jsonl").open())
             for p in ("easypost", "fedex", "ups")}
    gateway = start_gateway_process(gateway_home, tmp_path / "data", f"127.0.0.1:{free_port()}",
                                    "feed", tmp_path / "gateway.log")
    try:
        # ups delivers by polling: without --webhook-only its log is not posted → exit 1
        done = _feed(gateway_home, "--gateway", gateway.url, "--rate", "0", str(tmp_path / "sim"))
        assert done.returncode == 1, done.stderr
        assert "skipped ups: delivers by poll" in done.stderr
        posted = lines["easypost"] + lines["fedex"]
        assert f"{posted} accepted, 0 refused (202: {posted})" in done.stdout
        assert _accepted(gateway.url) == {("easypost", "accepted"): lines["easypost"],
                                          ("fedex", "accepted"): lines["fedex"]}
        done = _feed(gateway_home, "--gateway", gateway.url, "--rate", "0", "--webhook-only",
                     "--limit", "5", str(tmp_path / "sim"))
        assert done.returncode == 0 and "5 accepted, 0 refused" in done.stdout, done.stderr
        # a wrong secret: the gateway refuses, the feed says how often and fails
        wrong = {**SECRETS, "fedex": "not-the-secret"}
        done = _feed(gateway_home, "--gateway", gateway.url, "--rate", "0",
                     str(tmp_path / "sim" / "fedex.rawlog.jsonl"), secrets=wrong)
        assert done.returncode == 1
        assert f"0 accepted, {lines['fedex']} refused (401: {lines['fedex']})" in done.stdout
        assert "Traceback" not in done.stderr
    finally:
        assert gateway.stop() == 0


def test_feed_without_a_gateway_is_unavailable(gateway_home: Path, tmp_path: Path) -> None:
    simulate(["easypost"], 1, 3, out_dir=tmp_path / "sim", packages_per_day=5, warmup_days=0,
             home=gateway_home)
    done = _feed(gateway_home, "--gateway", f"http://127.0.0.1:{free_port()}",
                 str(tmp_path / "sim"))
    assert done.returncode == 69, done.stderr
    assert done.stderr.startswith("carrierwatch: error: gateway http://127.0.0.1:")
    assert "Traceback" not in done.stderr
    not_a_log = tmp_path / "x.json"
    not_a_log.write_text("{}")
    done = _feed(gateway_home, str(not_a_log))
    assert done.returncode == 2 and "not a raw log" in done.stderr
