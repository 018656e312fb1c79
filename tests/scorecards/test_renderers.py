"""The XLSX opened with openpyxl, and the HTML rendered in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from week_fixture import WEEK, WeekStore

from carrierwatch.scorecards.build import build_scorecards
from carrierwatch.scorecards.cli import partner_infos, write_card
from carrierwatch.scorecards.document import Scorecard
from carrierwatch.scorecards.html import fmt
from carrierwatch.scorecards.tables import TABLES
from carrierwatch.settings import get_settings
from carrierwatch.testing import missing_component
from carrierwatch.transformers.registry import load_registry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fedex(week_store: WeekStore) -> Scorecard:
    infos = partner_infos(load_registry(get_settings().home))
    with week_store.open() as store:
        (card,) = build_scorecards(store, WEEK, [i for i in infos if i.partner_id == "fedex"],
                                   infos)
    return card


def test_xlsx_has_a_sheet_per_table_real_formats_frozen_headers_and_charts(
        fedex: Scorecard, tmp_path: Path) -> None:
    import openpyxl

    (path,) = write_card(fedex, tmp_path, ("xlsx",))
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == [*TABLES, "charts"]
    kpis = book["kpis"]
    assert kpis.freeze_panes == "A2"
    header = [c.value for c in kpis[1]]
    on_time = next(r for r in kpis.iter_rows(min_row=2) if r[0].value == "on_time")
    value = on_time[header.index("value")]
    assert value.value == pytest.approx(fedex.kpi("on_time").value)
    assert value.number_format == "0.0%"
    assert on_time[header.index("passed")].value is fedex.kpi("on_time").passed
    latency = next(r for r in kpis.iter_rows(min_row=2) if r[0].value == "event_latency_p95")
    assert latency[header.index("value")].number_format == "#,##0.00"
    # pass/fail conditional formatting on the 'passed' column
    column = "ABCDEFGHIJKLMN"[header.index("passed")]
    ranges = [str(rng.sqref) for rng in kpis.conditional_formatting]
    assert f"{column}2:{column}11" in ranges
    packages = book["packages"]
    assert packages.freeze_panes == "A2"
    names = [c.value for c in packages[1]]
    rows = list(packages.iter_rows(min_row=2))
    assert len(rows) == len(fedex.packages)
    promised = rows[0][names.index("promised_by")]
    assert isinstance(promised.value, datetime) and promised.number_format == "yyyy-mm-dd hh:mm"
    assert promised.value == datetime.fromisoformat(
        fedex.packages[0].promised_by or "").replace(tzinfo=None)
    cost = book["cost"]
    cost_names = [c.value for c in cost[1]]
    assert fedex.cost is not None
    assert cost.cell(2, cost_names.index("charges") + 1).value == pytest.approx(
        fedex.cost.charges)
    with zipfile.ZipFile(path) as archive:
        charts = [n for n in archive.namelist() if n.startswith("xl/charts/chart")]
    assert len(charts) == 10  # one native line chart per KPI trend


def test_html_renders_in_chromium_with_the_key_figures(fedex: Scorecard,
                                                         tmp_path: Path) -> None:
    from PIL import Image, ImageStat

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        missing_component("chromium", "Debian's chromium is not installed")
    (page,) = write_card(fedex, tmp_path, ("html",))
    text = page.read_text(encoding="utf-8")
    import re

    # nothing to fetch: no external src/href/url(), no script
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//""", text)
    assert "<script" not in text  # self-contained: inline CSS and SVG only
    shot = tmp_path / "scorecard.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2000",
                    page.as_uri()], check=True, timeout=120, capture_output=True)
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2000)
    stat = ImageStat.Stat(image)
    assert stat.stddev[0] > 20  # not a blank page
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], check=True,
                         timeout=120, capture_output=True, text=True).stdout
    assert "FedEx" in dom and WEEK in dom
    for kpi in fedex.kpis:
        assert kpi.label in dom
        assert fmt(kpi.value, kpi.unit) in dom, kpi.key
    assert fedex.credits is not None and fedex.credits.amount > 0
    assert f"{fedex.credits.amount:,.2f} USD" in dom
    assert dom.count("<svg") >= 4  # trend, heatmap, failures, hubs
