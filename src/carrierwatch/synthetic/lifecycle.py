"""The life of one simulated package: what happens to it, where and when (canonical scans).

:func:`simulate_package` draws, from one seeded :class:`random.Random`, a package's whole story
along a route of real US places (city, state, ZIP and IANA zone):

- **label** (``info_received``) at the shipper's origin, at the time the simulator chose (business
  hours mostly);
- **pickup** before the contract's ``pickup_cutoff`` (in the contract's zone) of the day the label
  came in, or of the next day when it came in after the cutoff; :attr:`LifecycleModel.late_pickup`
  of the pickups come after the cutoff (late in the afternoon or the next morning);
- **line haul**: a departure scan at the origin, an arrival (``staged``) and a departure
  (``in_transit``) at each sort hub on the way, spread over the transit days, then the arrival at
  the destination hub early on the delivery day;
- **transit time** in business days (Monday–Friday) from the pickup day: the contract's
  ``transit_days`` of the service level is the service's maximum, reached by packages crossing the
  country and shortened for shorter distances (time zones crossed), some a day quicker still; a
  late tail of one to three days past it (:attr:`LifecycleModel.late_tail`); one more day for
  packages slowed down by a ``peak_day`` incident;
- **exceptions** (about :attr:`LifecycleModel.exception_share` of packages, times the
  ``exception_spike`` factor for exceptions opening in a spike window) at a hub, opened 10 to
  90 minutes after the hub scan (a spike's exceptions open inside its window, so its label
  starts where its data do), with a reason, resolved hours
  later (an ``in_transit`` scan) and delaying the package when the resolution comes after its next
  planned scan;
- **delivery-day exceptions of an** ``exception_spike``: a real spike (weather, a sort-centre
  breakdown, a vehicle shortage) hits every package in the network, those out for delivery too.
  A package on the van (from ``out_for_delivery`` to its attempt) while a spike lasts gets an
  exception (weather, vehicle or capacity, carrier delay), at an even chance over its first
  2 hours on the van inside the spike, with probability ``per_scan × (factor − 1)``: the
  spike's excess over a base probability equal to one hub scan's
  (``per_scan = 1 − (1 − exception_share)^(1/hub scans)``, about 0.3–1 %, so ~10–30 % of the
  packages out for delivery at the default factor 30); it goes back to the station (an
  ``in_transit`` scan) and out again the next business day. Outside spikes nothing is drawn
  (the base share stays inside :attr:`LifecycleModel.exception_share`), so a simulation
  without a spike is byte-identical;
- **delivery**: ``out_for_delivery`` in the morning of the delivery day, ``delivered`` during the
  day (proof: photo, signature or none); :attr:`LifecycleModel.first_attempt_failure` of first
  attempts fail with a reason and are re-attempted the next business day (refusals are returned to
  the sender; a failed second attempt waits at a retail location, where the recipient collects it
  or it is returned);
- **ETA**: every scan carries the partner's current ETA; it starts at the promise and is revised
  when a delay or an early arrival becomes known (at the hub scan before the delivery day, at an
  exception, at a failed attempt); out for delivery carries a two-hour delivery window;
- **visibility**: each scan becomes visible at the partner after a log-normal delay
  (:class:`VisibilityDelay`, per partner), plus the ``latency_drift`` of any incident;
- ``codebook_change`` incidents give the scans of the affected statuses made inside the window a
  partner code the codebook does not know (``SimScan.raw_code = "NEW_<STATUS>"``).

Everything is a pure function of its arguments (no clock, no global random state).

Examples
--------
>>> import random
>>> from carrierwatch.core.partner import SlaContract
>>> from carrierwatch.synthetic.incidents import PartnerIncidents
>>> profile = PartnerProfile.build("fedex", SlaContract(timezone="America/Chicago",
...                                transit_days={"FEDEX_GROUND": 3},
...                                default_service_level="FEDEX_GROUND"))
>>> package, scans = simulate_package(random.Random(7), profile, "794600000011",
...                                   ship_time=1_772_467_200_000,   # Mon 2026-03-02 16:00Z
...                                   incidents=PartnerIncidents([]))
>>> scans[0].status, scans[-1].status in {"delivered", "returned", "available_for_pickup"}
('info_received', True)
>>> all(a.event_time < b.event_time for a, b in zip(scans, scans[1:]))
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from carrierwatch.core.partner import SlaContract
from carrierwatch.core.timeutil import to_ms
from carrierwatch.synthetic.incidents import PartnerIncidents
from carrierwatch.synthetic.model import SimPackage, SimScan

__all__ = [
    "HUBS",
    "PLACES",
    "LifecycleModel",
    "Network",
    "PartnerProfile",
    "Place",
    "VisibilityDelay",
    "business_days_after",
    "pickup_due",
    "simulate_package",
]

HOUR = 3_600_000
MINUTE = 60_000


@dataclass(frozen=True, slots=True)
class Place:
    """A real US place: city, state, a ZIP code of it and its IANA zone; ``weight`` ~ population."""

    city: str
    region: str
    postal_code: str
    zone: str
    weight: float = 1.0
    country: str = "US"


def _p(city: str, region: str, postal_code: str, zone: str, weight: float = 1.0) -> Place:
    return Place(city, region, postal_code, zone, weight)


_NY, _CHI, _DEN, _LA = ("America/New_York", "America/Chicago", "America/Denver",
                        "America/Los_Angeles")

#: Destinations (and shipper origins) of national partners, weighted by metro population.
PLACES: tuple[Place, ...] = (
    _p("New York", "NY", "10001", _NY, 19.5), _p("Newark", "NJ", "07102", _NY, 3.0),
    _p("Philadelphia", "PA", "19104", _NY, 6.2), _p("Boston", "MA", "02118", _NY, 4.9),
    _p("Baltimore", "MD", "21201", _NY, 2.8), _p("Washington", "DC", "20001", _NY, 6.3),
    _p("Atlanta", "GA", "30303", _NY, 6.1), _p("Miami", "FL", "33130", _NY, 6.1),
    _p("Orlando", "FL", "32801", _NY, 2.7), _p("Tampa", "FL", "33602", _NY, 3.2),
    _p("Charlotte", "NC", "28202", _NY, 2.7), _p("Raleigh", "NC", "27601", _NY, 1.5),
    _p("Pittsburgh", "PA", "15222", _NY, 2.4), _p("Columbus", "OH", "43215", _NY, 2.1),
    _p("Cleveland", "OH", "44114", _NY, 2.1), _p("Detroit", "MI", "48226", "America/Detroit", 4.4),
    _p("Indianapolis", "IN", "46204", "America/Indiana/Indianapolis", 2.1),
    _p("Louisville", "KY", "40202", "America/Kentucky/Louisville", 1.3),
    _p("Nashville", "TN", "37203", _CHI, 2.0), _p("Memphis", "TN", "38103", _CHI, 1.3),
    _p("Chicago", "IL", "60601", _CHI, 9.5), _p("Milwaukee", "WI", "53202", _CHI, 1.6),
    _p("Minneapolis", "MN", "55401", _CHI, 3.7), _p("St. Louis", "MO", "63101", _CHI, 2.8),
    _p("Kansas City", "MO", "64105", _CHI, 2.2), _p("Dallas", "TX", "75201", _CHI, 7.6),
    _p("Houston", "TX", "77002", _CHI, 7.1), _p("Austin", "TX", "78701", _CHI, 2.3),
    _p("San Antonio", "TX", "78205", _CHI, 2.6), _p("New Orleans", "LA", "70112", _CHI, 1.3),
    _p("Denver", "CO", "80202", _DEN, 3.0), _p("Albuquerque", "NM", "87102", _DEN, 0.9),
    _p("El Paso", "TX", "79901", _DEN, 0.9), _p("Salt Lake City", "UT", "84101", _DEN, 1.3),
    _p("Phoenix", "AZ", "85004", "America/Phoenix", 4.9),
    _p("Boise", "ID", "83702", "America/Boise", 0.8), _p("Las Vegas", "NV", "89101", _LA, 2.3),
    _p("Los Angeles", "CA", "90012", _LA, 13.0), _p("San Diego", "CA", "92101", _LA, 3.3),
    _p("San Francisco", "CA", "94103", _LA, 4.7), _p("San Jose", "CA", "95113", _LA, 2.0),
    _p("Sacramento", "CA", "95814", _LA, 2.4), _p("Portland", "OR", "97204", _LA, 2.5),
    _p("Seattle", "WA", "98101", _LA, 4.0),
)

#: National sort hubs by partner family (real air/ground hubs).
HUBS: Mapping[str, tuple[Place, ...]] = {
    "fedex": (_p("Memphis", "TN", "38118", _CHI), _p("Indianapolis", "IN", "46241",
                                                       "America/Indiana/Indianapolis")),
    "ups": (_p("Louisville", "KY", "40209", "America/Kentucky/Louisville"),
            _p("Hodgkins", "IL", "60525", _CHI), _p("Ontario", "CA", "91761", _LA)),
    "dhl": (_p("Hebron", "KY", "41048", _NY), _p("Grand Prairie", "TX", "75050", _CHI)),
    "usps": (_p("Chicago", "IL", "60607", _CHI), _p("Dallas", "TX", "75260", _CHI),
             _p("Denver", "CO", "80266", _DEN), _p("Atlanta", "GA", "30304", _NY)),
    "boise": (_p("Boise", "ID", "83705", "America/Boise"),),
}

_METRO_PLACES: tuple[Place, ...] = (
    _p("Chicago", "IL", "60601", _CHI, 6.0), _p("Chicago", "IL", "60614", _CHI, 4.0),
    _p("Chicago", "IL", "60647", _CHI, 3.0), _p("Evanston", "IL", "60201", _CHI, 1.0),
    _p("Oak Park", "IL", "60302", _CHI, 1.0), _p("Cicero", "IL", "60804", _CHI, 1.0),
    _p("Naperville", "IL", "60540", _CHI, 1.5), _p("Schaumburg", "IL", "60173", _CHI, 1.2),
)
_VALLEY_PLACES: tuple[Place, ...] = (
    _p("Boise", "ID", "83702", "America/Boise", 4.0), _p("Meridian", "ID", "83642",
                                                        "America/Boise", 2.0),
    _p("Nampa", "ID", "83651", "America/Boise", 1.5), _p("Caldwell", "ID", "83605",
                                                        "America/Boise", 0.8),
    _p("Twin Falls", "ID", "83301", "America/Boise", 0.9),
    _p("Pocatello", "ID", "83201", "America/Boise", 0.7),
    _p("Idaho Falls", "ID", "83402", "America/Boise", 0.8),
    _p("Ontario", "OR", "97914", "America/Boise", 0.3),
    _p("Salt Lake City", "UT", "84101", _DEN, 2.5), _p("Ogden", "UT", "84401", _DEN, 0.8),
    _p("Coeur d'Alene", "ID", "83814", _LA, 0.5), _p("Spokane", "WA", "99201", _LA, 1.5),
)


@dataclass(frozen=True, slots=True)
class Network:
    """Where a partner's packages go: shipper origins, destinations and sort hubs."""

    origins: tuple[Place, ...]
    destinations: tuple[Place, ...]
    hubs: tuple[Place, ...]
    local: bool = False  # a courier in one metro area: no line haul

    @staticmethod
    def for_partner(partner_id: str) -> Network:
        """The network of a partner (a national one for partners not listed here)."""
        origins = tuple(p for p in PLACES if p.city in {
            "Newark", "Columbus", "Memphis", "Dallas", "Los Angeles", "Atlanta", "Chicago",
            "Louisville", "Phoenix", "Indianapolis"})
        if partner_id == "metro_courier":
            return Network(_METRO_PLACES[:3], _METRO_PLACES, _METRO_PLACES[:1], local=True)
        if partner_id == "valley_express":
            return Network(_VALLEY_PLACES[:3] + _VALLEY_PLACES[8:9], _VALLEY_PLACES,
                           HUBS["boise"])
        family = {"aftership": "fedex", "easypost": "usps", "shippo": "usps"}.get(
            partner_id, partner_id)
        return Network(origins, PLACES, HUBS.get(family, HUBS["usps"]))


