from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import yaml
from pydantic import BaseModel

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.scaffold import scaffold_partner
from carrierwatch.transformers.csv_mapping import CsvMapping
from carrierwatch.transformers.json_mapping import JsonMapping
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
    added = subprocess.run([exe, "partners", "add", "acme_courier", "--timezone",
                            "America/Chicago", "--country", "US"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    assert "created" in added.stdout and "acme_courier.yaml" in added.stdout
    listed = subprocess.run([exe, "partners", "list", "--json"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert '"id": "acme_courier"' in listed.stdout
    again = subprocess.run([exe, "partners", "add", "acme_courier", "--timezone", "UTC",
                            "--country", "US"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "exists already" in again.stderr


# --- CSV partners and the mapping keys the template shows --------------------------------------


def test_csv_config_partner_works_without_python(home: Path) -> None:
    created = scaffold_partner(home, "acme_drop", None, "config", "csv")
    assert not any(p.suffix == ".py" for p in created)
    registry = load_registry(home)
    assert not registry.failures, registry.failures
    partner = registry.get("acme_drop")
    assert (partner.spec.transformer, partner.spec.format, partner.spec.auth.scheme) == (
        "csv_mapping", "csv", "none")
    samples = home / "samples" / "acme_drop"

    result = partner.transform((samples / "lifecycle_delivered.csv").read_bytes(), RECEIVED)
    assert not result.dead_letters and not result.gaps
    picked_up, attempted, delivered = result.events
    assert [(e.status, e.reason) for e in result.events] == [
        ("picked_up", None), ("delivery_attempted", "recipient_not_available"),
        ("delivered", None)]
    assert picked_up.event_time == 1_772_464_200_000  # 02/03/2026 09:10 in Chicago
    assert picked_up.event_time_local == "02/03/2026 09:10" and not picked_up.timezone_ambiguous
    assert picked_up.promised_by == 1_772_690_399_000  # 04/03/2026: by 23:59:59 in Chicago
    assert (attempted.attempt_number, delivered.attempt_number) == (1, 2)
    assert (delivered.proof_of_delivery, delivered.service_level) == ("photo", "standard")
    assert picked_up.location is not None and picked_up.location.postal_prefix == "787"

    result = partner.transform((samples / "unknown_code.csv").read_bytes(), RECEIVED)
    assert [(e.status, e.raw_code) for e in result.events] == [("unknown", "SORTED_AT_DEPOT")]

    result = partner.transform((samples / "malformed_time.csv").read_bytes(), RECEIVED)
    assert [e.status for e in result.events] == ["delivered"]
    assert [d.path for d in result.dead_letters] == ["row[1].scanned_at"]

    result = partner.transform((samples / "error_wrong_header.csv").read_bytes(), RECEIVED)
    assert not result.events and [d.path for d in result.dead_letters] == ["$"]
    assert "wrong header" in result.dead_letters[0].error


def test_a_csv_partner_is_config_only(home: Path) -> None:
    with pytest.raises(ConfigurationError, match="--format csv goes with --kind config"):
        scaffold_partner(home, "acme_code_csv", None, "code", "csv")
    with pytest.raises(ConfigurationError, match="unknown format 'xml'"):
        scaffold_partner(home, "acme_xml", None, "config", "xml")


def _model_keys(model: type[BaseModel]) -> set[str]:
    """Every key a mapping model accepts, nested models included."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        keys.add(name)
        for kind in (field.annotation, *get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                keys |= _model_keys(kind)
    return keys


@pytest.mark.parametrize(("feed_format", "model"), [("json", JsonMapping), ("csv", CsvMapping)])
def test_the_template_names_every_mapping_key(home: Path, feed_format: str,
                                              model: type[BaseModel]) -> None:
    scaffold_partner(home, "acme_keys", None, "config", feed_format)
    text = (home / "partners" / "acme_keys.yaml").read_text()
    block = text[text.index("\nmapping:\n"):text.index("\ncontract:\n")]
    keys = _model_keys(model)
    if feed_format == "csv":  # JSON-only keys a CSV mapping rejects
        keys -= {"events", "error", "error_code", "error_message"}
    assert {"promised_by", "eta_start", "eta_end", "service_level", "attempt", "proof",
            "date_only", "city_region_postal"} <= keys
    missing = sorted(key for key in keys if not re.search(rf"(^|[\s{{,#]){key}:", block, re.M))
    assert not missing, f"the {feed_format} template does not show {missing}"
    assert re.search(r'^  time: \{path: \w+, format: "%', block, re.M) or re.search(
        r'^  # time: \{path: \w+, format: "%', block, re.M), "a strptime time format"
    # the commented-out keys are valid YAML and valid mapping keys once uncommented
    uncommented = re.sub(r"^(\s*)# (?=[a-z_]+: )", r"\1", block, flags=re.M)
    mapping = yaml.safe_load(uncommented)["mapping"]
    assert set(mapping) <= keys | {"csv"}


def test_cli_scaffolds_a_csv_partner(home: Path) -> None:
    env = {**os.environ, "CARRIERWATCH_HOME": str(home)}
    command = [sys.executable, "-m", "carrierwatch", "partners", "add", "acme_drop",
               "--format", "csv"]
    helped = subprocess.run([*command[:5], "--help"], env=env, capture_output=True, text=True,
                            timeout=60)
    if "--timezone" in helped.stdout:  # once `partners add` asks for the partner's zone
        command += ["--timezone", "America/Chicago", "--country", "US"]
    added = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    assert "acme_drop/lifecycle_delivered.csv" in added.stdout
    assert load_registry(home).get("acme_drop").spec.transformer == "csv_mapping"


# --- the partner's zone and country: never a silent UTC ----------------------------------------


def _cli(home: Path, *args: str, stdin: int | None = subprocess.DEVNULL
         ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CARRIERWATCH_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "carrierwatch", "partners", "add", *args],
                          env=env, stdin=stdin, capture_output=True, text=True, timeout=60)


def test_scaffold_writes_the_partners_zone_and_country(home: Path) -> None:
    scaffold_partner(home, "rio_courier", None, timezone="America/Sao_Paulo", country="bra")
    spec = load_registry(home).get("rio_courier").spec
    assert (spec.default_timezone, spec.default_country) == ("America/Sao_Paulo", "BR")
    assert spec.contract.timezone == "America/Sao_Paulo"
    with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Base'"):
        scaffold_partner(home, "mars", None, timezone="Mars/Base", country="BR")
    with pytest.raises(ConfigurationError, match="unknown country 'XX'"):
        scaffold_partner(home, "mars", None, timezone="UTC", country="XX")
    assert not (home / "partners" / "mars.yaml").exists()


def test_scaffold_without_a_zone_says_so_and_sets_no_utc(home: Path) -> None:
    scaffold_partner(home, "nowhere", None)
    text = (home / "partners" / "nowhere.yaml").read_text()
    assert "default_timezone: UTC" not in text
    assert "# default_timezone: the partner's IANA zone" in text
    assert "timezone: UTC   # the partner's zone was not given" in text
    assert load_registry(home).get("nowhere").spec.default_timezone is None


def test_cli_without_a_terminal_needs_the_options(home: Path) -> None:
    result = _cli(home, "acme")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "--timezone and --country" in result.stderr
    result = _cli(home, "acme", "--country", "BR")
    assert result.returncode == 2 and "needs --timezone " in result.stderr
    assert not (home / "partners" / "acme.yaml").exists()


@pytest.mark.parametrize(("args", "message"), [
    (("--timezone", "Mars/Base", "--country", "BR"), "unknown time zone 'Mars/Base'"),
    (("--timezone", "America/Sao_Paulo", "--country", "XX"), "unknown country 'XX'"),
    (("--timezone", "", "--country", "BR"), "unknown time zone ''"),
])
def test_cli_rejects_unknown_zones_and_countries(home: Path, args: tuple[str, ...],
                                                 message: str) -> None:
    result = _cli(home, "acme", *args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (home / "partners" / "acme.yaml").exists()


def test_cli_asks_on_a_terminal_until_the_answers_are_valid(home: Path) -> None:
    """A real pseudo-terminal: a wrong country and a wrong zone are asked again; Enter takes the
    country's main zone offered as the default."""
    import pty
    import select

    controller, terminal = pty.openpty()
    env = {**os.environ, "CARRIERWATCH_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "carrierwatch", "partners", "add", "acme"],
                               env=env, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""

    # poll, not select: select() refuses descriptors above 1023, which a long test session
    # can reach
    poller = select.poll()
    poller.register(controller, select.POLLIN)

    def read_until(marker: bytes) -> None:
        nonlocal output
        while marker not in output:
            ready = poller.poll(30_000)
            assert ready, output.decode(errors="replace")
            output += os.read(controller, 4096)

    try:
        for answer, prompt in ((b"XX", b"country"), (b"br", b"country (ISO"),
                               (b"Mars/Base", b"time zone"), (b"", b"Mars/Base")):
            read_until(prompt)
            os.write(controller, answer + b"\n")
        read_until(b"next:")
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    text = output.decode(errors="replace")
    assert "unknown country 'XX'" in text and "unknown time zone 'Mars/Base'" in text
    assert "[America/Sao_Paulo]" in text and "Traceback" not in text
    spec = load_registry(home).get("acme").spec
    assert (spec.default_timezone, spec.default_country) == ("America/Sao_Paulo", "BR")
