"""Golden tests, one shape for every partner: ``samples/<partner>/<name>.<ext>`` in,
``tests/golden/<partner>/<name>.expected.json`` out (events, dead letters without raw bytes, gaps).

Expected files are written by hand-checked runs: set ``CARRIERWATCH_UPDATE_GOLDEN=1`` to rewrite
them, then read the diff before committing it.

A sample is meant to normalize unless its name says it is an error payload: it starts with
``error_``, ``malformed_``, ``wrong_`` or ``not_`` (:data:`ERROR_SAMPLE_PREFIXES`). A sample meant
to normalize that yields no event (only dead letters, say "missing tracking number" for every
update of a mis-mapped partner) fails the test before any expected file is compared or written,
so a wrong mapping cannot be frozen into golden files; an error sample must yield a dead letter.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from carrierwatch.transformers.registry import PartnerRegistry, load_registry

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
RECEIVED = 1_772_712_000_000  # 2026-03-05T12:00:00Z, fixed so golden files are stable

ERROR_SAMPLE_PREFIXES = ("error_", "malformed_", "wrong_", "not_")

REGISTRY = load_registry(ROOT)
CASES = sorted(
    (partner.id, sample)
    for partner in REGISTRY
    for sample in sorted((ROOT / "samples" / partner.id).glob("*"))
    if sample.is_file()
)


def normalize_for_golden(partner_id: str, sample: Path,
                         registry: PartnerRegistry = REGISTRY) -> dict[str, Any]:
    result = registry.get(partner_id).transform(sample.read_bytes(), RECEIVED)
    return {
        "events": [e.to_json_dict() for e in result.events],
        "dead_letters": [
            {k: v for k, v in d.to_json_dict().items() if k != "raw_base64"}
            for d in result.dead_letters
        ],
        "gaps": result.gaps,
    }


def golden_problem(sample: Path, normalized: dict[str, Any]) -> str | None:
    """Why ``normalized`` (of ``sample``) must not become a golden file; None when it may."""
    events, dead_letters = normalized["events"], normalized["dead_letters"]
    meant_as_error = sample.name.startswith(ERROR_SAMPLE_PREFIXES)
    if not meant_as_error and not events:
        seen = sorted({f"{d['path']}: {d['error']}" for d in dead_letters})
        return (f"{sample.parent.name}/{sample.name} is meant to normalize but yields no event "
                f"({len(dead_letters)} dead letters: {'; '.join(seen[:3]) or 'none'}). Is the "
                f"partner's mapping wrong? If the sample is an error payload, name it "
                f"{' / '.join(p + '*' for p in ERROR_SAMPLE_PREFIXES)}.")
    if meant_as_error and not dead_letters:
        return (f"{sample.parent.name}/{sample.name} is named as an error payload but yields "
                f"no dead letter")
    return None


def test_every_partner_has_samples() -> None:
    assert not REGISTRY.failures, REGISTRY.failures
    for partner in REGISTRY:
        samples = list((ROOT / "samples" / partner.id).glob("*"))
        assert len(samples) >= 4, f"{partner.id} needs golden samples"


@pytest.mark.parametrize(("partner_id", "sample"), CASES, ids=[f"{p}/{s.name}" for p, s in CASES])
def test_golden(partner_id: str, sample: Path) -> None:
    expected_path = GOLDEN / partner_id / f"{sample.stem}.expected.json"
    actual = normalize_for_golden(partner_id, sample)
    problem = golden_problem(sample, actual)
    assert problem is None, problem
    if os.environ.get("CARRIERWATCH_UPDATE_GOLDEN") == "1":
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
    assert expected_path.exists(), f"missing golden file {expected_path}"
    expected = json.loads(expected_path.read_text())
    assert actual == expected


@pytest.mark.parametrize(("partner_id", "broken", "reason"), [
    ("metro_courier", ("tracking_number: parcel\n", "tracking_number: parcel_id\n"),
     "updates[0].parcel_id: missing tracking number"),
    ("valley_express", ("tracking_number: tracking_number\n", "tracking_number: tracking_no\n"),
     "reads columns ['tracking_no']"),
    ("valley_express", ("time: {path: local_timestamp, format: iso,",
                        "time: {path: local_timestamp, format: \"%d/%m/%Y %H:%M\","),
     "row[1].local_timestamp: unreadable time"),
])
def test_a_mis_mapped_partner_is_flagged_not_frozen(tmp_path: Path, partner_id: str,
                                                   broken: tuple[str, str], reason: str) -> None:
    for folder in ("partners", "codebooks"):
        (tmp_path / folder).mkdir()
        shutil.copy(ROOT / folder / f"{partner_id}.yaml", tmp_path / folder)
    spec_path = tmp_path / "partners" / f"{partner_id}.yaml"
    text = spec_path.read_text()
    assert broken[0] in text
    spec_path.write_text(text.replace(broken[0], broken[1]))
    registry = load_registry(tmp_path)
    if partner_id in registry.failures:  # a mapping the loader can tell is wrong stops there
        assert reason in registry.failures[partner_id]
        return
    samples = sorted((ROOT / "samples" / partner_id).glob("*"))
    problems = {sample.name: golden_problem(sample, normalize_for_golden(partner_id, sample,
                                                                         registry))
                for sample in samples}
    flagged = sorted(name for name, problem in problems.items() if problem is not None)
    meant_to_normalize = sorted(s.name for s in samples
                                if not s.name.startswith(ERROR_SAMPLE_PREFIXES))
    assert flagged == meant_to_normalize and len(flagged) >= 4
    first = problems[flagged[0]]
    assert first is not None and "meant to normalize but yields no event" in first
    assert reason in first
