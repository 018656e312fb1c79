from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.scaffold import scaffold_partner
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
RECEIVED = 1_772_712_000_000


@pytest.fixture
def home(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "schemas", tmp_path / "schemas")
    (tmp_path / "partners").mkdir()
    (tmp_path / "codebooks").mkdir()
    return tmp_path


def _check_partner_behaviour(home: Path, partner_id: str) -> None:
    registry = load_registry(home)
    assert not registry.failures, registry.failures
    partner = registry.get(partner_id)
    samples = home / "samples" / partner_id

    result = partner.transform((samples / "lifecycle_delivered.json").read_bytes(), RECEIVED)
    assert [(e.status, e.reason) for e in result.events] == [
        ("picked_up", None), ("delivery_attempted", "recipient_not_available"),
        ("delivered", None)]
    assert not result.dead_letters and not result.gaps
    assert result.events[0].event_time == 1_772_464_200_000  # 2026-03-02T15:10:00Z

    result = partner.transform((samples / "unknown_code.json").read_bytes(), RECEIVED)
    assert [(e.status, e.confidence, e.raw_code) for e in result.events] == [
        ("unknown", 0.0, "SORTED_AT_DEPOT")]
    assert result.gaps == ["SORTED_AT_DEPOT"]

    result = partner.transform((samples / "malformed_time.json").read_bytes(), RECEIVED)
    assert [e.status for e in result.events] == ["delivered"]
    assert len(result.dead_letters) == 1 and "events[0]" in result.dead_letters[0].path

    result = partner.transform((samples / "error_response.json").read_bytes(), RECEIVED)
    assert not result.events and len(result.dead_letters) == 1
    assert "NOT_FOUND" in result.dead_letters[0].error


def test_config_partner_works_without_python(home: Path) -> None:
    created = scaffold_partner(home, "acme_courier", None, "config")
    assert home / "partners" / "acme_courier.yaml" in created
    assert not any(p.suffix == ".py" for p in created)
    _check_partner_behaviour(home, "acme_courier")


def test_code_partner_module_works(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created = scaffold_partner(home, "acme_code", "Acme Code", "code")
    module_path = next(p for p in created if p.suffix == ".py")
    spec = importlib.util.spec_from_file_location("carrierwatch.transformers.acme_code",
                                                  module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "carrierwatch.transformers.acme_code", module)
    spec.loader.exec_module(module)
    _check_partner_behaviour(home, "acme_code")


def test_refuses_bad_or_existing_ids(home: Path) -> None:
    with pytest.raises(ConfigurationError, match="invalid partner id"):
        scaffold_partner(home, "Bad-Id", None)
    scaffold_partner(home, "acme", None)
    with pytest.raises(ConfigurationError, match="exists already"):
        scaffold_partner(home, "acme", None)


def test_cli_scaffolds_and_lists(home: Path) -> None:
    env = {**os.environ, "CARRIERWATCH_HOME": str(home)}
    exe = Path(sys.executable).parent / "carrierwatch"
    added = subprocess.run([exe, "partners", "add", "acme_courier"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    assert "created" in added.stdout and "acme_courier.yaml" in added.stdout
    listed = subprocess.run([exe, "partners", "list", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert '"id": "acme_courier"' in listed.stdout
    again = subprocess.run([exe, "partners", "add", "acme_courier"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "exists already" in again.stderr
