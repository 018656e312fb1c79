"""Escalation decision tables: YAML that operations edit, validated with file:line errors.

A table (``decisions/<name>.yaml``) declares its input columns, a DMN hit policy and its rules::

    version: 1
    table: failed_attempts
    hit_policy: first          # first | unique | collect (DMN's F, U, C)
    inputs: [status, reason, value_band, attempts]
    rules:
      - id: high_value_recipient_absent          # stable: part of the escalation's identity
        when: {status: delivery_attempted, reason: recipient_not_available, value_band: high}
        actions: [escalate_manual_contact]
        priority: high
      - id: otherwise
        when: {}                                 # every input '-'
        actions: []

``when`` maps input columns to unary tests (:mod:`carrierwatch.decisions.unary`); an omitted
input is ``-``. Hit policies: ``first`` returns the first rule that matches (in file order);
``unique`` requires that no two rules can match the same facts (checked on load: a table with
overlapping rules does not load); ``collect`` returns every rule that matches.

:func:`analyse` reports overlapping rules and the input combinations no rule covers (a gap
analysis over each column's domain cut into the elementary pieces the table's tests draw).

Examples
--------
>>> t = DecisionTable.from_yaml('''
... version: 1
... table: demo
... hit_policy: first
... inputs: [status, attempts]
... rules:
...   - {id: many, when: {status: delivery_attempted, attempts: ">= 3"}, actions: [notify],
...      priority: high}
...   - {id: rest, when: {}, actions: []}
... ''', source="demo.yaml")
>>> [r.id for r in t.evaluate({"status": "delivery_attempted", "attempts": 3})]
['many']
>>> [r.id for r in t.evaluate({"status": "delivered", "attempts": 1})]
['rest']
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor

from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.model import CanonicalReason, CanonicalStatus
from carrierwatch.decisions.unary import INF, Interval, Test, UnaryTestError, parse_test

__all__ = [
    "ACTIONS",
    "COLUMNS",
    "HIT_POLICIES",
    "PRIORITIES",
    "Analysis",
    "Column",
    "DecisionProblem",
    "DecisionTable",
    "DecisionTableError",
    "Rule",
    "analyse",
    "check_tables",
    "load_table",
    "load_tables",
]

HIT_POLICIES = ("first", "unique", "collect")
ACTIONS = ("notify", "open_ticket", "escalate_manual_contact", "escalate_partner",
           "reroute_suggestion")
"""What a rule can ask for. ``escalate_manual_contact``: a person contacts the recipient or
shipper; ``escalate_partner``: the partner's escalation contact is asked to act;
``reroute_suggestion``: propose another partner or a pickup point for the package."""
PRIORITIES = ("critical", "high", "normal", "low")
VALUE_BANDS = ("low", "medium", "high")
CUSTOMER_PRIORITIES = ("standard", "priority")
MAX_GAP_CELLS = 200_000


@dataclass(frozen=True, slots=True)
class Column:
    """An input column: its kind and, for enumerated columns, its domain (missing = ``null``)."""

    name: str
    kind: str  # "text" or "number"
    domain: tuple[str, ...] | None = None  # None: open text or a number
    doc: str = ""


COLUMNS: dict[str, Column] = {c.name: c for c in (
    Column("status", "text", tuple(s.value for s in CanonicalStatus),
           "canonical status of the event (of the package, for the open-exception sweep)"),
    Column("reason", "text", tuple(r.value for r in CanonicalReason),
           "canonical reason of the event; null when it has none"),
    Column("partner", "text", None, "partner id"),
    Column("service_level", "text", None, "the package's service level (the contract's "
                                          "default when the feed sends none)"),
    Column("value_band", "text", VALUE_BANDS, "shipper-declared package value band; null: "
                                              "not declared"),
    Column("customer_priority", "text", CUSTOMER_PRIORITIES,
           "shipper-declared customer priority; null: not declared"),
    Column("eta_slip_minutes", "number", None,
           "latest ETA end minus the promised-by time, minutes (null: no ETA or no promise)"),
    Column("attempts", "number", None, "failed delivery attempts so far (plus the delivery)"),
    Column("exception_age_minutes", "number", None,
           "age of the open exception, minutes (null: none open)"),
    Column("exception_over_target_minutes", "number", None,
           "open exception age minus the contract's exception_resolution_minutes "
           "(> 0: past the target; null: none open)"),
)}


class DecisionTableError(ConfigurationError):
    """A decision table failed validation; ``problems`` locate every error by file and line."""

    what = "decision table"

    def __init__(self, source: str, problems: Sequence[DecisionProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems) or "  (no detail)"
        super().__init__(f"invalid {self.what} {source}:\n{lines}")


@dataclass(frozen=True, slots=True)
class DecisionProblem:
    """One problem, located in its file."""

    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row: its tests by input column, actions and priority."""

    id: str
    tests: tuple[Test, ...]
    actions: tuple[str, ...]
    priority: str
    line: int
    note: str = ""

    def matches(self, values: Sequence[object]) -> bool:
        return all(test.matches(value) for test, value in zip(self.tests, values, strict=True))


