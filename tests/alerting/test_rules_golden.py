"""Generated rules: spec in, rules out, compared with the committed files; checked by promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from carrierwatch.alerting.rules import ALERT_NAMES, PLATFORM_PARTNER, generate, render
from carrierwatch.alerting.spec import load_slos
from carrierwatch.testing import missing_component

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "rules"


def test_committed_rules_are_what_the_partner_files_generate() -> None:
    specs, problems = load_slos(ROOT)
    assert problems == []
    files = generate(specs)
    assert sorted(f.name for f in files) == sorted(p.name for p in RULES.glob("*.rules.yml"))
    for rule_file in files:
        assert (RULES / rule_file.name).read_text() == render(rule_file), (
            f"alerts/rules/{rule_file.name} is stale: run `carrierwatch alerts generate`")


def all_alerts() -> list[dict[str, object]]:
    out = []
    for path in sorted(RULES.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(rule for rule in group["rules"] if "alert" in rule)
    return out


def test_every_alert_has_severity_partner_value_and_a_runbook() -> None:
    alerts = all_alerts()
    assert {a["alert"] for a in alerts} == set(ALERT_NAMES)
    for alert in alerts:
        labels, notes = alert["labels"], alert["annotations"]
        assert isinstance(labels, dict) and isinstance(notes, dict)
        assert labels["severity"] in {"page", "ticket"}, alert
        # a fixed partner label, or one the expression keeps ("by (partner" ...)
        assert "partner" in labels or "by (partner" in str(alert["expr"]), alert
        assert "{{ $value" in notes["summary"] + notes["description"], alert
        assert notes["runbook_url"] == f"runbooks/{alert['alert']}.md"
        assert (ROOT / str(notes["runbook_url"])).is_file(), notes["runbook_url"]
    platform = {a["alert"] for a in alerts
                if isinstance(a["labels"], dict) and a["labels"].get("partner") == PLATFORM_PARTNER}
    assert platform == {"ConsumerLagGrowing", "SinkBacklogGrowing", "GatewaySpoolNotDraining",
                        "KafkaDown"}


def test_ups_page_thresholds_come_from_the_28_day_burn_rates() -> None:
    text = (RULES / "ups.rules.yml").read_text()
    # on_time 96 %: 13.44 x 4 % and 5.6 x 4 %; first_attempt 92 %: 13.44 x 8 % > 1, clamped
    assert 'rate1h{partner="ups",slo="on_time"} > 0.5376' in text
    assert 'rate6h{partner="ups",slo="on_time"} > 0.224' in text
    assert 'rate1h{partner="ups",slo="first_attempt"} >= 1' in text
    assert 'rate3d{partner="ups",slo="on_time"} > 0.0373333' in text


def test_generate_check_finds_a_stale_file(tmp_path: Path) -> None:
    from carrierwatch.cli import run

    out = tmp_path / "rules"
    shutil.copytree(RULES, out)
    assert run(["alerts", "generate", "--check", "--out", str(out)]) == 0
    path = out / "ups.rules.yml"
    path.write_text(path.read_text().replace("0.5376", "0.6"))
    assert run(["alerts", "generate", "--check", "--out", str(out)]) == 1
    assert run(["alerts", "generate", "--out", str(out)]) == 0
    assert path.read_text() == (RULES / "ups.rules.yml").read_text()


def test_promtool_check_rules_accepts_every_generated_file() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_component("promtool", "install Debian's prometheus package")
    files = sorted(str(p) for p in RULES.glob("*.rules.yml"))
    done = subprocess.run([promtool, "check", "rules", *files], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files)
