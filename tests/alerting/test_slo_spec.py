"""SLO specifications from partner contracts: defaults, overrides, and file:line errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrierwatch.alerting.spec import (
    SLO_NAMES,
    SloSpecError,
    load_partner_slos,
    load_slos,
)

ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_partner_derives_five_slos_from_its_contract() -> None:
    specs, problems = load_slos(ROOT)
    assert problems == []
    assert len(specs) == len(list((ROOT / "partners").glob("*.yaml")))
    ups = next(s for s in specs if s.partner == "ups")
    assert ups.window_days == 28
    assert {o.slo: o.target for o in ups.objectives} == {
        "on_time": 0.96, "first_attempt": 0.92, "pickup_compliance": 0.97,
        "tracking_compliance": 0.98, "event_latency": 0.95}
    assert ups.max_silence_minutes == 300  # 2 x the 150-minute latency limit
    assert {o.min_events for o in ups.objectives} == {20}
    valley = next(s for s in specs if s.partner == "valley_express")
    assert valley.delivery == "batch" and valley.max_silence_minutes == 25 * 60


def test_the_slos_section_overrides_the_contract() -> None:
    metro = load_partner_slos(ROOT / "partners" / "metro_courier.yaml")
    assert metro.max_silence_minutes == 720
    by_slo = {o.slo: o for o in metro.objectives}
    assert by_slo["first_attempt"].min_events == 40
    assert by_slo["on_time"].min_events == 20


def write(tmp_path: Path, extra: str, name: str = "ups") -> Path:
    text = (ROOT / "partners" / "ups.yaml").read_text() + extra
    path = tmp_path / "partners" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def problems(path: Path) -> list[str]:
    with pytest.raises(SloSpecError) as info:
        load_partner_slos(path)
    return [str(p) for p in info.value.problems]


def test_a_target_override_and_a_disabled_objective(tmp_path: Path) -> None:
    path = write(tmp_path, "slos:\n  objectives:\n    on_time: {target: 0.9}\n"
                           "    event_latency: {enabled: false}\n")
    spec = load_partner_slos(path)
    assert [o.slo for o in spec.objectives] == [s for s in SLO_NAMES if s != "event_latency"]
    on_time = spec.objectives[0]
    assert (on_time.target, on_time.source) == (0.9, "slos.objectives.on_time.target")


@pytest.mark.parametrize(("extra", "needle", "message"), [
    ("slos:\n  objectives:\n    on_time:\n      target: 1.5\n", "target: 1.5",
     "slos.objectives.on_time.target: Input should be less than 1"),
    ("slos:\n  objectives:\n    ontime: {target: 0.9}\n", "ontime:",
     "slos.objectives.ontime.[key]: Input should be 'on_time', "),
    ("slos:\n  min_events: 0\n", "min_events: 0",
     "slos.min_events: Input should be greater than or equal to 1"),
    ("slos:\n  max_silence: 10\n", "max_silence: 10",
     "slos.max_silence: Extra inputs are not permitted"),
])
def test_errors_in_the_slos_section_name_file_and_line(tmp_path: Path, extra: str, needle: str,
                                                      message: str) -> None:
    path = write(tmp_path, extra)
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(path, needle)}: {message}")


def test_a_contract_without_error_budget_names_the_contract_line(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.write_text(path.read_text().replace("on_time_target: 0.96", "on_time_target: 1.0"))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(path, 'on_time_target')}: "
                              "contract.on_time_target: a target of 1 leaves no error budget")


def test_a_short_slo_window_and_bad_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    path.write_text(path.read_text().replace("slo_window_days: 28", "slo_window_days: 2"))
    [problem] = problems(path)
    assert problem.startswith(f"{path}:{line_of(path, 'slo_window_days')}: "
                              "contract.slo_window_days: must be longer than")
    path.write_text(path.read_text() + "slos: [\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:") and "invalid YAML" in problem


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRIERWATCH_")}
    env.update({"PYTHONPATH": str(ROOT / "src"), "CARRIERWATCH_HOME": str(home),
                "CARRIERWATCH_DATA_DIR": str(home / "data")})
    return subprocess.run([sys.executable, "-m", "carrierwatch", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_validate_and_generate_on_a_broken_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(ROOT / "partners", home / "partners")
    n = len(list((home / "partners").glob("*.yaml")))
    done = cli(home, "alerts", "validate")
    assert (done.returncode, done.stdout) == (0, f"{n} partners checked, {5 * n} SLOs, "
                                              "0 problems\n")
    path = home / "partners" / "fedex.yaml"
    path.write_text(path.read_text() + "slos:\n  min_events: -1\n")
    done = cli(home, "alerts", "validate")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (f"{path}:{line_of(path, 'min_events: -1')}: slos.min_events: "
                           "Input should be greater than or equal to 1\n")
    assert done.stdout == f"{n} partners checked, {5 * (n - 1)} SLOs, 1 problems\n"
    done = cli(home, "alerts", "generate", "--out", str(tmp_path / "rules"))
    assert done.returncode == 1 and not (tmp_path / "rules").exists()
    assert done.stderr.splitlines()[-1] == ("carrierwatch: error: 1 problems in the SLO "
                                            "specifications; no rules written")


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6),
                     st.floats(allow_nan=False, allow_infinity=False),
                     st.text(max_size=8))
_KEYS = st.sampled_from(["min_events", "max_silence_minutes", "objectives", "target",
                         "enabled", *SLO_NAMES, "other"])
_SECTIONS = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(section=_SECTIONS)
def test_any_slos_section_loads_or_names_a_line_of_the_file(tmp_path: Path,
                                                            section: object) -> None:
    path = write(tmp_path, yaml.safe_dump({"slos": section}, sort_keys=False))
    lines = len(path.read_text().splitlines())
    try:
        spec = load_partner_slos(path)
    except SloSpecError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.source == str(path) and 1 <= problem.line <= lines, problem
            # the problem is in the slos section (appended at the end of the file)
            assert problem.line >= line_of(path, "slos:"), problem
    else:
        assert all(0 < o.target < 1 and o.min_events >= 1 for o in spec.objectives)
        assert spec.max_silence_minutes > 0
