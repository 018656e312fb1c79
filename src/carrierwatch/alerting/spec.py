"""SLO specifications derived from partner contracts (``partners/<id>.yaml``).

Every partner gets five objectives, one per SLI of the metric contract
(``carrierwatch_sli_events_total{partner,service_level,slo}`` and its ``good`` twin):

=====================  ======================================================================
slo                    target (default)
=====================  ======================================================================
on_time                ``contract.on_time_target``
first_attempt          ``contract.first_attempt_target``
pickup_compliance      ``contract.pickup_compliance_target``
tracking_compliance    ``contract.tracking_compliance_target``
event_latency          0.95: the contract's p95 limit (``event_latency_p95_max_minutes``) means
                       95 % of events arrive within it
=====================  ======================================================================

over the contract's ``slo_window_days``. An optional ``slos:`` section overrides what the
contract does not say::

    slos:
      min_events: 20            # events a long window needs before it may alert (default 20)
      max_silence_minutes: 180  # no canonical event for this long: PartnerNoEvents
      objectives:
        first_attempt: {target: 0.9, min_events: 40}
        tracking_compliance: {enabled: false}

The default ``max_silence_minutes`` is twice the contract's event latency limit, at least one
hour, for webhook and poll partners, and 25 hours for batch partners (one daily drop may be
late by an hour). Problems are reported as ``file:line: message``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from carrierwatch.alerting.burnrate import WORKBOOK_ROWS
from carrierwatch.core.errors import ConfigurationError
from carrierwatch.core.partner import PartnerSpec

__all__ = ["DEFAULT_MIN_EVENTS", "SLO_NAMES", "Objective", "PartnerSlos", "SloSpecError",
           "SpecProblem", "load_partner_slos", "load_slos"]

SloName = Literal["on_time", "first_attempt", "pickup_compliance", "tracking_compliance",
                  "event_latency"]
SLO_NAMES: tuple[SloName, ...] = ("on_time", "first_attempt", "pickup_compliance",
                                  "tracking_compliance", "event_latency")
DEFAULT_MIN_EVENTS = 20
EVENT_LATENCY_TARGET = 0.95

#: where each objective's default target comes from in the contract (None: a constant)
_CONTRACT_FIELDS: dict[SloName, str | None] = {
    "on_time": "on_time_target",
    "first_attempt": "first_attempt_target",
    "pickup_compliance": "pickup_compliance_target",
    "tracking_compliance": "tracking_compliance_target",
    "event_latency": None,
}

DESCRIPTIONS: dict[SloName, str] = {
    "on_time": "packages delivered by their promised-by time (plus grace)",
    "first_attempt": "packages delivered at the first attempt",
    "pickup_compliance": "packages picked up by the pickup cutoff",
    "tracking_compliance": "delivered packages with every required milestone",
    "event_latency": "events received within the contract's latency limit",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObjectiveOverride(_Frozen):
    target: float | None = Field(None, gt=0, lt=1)
    enabled: bool = True
    min_events: int | None = Field(None, ge=1)


class SlosSection(_Frozen):
    min_events: int = Field(DEFAULT_MIN_EVENTS, ge=1)
    max_silence_minutes: int | None = Field(None, gt=0)
    objectives: dict[SloName, ObjectiveOverride] = Field(default_factory=dict)


@dataclass(frozen=True)
class SpecProblem:
    source: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.message}"


class SloSpecError(ConfigurationError):
    """One or more ``file:line`` problems in the SLO specification of partners."""

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class Objective:
    """One SLO of one partner: ``target`` fraction of good events over the SLO window."""

    slo: SloName
    target: float
    min_events: int
    #: where the target was read: ``contract.on_time_target``, ``slos.objectives.X.target`` ...
    source: str

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.slo]


@dataclass(frozen=True)
class PartnerSlos:
    """What the rules of one partner are generated from."""

    partner: str
    display_name: str
    delivery: str
    window_days: int
    max_silence_minutes: int
    objectives: tuple[Objective, ...]
    source: Path
    #: where max_silence_minutes comes from, in words (for the alert's description)
    silence_source: str = ""


def _start(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _validation_problems(exc: ValidationError, root: yaml.Node, source: str,
                         prefix: tuple[str, ...] = ()) -> list[SpecProblem]:
    problems = []
    for error in exc.errors():
        loc = [*prefix, *error["loc"]]
        where = ".".join(str(part) for part in loc) or "(top)"
        problems.append(SpecProblem(source, _line_of(root, loc), f"{where}: {error['msg']}"))
    return problems


def _line_of(root: yaml.Node, loc: Sequence[Any]) -> int:
    """Line of the key at ``loc``; the deepest existing ancestor when the key is missing."""
    node = root
    line = _start(root)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return line
            line = _start(match[0])
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) \
                and 0 <= part < len(node.value):
            node = node.value[part]
            line = _start(node)
        else:
            return line
    return line


def load_partner_slos(path: Path) -> PartnerSlos:
    """Read one partner file and derive its SLOs; :class:`SloSpecError` lists every problem."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SloSpecError([SpecProblem(source, 1, exc.strerror or str(exc))]) from exc
    except UnicodeDecodeError as exc:
        raise SloSpecError([SpecProblem(source, 1, f"not UTF-8 text ({exc.reason})")]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise SloSpecError([SpecProblem(source, int(mark.line) + 1 if mark else 1,
                                        f"invalid YAML: {exc.problem}")]) from exc
    if root is None or not isinstance(data, dict):
        raise SloSpecError([SpecProblem(source, 1, "expected a mapping (a partner file)")])
    try:
        spec = PartnerSpec.model_validate(data)
    except ValidationError as exc:
        raise SloSpecError(_validation_problems(exc, root, source)) from exc
    if spec.id != path.stem:
        raise SloSpecError([SpecProblem(source, _line_of(root, ["id"]),
                                        f"id {spec.id!r} does not match the file name")])
    try:
        section = SlosSection.model_validate(spec.slos or {})
    except ValidationError as exc:
        raise SloSpecError(_validation_problems(exc, root, source, ("slos",))) from exc
    problems: list[SpecProblem] = []
    contract = spec.contract
    longest = max(row.long_seconds for row in WORKBOOK_ROWS) / 86400
    if contract.slo_window_days <= longest:
        problems.append(SpecProblem(
            source, _line_of(root, ["contract", "slo_window_days"]),
            f"contract.slo_window_days: must be longer than the longest alert window "
            f"({longest:g} days), not {contract.slo_window_days}"))
    objectives = []
    for slo in SLO_NAMES:
        override = section.objectives.get(slo, ObjectiveOverride())
        if not override.enabled:
            continue
        field = _CONTRACT_FIELDS[slo]
        if override.target is not None:
            target, origin = override.target, f"slos.objectives.{slo}.target"
        elif field is None:
            target, origin = EVENT_LATENCY_TARGET, "contract.event_latency_p95_max_minutes (p95)"
        else:
            target, origin = float(getattr(contract, field)), f"contract.{field}"
        if not 0 < target < 1:
            loc = ["contract", field] if field else ["contract"]
            problems.append(SpecProblem(
                source, _line_of(root, loc),
                f"{origin}: a target of {target:g} leaves no error budget for the {slo} SLO; "
                f"set a target below 1 or `slos: objectives: {slo}: {{enabled: false}}`"))
            continue
        objectives.append(Objective(slo, target, override.min_events or section.min_events,
                                    origin))
    if problems:
        raise SloSpecError(problems)
    if section.max_silence_minutes is not None:
        silence, why = section.max_silence_minutes, "slos.max_silence_minutes"
    elif spec.delivery == "batch":
        silence, why = 25 * 60, "a daily batch drop, an hour late"
    else:
        silence = max(60, int(2 * contract.event_latency_p95_max_minutes))
        why = (f"twice the contract's event latency limit of "
               f"{contract.event_latency_p95_max_minutes:g} minutes, at least an hour")
    return PartnerSlos(partner=spec.id, display_name=spec.display_name, delivery=spec.delivery,
                       window_days=contract.slo_window_days, max_silence_minutes=silence,
                       objectives=tuple(objectives), source=path, silence_source=why)


def load_slos(home: Path) -> tuple[list[PartnerSlos], list[SpecProblem]]:
    """Every partner's SLOs under ``home/partners``, and the problems of those that failed."""
    folder = home / "partners"
    if not folder.is_dir():
        raise ConfigurationError(
            f"no partners/ folder in {home}: set CARRIERWATCH_HOME to the folder that holds "
            f"partners/")
    specs: list[PartnerSlos] = []
    problems: list[SpecProblem] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            specs.append(load_partner_slos(path))
        except SloSpecError as exc:
            problems.extend(exc.problems)
    return specs, problems
