"""Decision tables over the pipeline's output: escalations, once per package and rule (pure).

:class:`Escalator` is called after every :meth:`Pipeline.process` / ``flush`` call by both drivers
(replay and the stream's track stage). For every newly accepted, non-synthetic event it reads the
package's state *after that call* and evaluates every table; it also sweeps the packages with an
open exception as event time moves on (the newest event time it has seen is "now"), so an
exception that stays open with no further events still reaches its rule.

An escalation's id is a hash of partner, package, table and rule: the same package and rule
always give the same id, so a re-run (a replay, a restart that re-reads its input) produces the
same escalation again and the ledger (:mod:`carrierwatch.decisions.dispatch`) and the
``escalations`` table (ReplacingMergeTree by id) keep it once.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from carrierwatch.core.model import CanonicalEvent
from carrierwatch.core.partner import SlaContract
from carrierwatch.decisions.facts import PackageAttributes, event_facts, package_facts
from carrierwatch.decisions.table import COLUMNS, DecisionTable

if TYPE_CHECKING:
    from carrierwatch.core.pipeline import Pipeline, PipelineOutput

__all__ = ["Escalation", "Escalator", "escalation_id"]

_SWEEP_COLUMNS = frozenset({"exception_age_minutes", "exception_over_target_minutes"})
#: facts an event gives without reading the package state (the gate of :class:`Escalator`)
_CHEAP_COLUMNS = ("status", "reason", "partner", "value_band", "customer_priority")


def escalation_id(partner_id: str, package_id: str, table: str, rule: str) -> str:
    """Deterministic id of the escalation of ``rule`` for a package.

    >>> escalation_id("ups", "ups:1Z", "failed_attempts", "address_problem")
    'esc_c9e4c34be54d58854c829aa11386909a'
    """
    key = f"{partner_id}\x1f{package_id}\x1f{table}\x1f{rule}".encode()
    return "esc_" + hashlib.blake2b(key, digest_size=16).hexdigest()


@dataclass(frozen=True)
class Escalation:
    """One rule that fired for one package: what to do, how urgently, on which facts."""

    escalation_id: str
    partner_id: str
    package_id: str
    table: str
    rule: str
    actions: tuple[str, ...]
    priority: str
    decided_at: int  # event time (ms) of the trigger
    trigger: str  # "event" or "sweep"
    facts: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_json_dict(self) -> dict[str, Any]:
        return {"type": "escalation", "escalation_id": self.escalation_id,
                "partner_id": self.partner_id, "package_id": self.package_id,
                "table": self.table, "rule": self.rule, "actions": list(self.actions),
                "priority": self.priority, "decided_at": self.decided_at,
                "trigger": self.trigger, "facts": self.facts, "note": self.note}

    @classmethod
    def from_json_dict(cls, doc: Mapping[str, Any]) -> Escalation:
        return cls(escalation_id=str(doc["escalation_id"]), partner_id=str(doc["partner_id"]),
                   package_id=str(doc["package_id"]), table=str(doc["table"]),
                   rule=str(doc["rule"]), actions=tuple(doc["actions"]),
                   priority=str(doc["priority"]), decided_at=int(doc["decided_at"]),
                   trigger=str(doc["trigger"]), facts=dict(doc.get("facts") or {}),
                   note=str(doc.get("note") or ""))

    def to_row(self) -> dict[str, Any]:
        """The ``escalations`` table row (migration 0004)."""
        return {"escalation_id": self.escalation_id, "partner_id": self.partner_id,
                "package_id": self.package_id, "decision_table": self.table,
                "rule": self.rule, "actions": list(self.actions), "priority": self.priority,
                "trigger": self.trigger,
                "decided_at": datetime.fromtimestamp(self.decided_at / 1000, UTC),
                "facts": {k: ("" if v is None else str(v)) for k, v in self.facts.items()}}


class Escalator:
    """Evaluates the tables over pipeline output (see the module docstring)."""

    def __init__(self, tables: Sequence[DecisionTable], contracts: Mapping[str, SlaContract], *,
                 attributes: PackageAttributes | None = None,
                 default_contract: SlaContract | None = None) -> None:
        self.tables = tuple(tables)
        self.sweep_tables = tuple(t for t in self.tables if _SWEEP_COLUMNS & set(t.inputs))
        self.contracts = dict(contracts)
        self.default_contract = default_contract or SlaContract()
        self.attributes = attributes or PackageAttributes()
        self.now = 0
        self._fired: set[str] = set()
        #: package id -> reason of the event that opened its exception (None: not seen)
        self._open: dict[str, str | None] = {}
        self._seen: set[int] = set()
        # the gate: per table, its rules with actions and their tests on the cheap columns;
        # an event that passes no gate cannot fire anything, and its facts are not built
        self._gates = tuple(
            tuple(tuple((column, rule.tests[i]) for i, column in enumerate(table.inputs)
                        if column in _CHEAP_COLUMNS and not rule.tests[i].any)
                  for rule in table.rules if rule.actions)
            for table in self.tables)
        # ... and its first stage: the (status, value band, customer priority) combinations
        # that pass some gate on those three columns (one set lookup per event)
        three = ("status", "value_band", "customer_priority")
        domains = [(*(COLUMNS[c].domain or ()), None) for c in three]
        self._combos = frozenset(
            combo for combo in itertools.product(*domains)
            if any(all(test.matches(combo[three.index(column)]) for column, test in rule
                       if column in three)
                   for rules in self._gates for rule in rules))

    def _may_fire(self, event: CanonicalEvent) -> bool:
        band, priority = self.attributes.lookup(event.partner_id, event.tracking_number)
        if (event.status, band, priority) not in self._combos:
            return False
        cheap = {"status": event.status, "reason": event.reason, "partner": event.partner_id,
                 "value_band": band, "customer_priority": priority}
        return any(all(test.matches(cheap[column]) for column, test in rule)
                   for rules in self._gates for rule in rules)

    def _contract(self, partner_id: str) -> SlaContract:
        return self.contracts.get(partner_id, self.default_contract)

    def observe(self, pipeline: Pipeline, output: PipelineOutput) -> list[Escalation]:
        """The escalations ``output`` (of one call of ``pipeline``) causes, each new id once."""
        return self.observe_events(pipeline, output.events)

    def observe_events(self, pipeline: Pipeline, events: Sequence[CanonicalEvent]
                       ) -> list[Escalation]:
        """The escalations of ``events``, newly applied to ``pipeline``, and of the sweep."""
        packages = pipeline.packages
        if id(pipeline) not in self._seen:  # first call (also after a restart): open exceptions
            self._seen.add(id(pipeline))
            for package_id, state in packages.items():
                if state.open_exception_since is not None and not state.synthetic:
                    self._open.setdefault(package_id, None)
                last = state.last_event_time
                if last is not None and last > self.now:
                    self.now = last
        found: list[Escalation] = []
        for event in events:
            if event.event_time > self.now:
                self.now = event.event_time
        for event in events:
            if event.synthetic:
                continue
            if event.status == "exception":  # the sweep drops it once it is resolved
                self._open.setdefault(event.package_id, event.reason)
            if not self._may_fire(event):
                continue
            held = packages.get(event.package_id)
            if held is None:
                continue
            state = held
            contract = self._contract(event.partner_id)
            facts = event_facts(event, state, contract, self.attributes, self.now)
            found.extend(self._evaluate(self.tables, state.partner_id, state.package_id, facts,
                                        event.event_time, "event"))
        for package_id, reason in list(self._open.items()):
            open_state = packages.get(package_id)
            if open_state is None or open_state.open_exception_since is None:
                del self._open[package_id]
                continue
            state = open_state
            contract = self._contract(state.partner_id)
            facts = package_facts(state, contract, self.attributes, self.now, reason=reason)
            found.extend(self._evaluate(self.sweep_tables, state.partner_id, package_id, facts,
                                        self.now, "sweep"))
        if len(self._fired) > 4 * len(packages) + 100_000:
            self._fired.clear()  # bounded memory; the ledger and the table dedupe the rest
        return found

    def _evaluate(self, tables: Sequence[DecisionTable], partner_id: str, package_id: str,
                  facts: dict[str, object], at: int, trigger: str) -> list[Escalation]:
        found: list[Escalation] = []
        for table in tables:
            for rule in table.evaluate(facts):
                if not rule.actions:
                    continue
                eid = escalation_id(partner_id, package_id, table.name, rule.id)
                if eid in self._fired:
                    continue
                self._fired.add(eid)
                found.append(Escalation(eid, partner_id, package_id, table.name, rule.id,
                                        rule.actions, rule.priority, at, trigger,
                                        {k: facts.get(k) for k in table.inputs}, rule.note))
        return found
