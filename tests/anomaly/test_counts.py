"""Count models: exact tails against scipy.stats, silence, bursts, small denominators, pickling."""

from __future__ import annotations

import math
import pickle
import random

import pytest
from scipy import stats

from carrierwatch.anomaly import make_detector
from carrierwatch.anomaly.counts import (
    CountModel,
    DailyCountModel,
    RateModel,
    TailShareModel,
    binomial_upper_tail,
    negative_binomial_upper_tail,
    poisson_lower_tail,
    poisson_upper_tail,
)
from carrierwatch.core.sketch import histogram_of

T0 = 1_772_409_600.0  # Monday 2026-03-02 00:00 UTC
STEP = 300.0


@pytest.mark.parametrize(("k", "mean"), [(1, 0.3), (4, 2.5), (17, 9.0), (0, 3.0)])
def test_poisson_tails_match_scipy_at_integers(k: int, mean: float) -> None:
    assert poisson_upper_tail(k, mean) == pytest.approx(float(stats.poisson.sf(k - 1, mean)))
    assert poisson_lower_tail(k, mean) == pytest.approx(float(stats.poisson.cdf(k, mean)))


@pytest.mark.parametrize(("k", "n", "p"), [(1, 10, 0.05), (3, 8, 0.004), (12, 40, 0.2)])
def test_binomial_tail_matches_scipy_at_integers(k: int, n: int, p: float) -> None:
    assert binomial_upper_tail(k, n, p) == pytest.approx(float(stats.binom.sf(k - 1, n, p)))


def _daily(i: int) -> float:
    """A day-shaped mean: busy 08:00-20:00 UTC, quiet at night."""
    hour = (i * STEP % 86_400) / 3600
    return 20.0 if 8 <= hour < 20 else 2.0


def test_count_model_stays_quiet_on_poisson_noise_and_flags_a_silence_at_once() -> None:
    rng = random.Random(3)
    model = CountModel()
    scores = []
    for i in range(5 * 288):
        mean = _daily(i)
        # Poisson draw by inversion (stdlib only)
        count, threshold, product = 0, pow(2.718281828459045, -mean), rng.random()
        while product > threshold:
            count += 1
            product *= rng.random()
        scores.append(model.update(T0 + i * STEP, count))
    assert max(scores[2 * 288:]) < 0.5
    busy = 5 * 288 + 12 * 12  # 12:00 on day 6: 20 events expected per window
    for i in range(5 * 288, busy):
        model.update(T0 + i * STEP, round(_daily(i)))
    assert model.update(T0 + busy * STEP, 0) >= 0.5  # the first silent window


def test_a_polled_feed_bursts_every_two_hours_without_alarming() -> None:
    model = CountModel()
    scores = [model.update(T0 + i * STEP, 240 if i % 24 == 1 else 0) for i in range(6 * 288)]
    assert max(scores[2 * 288:]) < 0.5
    assert model.dispersion[1] > 50  # the bursts are learned as dispersion, not as anomalies


def test_rate_model_does_not_alarm_on_one_exception_in_a_few_events() -> None:
    rng = random.Random(5)
    model = RateModel()
    scores = []
    for i in range(3000):
        trials = rng.randrange(0, 8)
        successes = sum(rng.random() < 0.004 for _ in range(trials))
        scores.append(model.update(T0 + i * STEP, successes, trials))
    assert max(scores) < 0.5
    assert model.update(T0, 1, 2) < 0.5  # 50 % of two events: no evidence
    assert model.update(T0, 6, 10) >= 0.5  # six exceptions where 0.04 are expected


def test_tail_share_model_flags_a_latency_drift() -> None:
    rng = random.Random(9)
    model = TailShareModel()
    normal = [model.update(T0 + i * STEP, histogram_of(
        [int(rng.expovariate(1 / 600_000)) for _ in range(20)])) for i in range(1000)]
    assert max(normal) < 0.5 and model.cut is not None
    drift = [model.update(T0 + (1000 + i) * STEP, histogram_of(
        [int(rng.expovariate(1 / 600_000)) + 1_800_000 for _ in range(20)])) for i in range(3)]
    assert max(drift) >= 0.5