@dataclass(frozen=True)
class DecisionTable:
    """A validated, immutable decision table."""

    name: str
    version: int
    hit_policy: str
    inputs: tuple[str, ...]
    rules: tuple[Rule, ...]
    source: str = "<memory>"
    description: str = ""

    def values(self, facts: Mapping[str, object]) -> tuple[object, ...]:
        return tuple(facts.get(name) for name in self.inputs)

    def evaluate(self, facts: Mapping[str, object]) -> list[Rule]:
        """The rules that fire for ``facts`` under the table's hit policy."""
        values = self.values(facts)
        if self.hit_policy == "first":
            for rule in self.rules:
                if rule.matches(values):
                    return [rule]
            return []
        hits = [rule for rule in self.rules if rule.matches(values)]
        if self.hit_policy == "unique" and len(hits) > 1:  # excluded on load; a bug if seen
            raise AssertionError(f"{self.source}: rules {[r.id for r in hits]} overlap")
        return hits

    @classmethod
    def from_yaml(cls, text: str, *, source: str = "<memory>",
                  partners: Iterable[str] | None = None) -> DecisionTable:
        """Parse and validate; raise :class:`DecisionTableError` listing every problem."""
        table, problems = _parse(text, source, partners)
        if problems or table is None:
            raise DecisionTableError(source, problems)
        return table