@dataclass(frozen=True, slots=True)
class VisibilityDelay:
    """Log-normal delay between a scan and the partner making it visible.

    ``median_minutes`` is the median delay and ``sigma`` the log-space standard deviation (the
    90th percentile is ``median * exp(1.2816 * sigma)``).
    """

    median_minutes: float
    sigma: float

    def draw(self, rng: random.Random) -> int:
        """One delay in milliseconds (at least one second)."""
        return max(1000, int(self.median_minutes * MINUTE
                             * math.exp(self.sigma * rng.gauss(0.0, 1.0))))


#: Per-partner visibility delays: carriers' own APIs are quick, aggregators add their polling.
VISIBILITY: Mapping[str, VisibilityDelay] = {
    "fedex": VisibilityDelay(5, 0.8), "ups": VisibilityDelay(15, 0.9),
    "usps": VisibilityDelay(45, 1.0), "dhl": VisibilityDelay(30, 0.9),
    "easypost": VisibilityDelay(12, 0.9), "aftership": VisibilityDelay(25, 1.0),
    "shippo": VisibilityDelay(60, 0.8), "metro_courier": VisibilityDelay(1, 0.7),
    "valley_express": VisibilityDelay(20, 1.0),
}

#: Service-level mix per partner (levels missing from the contract are ignored).
SERVICE_MIX: Mapping[str, Mapping[str, float]] = {
    "fedex": {"FEDEX_GROUND": 0.45, "GROUND_HOME_DELIVERY": 0.25, "FEDEX_2_DAY": 0.1,
              "FEDEX_EXPRESS_SAVER": 0.06, "STANDARD_OVERNIGHT": 0.06,
              "PRIORITY_OVERNIGHT": 0.05, "SMART_POST": 0.03},
    "ups": {"003": 0.6, "002": 0.12, "012": 0.08, "001": 0.06, "013": 0.04, "093": 0.1},
    "usps": {"usps_ground_advantage": 0.55, "priority_mail": 0.3, "priority_mail_express": 0.05,
             "parcel_select": 0.1},
    "dhl": {"ecommerce": 0.75, "express": 0.25},
    "easypost": {"GroundAdvantage": 0.4, "Priority": 0.2, "Express": 0.03, "Ground": 0.15,
                 "2ndDayAir": 0.05, "NextDayAir": 0.02, "FEDEX_GROUND": 0.1,
                 "FEDEX_2_DAY": 0.05},
    "aftership": {"FedEx Ground": 0.45, "FedEx Home Delivery": 0.25, "FedEx 2Day": 0.2,
                  "FedEx Priority Overnight": 0.1},
    "shippo": {"usps_ground_advantage": 0.45, "usps_priority": 0.25, "ups_ground": 0.15,
               "fedex_ground": 0.1, "fedex_2_day": 0.05},
    "metro_courier": {"same_day": 0.6, "next_day": 0.3, "scheduled": 0.1},
    "valley_express": {"std": 0.8, "exp": 0.2},
}

