"""The demo's pure helpers (the demo itself runs as ``make demo``)."""

from __future__ import annotations

import doctest

import carrierwatch.demo
from carrierwatch.demo import HOUR_MS, during_incidents
from carrierwatch.synthetic.incidents import Incident


def test_demo_doctests() -> None:
    result = doctest.testmod(carrierwatch.demo)
    assert result.attempted >= 2 and result.failed == 0


def test_anomalies_are_counted_in_their_own_partner_s_incidents_and_aftermath() -> None:
    incidents = [Incident("feed_outage", "ups", 10 * HOUR_MS, 16 * HOUR_MS),
                 Incident("exception_spike", "fedex", 0, 10 * HOUR_MS)]
    windows = [9 * HOUR_MS, 10 * HOUR_MS, 17 * HOUR_MS, 18 * HOUR_MS - 1, 18 * HOUR_MS]
    # before the outage: no; its start: yes; within 2 h after its end: yes; 2 h after: no
    assert during_incidents("ups", windows, incidents) == "3 of 5 (feed_outage)"
    assert during_incidents("ups", windows, incidents, aftermath_ms=0) == "1 of 5 (feed_outage)"
    assert during_incidents("dhl", windows, incidents) == "0 of 5"
    assert during_incidents("fedex", [HOUR_MS, 11 * HOUR_MS], incidents) == \
        "2 of 2 (exception_spike)"
