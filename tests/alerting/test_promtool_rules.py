"""``promtool test rules`` on the hand-written unit tests in alerts/tests/ (every alert fires at
its expected time with its labels and annotations, and stays quiet in a near-miss case)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from carrierwatch.alerting.rules import ALERT_NAMES
from carrierwatch.testing import missing_component

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "alerts" / "tests"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        missing_component("promtool", "install Debian's prometheus package")
    return found


def cases() -> list[dict[str, object]]:
    found = []
    for path in sorted(TESTS.glob("*.test.yml")):
        for group in yaml.safe_load(path.read_text())["tests"]:
            found.extend(group.get("alert_rule_test", []))
    return found


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing = {c["alertname"] for c in cases() if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases() if not c.get("exp_alerts")}
    assert sorted(set(ALERT_NAMES) - firing) == []
    assert sorted(set(ALERT_NAMES) - quiet) == []
    for case in cases():
        for alert in case.get("exp_alerts") or []:  # type: ignore[attr-defined]
            assert {"severity", "partner"} <= set(alert["exp_labels"])
            assert alert["exp_annotations"]["runbook_url"] == f"runbooks/{case['alertname']}.md"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(p.name for p in TESTS.glob("*.test.yml")))
def test_promtool_unit_tests_pass(name: str) -> None:
    done = subprocess.run([promtool(), "test", "rules", name], cwd=TESTS, capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_reports_a_wrong_expectation(tmp_path: Path) -> None:
    # the oracle can fail: the platform tests with KafkaDown expected one minute early
    text = (TESTS / "platform.test.yml").read_text()
    broken = text.replace("      - eval_time: 11m\n        alertname: KafkaDown\n        "
                          "exp_alerts: []\n", "")
    broken = broken.replace("      - eval_time: 12m\n        alertname: KafkaDown",
                            "      - eval_time: 11m\n        alertname: KafkaDown")
    assert broken != text
    (tmp_path / "t.test.yml").write_text(
        broken.replace("../rules/", str(ROOT / "alerts" / "rules") + "/"))
    done = subprocess.run([promtool(), "test", "rules", "t.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert "alertname: KafkaDown, time: 11m" in done.stdout + done.stderr
