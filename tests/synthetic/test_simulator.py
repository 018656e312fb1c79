"""The feed simulator end to end: real renderers in, real transformers out, incidents visible."""

from __future__ import annotations

import hashlib
import itertools
import statistics
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from synthetic_helpers import DAYS, INCIDENTS, ROOT, Run

from carrierwatch.core.model import CanonicalEvent
from carrierwatch.synthetic.rawlog import iter_rawlog, rawlog_name
from carrierwatch.synthetic.simulator import (
    DEFAULT_PARTNER_ORDER,
    SimulationError,
    simulate,
)

H = 3_600_000
D = 24 * H
START = 1_772_409_600_000  # 2026-03-02T00:00:00Z


def test_all_registered_partners_are_simulated_in_the_default_order(run: Run) -> None:
    assert list(run.manifest.partners) == list(DEFAULT_PARTNER_ORDER)
    assert run.manifest.arguments["start_ms"] == START
    assert run.manifest.arguments["end_ms"] == START + DAYS * D


def test_every_payload_transforms_with_zero_dead_letters(run: Run) -> None:
    for partner_id, output in run.outputs.items():
        assert output.records, partner_id
        dead = [d for result in output.results for d in result.dead_letters]
        assert not dead, (partner_id, dead[0].path, dead[0].error)
        assert all(result.events for result in output.results), partner_id


def test_files_match_the_manifest_and_records_are_in_received_order(run: Run) -> None:
    manifest = orjson.loads((run.out_dir / "manifest.json").read_bytes())
    assert manifest["seed"] == run.manifest.seed
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((run.out_dir / name).read_bytes()).hexdigest() == digest
    for partner_id, output in run.outputs.items():
        times = [r.received_time for r in output.records]
        assert times == sorted(times)
        assert times[0] >= START and times[-1] < START + DAYS * D
        assert {r.partner for r in output.records} == {partner_id}
        assert manifest["partners"][partner_id]["payloads"] == len(output.records)
    labels = orjson.loads((run.out_dir / "incidents.json").read_bytes())
    assert sorted(label["spec"] for label in labels) == sorted(INCIDENTS)
    keys = [(label["start"], label["partner"]) for label in labels]
    assert keys == sorted(keys)
    outage = next(label for label in labels if label["spec"] == INCIDENTS[0])
    assert (outage["kind"], outage["partner"], outage["start"], outage["end"]) == (
        "feed_outage", "fedex", START + 2 * D, START + 2 * D + 6 * H)
    assert outage["start_iso"] == "2026-03-04T00:00:00.000Z"


def test_codebook_gaps_appear_only_inside_the_codebook_change_window(run: Run) -> None:
    change = run.incident("codebook_change", "dhl")
    unknown = []
    for partner_id, output in run.outputs.items():
        for _, event in output.events():
            if event.status == "unknown":
                assert partner_id == "dhl", (partner_id, event.raw_code)
                assert change.covers(event.event_time)
                assert event.raw_code.startswith("NEW_") and event.confidence == 0
                unknown.append(event)
        gaps = [code for result in output.results for code in result.gaps]
        assert bool(gaps) == (partner_id == "dhl")
    assert len({e.event_id for e in unknown}) >= 20
    # every in-transit / out-for-delivery scan made inside the window came with a new code
    known_in_window = [e for e in run.outputs["dhl"].unique_events().values()
                       if change.covers(e.event_time)
                       and e.status in {"in_transit", "out_for_delivery"}]
    assert not known_in_window


def test_a_webhook_outage_queues_payloads_and_delivers_them_after(run: Run) -> None:
    outage = run.incident("feed_outage", "fedex")
    records = run.outputs["fedex"].records
    assert not [r for r in records if outage.covers(r.received_time)]
    backlog = [r for r in records if outage.end <= r.received_time < outage.end + 10 * 60_000]
    day_before = [r for r in records
                  if outage.start - D <= r.received_time < outage.end - D]
    assert len(backlog) >= 0.5 * len(day_before) > 20
    # the backlog carries scans made during the outage
    output = run.outputs["fedex"]
    late = [event for record, event in output.events() if record in backlog
            and outage.covers(event.event_time)]
    assert len(late) > 20


def test_a_poll_outage_skips_polls_and_the_next_poll_returns_full_history(run: Run) -> None:
    outage = run.incident("feed_outage", "ups")
    output = run.outputs["ups"]
    assert not [r for r in output.records if outage.covers(r.received_time)]
    first_poll = [i for i, r in enumerate(output.records)
                  if outage.end <= r.received_time < outage.end + 2 * H]
    assert first_poll
    made_during = [sum(outage.covers(e.event_time) for e in output.results[i].events)
                   for i in first_poll]
    assert sum(made_during) > 30 and max(made_during) >= 2
    # every response holds the package's whole visible history, which only grows
    counts: dict[str, list[int]] = defaultdict(list)
    for result in output.results:
        counts[result.events[0].package_id].append(len(result.events))
    assert all(a < b for sizes in counts.values() for a, b in itertools.pairwise(sizes))