def load_table(path: Path, *, partners: Iterable[str] | None = None) -> DecisionTable:
    """Load and validate one table file."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DecisionTableError(str(path), [DecisionProblem(str(path), 1, f"cannot read: "
                                                             f"{exc.strerror or exc}")]) from None
    except UnicodeDecodeError as exc:
        raise DecisionTableError(str(path), [DecisionProblem(str(path), 1, f"not UTF-8 text: "
                                                             f"{exc.reason}")]) from None
    return DecisionTable.from_yaml(text, source=str(path), partners=partners)


def table_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.yaml") if not p.name.startswith("."))


def load_tables(folder: Path, *, partners: Iterable[str] | None = None) -> list[DecisionTable]:
    """Every table in ``folder`` (``*.yaml``), or :class:`DecisionTableError` with every
    problem of every file; duplicate table names are an error too."""
    tables, problems = check_tables(folder, partners=partners)
    if problems:
        raise DecisionTableError(str(folder), problems)
    return tables


def check_tables(folder: Path, *, partners: Iterable[str] | None = None
                 ) -> tuple[list[DecisionTable], list[DecisionProblem]]:
    """Load every table of ``folder``: the valid tables and every problem of the others."""
    tables: list[DecisionTable] = []
    problems: list[DecisionProblem] = []
    known = list(partners) if partners is not None else None
    seen: dict[str, str] = {}
    for path in table_paths(folder):
        try:
            table = load_table(path, partners=known)
        except DecisionTableError as exc:
            problems.extend(exc.problems)
            continue
        if table.name in seen:
            problems.append(DecisionProblem(str(path), 1, f"table {table.name!r} is also "
                                                          f"defined in {seen[table.name]}"))
            continue
        seen[table.name] = str(path)
        tables.append(table)
    return tables, problems


# ------------------------------------------------------------------------------- parsing

def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _scalar(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        try:
            return SafeConstructor().construct_object(node)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ConstructorError(None, None, f"cannot read {node.value!r} as {node.tag}: {exc}",
                                   node.start_mark) from None
    return None


def _plain(node: yaml.Node) -> Any:
    """A scalar, or a list of scalars (a cell written as a YAML list)."""
    if isinstance(node, yaml.SequenceNode):
        return [_scalar(item) for item in node.value]
    return _scalar(node)


_TOP_KEYS = {"version", "table", "hit_policy", "inputs", "rules", "description"}
_RULE_KEYS = {"id", "when", "actions", "priority", "note"}


def _parse(text: str, source: str, partners: Iterable[str] | None
           ) -> tuple[DecisionTable | None, list[DecisionProblem]]:
    problems: list[DecisionProblem] = []
    known_partners = set(partners) if partners is not None else None

    def problem(line: int, message: str) -> None:
        problems.append(DecisionProblem(source, line, message))

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem(int(mark.line) + 1 if mark else 1, f"invalid YAML: {exc}")
        return None, problems
    if not isinstance(root, yaml.MappingNode):
        problem(1, "a decision table must be a mapping with version, table, hit_policy, "
                   "inputs and rules")
        return None, problems
    try:
        table = _validate(root, source, known_partners, problem)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem(int(mark.line) + 1 if mark else 1, f"invalid YAML value: {exc}")
        return None, problems
    if problems or table is None:
        return None, problems
    if table.hit_policy == "unique":
        for first, second in analyse(table, partners=known_partners).overlaps:
            problem(second.line, f"rule {second.id!r} overlaps rule {first.id!r} (line "
                                 f"{first.line}), which hit policy 'unique' forbids")
    return (None if problems else table), problems


def _validate(root: yaml.MappingNode, source: str, known_partners: set[str] | None,
              problem: Any) -> DecisionTable | None:
    top: dict[str, yaml.Node] = {}
    for key_node, value_node in root.value:
        key = _scalar(key_node)
        if key in top:
            problem(_line(key_node), f"duplicate top-level key {key!r}")
        elif key not in _TOP_KEYS:
            problem(_line(key_node), f"unknown top-level key {key!r} "
                                     f"(one of {', '.join(sorted(_TOP_KEYS))})")
        top[str(key)] = value_node
    version = _scalar(top["version"]) if "version" in top else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problem(_line(top.get("version", root)), "version must be a positive integer")
    name = _scalar(top["table"]) if "table" in top else None
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        problem(_line(top.get("table", root)), "table must be a name of letters, digits and _")
    policy = _scalar(top["hit_policy"]) if "hit_policy" in top else None
    if policy not in HIT_POLICIES:
        problem(_line(top.get("hit_policy", root)),
                f"hit_policy must be one of {', '.join(HIT_POLICIES)}, got {policy!r}")
    description = _scalar(top["description"]) if "description" in top else ""
    inputs: list[str] = []
    inputs_node = top.get("inputs")
    if not isinstance(inputs_node, yaml.SequenceNode) or not inputs_node.value:
        problem(_line(inputs_node or root), "inputs must be a non-empty list of columns "
                                            f"({', '.join(COLUMNS)})")
    else:
        for item in inputs_node.value:
            column = _scalar(item)
            if column not in COLUMNS:
                problem(_line(item), f"unknown input column {column!r} "
                                     f"(one of {', '.join(COLUMNS)})")
            elif column in inputs:
                problem(_line(item), f"input column {column!r} listed twice")
            else:
                inputs.append(str(column))
    rules: list[Rule] = []
    rules_node = top.get("rules")
    if not isinstance(rules_node, yaml.SequenceNode) or not rules_node.value:
        problem(_line(rules_node or root), "rules must be a non-empty list")
    else:
        ids: dict[str, int] = {}
        for item in rules_node.value:
            rule = _rule(item, inputs, known_partners, problem)
            if rule is None:
                continue
            if rule.id in ids:
                problem(rule.line, f"duplicate rule id {rule.id!r} (first on line {ids[rule.id]})")
                continue
            ids[rule.id] = rule.line
            rules.append(rule)
    if not isinstance(name, str) or not isinstance(version, int) or policy not in HIT_POLICIES:
        return None
    return DecisionTable(name=name, version=version, hit_policy=str(policy),
                         inputs=tuple(inputs), rules=tuple(rules), source=source,
                         description=str(description or ""))


def _rule(node: yaml.Node, inputs: list[str], known_partners: set[str] | None,
          problem: Any) -> Rule | None:
    line = _line(node)
    if not isinstance(node, yaml.MappingNode):
        problem(line, "a rule must be a mapping with id, when, actions and priority")
        return None
    fields: dict[str, yaml.Node] = {}
    ok = True
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        if key not in _RULE_KEYS:
            problem(_line(key_node), f"unknown rule key {key!r} (one of "
                                     f"{', '.join(sorted(_RULE_KEYS))})")
            ok = False
        fields[str(key)] = value_node
    rule_id = _scalar(fields["id"]) if "id" in fields else None
    if not isinstance(rule_id, str) or not rule_id.replace("_", "").isalnum():
        problem(_line(fields.get("id", node)), "a rule needs an id of letters, digits and _ "
                                               "(it is part of the escalation's identity)")
        return None
    tests: dict[str, Test] = {}
    when = fields.get("when")
    if when is None:
        problem(line, f"rule {rule_id!r}: 'when' is missing (write 'when: {{}}' for a rule "
                      f"that matches everything)")
        ok = False
    elif not isinstance(when, yaml.MappingNode):
        problem(_line(when), f"rule {rule_id!r}: 'when' must map input columns to tests")
        ok = False
    else:
        for key_node, value_node in when.value:
            column = _scalar(key_node)
            if column not in inputs:
                problem(_line(key_node), f"rule {rule_id!r}: {column!r} is not an input of "
                                         f"this table ({', '.join(inputs)})")
                ok = False
                continue
            if column in tests:
                problem(_line(key_node), f"rule {rule_id!r}: {column!r} tested twice")
                ok = False
                continue
            spec = COLUMNS[str(column)]
            try:
                test = parse_test(_plain(value_node), spec.kind)
            except UnaryTestError as exc:
                problem(_line(value_node), f"rule {rule_id!r}, {column}: {exc}")
                ok = False
                continue
            domain = spec.domain if spec.domain is not None else (
                tuple(known_partners) if column == "partner" and known_partners is not None
                else None)
            if domain is not None and spec.kind == "text":
                unknown = sorted(test.values - set(domain))
                if unknown:
                    problem(_line(value_node), f"rule {rule_id!r}, {column}: unknown value"
                                               f"{'s' if len(unknown) > 1 else ''} "
                                               f"{', '.join(map(repr, unknown))} (one of "
                                               f"{', '.join(domain)} or null)")
                    ok = False
                    continue
            tests[str(column)] = test
    actions: list[str] = []
    actions_node = fields.get("actions")
    if not isinstance(actions_node, yaml.SequenceNode):
        problem(_line(actions_node or node), f"rule {rule_id!r}: actions must be a list "
                                             f"(of {', '.join(ACTIONS)}; [] for none)")
        ok = False
    else:
        for item in actions_node.value:
            action = _scalar(item)
            if action not in ACTIONS:
                problem(_line(item), f"rule {rule_id!r}: unknown action {action!r} "
                                     f"(one of {', '.join(ACTIONS)})")
                ok = False
            elif action in actions:
                problem(_line(item), f"rule {rule_id!r}: action {action!r} listed twice")
                ok = False
            else:
                actions.append(str(action))
    priority = _scalar(fields["priority"]) if "priority" in fields else "normal"
    if priority not in PRIORITIES:
        problem(_line(fields.get("priority", node)),
                f"rule {rule_id!r}: priority must be one of {', '.join(PRIORITIES)}")
        ok = False
    if actions and "priority" not in fields:
        problem(line, f"rule {rule_id!r}: a rule with actions needs a priority "
                      f"({', '.join(PRIORITIES)})")
        ok = False
    note = _scalar(fields["note"]) if "note" in fields else ""
    if not ok:
        return None
    full = tuple(tests.get(name) or parse_test(None, COLUMNS[name].kind) for name in inputs)
    return Rule(id=rule_id, tests=full, actions=tuple(actions), priority=str(priority),
                line=line, note=str(note or ""))


# ------------------------------------------------------------------------------- analysis

@dataclass(frozen=True, slots=True)
class _Atom:
    """An elementary piece of a column's domain: every test holds on all of it or on none."""

    label: str
    value: object  # representative
    interval: Interval | None = None  # numeric atoms (None: the null atom or a text value)


