"""The `schema-registry` click commands, run for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from carrierwatch.core.model import SCHEMA_SUBJECT
from carrierwatch.registry.cli import schema_registry
from carrierwatch.registry.schemas import SchemaVersion


def test_seed_and_versions(tmp_path: Path, committed_versions: list[SchemaVersion]) -> None:
    env = {"CARRIERWATCH_DATA_DIR": str(tmp_path), "CARRIERWATCH_SCHEMA_REGISTRY_URL": ""}
    runner = CliRunner()
    seeded = runner.invoke(schema_registry, ["seed"], env=env)
    assert seeded.exit_code == 0, seeded.output
    expected = [f"v{v.version}.avsc -> {SCHEMA_SUBJECT} version {i}, id {i}"
                for i, v in enumerate(committed_versions, 1)]
    assert seeded.output.splitlines() == expected
    listed = runner.invoke(schema_registry, ["versions"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"registry {SCHEMA_SUBJECT} version {len(committed_versions)}: id " \
           f"{len(committed_versions)}" in listed.output


def test_serve_until_sigterm(tmp_path: Path, committed_versions: list[SchemaVersion]) -> None:
    code = "from carrierwatch.registry.cli import schema_registry; schema_registry()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", "0", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CARRIERWATCH_SCHEMA_REGISTRY_URL": ""})
    try:
        assert process.stdout is not None
        url = None
        deadline = time.monotonic() + 30
        lines = []
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "listening on" in line:
                url = line.split("listening on ")[1].split()[0]
        assert url is not None, "".join(lines)
        assert len([line for line in lines if line.startswith("seeded")]) == len(
            committed_versions)
        response = httpx.get(f"{url}/subjects/{SCHEMA_SUBJECT}/versions", timeout=10)
        assert response.json() == [v.version for v in committed_versions]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert "schema registry stopped" in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert (tmp_path / "schema-registry" / "registry.json").exists()