def test_a_batch_outage_misses_the_drop_and_the_next_file_catches_up(run: Run) -> None:
    outage = run.incident("feed_outage", "valley_express")
    output = run.outputs["valley_express"]
    assert not [r for r in output.records if outage.covers(r.received_time)]
    drops = sorted({r.received_time // H for r in output.records})
    assert len(drops) == DAYS - 1  # one drop a day, minus the missed one
    after = [i for i, r in enumerate(output.records) if r.received_time >= outage.end]
    spans = [e.event_time for i in after[:1] for e in output.results[i].events]
    assert max(spans) - min(spans) > 36 * H  # two days of scans in the catch-up file
    assert all(r.headers["x-batch-file"].endswith(".csv") for r in output.records)


def test_an_exception_spike_multiplies_the_exception_share(run: Run) -> None:
    spike = run.incident("exception_spike", "easypost")
    events = run.outputs["easypost"].unique_events().values()
    inside = [e for e in events if spike.covers(e.event_time)]
    outside = [e for e in events if not spike.covers(e.event_time)
               and START <= e.event_time < START + DAYS * D]

    def share(sample: list[CanonicalEvent]) -> float:
        return sum(e.status == "exception" for e in sample) / len(sample)

    assert share(inside) >= 5 * share(outside) > 0


def test_latency_drift_raises_the_received_minus_event_latency(run: Run) -> None:
    drift = run.incident("latency_drift", "aftership")
    first_seen: dict[str, tuple[int, int]] = {}
    for record, event in run.outputs["aftership"].events():
        first_seen.setdefault(event.event_id, (event.event_time, record.received_time))
    half = (drift.start + drift.end) // 2

    def mean_latency(low: int, high: int) -> float:
        return statistics.mean(received - made for made, received in first_seen.values()
                               if low <= made < high)

    baseline = mean_latency(drift.start - (drift.end - half), drift.start)
    assert mean_latency(half, drift.end) > baseline + 2 * H


def test_a_peak_day_triples_the_volume(run: Run) -> None:
    peak = run.incident("peak_day", "shippo")
    labels = [e.event_time for e in run.outputs["shippo"].unique_events().values()
              if e.status == "info_received"]

    def count(shift: int) -> int:
        return sum(peak.start + shift <= t < peak.end + shift for t in labels)

    ratio = count(0) / statistics.mean([count(-D), count(D)])
    assert 2.2 <= ratio <= 3.8
    assert run.manifest.partners["shippo"].packages > 1.3 * run.manifest.partners["ups"].packages


def test_webhooks_repeat_history_duplicate_and_arrive_out_of_order(run: Run) -> None:
    output = run.outputs["easypost"]
    assert max(len(result.events) for result in output.results) >= 6
    bodies = Counter(record.body for record in output.records)
    assert sum(n > 1 for n in bodies.values()) >= 10  # resent webhooks
    assert any(r.headers["x-delivery-attempt"] == "2" for r in output.records)
    sizes: dict[str, list[int]] = defaultdict(list)
    for result in output.results:
        sizes[result.events[0].package_id].append(len(result.events))
    shrinking = sum(any(b < a for a, b in itertools.pairwise(s)) for s in sizes.values())
    assert shrinking >= 5  # an older payload retried and received after a newer one


def test_fedex_sends_double_delivered_notices(run: Run) -> None:
    delivered_pushes: Counter[str] = Counter()
    for result in run.outputs["fedex"].results:
        newest = max(result.events, key=lambda e: e.event_time)
        if newest.status == "delivered":
            delivered_pushes[newest.event_id] += 1
    assert sum(n >= 2 for n in delivered_pushes.values()) >= 0.5 * len(delivered_pushes) > 20


def test_batching_courier_posts_each_update_once_for_several_parcels(run: Run) -> None:
    output = run.outputs["metro_courier"]
    assert max(len({e.package_id for e in result.events}) for result in output.results) >= 2
    seen: Counter[str] = Counter()
    for record, result in zip(output.records, output.results, strict=True):
        if record.headers["x-delivery-attempt"] == "1":
            seen.update(e.event_id for e in result.events)
    assert max(seen.values()) == 1


def test_labels_are_created_over_business_hours(run: Run) -> None:
    hours = []
    for event in run.outputs["ups"].unique_events().values():
        if event.status == "info_received" and event.event_time >= START:
            assert event.location is not None and event.location.region is not None
            zone = {"US-NJ": "America/New_York", "US-OH": "America/New_York",
                    "US-TN": "America/Chicago", "US-TX": "America/Chicago",
                    "US-CA": "America/Los_Angeles", "US-GA": "America/New_York",
                    "US-IL": "America/Chicago", "US-KY": "America/New_York",
                    "US-AZ": "America/Phoenix", "US-IN": "America/New_York"}[
                        event.location.region]
            local = datetime.fromtimestamp(event.event_time / 1000, ZoneInfo(zone))
            hours.append(local.hour + local.minute / 60)
    business = sum(8 <= h < 17.5 for h in hours) / len(hours)
    assert 0.6 <= business <= 0.85
    assert sum(h < 6 for h in hours) / len(hours) < 0.06


def test_shares_on_the_transformed_feed(run: Run) -> None:
    attempted = failed = packages = exceptions = 0
    for partner_id in ("fedex", "ups", "dhl", "usps"):
        by_package: dict[str, list[str]] = defaultdict(list)
        for event in sorted(run.outputs[partner_id].unique_events().values(),
                            key=lambda e: e.event_time):
            by_package[event.package_id].append(event.status)
        for statuses in by_package.values():
            packages += 1
            exceptions += "exception" in statuses
            outcome = [s for s in statuses if s in {"delivered", "delivery_attempted"}]
            if outcome:
                attempted += 1
                failed += outcome[0] == "delivery_attempted"
    assert 0.04 <= failed / attempted <= 0.12
    assert 0.01 <= exceptions / packages <= 0.05


SMALL = dict(days=3, packages_per_day=25, start="2026-03-02", home=ROOT)
SMALL_PARTNERS = ["fedex", "ups", "metro_courier", "valley_express"]
SMALL_INCIDENTS = ["feed_outage@fedex:1d+6h", "exception_spike@ups:1d+1d",
                   "codebook_change@metro_courier:1d+1d", "peak_day@valley_express:1d+1d"]


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir())}