@dataclass
class Analysis:
    """What :func:`analyse` found: pairs of overlapping rules and uncovered combinations."""

    table: DecisionTable
    overlaps: list[tuple[Rule, Rule]] = field(default_factory=list)
    gaps: list[dict[str, str]] = field(default_factory=list)  # column -> test text
    gap_cells: int = 0
    cells: int = 0
    too_large: bool = False


def _atoms(table: DecisionTable, index: int, partners: Iterable[str] | None) -> list[_Atom]:
    name = table.inputs[index]
    spec = COLUMNS[name]
    tests = [rule.tests[index] for rule in table.rules]
    if spec.kind == "number":
        points = sorted({b for t in tests for i in t.intervals for b in (i.lo, i.hi)
                         if b not in (INF, -INF)})
        atoms: list[_Atom] = []
        if not points:
            atoms.append(_Atom("any number", 0.0, Interval(-INF, INF, False, False)))
        else:
            atoms.append(_Atom("", points[0] - 1, Interval(-INF, points[0], False, False)))
            for a, b in itertools.pairwise(points):
                atoms.append(_Atom("", a, Interval(a, a)))
                atoms.append(_Atom("", (a + b) / 2, Interval(a, b, False, False)))
            atoms.append(_Atom("", points[-1], Interval(points[-1], points[-1])))
            atoms.append(_Atom("", points[-1] + 1, Interval(points[-1], INF, False, False)))
        atoms = [_Atom(str(a.interval), a.value, a.interval) for a in atoms]
        return [*atoms, _Atom("null", None)]
    domain: list[str]
    if spec.domain is not None:
        domain = list(spec.domain)
    elif name == "partner" and partners is not None:
        domain = sorted(partners)
    else:
        mentioned = sorted({v for t in tests for v in t.values})
        domain = [*mentioned, "\x00other"]
    return [_Atom("any other value" if v == "\x00other" else v, v) for v in domain] + [
        _Atom("null", None)]


