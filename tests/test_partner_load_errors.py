"""A partner that fails to load stops the commands that need it, with its file:line message.

Each test works on a copy of the configuration home (``CARRIERWATCH_HOME``: partners/,
codebooks/, schemas/, samples/) with one partner broken, and runs the real CLI in a subprocess.
Commands that need every partner (replay, demo, worker, sink, topics, simulate of all partners)
exit 1; commands for one partner (``normalize --partner X``, ``simulate --partners X``) stop only
if X failed; ``partners list`` lists the others and names the failure, exit 1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "carrierwatch: error: "


@pytest.fixture
def home(tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    for folder in ("partners", "codebooks", "schemas", "samples"):
        shutil.copytree(ROOT / folder, copy / folder)
    return copy


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def break_ups_codebook(home: Path) -> tuple[Path, int]:
    """Misspell a status in UPS's codebook; return the file and the line of the error."""
    path = home / "codebooks" / "ups.yaml"
    lines = path.read_text().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines, 1) if "status: delivered" in line)
    lines[number - 1] = lines[number - 1].replace("status: delivered", "status: deliverd")
    path.write_text("".join(lines))
    return path, number


def cli(home: Path, *args: str, port: int = 9, cwd: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
        "CARRIERWATCH_HOME": str(home),
        "CARRIERWATCH_DATA_DIR": str(home.parent / "data"),
        "CARRIERWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
    })
    return subprocess.run([sys.executable, "-m", "carrierwatch", *args], env=env,
                          cwd=cwd or home.parent, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith(PREFIX)]
    return line


def test_one_broken_codebook_stops_every_command_that_needs_that_partner(
        home: Path, closed_port: int) -> None:
    path, number = break_ups_codebook(home)
    expected = f"{PREFIX}partner 'ups' failed to load: {path}:{number}: code "
    ups_sample = str(home / "samples" / "ups" / "lifecycle_delivered.json")
    fedex_sample = str(home / "samples" / "fedex" / "lifecycle_delivered.json")
    for args in (["normalize", "--partner", "ups", ups_sample],
                 ["replay", "--no-progress", ups_sample],
                 ["replay", "--no-progress", fedex_sample],  # replay needs every partner
                 ["demo", "--days", "1", "--incident", "feed_outage@ups:0d+2h"],
                 ["simulate", "--partners", "ups", "--days", "1", "--out", "sim"],
                 ["simulate", "--partners", "9", "--days", "1", "--out", "sim"],
                 ["worker"], ["sink"], ["topics"]):
        done = cli(home, *args, port=closed_port)
        assert done.returncode == 1, (args, done.stderr)
        line = error_line(done)
        assert line.startswith(expected), (args, line)
        assert "unknown canonical status 'deliverd'" in line
        assert done.stderr.count("\n") == 1, (args, done.stderr)  # one line, no 23-line trace
    assert not (home.parent / "sim").exists()  # simulate stopped before writing anything
    # replay stopped before opening the store: no partner's payload was dead-lettered
    assert not (home.parent / "data" / "clickhouse").exists()


def test_commands_for_another_partner_are_not_stopped(home: Path) -> None:
    break_ups_codebook(home)
    fedex_sample = str(home / "samples" / "fedex" / "lifecycle_delivered.json")
    done = cli(home, "normalize", "--partner", "fedex", fedex_sample)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # stderr is the dead-letter stream: no warning about UPS
    assert len(done.stdout.splitlines()) >= 5
    simulated = cli(home, "simulate", "--partners", "fedex", "--days", "1",
                    "--packages-per-day", "2", "--warmup-days", "0", "--out", "sim")
    assert simulated.returncode == 0, simulated.stderr
    assert (home.parent / "sim" / "fedex.rawlog.jsonl").is_file()


def test_partners_list_shows_the_rest_and_names_the_failure(home: Path) -> None:
    path, number = break_ups_codebook(home)
    done = cli(home, "partners", "list", "--json")
    assert done.returncode == 1
    line = error_line(done)
    assert line.startswith(f"{PREFIX}partner 'ups' failed to load: {path}:{number}: ")
    assert "unknown canonical status 'deliverd'" in line
    import json

    listed = {row["id"] for row in json.loads(done.stdout)}
    assert "fedex" in listed and "ups" not in listed and len(listed) >= 8


@pytest.mark.parametrize("damage", ["yaml", "binary", "metadata"])
def test_every_kind_of_load_failure_has_a_located_message(home: Path, damage: str) -> None:
    if damage == "yaml":
        target = home / "codebooks" / "fedex.yaml"
        text = target.read_text().splitlines()
        text.insert(5, "  broken: [unclosed")
        target.write_text("\n".join(text) + "\n")
        where = f"{target}:"
    elif damage == "binary":
        target = home / "codebooks" / "fedex.yaml"
        target.write_bytes(b"version: 1\n\xff\xfe\x00\x81garbage\n")
        where = f"{target}:2: not UTF-8 text"
    else:
        target = home / "partners" / "fedex.yaml"
        target.write_text(target.read_text().replace("kind: carrier", "kind: spaceship"))
        where = f"{target}: kind:"
    registry = load_registry(home)
    assert set(registry.failures) == {"fedex"}  # the traceback, for developers
    assert registry.errors["fedex"].startswith(where), registry.errors["fedex"]
    done = cli(home, "normalize", "--partner", "fedex",
               str(home / "samples" / "fedex" / "lifecycle_delivered.json"))
    assert done.returncode == 1
    assert error_line(done).startswith(f"{PREFIX}partner 'fedex' failed to load: {where}")


def test_several_broken_partners_are_all_named(home: Path) -> None:
    break_ups_codebook(home)
    (home / "codebooks" / "dhl.yaml").write_text("version: 1\npartner: dhl\ncodes: [\n")
    done = cli(home, "replay", "--no-progress", str(home / "samples" / "fedex"))
    assert done.returncode == 1
    assert error_line(done) == f"{PREFIX}2 partners failed to load:"
    assert "  partner 'dhl' failed to load: " in done.stderr
    assert "  partner 'ups' failed to load: " in done.stderr