def test_models_pickle_and_continue_identically() -> None:
    model = CountModel(warmup_windows=50)
    for i in range(400):
        model.update(T0 + i * STEP, 10 + i % 4)
    copy = pickle.loads(pickle.dumps(model))
    tail = [(T0 + (400 + i) * STEP, (0 if i > 5 else 11)) for i in range(20)]
    assert [model.update(t, c) for t, c in tail] == [copy.update(t, c) for t, c in tail]


def test_holt_winters_starts_on_an_all_zero_day() -> None:
    # river initialises an additive season as y / level: an all-zero first day divided by zero
    detector = make_detector("holt_winters")
    scores = []
    for i in range(3 * 288):
        point = (T0 + i * STEP, 0.0 if i < 288 else float(i % 3))
        scores.append(detector.score_one(point))
        detector.learn_one(point)
        if i == 287:  # one season learned: components initialised additively
            model = detector.model  # type: ignore[attr-defined]
            assert model._initialized and model.level[-1] == 0.0
            assert set(model.season) == {0.0}  # deviations from the level, not ratios
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_a_poll_that_does_not_come_is_flagged_soon_after_it_was_due() -> None:
    model = CountModel()
    cycle = 36  # polled every 3 hours: one burst, then 35 empty windows
    scores = [model.update(T0 + i * STEP, 500 if i % cycle == 1 else 0) for i in range(5 * 288)]
    assert max(scores[2 * 288:]) < 0.5  # the quiet windows between polls are no news
    assert model.longest_gap == cycle - 1
    start = 5 * 288
    missed = [model.update(T0 + (start + k) * STEP, 0) for k in range(2 * cycle)]
    due = (1 - start) % cycle  # the window the next poll was due in
    assert max(missed[:due + 1]) < 0.5  # not before the poll is overdue
    first = next(k for k, s in enumerate(missed) if s >= 0.5)
    assert due < first <= due + 4  # flagged within 4 windows (20 minutes) of the missed poll


def test_a_large_poll_spread_over_windows_that_does_not_come_is_flagged() -> None:
    """A poll of thousands of events takes several windows to arrive and its size swings with
    the hours it covers: its first window says little of its size (a huge dispersion), but a
    poll that does not come at all is still a verdict once it is overdue."""
    rng = random.Random(17)
    model = CountModel()
    cycle, spread = 36, 5  # every 3 hours, each poll over 5 windows
    polls: dict[int, list[float]] = {}
    scores = []
    for i in range(6 * 288):
        phase = i % cycle
        if phase == 1:
            size = 3000 * (1 + 0.6 * math.sin(2 * math.pi * i / 288)) * rng.uniform(0.8, 1.2)
            polls[i] = [size * share for share in (0.14, 0.22, 0.22, 0.22, 0.20)]
        start = i - phase + 1
        count = round(polls[start][phase - 1]) if start in polls and phase <= spread else 0
        scores.append(model.update(T0 + i * STEP, count))
    assert max(scores[2 * 288:]) < 0.5  # polls of every size and their gaps are no news
    assert model.span_dispersion.mean > 100  # first windows against whole gaps: no evidence
    assert model.poll_relative_variance() is not None
    start = 6 * 288
    missed = [model.update(T0 + (start + k) * STEP, 0) for k in range(2 * cycle)]
    due = (1 - start) % cycle
    assert max(missed[:due + 1]) < 0.5
    first = next(k for k, s in enumerate(missed) if s >= 0.5)
    assert due < first <= due + 4


def test_a_few_percent_exceptions_for_hours_are_flagged_within_the_4_hour_horizon() -> None:
    rng = random.Random(11)
    model = RateModel()
    for i in range(3000):
        trials = rng.randrange(10, 25)
        model.update(T0 + i * STEP, sum(rng.random() < 0.004 for _ in range(trials)), trials)
    spike = []
    for i in range(48):  # four hours at 4 % (ten times the usual share)
        trials = rng.randrange(10, 25)
        spike.append(model.update(T0 + (3000 + i) * STEP,
                                  sum(rng.random() < 0.04 for _ in range(trials)), trials))
    assert max(spike) >= 0.5


