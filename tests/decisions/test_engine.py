"""The escalator over a real core pipeline: the open-exception sweep with no further events,
the ETA-slip example, synthetic packages, and a restart from the pipeline's checkpoint."""

from __future__ import annotations

from pathlib import Path

from carrierwatch.core.model import CanonicalEvent, event_id
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.pipeline import Pipeline
from carrierwatch.decisions.engine import Escalator, escalation_id
from carrierwatch.decisions.facts import PackageAttributes
from carrierwatch.decisions.table import load_tables

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_772_467_200_000  # 2026-03-02T16:00Z
MIN = 60_000
CONTRACT = SlaContract(exception_resolution_minutes=240)
ATTRIBUTES = PackageAttributes({("demo", "P1"): ("low", "priority"),
                                ("demo", "P2"): (None, None)})


def ev(package: str, status: str, t: int, **kw: object) -> CanonicalEvent:
    pid = f"demo:{package}"
    return CanonicalEvent(event_id=event_id("demo", pid, status, t), partner_id="demo",
                          package_id=pid, tracking_number=package, status=status,
                          confidence=1.0, raw_code="x", event_time=t, received_time=t + MIN,
                          **kw)  # type: ignore[arg-type]


def setup() -> tuple[Pipeline, Escalator]:
    pipeline = Pipeline({"demo": CONTRACT}, lateness_scope="package")
    escalator = Escalator(load_tables(ROOT / "decisions"), {"demo": CONTRACT},
                          attributes=ATTRIBUTES)
    return pipeline, escalator


def test_an_exception_past_the_contract_target_escalates_to_the_partner_without_new_events(
        ) -> None:
    pipeline, escalator = setup()
    first = pipeline.process([ev("P2", "picked_up", T0), ev("P2", "exception", T0 + MIN,
                                                            reason="weather")])
    assert escalator.observe(pipeline, first) == []
    # other packages' events move event time on: 239 minutes after the exception opened ...
    early = pipeline.process([ev("P9", "picked_up", T0 + 240 * MIN)])
    assert escalator.observe(pipeline, early) == []
    # ... 241: past the 240-minute target, with no event of P2 itself
    late = pipeline.process([ev("P9", "in_transit", T0 + 242 * MIN)])
    [esc] = escalator.observe(pipeline, late)
    assert (esc.package_id, esc.table, esc.rule, esc.actions, esc.trigger) == (
        "demo:P2", "open_exceptions", "past_resolution_target", ("escalate_partner",), "sweep")
    assert esc.facts["exception_over_target_minutes"] == 1.0
    assert esc.escalation_id == escalation_id("demo", "demo:P2", "open_exceptions",
                                              "past_resolution_target")
    # once per package and rule
    again = pipeline.process([ev("P9", "out_for_delivery", T0 + 300 * MIN)])
    assert escalator.observe(pipeline, again) == []
    # a restart: the pipeline from its checkpoint, a fresh escalator; the same id again (the
    # ledger and the table keep it once), reason unknown after the restart
    restored = Pipeline.from_bytes(pipeline.to_bytes())
    _, fresh = setup()
    more = restored.process([ev("P9", "delivered", T0 + 301 * MIN)])
    [repeat] = fresh.observe(restored, more)
    assert repeat.escalation_id == esc.escalation_id and repeat.facts["reason"] is None


def test_an_eta_slip_for_a_priority_customer_notifies_and_opens_a_ticket() -> None:
    pipeline, escalator = setup()
    promised = T0 + 24 * 60 * MIN
    out = pipeline.process([ev("P1", "picked_up", T0, promised_by=promised),
                            ev("P1", "in_transit", T0 + 60 * MIN, eta_start=promised,
                               eta_end=promised + 90 * MIN)])
    [small] = escalator.observe(pipeline, out)
    assert (small.rule, small.actions, small.facts["eta_slip_minutes"]) == (
        "priority_customer_small_slip", ("notify",), 90.0)
    out = pipeline.process([ev("P1", "out_for_delivery", T0 + 120 * MIN,
                                eta_end=promised + 150 * MIN)])
    [big] = escalator.observe(pipeline, out)
    assert (big.rule, big.actions, big.priority) == ("priority_customer_slip",
                                                     ("notify", "open_ticket"), "high")
    # a customer of no declared priority: nothing
    out = pipeline.process([ev("P2", "in_transit", T0, promised_by=promised,
                                eta_end=promised + 500 * MIN)])
    assert escalator.observe(pipeline, out) == []


def test_synthetic_packages_never_escalate() -> None:
    pipeline, escalator = setup()
    out = pipeline.process([ev("P2", "exception", T0, synthetic=True),
                            ev("P9", "picked_up", T0 + 10_000 * MIN)])
    assert escalator.observe(pipeline, out) == []


def test_the_gate_never_hides_a_rule_that_would_fire() -> None:
    """The escalator skips the facts of events that pass no gate: exhaustively, every
    combination of the cheap columns for which some table fires a rule with actions (for some
    value of its numeric inputs) passes the gate."""
    import itertools

    from carrierwatch.decisions.table import COLUMNS

    _, escalator = setup()
    numbers = [None, -1e6, -1.0, 0.0, 1.0, 2.0, 3.0, 100.0, 120.0, 121.0, 1440.0, 2000.0, 1e6]
    bands = [None, "low", "medium", "high"]
    priorities = [None, "standard", "priority"]
    tracking = {(b, p): f"T-{b}-{p}" for b in bands for p in priorities}
    escalator.attributes = PackageAttributes({("demo", number): key for key, number in
                                              tracking.items()})
    passed = fired = 0
    for status, reason, band, priority in itertools.product(
            COLUMNS["status"].domain or (), (*(COLUMNS["reason"].domain or ()), None), bands,
            priorities):
        event = ev(tracking[(band, priority)], status, T0, reason=reason)
        gate = escalator._may_fire(event)
        passed += gate
        for table in escalator.tables:
            numeric = [c for c in table.inputs if COLUMNS[c].kind == "number"]
            for values in itertools.product(numbers, repeat=len(numeric)):
                facts = {"status": status, "reason": reason, "partner": "demo",
                         "value_band": band, "customer_priority": priority,
                         **dict(zip(numeric, values, strict=True))}
                if any(rule.actions for rule in table.evaluate(facts)):
                    fired += 1
                    assert gate, (status, reason, band, priority, table.name, values)
    assert fired > 0 and passed < 12 * 15 * 4 * 3 / 2  # it does skip most combinations
