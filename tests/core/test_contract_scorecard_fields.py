"""The contract's optional scorecard fields are validated on load."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from carrierwatch.core.accountability import ACCOUNTABILITY, PARTIES, accountable_party
from carrierwatch.core.model import CanonicalReason
from carrierwatch.core.partner import SlaContract


def test_rates_credits_and_overrides_load() -> None:
    contract = SlaContract.model_validate({
        "rates": {"currency": "EUR", "per_delivery": 4.5, "per_reattempt": 2, "per_return": 3},
        "credits": [{"kpi": "on_time", "points": 2, "credit_percent": 5}],
        "accountability": {"weather": "carrier"},
        "eta_accuracy_target": 0.8})
    assert contract.rates is not None and contract.rates.per_reattempt == 2.0
    assert contract.credits[0].kpi == "on_time"
    assert accountable_party("weather", contract.accountability) == "carrier"


@pytest.mark.parametrize("bad, message", [
    ({"credits": [{"kpi": "on_time", "credit_percent": 5}]}, "credits need rates"),
    ({"rates": {"per_delivery": -1}}, "greater than or equal to 0"),
    ({"rates": {"currency": "dollars"}}, "should match pattern"),
    ({"rates": {}, "credits": [{"kpi": "happiness", "credit_percent": 5}]}, "kpi"),
    ({"rates": {}, "credits": [{"kpi": "on_time", "credit_percent": 150}]}, "less than or equal"),
    ({"accountability": {"sunspots": "carrier"}}, "not canonical reasons: ['sunspots']"),
    ({"accountability": {"weather": "the moon"}}, "accountability.weather"),
    ({"eta_accuracy_target": 1.5}, "less than or equal to 1"),
])
def test_bad_scorecard_fields_are_load_errors(bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SlaContract.model_validate(bad)


def test_every_canonical_reason_has_an_accountable_party() -> None:
    assert set(ACCOUNTABILITY) == {r.value for r in CanonicalReason}
    assert set(ACCOUNTABILITY.values()) <= set(PARTIES)