def test_same_seed_same_bytes_different_seed_different_bytes(tmp_path: Path) -> None:
    first = simulate(SMALL_PARTNERS, seed=7, incidents=SMALL_INCIDENTS,
                     out_dir=tmp_path / "a", **SMALL)  # type: ignore[arg-type]
    simulate(SMALL_PARTNERS, seed=7, incidents=SMALL_INCIDENTS, out_dir=tmp_path / "b",
             workers=2, **SMALL)  # type: ignore[arg-type]
    simulate(SMALL_PARTNERS, seed=8, incidents=SMALL_INCIDENTS, out_dir=tmp_path / "c",
             **SMALL)  # type: ignore[arg-type]
    a, b, c = (_digests(tmp_path / name) for name in "abc")
    assert len(a) == len(SMALL_PARTNERS) + 2
    assert a == b
    assert {name: digest for name, digest in a.items() if name in first.files} == first.files
    for partner_id in SMALL_PARTNERS:
        assert a[rawlog_name(partner_id)] != c[rawlog_name(partner_id)]
    assert a["incidents.json"] == c["incidents.json"]  # same labels, other data


def test_a_rerun_into_the_same_directory_leaves_no_stale_raw_logs(tmp_path: Path) -> None:
    simulate(["fedex", "ups"], seed=1, out_dir=tmp_path, **SMALL)  # type: ignore[arg-type]
    simulate(["ups"], seed=1, out_dir=tmp_path, **SMALL)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "incidents.json", "manifest.json", "ups.rawlog.jsonl"]
    assert sum(1 for _ in iter_rawlog(tmp_path / "ups.rawlog.jsonl")) > 50


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"partners": ["nobody"]}, "unknown partner 'nobody'"),
    ({"partners": 99}, "asked for 99"),
    ({"incidents": ["feed_outage@usps:1d+1h"]}, "partner 'usps' is not simulated"),
    ({"incidents": ["feed_outage@ups:9d+1h"]}, "is outside the simulation"),
    ({"days": 0}, "days must be at least 1"),
    ({"start": "March"}, "start must be a date"),
])
def test_bad_arguments_are_reported(tmp_path: Path, kwargs: dict[str, object],
                                    message: str) -> None:
    arguments: dict[str, object] = {"partners": ["ups"], "days": 2, "seed": 1,
                                    "out_dir": tmp_path, "packages_per_day": 5, "home": ROOT}
    arguments.update(kwargs)
    with pytest.raises(SimulationError, match=message):
        simulate(**arguments)  # type: ignore[arg-type]
