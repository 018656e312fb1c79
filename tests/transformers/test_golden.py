"""Golden tests, one shape for every partner: ``samples/<partner>/<name>.<ext>`` in,
``tests/golden/<partner>/<name>.expected.json`` out (events, dead letters without raw bytes, gaps).

Expected files are written by hand-checked runs: set ``CARRIERWATCH_UPDATE_GOLDEN=1`` to rewrite
them, then read the diff before committing it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from carrierwatch.transformers.registry import load_registry

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
RECEIVED = 1_772_712_000_000  # 2026-03-05T12:00:00Z, fixed so golden files are stable

REGISTRY = load_registry(ROOT)
CASES = sorted(
    (partner.id, sample)
    for partner in REGISTRY
    for sample in sorted((ROOT / "samples" / partner.id).glob("*"))
    if sample.is_file()
)


def normalize_for_golden(partner_id: str, sample: Path) -> dict[str, object]:
    result = REGISTRY.get(partner_id).transform(sample.read_bytes(), RECEIVED)
    return {
        "events": [e.to_json_dict() for e in result.events],
        "dead_letters": [
            {k: v for k, v in d.to_json_dict().items() if k != "raw_base64"}
            for d in result.dead_letters
        ],
        "gaps": result.gaps,
    }


def test_every_partner_has_samples() -> None:
    assert not REGISTRY.failures, REGISTRY.failures
    for partner in REGISTRY:
        samples = list((ROOT / "samples" / partner.id).glob("*"))
        assert len(samples) >= 4, f"{partner.id} needs golden samples"


@pytest.mark.parametrize(("partner_id", "sample"), CASES, ids=[f"{p}/{s.name}" for p, s in CASES])
def test_golden(partner_id: str, sample: Path) -> None:
    expected_path = GOLDEN / partner_id / f"{sample.stem}.expected.json"
    actual = normalize_for_golden(partner_id, sample)
    if os.environ.get("CARRIERWATCH_UPDATE_GOLDEN") == "1":
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(json.dumps(actual, indent=1, sort_keys=True) + "\n")
    assert expected_path.exists(), f"missing golden file {expected_path}"
    expected = json.loads(expected_path.read_text())
    assert actual == expected
