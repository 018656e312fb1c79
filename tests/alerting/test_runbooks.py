"""runbooks/: one per alert, the same sections in each, and every ``carrierwatch query`` in
them runs on a real (empty, migrated) store, so no runbook sends on-call to a column that does
not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from carrierwatch.alerting.rules import ALERT_NAMES
from carrierwatch.settings import Settings
from carrierwatch.storage import open_store

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "runbooks"
SECTIONS = ["## What it means", "## Check first", "## What to do",
            "## When to escalate to the partner"]
QUERY = re.compile(r'carrierwatch query "([^"]+)"')


def test_one_runbook_per_alert_with_every_section() -> None:
    assert sorted(p.stem for p in RUNBOOKS.glob("*.md") if p.stem != "README") == sorted(
        ALERT_NAMES)
    index = (RUNBOOKS / "README.md").read_text()
    for name in ALERT_NAMES:
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name} ("), name
        positions = [text.find(section) for section in SECTIONS]
        assert -1 not in positions and positions == sorted(positions), name
        assert f"[{name}]({name}.md)" in index


def queries() -> list[tuple[str, str]]:
    return [(path.stem, sql) for path in sorted(RUNBOOKS.glob("*.md"))
            for sql in QUERY.findall(path.read_text())]


def test_every_check_first_section_has_a_query_or_command() -> None:
    for name in ALERT_NAMES:
        text = (RUNBOOKS / f"{name}.md").read_text()
        check = text.split("## Check first")[1].split("## What to do")[0]
        assert "carrierwatch " in check, name


def test_every_runbook_query_runs_on_the_store(tmp_path: Path) -> None:
    found = queries()
    assert len(found) >= 15
    with open_store(Settings(data_dir=tmp_path), migrate=True) as store:
        for name, sql in found:
            assert "PARTNER" in sql or "partner_id =" not in sql, (name, sql)
            try:
                store.query_readonly(sql.replace("PARTNER", "ups"))
            except Exception as exc:  # the test names the runbook and the statement
                pytest.fail(f"runbooks/{name}.md: {sql}\n{exc}")
