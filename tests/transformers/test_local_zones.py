"""Local times without an offset are read in the zone of their place; a partner's default zone is
only a flagged fallback. Exercised through a YAML-only partner shaped like a Brazilian
marketplace's export (local times, regions as state codes)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
import yaml

from carrierwatch.transformers.registry import Partner, load_partner

RECEIVED = 1_800_000_000_000


@pytest.fixture(scope="module")
def partner(tmp_path_factory: pytest.TempPathFactory) -> Partner:
    home = tmp_path_factory.mktemp("home")
    (home / "partners").mkdir()
    (home / "codebooks").mkdir()
    (home / "partners" / "marketplace_br.yaml").write_text(yaml.safe_dump({
        "id": "marketplace_br", "display_name": "Marketplace BR", "transformer": "json_mapping",
        "default_country": "BR", "default_timezone": "America/Sao_Paulo",
        "mapping": {"events": "orders", "tracking_number": "order_id", "code": "status",
                    "time": {"path": "at", "format": "%Y-%m-%d %H:%M:%S"},
                    "location": {"region": "customer_state", "country": "country"}}}))
    (home / "codebooks" / "marketplace_br.yaml").write_text(
        "version: 1\npartner: marketplace_br\ncodes:\n"
        "  delivered: {status: delivered, confidence: 1.0}\n")
    return load_partner(home / "partners" / "marketplace_br.yaml", home / "codebooks")


def local_ms(text: str, zone: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp() * 1000)


@pytest.mark.parametrize(("state", "zone", "flagged"), [
    ("SP", "America/Sao_Paulo", False),
    ("AC", "America/Rio_Branco", False),    # UTC-5: two hours from the partner's default
    ("MT", "America/Cuiaba", False),
    ("AM", "America/Manaus", True),         # western Amazonas keeps UTC-5: the state's zone, flagged
    (None, "America/Sao_Paulo", True),      # no state: the partner's default, flagged as a guess
])
def test_local_times_are_read_in_the_zone_of_their_place(
        partner: Partner, state: str | None, zone: str, flagged: bool) -> None:
    at = "2018-01-10 15:30:00"
    order = {"order_id": "o1", "status": "delivered", "at": at, "customer_state": state}
    result = partner.transform(orjson.dumps({"orders": [order]}), RECEIVED)
    assert not result.dead_letters
    [event] = result.events
    assert event.event_time == local_ms(at, zone)
    assert event.timezone_ambiguous is flagged


def test_a_place_abroad_is_not_read_in_the_partners_zone(partner: Partner) -> None:
    order = {"order_id": "o2", "status": "delivered", "at": "2026-07-01 09:00:00",
             "customer_state": "WA", "country": "AU"}
    [event] = partner.transform(orjson.dumps({"orders": [order]}), RECEIVED).events
    assert event.event_time == local_ms("2026-07-01 09:00:00", "Australia/Perth")
    assert not event.timezone_ambiguous


def test_the_old_default_first_rule_is_gone(partner: Partner) -> None:
    """Before, an uncertain region lost to the partner's default: Amazonas read as São Paulo."""
    order = {"order_id": "o3", "status": "delivered", "at": "2026-07-01 09:00:00",
             "customer_state": "AM"}
    [event] = partner.transform(orjson.dumps({"orders": [order]}), RECEIVED).events
    assert event.event_time != local_ms("2026-07-01 09:00:00", "America/Sao_Paulo")




def test_aftership_checkpoint_without_place_or_destination_uses_the_partners_zone() -> None:
    """No place and no destination: the partner's default_timezone (America/New_York), flagged,
    not UTC as before; a Brazilian checkpoint with its state keeps its own zone."""
    import json

    root = Path(__file__).resolve().parents[2]
    aftership = load_partner(root / "partners" / "aftership.yaml", root / "codebooks")
    assert aftership.spec.default_timezone == "America/New_York"

    def checkpoint(when: str, **place: str) -> dict[str, object]:
        return {"created_at": "2026-03-05T00:00:00+00:00", "checkpoint_time": when,
                "tag": "InTransit", "subtag": "InTransit_001", "message": "m", **place}

    body = {"id": "a" * 32, "tracking_number": "770000009999", "slug": "fedex",
            "created_at": "2026-03-01T00:00:00+00:00", "tag": "InTransit",
            "checkpoints": [checkpoint("2026-03-02T10:00:00"),
                            checkpoint("2026-03-03T10:00:00", country_iso3="BRA", state="SP")]}
    raw = json.dumps({"ts": 1772500000, "event": "tracking_update", "event_id": "e1",
                      "is_tracking_first_tag": False, "msg": body}).encode()
    nowhere, sao_paulo = aftership.transform(raw, RECEIVED).events
    assert nowhere.event_time == local_ms("2026-03-02 10:00:00", "America/New_York")
    assert nowhere.timezone_ambiguous
    assert sao_paulo.event_time == local_ms("2026-03-03 10:00:00", "America/Sao_Paulo")
    assert not sao_paulo.timezone_ambiguous


def test_valley_express_reads_a_nevada_row_in_pacific_time() -> None:
    """A row with no zone column value in Reno, NV: Nevada spans two zones, so its guess (the
    capital's, Pacific) is flagged, but it is no longer the partner's Boise zone (an hour off)."""
    root = Path(__file__).resolve().parents[2]
    valley = load_partner(root / "partners" / "valley_express.yaml", root / "codebooks")
    raw = (b"tracking_number,status_code,local_timestamp,time_zone,location,reason,service_level,"
           b"promised_by\nVX1,DEP,2026-03-03 06:00,,\"Reno, NV 89502\",,STD,\n"
           b"VX2,DEP,2026-03-03 06:00,,Terminal 4,,STD,\n")
    reno, nowhere = valley.transform(raw, RECEIVED).events
    assert reno.event_time == local_ms("2026-03-03 06:00:00", "America/Los_Angeles")
    assert reno.timezone_ambiguous
    assert nowhere.event_time == local_ms("2026-03-03 06:00:00", "America/Boise")
    assert nowhere.timezone_ambiguous


@pytest.mark.parametrize("module", ["carrierwatch.transformers._aggregators",
                                    "carrierwatch.transformers.json_mapping",
                                    "carrierwatch.transformers.aftership",
                                    "carrierwatch.scaffold"])
def test_examples_of_the_modules_reading_places_run(module: str) -> None:
    import doctest
    import importlib

    failures, attempted = doctest.testmod(importlib.import_module(module))
    assert failures == 0 and attempted > 0