def test_hourly_seasons_do_not_let_the_current_hour_learn_itself() -> None:
    # 3 days at 10 per window, then an hour at 13 (not flagged, so learned)
    hourly, per_window = CountModel(), CountModel(hourly_seasons=False)
    start = 3 * 288
    for model in (hourly, per_window):
        for i in range(start):
            model.update(T0 + i * STEP, 10.0)
        for i in range(start, start + 11):
            assert model.update(T0 + i * STEP, 13.0) < model.learn_below
    later = T0 + (start + 11) * STEP
    assert hourly.base(later) == pytest.approx(10.0)  # the hour's past level
    assert per_window.base(later) > 10.5  # followed the current hour's windows
    hourly.update(later, 13.0)
    hourly.update(later + 3600.0, 10.0)  # the next hour: the finished one is folded in
    assert hourly.base(later) == pytest.approx(13.0)


def test_the_scale_of_a_polled_feed_does_not_depend_on_the_poll_phase() -> None:
    # polled every 3 hours, 5 to 30 minutes past the hour: over the last 36 windows the scale
    # swung between 0.2 (the poll left the span, the rest of its hour stayed) and 2 (two polls
    # in the span); over whole hours (6 = two cycles) it holds every poll's hour in full
    rng = random.Random(7)
    cycle = 36
    polls = {cycle * k + 1 + rng.randrange(0, 6) for k in range(5 * 288 // cycle + 2)}
    model = CountModel()
    scales = []
    for i in range(5 * 288):
        model.update(T0 + i * STEP, 300 if i in polls else 0)
        if i >= 4 * 288:
            scales.append(model.scale())
    assert 0.9 < min(scales) <= max(scales) < 1.1
    silent = [model.update(T0 + (5 * 288 + k) * STEP, 0) for k in range(cycle + 12)]
    assert max(silent) >= 0.5  # the missed poll is expected in full


def _poisson(rng: random.Random, mean: float) -> int:
    count, threshold, product = 0, pow(2.718281828459045, -mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def _labels(i: int) -> float:
    """Labels per window: business hours 13:00-22:00 UTC, weekends at a third (T0 is a Monday)."""
    hour = (i * STEP % 86_400) / 3600
    weekend = (i * STEP // 86_400) % 7 >= 5
    return (3.0 if 13 <= hour < 22 else 0.05) * (0.35 if weekend else 1.0)


@pytest.mark.parametrize(("count", "mean", "tau2"), [(80, 50.0, 0.04), (12, 10.0, 0.2),
                                                      (300, 150.0, 0.01)])
def test_negative_binomial_tail_matches_scipy(count: int, mean: float, tau2: float) -> None:
    size = 1 / tau2
    expected = float(stats.nbinom.sf(count - 1, size, size / (size + mean)))
    assert negative_binomial_upper_tail(count, mean, tau2) == pytest.approx(expected)


def test_daily_model_compares_a_monday_with_weekdays_and_flags_a_peak_day() -> None:
    rng = random.Random(21)
    model = DailyCountModel()
    days = 15  # Monday to the next Monday but one: the first Monday after a weekend included
    scores = [model.update(T0 + i * STEP, _poisson(rng, _labels(i))) for i in range(days * 288)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert max(scores) < 0.5  # weekends are quieter, and Mondays are weekdays again
    assert model.day_start_hour is not None and not 13 <= model.day_start_hour < 22
    start = days * 288  # a Tuesday at three times the labels from 14:00 UTC
    peak = [model.update(T0 + i * STEP, _poisson(
        rng, _labels(i) * (3.0 if (i - start) >= 14 * 12 else 1.0))) for i in range(start, start + 288)]
    first = next(k for k, s in enumerate(peak) if s >= 0.5)
    assert 14 * 12 <= first <= 17 * 12  # within 3 hours of the peak's start


def test_daily_model_does_not_learn_a_day_far_below_its_expectation() -> None:
    rng = random.Random(4)
    model = DailyCountModel()
    for i in range(10 * 288):
        model.update(T0 + i * STEP, _poisson(rng, _labels(i)))
    hour = int((T0 + (10 * 288 + 20 * 12) * STEP) // 3600)  # 20:00 on day 11 (a Thursday)
    before = model.hour_expected(hour)
    for i in range(10 * 288, 11 * 288):  # an outage from 15:00: nothing more that day
        silent = (i - 10 * 288) >= 15 * 12
        assert model.update(T0 + i * STEP, 0 if silent else _poisson(rng, _labels(i))) < 0.5
    assert model.hour_expected(hour + 7 * 24) == before  # the same hour next week: unchanged


def test_daily_model_takes_a_feed_delivering_each_hour_at_once() -> None:
    rng = random.Random(8)
    model = DailyCountModel()
    scores = []
    for hour in range(16 * 24):  # the hour's labels arrive in one window at a random minute
        at = rng.randrange(12)
        total = sum(_poisson(rng, _labels(hour * 12 + k)) for k in range(12))
        scores += [model.update(T0 + (hour * 12 + k) * STEP, total if k == at else 0)
                   for k in range(12)]
    assert max(scores) < 0.5


def test_daily_model_pickles_and_continues_identically() -> None:
    rng = random.Random(2)
    model = DailyCountModel()
    for i in range(9 * 288):
        model.update(T0 + i * STEP, _poisson(rng, _labels(i)))
    copy = pickle.loads(pickle.dumps(model))
    tail = [(T0 + (9 * 288 + k) * STEP, _poisson(rng, 2 * _labels(9 * 288 + k)))
            for k in range(288)]
    assert [model.update(t, c) for t, c in tail] == [copy.update(t, c) for t, c in tail]


def _exception_runs(seeds: int, **params: float) -> tuple[list[int], int]:
    """First alarm (window) of a 3 % share after 3,000 windows at 0.4 % (5-19 events each),
    per seed (99: none in 4 hours), and the alarms during the normal windows."""
    firsts, false_alarms = [], 0
    for seed in range(seeds):
        rng = random.Random(seed)
        model = RateModel(**params)  # type: ignore[arg-type]
        for i in range(3000):
            trials = rng.randrange(5, 20)
            successes = sum(rng.random() < 0.004 for _ in range(trials))
            false_alarms += model.update(T0 + i * STEP, successes, trials) >= 0.5
        first = 99
        for i in range(48):
            trials = rng.randrange(5, 20)
            successes = sum(rng.random() < 0.03 for _ in range(trials))
            if model.update(T0 + (3000 + i) * STEP, successes, trials) >= 0.5 and first == 99:
                first = i
        firsts.append(first)
    return sorted(firsts), false_alarms


def test_the_cusum_finds_a_low_count_exception_rise_sooner() -> None:
    horizons, quiet = _exception_runs(12)
    cusum, cusum_quiet = _exception_runs(12, cusum_ratio=6.0)
    assert quiet == cusum_quiet == 0
    assert sum(f < 99 for f in cusum) >= sum(f < 99 for f in horizons)
    assert cusum[6] < horizons[6]  # the median first alarm is earlier


def test_a_cusum_starts_over_after_an_alarm() -> None:
    model = RateModel(cusum_ratio=4.0)
    for i in range(400):
        model.update(T0 + i * STEP, 0, 10)
    scores = [model.update(T0 + (400 + i) * STEP, 3, 10) for i in range(6)]
    assert max(scores) >= 0.5 and model.cusum < 25.0
    with pytest.raises(ValueError, match="cusum_ratio"):
        RateModel(cusum_ratio=1.0)


def test_a_lagged_rate_model_does_not_learn_a_rise_before_it_alarms() -> None:
    now, lagged = RateModel(), RateModel(learn_lag=48)
    for model in (now, lagged):
        for i in range(2000):
            model.update(T0 + i * STEP, int(i % 25 == 0), 10)
    bases = [now.rate, lagged.rate]
    for model in (now, lagged):
        for i in range(2000, 2012):  # an hour at 1 in 10: not significant yet
            assert model.update(T0 + i * STEP, int(i % 10 == 0), 10) < model.learn_below
    assert now.rate > bases[0] * 1.02  # learned at once
    assert lagged.rate < bases[1]  # only windows from before the rise were learned


def _webhook(i: int, factors: list[float]) -> float:
    """A webhook feed: up to ~6 events per 5 minutes at 14:00 UTC, 0.3 at night, half at
    weekends, times a level that changes from day to day (``factors``)."""
    hour = (i * STEP % 86_400) / 3600
    weekend = (i * STEP // 86_400) % 7 >= 5
    rate = 0.3 + 6.0 * math.sin(math.pi * (hour - 7) / 14) if 7 <= hour < 21 else 0.3
    return rate * (0.5 if weekend else 1.0) * factors[int(i * STEP // 86_400)]


def test_a_webhook_feed_that_stops_is_flagged_from_the_rate_of_its_last_two_hours() -> None:
    # the day's level differs from the learned one (x0.5-1.6 from day to day), so the seasonal
    # run test expects less and the 30-minute and 2-hour drops carry a wider dispersion; the
    # run tested against the last 2 hours' own rate (its lower bound) does not care
    stop = 3 * 288 + 14 * 12  # Thursday 14:00 UTC, ~4 events per window that day
    first: dict[int, int | None] = {}
    for windows in (0, 24):
        rng = random.Random(12)
        factors = [rng.uniform(0.5, 1.6) for _ in range(4)]
        model = CountModel(run_rate_windows=windows)
        before = [model.update(T0 + i * STEP, _poisson(rng, _webhook(i, factors)))
                  for i in range(stop)]
        assert max(before[2 * 288:]) < 0.5
        silent = [model.update(T0 + (stop + k) * STEP, 0) for k in range(48)]
        first[windows] = next((k for k, s in enumerate(silent) if s >= 0.5), None)
    assert first[24] is not None and first[24] <= 8
    assert first[0] is None or first[0] > first[24] + 4

def test_the_run_rate_test_ignores_the_bursts_of_a_polled_feed() -> None:
    # after a poll the last 2 hours held hundreds of events; their dispersion makes them no
    # evidence of a rate, so the empty windows until the next poll are not tested against it
    model = CountModel(run_rate_windows=24)
    scores = [model.update(T0 + i * STEP, 240 if i % 24 == 1 else 0) for i in range(6 * 288)]
    assert max(scores[2 * 288:]) < 0.5
    assert model.empty_run and model.run_rate == 0.0
    tested = CountModel(run_rate_windows=24, run_rate_max_phi=1e9)
    for i in range(6 * 288):
        tested.update(T0 + i * STEP, 240 if i % 24 == 1 else 0)
    assert tested.run_rate > 0.0  # without the cap it is tested (and weak)


def test_the_hour_skipped_by_summer_time_learns_the_hour_before_it() -> None:
    """Timestamps in local wall-clock time skip an hour at the switch to summer time; that hour
    of week learns the hour before it, not keep last week's level (a feed's start-up)."""
    week, hour, window = 7 * 86_400, 3_600, 300
    model = CountModel()
    skipped_at = week + 2 * hour  # local 02:00 of the second week's first day never happens
    t = 0
    while t < week + 4 * hour:
        if not skipped_at <= t < skipped_at + hour:
            count = 0.0 if t < week and (t // hour) % 168 == 2 else 10.0
            model.update(float(t), count)
        t += window
    assert model.weekly[2].mean > 4.0  # 0 in the first week, then the 01:00 hour's 10
    assert model.weekly[1].mean == pytest.approx(10.0)


def test_a_silence_once_suspect_is_not_learned_when_its_score_dips() -> None:
    """A run of empty windows scored at least ``learn_below`` stays unlearned until data come
    back, even when its score later dips (here: when the 30-minute horizon's larger dispersion
    joins the run test), so an outage does not teach its hours of week that zero is normal."""
    rng = random.Random(17)
    factors = [rng.uniform(0.1, 1.9) for _ in range(200)]  # 2-hour blocks: a very bursty feed
    model = CountModel()
    stop = 5 * 288 + 10 * 12
    for i in range(stop):
        model.update(T0 + i * STEP, _poisson(rng, 10 * factors[i // 24]))
    scores, learned = [], []
    for k in range(48):
        scores.append(model.update(T0 + (stop + k) * STEP, 0))
        learned.append(model.learned)
    first = next(k for k, s in enumerate(scores) if s >= model.learn_below)
    assert any(s < model.learn_below for s in scores[first:])  # the dip this is about
    assert learned[-1] == learned[first] == learned[first - 1]  # none of the run after it
    assert model.run_held
    model.update(T0 + (stop + 48) * STEP, 10)  # data again: the run is over
    assert not model.run_held