_ATTEMPT_REASONS = (("recipient_not_available", 0.55), ("access_issue", 0.15),
                    ("address_issue", 0.1), ("customer_request", 0.1), ("refused", 0.06),
                    ("other", 0.04))
_EXCEPTION_REASONS = (("weather", 0.18), ("carrier_delay", 0.25), ("vehicle_or_capacity", 0.15),
                      ("damaged", 0.1), ("address_issue", 0.15), ("lost", 0.05),
                      ("customs", 0.02), ("payment_due", 0.03), ("other", 0.07))
_PROOFS = (("photo", 0.65), ("signature", 0.25), ("none", 0.1))
#: reasons of the delivery-day exceptions an ``exception_spike`` adds: network-wide causes (a
#: storm, a station's vans short, a sort that ran late), not a parcel's own problem
_DELIVERY_DAY_REASONS = (("weather", 0.45), ("vehicle_or_capacity", 0.3), ("carrier_delay", 0.25))


@dataclass(frozen=True, slots=True)
class LifecycleModel:
    """The probabilities behind a package's story (package shares unless stated)."""

    late_pickup: float = 0.05
    cancelled: float = 0.003
    exception_share: float = 0.03
    first_attempt_failure: float = 0.07
    second_attempt_failure: float = 0.15     # of second attempts
    collected_from_pickup_point: float = 0.6  # of parcels left at a retail location
    #: (business days later than the contract's transit days, probability): the late tail
    late_tail: tuple[tuple[int, float], ...] = ((1, 0.024), (2, 0.008), (3, 0.004))
    early_share: float = 0.15                # on-time packages one day quicker than the distance


