"""The command line as a user runs it: a real subprocess, real partner files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "carrierwatch"


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(EXE), *args], input=stdin, capture_output=True, timeout=120,
                          cwd=ROOT)


def test_normalize_clean_payload_exits_0_with_json_lines() -> None:
    done = run("normalize", "--partner", "fedex", str(ROOT / "samples/fedex/lifecycle_delivered.json"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(events) >= 5
    for key in ("event_id", "package_id", "status", "reason", "raw_code", "event_time",
                "timezone_ambiguous", "received_time", "location"):
        assert key in events[0]
    assert events[0]["event_time"].endswith("Z")
    assert events[-1]["status"] == "delivered"


def test_normalize_reads_stdin() -> None:
    raw = (ROOT / "samples/fedex/lifecycle_delivered.json").read_bytes()
    from_file = run("normalize", "--partner", "fedex",
                    str(ROOT / "samples/fedex/lifecycle_delivered.json"))
    from_stdin = run("normalize", "--partner", "fedex", "-", stdin=raw)
    assert from_stdin.returncode == 0
    strip = [{k: v for k, v in json.loads(line).items() if k != "received_time"}
             for line in from_stdin.stdout.splitlines()]
    expected = [{k: v for k, v in json.loads(line).items() if k != "received_time"}
                for line in from_file.stdout.splitlines()]
    assert strip == expected


def test_dead_letters_go_to_stderr_and_exit_3() -> None:
    done = run("normalize", "--partner", "fedex", "-", stdin=b"{not json")
    assert done.returncode == 3
    assert done.stdout == b""
    [dead] = [json.loads(line) for line in done.stderr.splitlines()]
    assert dead["partner_id"] == "fedex" and dead["path"] == "$"
    assert "invalid JSON" in dead["error"]
    import base64
    assert base64.b64decode(dead["raw_base64"]) == b"{not json"


def test_usage_errors_exit_2_with_one_line() -> None:
    unknown = run("normalize", "--partner", "nosuch", "x.json")
    assert unknown.returncode == 2
    assert unknown.stderr.decode().count("\n") == 1
    assert "unknown partner 'nosuch'" in unknown.stderr.decode()
    missing = run("normalize", "--partner", "fedex", "/nonexistent/file.json")
    assert missing.returncode == 2
    assert missing.stderr.decode().strip() == "carrierwatch: error: no such file: /nonexistent/file.json"
    no_partner = run("normalize", "x.json")
    assert no_partner.returncode == 2
    assert no_partner.stderr.decode().count("\n") == 1


def test_codebook_check(tmp_path: Path) -> None:
    good = run("codebook", "check")
    assert good.returncode == 0, good.stderr
    assert b"0 problems" in good.stdout
    broken = tmp_path / "fedex.yaml"
    broken.write_text((ROOT / "codebooks/fedex.yaml").read_text()
                      .replace("status: delivered", "status: deliverd", 1))
    bad = run("codebook", "check", str(broken))
    assert bad.returncode == 1
    line = bad.stderr.decode().splitlines()[0]
    assert line.startswith(f"{broken}:") and "unknown canonical status 'deliverd'" in line
    lineno = int(line.split(":")[1])
    assert "deliverd" in broken.read_text().splitlines()[lineno - 1]


def test_partners_list_shows_every_feed() -> None:
    done = run("partners", "list", "--json")
    assert done.returncode == 0, done.stderr
    ids = {row["id"] for row in json.loads(done.stdout)}
    assert {"easypost", "aftership", "shippo", "fedex", "ups", "dhl", "usps"} <= ids
    assert len(ids) >= 9