def analyse(table: DecisionTable, *, partners: Iterable[str] | None = None) -> Analysis:
    """Overlapping rules (pairs that some facts both match) and uncovered input combinations.

    Exact over the elementary pieces of each column (each enumerated value, each open stretch
    and end point between the numbers the tests name, ``null``): two rules overlap when, in
    every column, some piece passes both tests. Gaps are the combinations of pieces no rule
    matches, merged column by column into readable rows of tests.
    """
    known = sorted(partners) if partners is not None else None
    atoms = [_atoms(table, i, known) for i in range(len(table.inputs))]
    hits = [[[rule.tests[i].matches(atom.value) for atom in atoms[i]]
             for i in range(len(table.inputs))] for rule in table.rules]
    result = Analysis(table)
    for (a, ra), (b, rb) in itertools.combinations(list(zip(table.rules, hits, strict=True)), 2):
        if all(any(x and y for x, y in zip(ca, cb, strict=True))
               for ca, cb in zip(ra, rb, strict=True)):
            result.overlaps.append((a, b))
    cells = 1
    for pieces in atoms:
        cells *= len(pieces)
    result.cells = cells
    if cells > MAX_GAP_CELLS:
        result.too_large = True
        return result
    uncovered: list[tuple[int, ...]] = []
    for cell in itertools.product(*(range(len(pieces)) for pieces in atoms)):
        if not any(all(rh[i][j] for i, j in enumerate(cell)) for rh in hits):
            uncovered.append(cell)
    result.gap_cells = len(uncovered)
    groups: list[tuple[frozenset[int], ...]] = [tuple(frozenset([j]) for j in cell)
                                                 for cell in uncovered]
    for column in range(len(atoms)):
        merged: dict[tuple[frozenset[int], ...], set[int]] = {}
        for group in groups:
            key = group[:column] + group[column + 1:]
            merged.setdefault(key, set()).update(group[column])
        groups = [(*key[:column], frozenset(values), *key[column:])
                  for key, values in merged.items()]
    result.gaps = [{table.inputs[i]: _render(atoms[i], members) for i, members in
                    enumerate(group)} for group in sorted(groups, key=_order)]
    return result


def _order(group: tuple[frozenset[int], ...]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(sorted(members)) for members in group)


def _render(atoms: list[_Atom], members: frozenset[int]) -> str:
    if len(members) == len(atoms):
        return "-"
    parts: list[str] = []
    if atoms[0].interval is None:
        parts = [atoms[j].label for j in sorted(members)]
        return ", ".join(parts)
    run: Interval | None = None
    for j in sorted(members):
        interval = atoms[j].interval
        if interval is None:
            continue
        if run is not None and run.hi == interval.lo and (run.hi_closed or interval.lo_closed):
            run = Interval(run.lo, interval.hi, run.lo_closed, interval.hi_closed)
        else:
            if run is not None:
                parts.append(str(run))
            run = interval
    if run is not None:
        parts.append(str(run))
    if any(atoms[j].interval is None for j in members):
        parts.append("null")
    return ", ".join(parts)
