"""The facts a decision table sees: canonical fields, package state and package attributes (pure).

Value band and customer priority are not in the canonical event (the Avro contract has no such
field, and no partner payload carries them): they are **shipper-provided package attributes**,
registered by partner and tracking number in a CSV file (:class:`PackageAttributes`, see
docs/decisions.md). A package without a registered attribute has ``null`` there; nothing is
guessed.

>>> attrs = PackageAttributes.from_csv("partner,tracking_number,value_band,customer_priority\\n"
...                                    "ups,1Z9,high,priority\\n", source="a.csv")
>>> attrs.lookup("ups", "1Z9")
('high', 'priority')
>>> attrs.lookup("ups", "other")
(None, None)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

from carrierwatch.core.model import CanonicalEvent
from carrierwatch.core.partner import SlaContract
from carrierwatch.core.state import STATUS_RANK, PackageState, event_key, key_rank
from carrierwatch.decisions.table import (
    CUSTOMER_PRIORITIES,
    VALUE_BANDS,
    DecisionProblem,
    DecisionTableError,
)

__all__ = ["PackageAttributes", "PackageAttributesError", "event_facts", "package_facts",
           "tracking_number_of"]

MINUTE_MS = 60_000


class PackageAttributesError(DecisionTableError):
    """The package attributes file failed validation (problems by file and line)."""

    what = "package attributes file"


class PackageAttributes:
    """Shipper-declared attributes per (partner, tracking number): value band, customer priority.

    CSV columns ``partner,tracking_number,value_band,customer_priority``; an empty cell is
    ``null``. Values outside the tables' domains are load errors with file and line.
    """

    def __init__(self, rows: Mapping[tuple[str, str], tuple[str | None, str | None]] | None = None
                 ) -> None:
        self.rows = dict(rows or {})

    def lookup(self, partner_id: str, tracking_number: str) -> tuple[str | None, str | None]:
        return self.rows.get((partner_id, tracking_number), (None, None))

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_csv(cls, text: str, *, source: str = "<memory>") -> PackageAttributes:
        problems: list[DecisionProblem] = []
        rows: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        reader = csv.DictReader(io.StringIO(text))
        needed = ["partner", "tracking_number", "value_band", "customer_priority"]
        if reader.fieldnames is None or any(c not in reader.fieldnames for c in needed):
            raise PackageAttributesError(source, [DecisionProblem(
                source, 1, f"the header must name the columns {', '.join(needed)}")])
        for row in reader:
            line = reader.line_num
            partner, number = (row.get("partner") or "").strip(), \
                (row.get("tracking_number") or "").strip()
            band = (row.get("value_band") or "").strip() or None
            priority = (row.get("customer_priority") or "").strip() or None
            if not partner or not number:
                problems.append(DecisionProblem(source, line, "partner and tracking_number "
                                                              "are required"))
                continue
            if band is not None and band not in VALUE_BANDS:
                problems.append(DecisionProblem(source, line, f"value_band {band!r} is not one "
                                                              f"of {', '.join(VALUE_BANDS)}"))
                continue
            if priority is not None and priority not in CUSTOMER_PRIORITIES:
                problems.append(DecisionProblem(
                    source, line, f"customer_priority {priority!r} is not one of "
                                  f"{', '.join(CUSTOMER_PRIORITIES)}"))
                continue
            if (partner, number) in rows:
                problems.append(DecisionProblem(source, line, f"{partner}/{number} is listed "
                                                              f"twice"))
                continue
            rows[(partner, number)] = (band, priority)
        if problems:
            raise PackageAttributesError(source, problems)
        return cls(rows)

    @classmethod
    def load(cls, path: Path | None) -> PackageAttributes:
        """The attributes file at ``path``; none (empty) when ``path`` is None or missing."""
        if path is None or not path.exists():
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PackageAttributesError(str(path), [DecisionProblem(str(path), 1,
                                                                 f"cannot read: {exc}")]) from None
        return cls.from_csv(text, source=str(path))


def tracking_number_of(package_id: str, partner_id: str) -> str:
    """The tracking number in a package id (``partner:tracking[:discriminator]``)."""
    prefix = partner_id + ":"
    rest = package_id[len(prefix):] if package_id.startswith(prefix) else package_id
    return rest.split(":", 1)[0]


def package_facts(state: PackageState, contract: SlaContract, attributes: PackageAttributes,
                  now_ms: int, *, status: str | None = None, reason: str | None = None,
                  eta_end: int | None = None) -> dict[str, object]:
    """The facts of a package at ``now_ms`` (event time); ``status``/``reason``/``eta_end``
    override the package's own (the triggering event's)."""
    band, priority = attributes.lookup(state.partner_id,
                                       tracking_number_of(state.package_id, state.partner_id))
    if eta_end is None:
        last = state.last_eta()
        eta_end = last[1] if last is not None else None
    promised = state.promised_by
    slip = (eta_end - promised) / MINUTE_MS if eta_end is not None and promised is not None \
        else None
    opened = state.open_exception_since
    age = max(0, now_ms - opened) / MINUTE_MS if opened is not None else None
    return {
        "status": status if status is not None else state.status,
        "reason": reason,
        "partner": state.partner_id,
        "service_level": state.service_level or contract.default_service_level,
        "value_band": band,
        "customer_priority": priority,
        "eta_slip_minutes": slip,
        "attempts": state.attempts,
        "exception_age_minutes": age,
        "exception_over_target_minutes": (age - contract.exception_resolution_minutes
                                          if age is not None else None),
    }


def event_facts(event: CanonicalEvent, state: PackageState, contract: SlaContract,
                attributes: PackageAttributes, now_ms: int) -> dict[str, object]:
    """The facts when ``event`` arrives: its status, reason and ETA, the package's state.

    ``attempts`` counts the package's failed attempts up to and including this event in event
    order (not those of later events that came in the same batch), or the event's own attempt
    number when the partner sends a larger one; so the result does not depend on batch cuts.
    """
    eta_end = event.eta_end if event.eta_end is not None else event.eta_start
    facts = package_facts(state, contract, attributes, now_ms, status=event.status,
                          reason=event.reason, eta_end=eta_end)
    try:
        upto = event_key(event.event_time, event.status, event.event_id)
    except ValueError:
        upto = -1
    attempts = sum(1 for key in state.keys if key <= upto and key_rank(key) == _ATTEMPT)
    if event.attempt_number is not None and event.attempt_number > attempts:
        attempts = event.attempt_number
    facts["attempts"] = attempts
    return facts


_ATTEMPT = STATUS_RANK["delivery_attempted"]
