"""A payload that yields nothing leaves a trace (issue #13, "silent loss on schema drift").

FedEx payloads whose ``scanEvents`` was missing or renamed or whose ``completeTrackResults`` was
empty, and UPS payloads whose ``activity`` was missing or renamed or whose ``shipment`` was empty,
gave no event and no dead letter, and ``normalize`` exited 0. Now every payload of every partner
ends as events, dead letters naming the missing path, or a counted empty event list (where the
feed legitimately sends one: FedEx ``scanEvents: []``, UPS ``activity: []``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from carrierwatch.cli import cli
from carrierwatch.core.model import DeadLetter
from carrierwatch.transformers.base import (
    NOTHING_READ,
    PayloadError,
    TransformResult,
    run_transform,
)
from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = 1_772_712_000_000
REGISTRY = load_registry(ROOT)
PARTNERS = REGISTRY.ids()


def _sample(partner_id: str, name: str = "lifecycle_delivered.json") -> Any:
    return orjson.loads((ROOT / "samples" / partner_id / name).read_bytes())


def _containers(doc: Any, keys: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Key paths of every object member whose value is a list or an object."""
    found = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if isinstance(value, (dict, list)):
                found.append((*keys, key))
            found.extend(_containers(value, (*keys, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found.extend(_containers(value, (*keys, index)))
    return found


def _drift(doc: Any, keys: tuple[Any, ...], how: str) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in keys[:-1]:
        parent = parent[key]
    value = parent.pop(keys[-1])
    if how == "renamed":
        parent[f"{keys[-1]}s" if not keys[-1].endswith("s") else keys[-1][:-1]] = value
    elif how == "emptied":
        parent[keys[-1]] = [] if isinstance(value, list) else {}
    return doc


def _transform_raw(partner_id: str, raw: bytes) -> TransformResult:
    partner = REGISTRY.get(partner_id)
    # the transformer itself, not run_transform's safety net: each one must leave the trace
    # (a PayloadError that escapes is the designed "whole payload is bad" signal)
    try:
        return partner.transformer(raw, partner.context(RECEIVED))
    except PayloadError as exc:
        return TransformResult(dead_letters=[DeadLetter(partner_id, RECEIVED, exc.message,
                                                        exc.path, raw)])


def _transform(partner_id: str, doc: Any) -> TransformResult:
    return _transform_raw(partner_id, orjson.dumps(doc))


@pytest.mark.parametrize("partner_id", PARTNERS)
def test_no_drifted_payload_of_any_partner_vanishes(partner_id: str) -> None:
    silent = []
    checked = 0
    for path in sorted((ROOT / "samples" / partner_id).glob("*.json")):
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            continue
        for keys in _containers(doc):
            for how in ("missing", "renamed", "emptied"):
                result = _transform(partner_id, _drift(doc, keys, how))
                checked += 1
                if not (result.events or result.dead_letters or result.empty):
                    silent.append((path.name, how, ".".join(map(str, keys))))
    for path in sorted((ROOT / "samples" / partner_id).glob("*.csv")):
        header, _, rows = path.read_bytes().partition(b"\n")
        columns = header.split(b",")
        for index in range(len(columns)):  # each column renamed, then removed
            renamed = [*columns[:index], columns[index] + b"_v2", *columns[index + 1:]]
            removed = [*columns[:index], *columns[index + 1:]]
            for drifted in (renamed, removed):
                result = _transform_raw(partner_id, b",".join(drifted) + b"\n" + rows)
                checked += 1
                if not (result.events or result.dead_letters or result.empty):
                    silent.append((path.name, b",".join(drifted).decode()))
        result = _transform_raw(partner_id, header + b"\n")
        if not (result.events or result.dead_letters or result.empty):
            silent.append((path.name, "header only"))
    assert not silent, silent
    assert checked >= 20


@pytest.mark.parametrize(("drift", "path"), [
    ("missing", "$.output.completeTrackResults[0].trackResults[0].scanEvents"),
    ("renamed", "$.output.completeTrackResults[0].trackResults[0].scanEvents"),
    ("no results", "$.output.completeTrackResults"),
    ("no track results", "$.output.completeTrackResults[0].trackResults"),
])
def test_fedex_drift_is_a_dead_letter_naming_the_path(drift: str, path: str) -> None:
    doc = _sample("fedex")
    output = doc["output"]
    track = output["completeTrackResults"][0]["trackResults"][0]
    if drift == "missing":
        del track["scanEvents"]
    elif drift == "renamed":
        track["scanEvent"] = track.pop("scanEvents")
    elif drift == "no results":
        output["completeTrackResults"] = []
    else:
        output["completeTrackResults"][0]["trackResults"] = []
    result = _transform("fedex", doc)
    assert not result.events
    assert [d.path for d in result.dead_letters] == [path]


@pytest.mark.parametrize(("drift", "path"), [
    ("missing", "$.trackResponse.shipment[0].package[0].activity"),
    ("renamed", "$.trackResponse.shipment[0].package[0].activity"),
    ("no shipment", "$.trackResponse.shipment"),
])
def test_ups_drift_is_a_dead_letter_naming_the_path(drift: str, path: str) -> None:
    doc = _sample("ups")
    response = doc["trackResponse"]
    package = response["shipment"][0]["package"][0]
    if drift == "missing":
        del package["activity"]
    elif drift == "renamed":
        package["activities"] = package.pop("activity")
    else:
        response["shipment"] = []
    result = _transform("ups", doc)
    assert not result.events
    assert [d.path for d in result.dead_letters] == [path]


@pytest.mark.parametrize(("partner_id", "path"), [
    ("fedex", "$.output.completeTrackResults[0].trackResults[0].scanEvents"),
    ("ups", "$.trackResponse.shipment[0].package[0].activity"),
])
def test_an_empty_event_list_is_counted_not_dead_lettered(partner_id: str, path: str,
                                                          tmp_path: Path) -> None:
    doc = _sample(partner_id)
    if partner_id == "fedex":
        doc["output"]["completeTrackResults"][0]["trackResults"][0]["scanEvents"] = []
    else:
        doc["trackResponse"]["shipment"][0]["package"][0]["activity"] = []
    result = REGISTRY.get(partner_id).transform(orjson.dumps(doc), RECEIVED)
    assert (result.events, result.dead_letters, result.empty) == ([], [], [path])

    payload = tmp_path / "empty.json"
    payload.write_bytes(orjson.dumps(doc))
    done = CliRunner().invoke(cli, ["normalize", "--partner", partner_id, str(payload)])
    assert done.exit_code == 0
    assert done.stdout == ""
    assert done.stderr.strip() == (f"carrierwatch: empty payload: no events at {path} "
                                   "(the partner sent an empty event list)")


def test_fedex_drift_makes_normalize_exit_3(tmp_path: Path) -> None:
    doc = _sample("fedex")
    track = doc["output"]["completeTrackResults"][0]["trackResults"][0]
    track["scanEvent"] = track.pop("scanEvents")
    payload = tmp_path / "drift.json"
    payload.write_bytes(orjson.dumps(doc))
    done = CliRunner().invoke(cli, ["normalize", "--partner", "fedex", str(payload)])
    assert done.exit_code == 3
    dead = orjson.loads(done.stderr.splitlines()[0])
    assert dead["path"] == "$.output.completeTrackResults[0].trackResults[0].scanEvents"


def test_run_transform_dead_letters_a_payload_that_yields_nothing() -> None:
    fedex = REGISTRY.get("fedex")
    ctx = fedex.context(RECEIVED)
    result = run_transform(lambda raw, ctx: TransformResult(), b"{}", ctx)
    assert [(d.path, d.error, d.raw) for d in result.dead_letters] == [("$", NOTHING_READ, b"{}")]
    counted = run_transform(lambda raw, ctx: TransformResult(empty=["$.scans"]), b"{}", ctx)
    assert counted.dead_letters == [] and counted.empty == ["$.scans"]