@dataclass(frozen=True, slots=True)
class PartnerProfile:
    """Everything the lifecycle needs to know about one partner."""

    partner_id: str
    contract_zone: str
    cutoff_minutes: int
    transit_days: Mapping[str, int]
    service_levels: tuple[str, ...]
    service_weights: tuple[float, ...]
    network: Network
    visibility: VisibilityDelay
    model: LifecycleModel = field(default_factory=LifecycleModel)

    @classmethod
    def build(cls, partner_id: str, contract: SlaContract,
              model: LifecycleModel | None = None) -> PartnerProfile:
        """A profile from the partner's SLA contract and the tables of this module."""
        hours, minutes = contract.pickup_cutoff.split(":")
        mix = {level: weight for level, weight in SERVICE_MIX.get(partner_id, {}).items()
               if level in contract.transit_days}
        if not mix:
            others = [lv for lv in contract.transit_days if lv != contract.default_service_level]
            mix = {contract.default_service_level: 0.6 if others else 1.0}
            mix.update({lv: 0.4 / len(others) for lv in others})
        return cls(partner_id=partner_id, contract_zone=contract.timezone,
                   cutoff_minutes=int(hours) * 60 + int(minutes),
                   transit_days=dict(contract.transit_days),
                   service_levels=tuple(mix), service_weights=tuple(mix.values()),
                   network=Network.for_partner(partner_id),
                   visibility=VISIBILITY.get(partner_id, VisibilityDelay(20, 0.9)),
                   model=model or LifecycleModel())


# --- calendar helpers ------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local_date(ms: int, zone: str) -> date:
    return datetime.fromtimestamp(ms / 1000, _zone(zone)).date()


def _at(day: date, minutes: float, zone: str) -> int:
    """UTC ms of ``minutes`` after local midnight of ``day`` in ``zone`` (wall-clock), whole s."""
    whole = int(minutes * 60)
    moment = datetime.combine(day, time(0), tzinfo=_zone(zone)) + timedelta(seconds=whole)
    return to_ms(moment)


def business_days_after(day: date, count: int) -> date:
    """The date ``count`` business days (Monday–Friday) after ``day`` (``day`` itself for 0).

    >>> business_days_after(date(2026, 3, 6), 1), business_days_after(date(2026, 3, 6), 0)
    (datetime.date(2026, 3, 9), datetime.date(2026, 3, 6))
    """
    added = 0
    while added < count:
        day += timedelta(days=1)
        if day.weekday() < 5:
            added += 1
    return day


def pickup_due(info_received: int, zone: str, cutoff_minutes: int) -> int:
    """The contract's pickup cutoff that applies to a label created at ``info_received``.

    The cutoff of the label's local day (contract zone) when the label came in strictly before
    it, otherwise the cutoff of the next calendar day.

    >>> from carrierwatch.core.model import ms_to_iso
    >>> ms_to_iso(pickup_due(1_772_816_400_000, "America/New_York", 17 * 60))  # Fri 12:00
    '2026-03-06T22:00:00.000Z'
    """
    local = datetime.fromtimestamp(info_received / 1000, _zone(zone))
    day = local.date()
    if local.hour * 60 + local.minute >= cutoff_minutes:
        day += timedelta(days=1)
    return _at(day, cutoff_minutes, zone)


def _end_of_day(day: date, zone: str) -> int:
    return _at(day + timedelta(days=1), 0, zone) - 1


def _choice(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    point = rng.random() * sum(w for _, w in table)
    for value, weight in table:
        point -= weight
        if point < 0:
            return value
    return table[-1][0]


def _delta(rng: random.Random, table: Sequence[tuple[int, float]]) -> int:
    """A value of ``table`` drawn with its probability; 0 for the probability left over."""
    point = rng.random()
    for value, weight in table:
        point -= weight
        if point < 0:
            return value
    return 0


@lru_cache(maxsize=64)
def _standard_offset_hours(zone: str) -> float:
    offset = datetime(2026, 1, 15, 12, tzinfo=_zone(zone)).utcoffset()
    return offset.total_seconds() / 3600 if offset is not None else 0.0


def _on_time_days(rng: random.Random, model: LifecycleModel, days: int, origin: Place,
                  destination: Place) -> int:
    """Transit days of a package that keeps its promise: shorter for shorter distances.

    The contract's ``transit_days`` is the service's maximum; a ground package crossing the
    country (three time zones) takes it, one staying in its zone takes three days less (at least
    one). Some packages are a day quicker still.
    """
    if days <= 1:
        return days
    zones_crossed = abs(_standard_offset_hours(origin.zone)
                        - _standard_offset_hours(destination.zone))
    transit = days if days <= 2 else max(1, days - 3 + round(min(zones_crossed, 3.0)))
    if transit > 1 and rng.random() < model.early_share:
        transit -= 1
    return transit


# --- one package -----------------------------------------------------------------------------

@dataclass(slots=True)
class _Draft:
    """A scan being planned (mutable until the package's story is complete)."""

    status: str
    time: int
    place: Place
    reason: str | None = None
    attempt: int | None = None
    proof: str | None = None
    eta: int | None = None


def _line_haul(rng: random.Random, profile: PartnerProfile, origin: Place, destination: Place,
               pickup: int, days: int, arrive_by: int) -> list[_Draft]:
    """Departure at the origin, then arrival/departure at the hubs on the way (no destination).

    The hubs are spread between the departure and ``arrive_by`` (the latest time the package can
    leave its last hub to make the morning sort at the destination).
    """
    network = profile.network
    departure = pickup + rng.randint(2 * HOUR, 5 * HOUR)
    scans = [_Draft("in_transit", departure, origin)]
    if network.local or days <= 0:
        return scans
    count = 1 if days <= 2 else (1 if rng.random() < 0.5 else 2)
    if days == 1 and rng.random() < 0.3:
        count = 0
    hubs = [h for h in network.hubs if h.city != origin.city and h.city != destination.city]
    rng.shuffle(hubs)
    span = max(arrive_by - departure, 2 * HOUR * (count + 1))
    slot = span // (count + 1)
    for index, hub in enumerate(hubs[:count]):
        arrival = departure + slot * (index + 1) - slot // 2 + rng.randint(0, slot // 4)
        arrival = max(arrival, scans[-1].time + 30 * MINUTE)
        scans.append(_Draft("staged", arrival, hub))
        scans.append(_Draft("in_transit", arrival + rng.randint(slot // 8, slot // 3), hub))
    return scans


def simulate_package(rng: random.Random, profile: PartnerProfile, tracking_number: str,
                     ship_time: int, incidents: PartnerIncidents,
                     origin: Place | None = None) -> tuple[SimPackage, list[SimScan]]:
    """Draw one package's story; scans come oldest first with strictly increasing times."""
    model, network, zone = profile.model, profile.network, profile.contract_zone
    if origin is None:
        origin = rng.choices(network.origins, [p.weight for p in network.origins])[0]
    destination = origin
    while destination == origin and len(network.destinations) > 1:
        destination = rng.choices(network.destinations,
                                  [p.weight for p in network.destinations])[0]
    service = rng.choices(profile.service_levels, profile.service_weights)[0]
    days = profile.transit_days[service]

    due = pickup_due(ship_time, zone, profile.cutoff_minutes)
    promised_by = _end_of_day(business_days_after(_local_date(due, zone), days), zone)
    package = SimPackage(profile.partner_id, tracking_number, service, ship_time,
                         promised_by=promised_by)
    drafts = [_Draft("info_received", ship_time, origin, eta=promised_by)]

    if rng.random() < model.cancelled:
        drafts.append(_Draft("cancelled", ship_time + rng.randint(HOUR, 20 * HOUR), origin))
        return package, _finish(rng, profile, drafts, incidents)

    # pickup: before the cutoff (driver rounds through the afternoon) or late
    if rng.random() < model.late_pickup:
        pickup = (due + rng.randint(20 * MINUTE, 4 * HOUR) if rng.random() < 0.6
                  else _at(_local_date(due, zone) + timedelta(days=1),
                           rng.uniform(8 * 60, 11 * 60), zone))
        pickup = max(pickup, ship_time + rng.randint(15 * MINUTE, 45 * MINUTE))
    else:  # the driver comes in the last hours before the cutoff, after the label
        earliest_pickup = max(ship_time + 10 * MINUTE, due - 3 * HOUR - 30 * MINUTE)
        pickup = (rng.randint(earliest_pickup, due - MINUTE) if earliest_pickup < due - MINUTE
                  else (ship_time + due) // 2)
    drafts.append(_Draft("picked_up", pickup, origin))

    # transit time: business days from the pickup day; the late tail, else by distance
    late = _delta(rng, model.late_tail)
    transit = days + late if late else _on_time_days(rng, model, days, origin, destination)
    if rng.random() < incidents.slowdown(pickup):
        transit += 1
    pickup_day = _local_date(pickup, zone)
    delivery_day = business_days_after(pickup_day, transit)

    haul = _line_haul(rng, profile, origin, destination, pickup, days,
                      _at(delivery_day, 3 * 60, destination.zone) - HOUR)
    # exceptions at the hubs (probability per hub scan, scaled by exception_spike)
    per_scan = 1.0 - (1.0 - model.exception_share) ** (1.0 / len(haul))
    known_late_at: int | None = None
    for index, scan in enumerate(haul):
        # a spike multiplies the probability of exceptions *opening* in it (10 to 90 minutes
        # after their scan): drawn against the largest factor those openings can meet, then
        # thinned by the factor at the drawn opening, so the exceptions of a spike open inside
        # its window. Outside spikes the ceiling is 1 and nothing more is drawn: the same bytes.
        ceiling = incidents.max_exception_factor(scan.time + 10 * MINUTE,
                                                 scan.time + 90 * MINUTE + 1)
        if rng.random() < per_scan * ceiling:
            opened = scan.time + rng.randint(10 * MINUTE, 90 * MINUTE)
            if ceiling > 1.0 and rng.random() * ceiling >= incidents.exception_factor(opened):
                continue
            reason = _choice(rng, _EXCEPTION_REASONS)
            lasting = min(max(int(8 * HOUR * math.exp(0.6 * rng.gauss(0, 1))), 2 * HOUR),
                          40 * HOUR)
            resolved = opened + lasting
            exception = _Draft("exception", opened, scan.place, reason=reason)
            resume = _Draft("in_transit", resolved, scan.place)
            rest = haul[index + 1:]
            if rest and rest[0].time < resolved + HOUR:
                shift = resolved + HOUR - rest[0].time
                for later in rest:
                    later.time += shift
            haul = [*haul[:index + 1], exception, resume, *rest]
            known_late_at = opened
            break
    drafts.extend(haul)

    # the destination day: arrival at the local hub before dawn, out for delivery, delivery
    last = drafts[-1].time
    if network.local or days == 0:
        if delivery_day < _local_date(last, destination.zone):
            delivery_day = business_days_after(_local_date(last, destination.zone), 0)
    else:  # the line haul must reach the destination hub before the morning sort
        while _at(delivery_day, 6 * 60, destination.zone) < last + 2 * HOUR:
            delivery_day = business_days_after(delivery_day, 1)
    if delivery_day != _local_date(promised_by, zone) and known_late_at is None and drafts:
        # the partner revises its ETA at the last hub scan before the delivery day
        known_late_at = drafts[-1].time
    eta = promised_by
    revised = _end_of_day(delivery_day, destination.zone) - 4 * HOUR  # 20:00 local
    for draft in drafts[1:]:
        if known_late_at is not None and draft.time >= known_late_at:
            eta = revised
        draft.eta = eta

    attempt = 1
    same_day = network.local or days == 0
    spike_hit = False  # a delivery-day exception of an exception_spike (at most one)
    while True:
        if same_day and attempt == 1 and delivery_day == _local_date(last, destination.zone):
            staged = last + rng.randint(40 * MINUTE, 90 * MINUTE)
            out = staged + rng.randint(20 * MINUTE, 60 * MINUTE)
            attempt_time = out + rng.randint(40 * MINUTE, 3 * HOUR)
        else:
            staged = _at(delivery_day, rng.uniform(150, 360), destination.zone)
            out = _at(delivery_day, rng.uniform(390, 570), destination.zone)
            attempt_time = out + int(rng.triangular(0.5, 11.0, 4.5) * HOUR)
            attempt_time = min(attempt_time, _at(delivery_day, 20.5 * 60, destination.zone))
        staged = max(staged, drafts[-1].time + 30 * MINUTE)
        out = max(out, staged + 20 * MINUTE)
        attempt_time = max(attempt_time, out + 30 * MINUTE)
        window_end = (attempt_time // HOUR + 2) * HOUR
        if attempt == 1:
            drafts.append(_Draft("staged", staged, destination, eta=revised))
        drafts.append(_Draft("out_for_delivery", out, destination, eta=window_end))
        # an exception_spike hits the packages on their delivery day too (weather, vans
        # short): those on the van while it lasts, with the excess ``per_scan * (factor - 1)``
        # of a delivery-day exception whose base probability is one hub scan's, opening at an
        # even chance over the first 2 hours the van spends in the spike (after the
        # out-for-delivery scan, before the attempt). Drawn only inside a spike: without one,
        # the same bytes.
        exposed = None if spike_hit else incidents.first_spike_overlap(out + MINUTE,
                                                                       attempt_time - MINUTE)
        if (exposed is not None and rng.random()
                < min(1.0, per_scan * (incidents.exception_factor(exposed[0]) - 1.0))):
            spike_hit = True
            opened = rng.randint(exposed[0], min(exposed[1], exposed[0] + 2 * HOUR - MINUTE) - 1)
            next_day = business_days_after(delivery_day, 1)
            revised = _end_of_day(next_day, destination.zone) - 4 * HOUR
            drafts.append(_Draft("exception", opened, destination,
                                 reason=_choice(rng, _DELIVERY_DAY_REASONS), eta=revised))
            drafts.append(_Draft("in_transit", opened + rng.randint(30 * MINUTE, 2 * HOUR),
                                 destination, eta=revised))
            delivery_day = next_day
            continue
        fails = rng.random() < (model.first_attempt_failure if attempt == 1
                                else model.second_attempt_failure)
        if not fails:
            drafts.append(_Draft("delivered", attempt_time, destination, attempt=attempt,
                                 proof=_choice(rng, _PROOFS)))
            break
        reason = _choice(rng, _ATTEMPT_REASONS) if attempt == 1 else "recipient_not_available"
        next_day = business_days_after(delivery_day, 1)
        next_eta = _end_of_day(next_day, destination.zone) - 4 * HOUR
        drafts.append(_Draft("delivery_attempted", attempt_time, destination, reason=reason,
                             attempt=attempt, eta=next_eta))
        if reason == "refused":
            drafts.append(_Draft("returned", attempt_time + rng.randint(2 * HOUR, 6 * HOUR),
                                 destination))
            break
        if attempt == 2:
            held = attempt_time + rng.randint(2 * HOUR, 5 * HOUR)
            drafts.append(_Draft("available_for_pickup", held, destination))
            if rng.random() < model.collected_from_pickup_point:
                collect_day = business_days_after(delivery_day, rng.randint(1, 3))
                drafts.append(_Draft("delivered", _at(collect_day, rng.uniform(600, 1140),
                                                      destination.zone),
                                     destination, attempt=attempt, proof="pin"))
            else:
                drafts.append(_Draft("returned", _at(business_days_after(delivery_day, 5),
                                                     rng.uniform(480, 720), destination.zone),
                                     destination))
            break
        attempt += 1
        delivery_day = next_day
    return package, _finish(rng, profile, drafts, incidents)


def _finish(rng: random.Random, profile: PartnerProfile, drafts: list[_Draft],
            incidents: PartnerIncidents) -> list[SimScan]:
    """Freeze the drafts: strictly increasing whole-second times, visibility, code changes."""
    scans: list[SimScan] = []
    previous = -1
    for draft in drafts:
        moment = max(draft.time // 1000 * 1000, previous + 1000)
        previous = moment
        place = draft.place
        visible = (moment + profile.visibility.draw(rng) + incidents.extra_latency(moment))
        scans.append(SimScan(
            status=draft.status, event_time=moment, zone=place.zone, country=place.country,
            region=place.region, city=place.city, postal_code=place.postal_code,
            reason=draft.reason, attempt_number=draft.attempt, proof_of_delivery=draft.proof,
            eta_end=draft.eta, raw_code=incidents.changed_code(draft.status, moment),
            visible_at=visible))
    return scans
