"""Count models for sparse windowed streams: quasi-Poisson counts and quasi-binomial rates.

A partner's 5-minute window holds a handful of events. A detector fed the raw value of such a
window (a volume of 3, an exception rate of 1/7) sees mostly noise: an empty window is normal at
night, one exception in seven events is a 14 % rate. These models score the *evidence* instead:
how unlikely the observed counts are under what was learned, over several trailing horizons.

* :class:`CountModel` — events per window. The expected count of a window is a seasonal level
  (hour of week once that hour has been seen, else hour of day) times a *scale* (observed /
  expected over the last completed hours, so a quieter weekend or a growing partner is not an
  anomaly). For each horizon ``K`` (default 1, 6 and 24 windows: 5 minutes, 30 minutes, 2 hours)
  the trailing sum ``S`` is compared with its expectation ``M`` under a quasi-Poisson law:
  ``S / phi ~ Poisson(M / phi)`` where the dispersion ``phi >= 1`` is learned per horizon and
  per side as the running mean of ``(S - M)^2 / M`` (bursty feeds, e.g. polled every two
  hours, learn a large ``phi`` for rises and their bursts are not alarming).
  A run of empty windows is tested on its own (``P(0) = exp(-M_run / phi)``), so a silent feed
  that usually sends 20 events per window is significant in its first empty window, and also
  against the rate of the 2 hours before it (lower confidence bound), so a feed whose learned
  level is off that day is not given the benefit of the doubt for long.
* :class:`RateModel` — ``x`` of ``n`` (exceptions of events, unmapped codes of events, dead
  letters of payloads, late of decided packages). The rate ``p`` is learned from decayed sums;
  for each horizon the upper tail ``P(Binomial(N / phi, p) >= X / phi)`` is computed, with the
  dispersion learned the same way. A rate over 3 events is therefore scored as 3 events, not as
  a fraction.
* :class:`TailShareModel` — a distribution (latency, event age) as a histogram of
  :mod:`carrierwatch.core.sketch` buckets: the share of values above the learned 90th percentile
  is a :class:`RateModel` (expected 10 %); a latency drift raises it.

The smallest tail probability over the horizons (and the run test), times the number of tests
(Bonferroni), becomes the score ``ln(q + 1e-10) / ln(1e-10)``
(:func:`~carrierwatch.anomaly.calibration.log_likelihood_score`): 0.5 means ``q = 1e-5``.
Windows scoring at least ``learn_below`` (0.2, below the alarm threshold: an incident that is
building up must not be learned before it alarms) are not learned; ``relearn_after`` such
windows in a row are accepted as the new normal. Every model is pure, O(horizon) per window and
picklable.

Examples
--------
A feed sending about 20 events per window that falls silent:

>>> model = CountModel(warmup_windows=50)
>>> t0 = 1_772_409_600.0
>>> scores = [model.update(t0 + 300 * i, 18 + i % 5) for i in range(700)]
>>> max(scores) < 0.5
True
>>> model.update(t0 + 300 * 700, 0) >= 0.5
True

Four exceptions in eight events where 0.4 % are exceptions:

>>> rates = RateModel(warmup_trials=100)
>>> normal = [rates.update(t0 + 300 * i, int(i % 25 == 0), 10) for i in range(1000)]
>>> max(normal) < 0.5 < rates.update(t0 + 300_000, 4, 8)
True
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence

from scipy import special

from carrierwatch.anomaly.calibration import log_likelihood_score
from carrierwatch.core.sketch import bucket_of, quantile

__all__ = [
    "DEFAULT_HORIZONS",
    "RATE_HORIZONS",
    "CountModel",
    "DailyCountModel",
    "RateModel",
    "TailShareModel",
    "binomial_upper_tail",
    "negative_binomial_upper_tail",
    "poisson_lower_tail",
    "poisson_upper_tail",
]

DEFAULT_HORIZONS: tuple[int, ...] = (1, 6, 24)
"""Trailing horizons in windows: 5 minutes, 30 minutes, 2 hours of 5-minute windows."""

POLL_HISTORY = 32
"""Whole polls whose relative size excess is kept (their median is the poll ``tau^2``)."""

POLL_MAX_WINDOWS = 12
"""A run of non-empty windows after a gap longer than this (an hour) is a steady feed, not one
poll (see :class:`CountModel`'s arrival cycle)."""

RATE_HORIZONS: tuple[int, ...] = (1, 6, 24, 48)
"""Trailing horizons of rates (and tail shares): 4 hours as well, because a few percent of a
partner's 200 events per hour needs hours of evidence."""

HOUR = 3600.0
DAY = 24 * HOUR
WEEK = 7 * DAY


def poisson_upper_tail(count: float, mean: float) -> float:
    """``P(X >= count)`` for ``X ~ Poisson(mean)``, continuous in ``count`` (regularised gamma).

    >>> round(poisson_upper_tail(3, 1.0), 4)        # 1 - e^-1 (1 + 1 + 1/2)
    0.0803
    >>> poisson_upper_tail(0, 5.0)
    1.0
    """
    if count <= 0.0:
        return 1.0
    if mean <= 0.0:
        return 0.0
    return float(special.gammainc(count, mean))


def poisson_lower_tail(count: float, mean: float) -> float:
    """``P(X <= count)`` for ``X ~ Poisson(mean)``, continuous in ``count``.

    >>> round(poisson_lower_tail(0, 2.0), 4)        # e^-2
    0.1353
    """
    if mean <= 0.0:
        return 1.0
    return float(special.gammaincc(max(count, 0.0) + 1.0, mean))


def binomial_upper_tail(successes: float, trials: float, p: float) -> float:
    """``P(X >= successes)`` for ``X ~ Binomial(trials, p)``, continuous (regularised beta).

    >>> round(binomial_upper_tail(2, 10, 0.1), 4)   # 1 - 0.9^10 - 10 * 0.1 * 0.9^9
    0.2639
    >>> binomial_upper_tail(0, 10, 0.1)
    1.0
    """
    if successes <= 0.0:
        return 1.0
    if successes > trials or p <= 0.0:
        return 0.0 if p <= 0.0 or successes > trials + 1e-9 else float(p ** trials)
    return float(special.betainc(successes, trials - successes + 1.0, min(p, 1.0)))


def negative_binomial_upper_tail(count: float, mean: float, relative_variance: float) -> float:
    """``P(X >= count)`` for a negative binomial of mean ``mean`` and variance
    ``mean + relative_variance * mean^2``, continuous in ``count`` (regularised beta).

    >>> from scipy import stats
    >>> r, p = 1 / 0.04, 1 / (1 + 0.04 * 50)      # mean 50, variance 50 + 0.04 * 50^2
    >>> tail = negative_binomial_upper_tail(80, 50, 0.04)
    >>> bool(abs(tail - stats.nbinom.sf(79, r, p)) < 1e-9)
    True
    """
    if count <= 0.0:
        return 1.0
    if mean <= 0.0:
        return 0.0
    if relative_variance <= 0.0:
        return poisson_upper_tail(count, mean)
    size = 1.0 / relative_variance
    return float(special.betainc(count, size, mean / (mean + size)))


def _score(tail: float, tests: int) -> float:
    return log_likelihood_score(min(1.0, tail * tests))


class _Dispersion:
    """Running mean of squared standardized residuals per horizon (floored at 1)."""

    __slots__ = ("alpha", "cap", "values")

    def __init__(self, horizons: Sequence[int], alpha: float, cap: float) -> None:
        self.alpha = alpha
        self.cap = cap
        self.values = dict.fromkeys(horizons, 1.0)

    def __getstate__(self) -> dict[str, object]:
        return {"alpha": self.alpha, "cap": self.cap, "values": self.values}

    def __setstate__(self, state: dict[str, object]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

    def update(self, horizon: int, squared: float) -> None:
        term = min(squared, self.cap)
        self.values[horizon] += self.alpha * (term - self.values[horizon])

    def __getitem__(self, horizon: int) -> float:
        return max(1.0, self.values[horizon])


class _Level:
    """Exponentially weighted mean with a count of updates."""

    __slots__ = ("mean", "n")

    def __init__(self) -> None:
        self.mean = 0.0
        self.n = 0

    def __getstate__(self) -> tuple[float, int]:
        return self.mean, self.n

    def __setstate__(self, state: tuple[float, int]) -> None:
        self.mean, self.n = state

    def update(self, value: float, alpha: float) -> None:
        self.n += 1
        self.mean += max(alpha, 1.0 / self.n) * (value - self.mean)

    def update_many(self, mean: float, count: int, alpha: float) -> None:
        """Fold in ``count`` values of mean ``mean`` at once (per-value memory ``alpha``)."""
        self.n += count
        weight = max(1.0 - (1.0 - alpha) ** count, count / self.n)
        self.mean += weight * (mean - self.mean)


class CountModel:
    """Quasi-Poisson surprise of a count per window with a seasonal expectation (module docs).

    Parameters
    ----------
    horizons
        Trailing sums tested, in windows.
    window_seconds
        Window length (timestamps are window starts in epoch seconds).
    day_alpha, week_alpha
        Memory of the hour-of-day and hour-of-week levels (per window of that hour).
    week_min_windows
        Windows an hour-of-week level needs before it replaces the hour-of-day one.
    season_min_windows
        Windows the hour-of-day level of a window needs before that window is scored.
    scale_windows
        Windows over which the scale (observed / expected) is measured, as whole completed
        hours (rounded up; the default 72 windows of 5 minutes = the last 6 completed hours,
        whole cycles of feeds polled every 1, 2 or 3 hours). Whole hours, not the last
        ``scale_windows`` windows: the expected count of a window is its hour's level, so a
        span that cuts an hour keeps part of a poll's expectation without the poll (a feed
        polled every 3 hours read a scale of 0.2 whenever its last poll left a 36-window
        span, and its outage then expected almost nothing).
    dispersion_alpha, dispersion_cap
        Memory of the dispersion and the cap of one squared residual.
    warmup_windows
        Learned windows before anything but 0 is scored.
    flag_threshold, learn_below, relearn_after
        Windows scoring at least ``learn_below`` (capped at ``flag_threshold``, the monitor's
        alarm threshold) are not learned, nor are the later windows of a run of empty windows
        one of which was (its score can dip when a longer horizon's dispersion joins the run
        test, and an outage must not teach its hours that zero is normal);
        ``relearn_after`` of them in a row are accepted as a new level.
    two_sided
        Score drops (silence) as well as rises.
    novelty
        Relative uncertainty of the expectation of a window whose hour of week has not been
        learned yet (the first Saturday of a feed: only weekday hours are known). Rises are
        tested against ``(1 + novelty) x`` and drops against ``(1 - novelty) x`` the expected
        count of such windows.
    hourly_seasons
        Fold each hour's learned windows into its hour-of-day and hour-of-week levels when
        the hour is over (default), not window by window: otherwise the level of the current
        hour follows the current windows (the hour-of-week memory is 0.2 per window) and a
        rise that holds for an hour becomes its own expectation before it alarms.
    rise_below
        Learn the dispersion of rises only from windows scoring below ``learn_below`` (a peak
        building up must not widen its own tolerance); False (default): from every unflagged
        window. True found 1 more peak day of 3 but 2.5x the false alarms on the tuning seed.
    gap_level, gap_margin, gap_min
        The arrival cycle: the ``gap_level`` quantile of the learned runs of empty windows
        that ended with an arrival (at least ``gap_min`` of them) is the longest normal gap;
        a run longer by ``gap_margin`` windows is *an arrival that did not come*. Its tail is
        the smaller of two: ``P(0)`` of a negative binomial with the run's expected count as
        mean and the relative variance ``tau^2`` of whole polls (a poll being the run of
        non-empty windows after a gap, at most :data:`POLL_MAX_WINDOWS`; ``tau^2`` is the
        median of the last :data:`POLL_HISTORY` polls'
        ``((size - expected)^2 - expected) / expected^2`` over 0.455),
        ``(1 + tau^2 M)^(-1 / tau^2)``, once ``span_min`` polls are learned (a poll's size
        swings by tens of percent with the hours it covers, but one of thousands of events
        does not come empty); and quasi-Poisson with the dispersion of the arrivals' first
        windows, ``exp(-M / phi_span)``, which is no evidence when a large poll takes several
        windows to arrive (its first window against the whole gap's expectation) but the
        stronger one for short bursts of a few events.
    run_rate_windows, run_rate_level
        A run of empty windows is also tested against the feed's own rate just before it: the
        lower confidence bound (level ``run_rate_level``) of the count per unit of seasonal
        base over the ``run_rate_windows`` windows before the run, times the run's seasonal
        base, with the larger of the learned 1-window dispersions and those windows' own
        dispersion: ``P = exp(-M_local / phi)``. A webhook feed that stops is then flagged as
        soon as its recent rate allows, whatever its learned level says (its first weekend,
        a busier or quieter day than usual). A feed whose ``phi`` exceeds
        ``run_rate_max_phi`` (the bursts of a polled feed) is not tested this way: the test
        would be weak and only add to the Bonferroni count of its other tests (the run test of
        a polled feed on the bench came one window later with it). ``run_rate_windows=0``
        turns it off.
    """

    def __init__(self, *, horizons: Sequence[int] = DEFAULT_HORIZONS,
                 window_seconds: float = 300.0, day_alpha: float = 0.05,
                 week_alpha: float = 0.2, week_min_windows: int = 12,
                 season_min_windows: int = 24, scale_windows: int = 72,
                 dispersion_alpha: float = 0.005, dispersion_cap: float = 1e4,
                 warmup_windows: int = 288, flag_threshold: float = 0.5,
                 learn_below: float = 0.2, relearn_after: int = 144,
                 two_sided: bool = True, novelty: float = 0.3, gap_level: float = 0.99,
                 gap_margin: int = 2, gap_min: int = 16, rise_below: bool = False,
                 hourly_seasons: bool = True, run_rate_windows: int = 24,
                 run_rate_level: float = 0.05, run_rate_max_phi: float = 4.0) -> None:
        self.horizons = tuple(sorted(set(horizons)))
        self.window_seconds = window_seconds
        self.day_alpha = day_alpha
        self.week_alpha = week_alpha
        self.week_min_windows = week_min_windows
        self.season_min_windows = season_min_windows
        self.warmup_windows = warmup_windows
        self.flag_threshold = flag_threshold
        self.learn_below = min(learn_below, flag_threshold)
        self.relearn_after = relearn_after
        self.two_sided = two_sided
        self.novelty = novelty
        self.rise_below = rise_below
        self.hourly_seasons = hourly_seasons
        self.run_rate_windows = run_rate_windows
        self.run_rate_level = run_rate_level
        self.run_rate_max_phi = run_rate_max_phi
        # lower confidence bound of observed / seasonal base over the windows before the
        # current run of empty windows (0: no run, or no such test), and the expected count of
        # the run at that rate
        self.run_rate = 0.0
        self.run_expected = 0.0
        self.run_phi = 1.0
        self.hour: tuple[int, float, int] | None = None  # (hour, sum, windows) being learned
        self.last_timestamp: float | None = None  # of the previous window
        self.gap_level = gap_level
        self.gap_margin = gap_margin
        self.gap_min = gap_min
        self.daily: dict[int, _Level] = {}
        self.weekly: dict[int, _Level] = {}
        self.overall = _Level()
        per_hour = max(1, round(HOUR / window_seconds))
        # (observed, expected) of the last completed hours, and of the hour in progress
        self.recent: deque[tuple[float, float]] = deque(maxlen=-(-scale_windows // per_hour))
        self.scale_hour: tuple[int, float, float] | None = None
        # (count, expected, expected of novel windows, seasonal base)
        self.trail: deque[tuple[float, float, float, float]] = deque(
            maxlen=max(max(self.horizons), run_rate_windows + 1))
        self.dispersion = _Dispersion(self.horizons, dispersion_alpha, dispersion_cap)
        self.low_dispersion = _Dispersion(self.horizons, dispersion_alpha, dispersion_cap)
        # (expected, expected of novel windows) of the current run of empty windows
        self.empty_run: list[tuple[float, float]] = []
        # a window of the current run of empty windows scored >= learn_below: the rest of the
        # run is not learned either (its score can dip when a longer horizon's dispersion joins)
        self.run_held = False
        self.flagged: list[tuple[float, float]] = []
        self.learned = 0
        # the arrival cycle: runs of empty windows that ended with an arrival (learned ones)
        self.gaps: deque[int] = deque(maxlen=512)
        self.longest_gap: int | None = None
        self.span_dispersion = _Level()  # (size - expected)^2 / expected of such arrivals
        self.span_min = 8  # arrivals after a gap learned before their size is tested
        self.span: tuple[float, float, float] | None = None  # (count, expected, novel) of the
        # window that ended a run of empty windows, the run included
        # a whole poll: the run of non-empty windows after a gap, as (count, expected with the
        # gap's, windows, every window learnable), and the relative excess
        # ((size - expected)^2 - expected) / expected^2 of the last polls: their relative
        # variance is what the "arrival that did not come" test uses (a large poll takes
        # several windows to arrive, and its size swings with the hours it covers)
        self.poll: tuple[float, float, int, bool] | None = None
        self.poll_excess: deque[float] = deque(maxlen=POLL_HISTORY)

    def base(self, timestamp: float) -> float:
        """Seasonal expected count of the window starting at ``timestamp`` (before scaling)."""
        hour_of_week = int((timestamp % WEEK) // HOUR)
        weekly = self.weekly.get(hour_of_week)
        if weekly is not None and weekly.n >= self.week_min_windows:
            return weekly.mean
        daily = self.daily.get(hour_of_week % 24)
        if daily is not None and daily.n > 0:
            return daily.mean
        return self.overall.mean

    def scale(self) -> float:
        """Observed / expected over the last completed hours (clipped to [0.2, 5])."""
        observed = sum(c for c, _ in self.recent)
        expected = sum(b for _, b in self.recent)
        return min(5.0, max(0.2, (observed + 1.0) / (expected + 1.0)))

    def expected(self, timestamp: float) -> float:
        """Expected count of the window starting at ``timestamp``."""
        return max(self.base(timestamp) * self.scale(), 1e-3)

    def update(self, timestamp: float, count: float) -> float:
        """Score the window's ``count`` against what was learned, then learn it; return the
        score in [0, 1]."""
        if (self.hourly_seasons and self.last_timestamp is not None
                and timestamp - self.last_timestamp == HOUR + self.window_seconds
                and self.hour is not None and self.hour[0] == int(timestamp // HOUR) - 2):
            self._fold_hour(also_next=True)  # local time skipped an hour (summer time)
        self.last_timestamp = timestamp
        base = self.base(timestamp)
        mu = max(base * self.scale(), 1e-3)
        novel = mu if self._novel(timestamp) else 0.0
        self.trail.append((count, mu, novel, base))
        run = len(self.empty_run)
        if count == 0:
            self._end_poll()
            self.span = None
            if not self.empty_run:
                self.run_rate, self.run_phi = self._recent_rate()
                self.run_expected = 0.0
            self.run_expected += self.run_rate * base
            self.empty_run.append((mu, novel))
        else:
            self.span = ((count, mu + sum(m for m, _ in self.empty_run),
                          novel + sum(n for _, n in self.empty_run)) if self.empty_run else None)
            self.empty_run = []
            self.run_held = False
        daily = self.daily.get(int((timestamp % WEEK) // HOUR) % 24)
        ready = (self.learned >= self.warmup_windows and daily is not None
                 and daily.n >= self.season_min_windows)
        score = self._score() if ready else 0.0
        held = score >= self.learn_below or (count == 0 and self.run_held)
        if count > 0:
            self._grow_poll(count, mu, run, not held)
        if count == 0 and held:
            self.run_held = True
        if score < self.flag_threshold:
            self._learn_dispersion(not held)
        if held:
            self.flagged.append((timestamp, count))
            # the scale sees a flagged window as expected: neither learned nor a hole (a
            # flagged burst of a polled feed must not leave only its empty windows behind)
            self._add_to_scale(timestamp, mu, base)
            if self.relearn_after and len(self.flagged) >= self.relearn_after:
                self._relearn()
            return score
        self.flagged = []
        if count > 0:
            self._learn_gap(run)
        self._learn(timestamp, count, base)
        return score

    def _grow_poll(self, count: float, mu: float, run: int, learnable: bool) -> None:
        """Add a non-empty window to the poll in progress (or start one after a gap)."""
        if run > 0 and self.span is not None:
            self.poll = (count, self.span[1], 1, learnable)
        elif self.poll is not None:
            total, expected, windows, ok = self.poll
            # arrivals in every window for an hour: a steady feed, not a poll
            self.poll = None if windows >= POLL_MAX_WINDOWS else (
                total + count, expected + mu, windows + 1, ok and learnable)

    def _end_poll(self) -> None:
        """At the first empty window after a poll: learn the whole poll's size dispersion."""
        if self.poll is not None and self.learned >= self.warmup_windows // 2:
            total, expected, _, ok = self.poll
            if (ok or total >= expected) and expected > 0.0:
                self.poll_excess.append(((total - expected) ** 2 - expected) / expected ** 2)
        self.poll = None

    def poll_relative_variance(self) -> float | None:
        """``tau^2`` of whole polls' sizes (robust: the median relative excess over 0.455, the
        median of a chi-square with one degree of freedom), floored at 0.01; None before
        ``span_min`` polls."""
        if len(self.poll_excess) < self.span_min:
            return None
        return max(0.01, statistics.median(self.poll_excess) / 0.455)

    def _novel(self, timestamp: float) -> bool:
        """Whether the window's hour of week has not been learned yet."""
        weekly = self.weekly.get(int((timestamp % WEEK) // HOUR))
        return weekly is None or weekly.n < self.week_min_windows

    def _learn_gap(self, run: int) -> None:
        self.gaps.append(run)
        if len(self.gaps) >= self.gap_min and (self.longest_gap is None
                                               or len(self.gaps) % 8 == 0):
            ordered = sorted(self.gaps)
            self.longest_gap = ordered[min(len(ordered) - 1,
                                           int(self.gap_level * len(ordered)))]

    def _sums(self, horizon: int) -> tuple[float, float, float] | None:
        if len(self.trail) < horizon:
            return None
        total = mean = novel = 0.0
        for k in range(len(self.trail) - horizon, len(self.trail)):
            count, mu, new, _ = self.trail[k]
            total += count
            mean += mu
            novel += new
        return total, mean, novel

    def _score(self) -> float:
        tail = 1.0
        tests = 0
        c = self.novelty
        for horizon in self.horizons:
            sums = self._sums(horizon)
            if sums is None:
                continue
            total, mean, novel = sums
            phi = self.dispersion[horizon]
            tests += 2 if self.two_sided else 1
            tail = min(tail, poisson_upper_tail(total / phi, (mean + c * novel) / phi))
            if self.two_sided:
                low = max(phi, self.low_dispersion[horizon])
                tail = min(tail, poisson_lower_tail(total / low, (mean - c * novel) / low))
        span_phi = max(1.0, self.span_dispersion.mean)
        if self.span is not None and self.span_dispersion.n >= self.span_min:
            # an arrival after empty windows (a poll): its size against the gap's expectation
            total, mean, novel = self.span
            phi = span_phi
            tests += 2 if self.two_sided else 1
            tail = min(tail, poisson_upper_tail(total / phi, (mean + c * novel) / phi))
            if self.two_sided:
                tail = min(tail, poisson_lower_tail(total / phi, (mean - c * novel) / phi))
        if self.two_sided and self.empty_run:
            run = len(self.empty_run)
            expected = sum(m - c * n for m, n in self.empty_run)
            phi = max(max(self.low_dispersion[h], self.dispersion[h])
                      for h in self.horizons if h <= max(run, 1))
            tests += 1
            tail = min(tail, math.exp(-expected / phi))
            if self.run_rate > 0.0:
                # against the rate of the last hour before the run (its lower bound), per
                # window: a feed delivering every few minutes that stops is news within
                # minutes, whatever the seasonal level (a first weekend) says
                tests += 1
                tail = min(tail, math.exp(-self.run_expected / self.run_phi))
            if (self.longest_gap is not None and self.span_dispersion.n >= self.span_min
                    and run > self.longest_gap + self.gap_margin):
                # an arrival that did not come: the feed's own cycle is overdue. Quasi-Poisson
                # with the first windows' dispersion and, once whole polls are learned, P(0)
                # of a negative binomial with their relative variance (a poll's size swings
                # by tens of percent with the hours it covers, but a poll of thousands of
                # events does not come empty)
                tests += 1
                tail = min(tail, math.exp(-expected / span_phi))
                tau2 = self.poll_relative_variance()
                if tau2 is not None:
                    tests += 1
                    tail = min(tail, (1.0 + tau2 * max(expected, 0.0)) ** (-1.0 / tau2))
        return _score(tail, max(tests, 1))

    def _recent_rate(self) -> tuple[float, float]:
        """``(rate, phi)`` of the ``run_rate_windows`` windows before the newest one: ``rate``
        is the lower confidence bound (level ``run_rate_level``) of their count per unit of
        seasonal base, ``phi`` the larger of the learned 1-window dispersions and their own
        dispersion around that shape (``sum (c - m)^2 / m`` over the windows, divided by their
        number less one): the bursts of a polled feed make its count weak evidence of a rate.
        ``(0, 1)`` when off or too short."""
        size = self.run_rate_windows
        if size <= 1 or len(self.trail) < size + 1:
            return 0.0, 1.0
        window = [(count, base) for count, _, _, base in
                  itertools.islice(self.trail, len(self.trail) - size - 1, len(self.trail) - 1)]
        observed = sum(c for c, _ in window)
        expected = sum(b for _, b in window)
        if observed <= 0.0 or expected <= 0.0:
            return 0.0, 1.0
        ratio = observed / expected
        phi = max(self.dispersion[1], self.low_dispersion[1],
                  sum((c - ratio * b) ** 2 / max(ratio * b, 0.1) for c, b in window) / (size - 1))
        if phi > self.run_rate_max_phi:
            return 0.0, 1.0  # a bursty (polled) feed: its recent count is no rate; not tested
        bound = phi * float(special.gammaincinv(observed / phi, self.run_rate_level))
        return bound / expected, phi

    def _learn_dispersion(self, below: bool) -> None:
        """Learn the dispersion of rises from every window not flagged (bursty feeds learn
        their bursts) and that of drops only from windows below ``learn_below`` (a silence
        building up must not teach that silences are normal). Drops are tested with the larger
        of the two: the quiet windows between the bursts of a polled feed are no news."""
        if self.learned < self.warmup_windows // 2:
            return
        if self.span is not None and (below or self.span[0] >= self.span[1]):
            total, mean, _ = self.span
            self.span_dispersion.update(min((total - mean) ** 2 / max(mean, 0.1),
                                            self.dispersion.cap), self.dispersion.alpha * 4)
        for horizon in self.horizons:
            sums = self._sums(horizon)
            if sums is not None:
                total, mean, _ = sums
                squared = (total - mean) ** 2 / max(mean, 0.1)
                if total >= mean and (below or not self.rise_below):
                    self.dispersion.update(horizon, squared)
                if total <= mean and below:
                    self.low_dispersion.update(horizon, squared)

    def _learn(self, timestamp: float, count: float, base: float) -> None:
        if self.hourly_seasons:
            hour = int(timestamp // HOUR)
            if self.hour is not None and self.hour[0] != hour:
                self._fold_hour()
            if self.hour is None:
                self.hour = (hour, 0.0, 0)
            _, total, windows = self.hour
            self.hour = (hour, total + count, windows + 1)
        else:
            hour_of_week = int((timestamp % WEEK) // HOUR)
            self.daily.setdefault(hour_of_week % 24, _Level()).update(count, self.day_alpha)
            self.weekly.setdefault(hour_of_week, _Level()).update(count, self.week_alpha)
        self.overall.update(count, 0.01)
        self._add_to_scale(timestamp, count, base)
        self.learned += 1

    def _add_to_scale(self, timestamp: float, observed: float, expected: float) -> None:
        """Add a window to the hour in progress of the scale; a completed hour joins the span."""
        hour = int(timestamp // HOUR)
        if self.scale_hour is not None and self.scale_hour[0] != hour:
            _, seen, wanted = self.scale_hour
            self.recent.append((seen, wanted))
            self.scale_hour = None
        if self.scale_hour is None:
            self.scale_hour = (hour, 0.0, 0.0)
        _, seen, wanted = self.scale_hour
        self.scale_hour = (hour, seen + observed, wanted + expected)

    def _fold_hour(self, also_next: bool = False) -> None:
        """Fold the learned windows of the hour in progress into its seasonal levels; with
        ``also_next``, into the next hour of week's as well: with timestamps in local time,
        the switch to summer time skips an hour, whose hour of week would otherwise keep
        what it learned a week before (on the bench: a feed's start-up) for one more week."""
        if self.hour is None:
            return
        hour, total, windows = self.hour
        self.hour = None
        hour_of_week = int((hour * HOUR % WEEK) // HOUR)
        mean = total / windows
        self.daily.setdefault(hour_of_week % 24, _Level()).update_many(mean, windows,
                                                                        self.day_alpha)
        self.weekly.setdefault(hour_of_week, _Level()).update_many(mean, windows,
                                                                    self.week_alpha)
        if also_next:
            self.weekly.setdefault((hour_of_week + 1) % 168, _Level()).update_many(
                mean, windows, self.week_alpha)

    def _relearn(self) -> None:
        held, self.flagged = self.flagged, []
        self.recent.clear()
        self.scale_hour = None
        for timestamp, count in held:
            self._learn(timestamp, count, self.base(timestamp))
        self.empty_run = []
        self.run_held = False
        self.run_rate = self.run_expected = 0.0


class RateModel:
    """Quasi-binomial upper-tail surprise of ``x`` successes in ``n`` trials per window.

    Parameters
    ----------
    horizons
        Trailing sums tested, in windows.
    decay
        Per learned window, the learned sums are multiplied by ``1 - decay``.
    dispersion_alpha, dispersion_cap
        Memory of the dispersion and the cap of one squared residual.
    warmup_trials
        Trials learned before anything but 0 is scored.
    flag_threshold, learn_below, relearn_after
        As for :class:`CountModel`.
    dispersion_below
        Windows scoring below it teach the dispersion (default ``learn_below``: an exception
        rate creeping up must not widen its own tolerance before it alarms).
    learn_lag
        Learn windows ``learn_lag`` windows late (default 0: at once), and only if they scored
        below ``learn_below`` and the newest window does too, so that a rise that takes hours
        to become significant does not raise its own baseline first (the first two hours of an
        injected exception spike at 7x the share raised the learned rate by 40 %). With the
        longest horizon (48) it found no more spikes on the bench and added a false alarm on
        the tuning seed, so it is off by default.
    cusum_ratio, cusum_cap
        With a ratio ``k`` (None: off, the default; measured on the bench in docs/anomaly.md),
        also a sequential test: a CUSUM of the log-likelihood
        ratio of "the share is ``k`` times the learned rate" against "it is the learned rate",
        ``S = max(0, S + (x ln k + (n - x) ln((1 - k p) / (1 - p))) / phi_1)`` per window
        (``phi_1``: the 1-window dispersion), tested as ``P = exp(-S)`` (Wald's bound on the
        likelihood ratio ever reaching ``e^S`` under the learned rate). It accumulates the
        evidence of every event since the rise began, without the fixed horizons' Bonferroni
        correction, so a few exceptions in a few hundred events are a verdict within the hour.
        Its drift is negative while the share is below ``(k - 1) p / ln k`` (2.2 ``p`` for
        ``k = 4``), so a rate that is off by a factor 2 at some hours does not alarm. ``S``
        starts over at 0 after an alarm (otherwise it stays high for a night of few events
        after an incident) and is capped at ``cusum_cap``. The horizons (Bonferroni among
        themselves) and the CUSUM are two families: their smaller tail is doubled.
    """

    def __init__(self, *, horizons: Sequence[int] = RATE_HORIZONS, decay: float = 0.002,
                 dispersion_alpha: float = 0.005, dispersion_cap: float = 100.0,
                 warmup_trials: float = 300.0, flag_threshold: float = 0.5,
                 learn_below: float = 0.2, relearn_after: int = 144,
                 dispersion_below: float | None = None, cusum_ratio: float | None = None,
                 cusum_cap: float = 25.0, learn_lag: int = 0) -> None:
        if cusum_ratio is not None and cusum_ratio <= 1.0:
            raise ValueError(f"cusum_ratio must be > 1, got {cusum_ratio}")
        self.cusum_ratio = cusum_ratio
        self.cusum_cap = cusum_cap
        self.cusum = 0.0
        self.horizons = tuple(sorted(set(horizons)))
        self.learn_lag = learn_lag
        # windows waiting to be learned: (successes, trials, scored below learn_below)
        self.lagged: deque[tuple[float, float, bool]] = deque()
        self.dispersion_below = min(learn_below, flag_threshold) if dispersion_below is None \
            else min(dispersion_below, flag_threshold)
        self.decay = decay
        self.warmup_trials = warmup_trials
        self.flag_threshold = flag_threshold
        self.learn_below = min(learn_below, flag_threshold)
        self.relearn_after = relearn_after
        self.successes = 0.0
        self.trials = 0.0
        self.learned_trials = 0.0
        self.trail: deque[tuple[float, float]] = deque(maxlen=max(self.horizons))
        self.dispersion = _Dispersion(self.horizons, dispersion_alpha, dispersion_cap)
        self.flagged: list[tuple[float, float]] = []

    @property
    def rate(self) -> float:
        """The learned rate (a Jeffreys-like prior keeps it above 0)."""
        return (self.successes + 0.5) / (self.trials + 1.0)

    def update(self, timestamp: float, successes: float, trials: float) -> float:
        """Score ``successes`` of ``trials`` (with the trailing windows), then learn them."""
        del timestamp  # rates are not seasonal here; kept for a uniform signature
        self.trail.append((successes, trials))
        ready = self.learned_trials >= self.warmup_trials
        if self.cusum_ratio is not None and ready:
            self._update_cusum(successes, trials)
        score = self._score() if ready else 0.0
        if score >= self.flag_threshold:
            self.cusum = 0.0  # alarmed: the CUSUM starts over (an ongoing rise alarms again)
        if score < self.dispersion_below:  # a rise building up must not widen its tolerance
            self._learn_dispersion()
        learnable = score < self.learn_below
        self.lagged.append((successes, trials, learnable))
        if not learnable:
            self.flagged.append((successes, trials))
            if self.relearn_after and len(self.flagged) >= self.relearn_after:
                held, self.flagged = self.flagged, []
                self.lagged.clear()  # all of them are held (flagged in a row)
                for x, n in held:
                    self._learn(x, n)
        else:
            self.flagged = []
        while len(self.lagged) > self.learn_lag:
            x, n, ok = self.lagged.popleft()
            if ok and learnable:  # nor learned when a rise has built up since
                self._learn(x, n)
        return score

    def _sums(self, horizon: int) -> tuple[float, float] | None:
        if len(self.trail) < horizon:
            return None
        items = list(self.trail)[-horizon:]
        return sum(x for x, _ in items), sum(n for _, n in items)

    def _score(self) -> float:
        p = self.rate
        tail = 1.0
        tests = 0
        for horizon in self.horizons:
            sums = self._sums(horizon)
            if sums is None or sums[1] <= 0:
                continue
            x, n = sums
            phi = self.dispersion[horizon]
            tests += 1
            tail = min(tail, binomial_upper_tail(x / phi, n / phi, p))
        if self.cusum_ratio is None:
            return _score(tail, max(tests, 1))
        # two families, Bonferroni between them: the horizons (corrected among themselves)
        # and the CUSUM
        return _score(min(1.0, tail * max(tests, 1), math.exp(-self.cusum)), 2)

    def _update_cusum(self, successes: float, trials: float) -> None:
        """Add the window's log-likelihood ratio (``k p`` against ``p``) to the CUSUM."""
        assert self.cusum_ratio is not None
        p = self.rate
        raised = min(self.cusum_ratio * p, 0.999)
        ratio = (successes * math.log(raised / p)
                 + (trials - successes) * math.log((1.0 - raised) / (1.0 - p)))
        phi = self.dispersion[self.horizons[0]]
        self.cusum = min(self.cusum_cap, max(0.0, self.cusum + ratio / phi))

    def _learn_dispersion(self) -> None:
        if self.learned_trials < self.warmup_trials / 2:
            return
        p = self.rate
        for horizon in self.horizons:
            sums = self._sums(horizon)
            if sums is not None and sums[1] > 0:
                x, n = sums
                self.dispersion.update(horizon, (x - n * p) ** 2 / (n * p * (1 - p)))

    def _learn(self, successes: float, trials: float) -> None:
        keep = 1.0 - self.decay
        self.successes = self.successes * keep + successes
        self.trials = self.trials * keep + trials
        self.learned_trials += trials


class TailShareModel:
    """Share of a window's values above the learned 90th percentile, as a :class:`RateModel`.

    Values come as sparse histograms of :mod:`carrierwatch.core.sketch` buckets. The reference
    distribution is the decayed sum of the learned windows' histograms; its ``level`` quantile
    bucket is the cut, refreshed every ``refresh_windows`` learned windows (the rate model is
    reset when the cut moves, from the reference's own share above it).

    Parameters
    ----------
    level
        The reference quantile that defines "slow".
    refresh_windows, decay
        How often the cut is recomputed and how fast the reference forgets (per refresh).
    warmup_values
        Values in the reference before the first cut is set.
    warmup_windows
        Windows seen before anything but 0 is scored (a feed's first hours replay a backlog).
    rate_params
        Keyword parameters of the :class:`RateModel`. Its ``dispersion_below`` defaults to
        ``flag_threshold`` here: the tail share of a polled feed's event-time latency swings
        with the poll phase, and that swing is learned as dispersion.
    """

    def __init__(self, *, level: float = 0.9, refresh_windows: int = 288, decay: float = 0.3,
                 warmup_values: int = 300, warmup_windows: int = 288,
                 **rate_params: object) -> None:
        self.level = level
        self.warmup_windows = warmup_windows
        self.seen = 0
        self.refresh_windows = refresh_windows
        self.decay = decay
        self.warmup_values = warmup_values
        self.rate_params = dict(rate_params)
        self.rate_params.setdefault("dispersion_below",
                                    self.rate_params.get("flag_threshold", 0.5))
        self.reference: dict[int, float] = {}
        self.cut: int | None = None
        self.rates = RateModel(**self.rate_params)  # type: ignore[arg-type]
        self.since_refresh = 0

    def split(self, histogram: Mapping[int, int]) -> tuple[int, int]:
        """``(values above the cut, values)`` of a histogram (the cut not yet set: ``(0, n)``)."""
        total = sum(histogram.values())
        if self.cut is None:
            return 0, total
        cut = self.cut
        return sum(c for b, c in histogram.items() if b > cut), total

    def update(self, timestamp: float, histogram: Mapping[int, int]) -> float:
        """Score the window's histogram, then learn it unless flagged."""
        above, total = self.split(histogram)
        self.seen += 1
        if self.cut is None:
            self._absorb(histogram)
            return 0.0
        score = self.rates.update(timestamp, above, total)
        if self.seen <= self.warmup_windows:
            score = 0.0
        if score < self.rates.learn_below:
            self._absorb(histogram)
        return score

    def _absorb(self, histogram: Mapping[int, int]) -> None:
        for bucket, count in histogram.items():
            self.reference[bucket] = self.reference.get(bucket, 0.0) + count
        self.since_refresh += 1
        total = sum(self.reference.values())
        if total < self.warmup_values:
            return
        if self.cut is None or self.since_refresh >= self.refresh_windows:
            self.since_refresh = 0
            weights = {b: max(1, round(w)) for b, w in self.reference.items()}
            cut = quantile(weights, self.level)
            if cut is None:
                return
            new_cut = bucket_of(cut)
            if new_cut != self.cut:
                self.cut = new_cut
                above = sum(w for b, w in self.reference.items() if b > new_cut)
                rates = RateModel(**self.rate_params)  # type: ignore[arg-type]
                rates.successes, rates.trials = above, total
                rates.learned_trials = total
                rates.dispersion = self.rates.dispersion
                rates.trail = deque(self.rates.trail, maxlen=rates.trail.maxlen)
                self.rates = rates
            keep = 1.0 - self.decay
            self.reference = {b: w * keep for b, w in self.reference.items() if w * keep > 0.01}


class DailyCountModel:
    """Cumulative count so far in the partner's day against the same point of past days.

    A peak day (a sale, a shipper's quarter end: three times the labels) is a level that holds
    for hours. A per-window count test sees it as a burst that its dispersion (learned from every
    window, polled feeds included) hides, and its scale learns it within hours. This model asks
    the question an operator asks: *so many new packages by now, on a day like this?* The
    running count ``C`` since the start of the partner's day is compared with ``E``, the sum of
    the learned hourly levels of the same hours on the same weekday last week (once seen) or on
    previous days of the same type (weekday / weekend: a Monday is not compared with a Sunday).
    ``C`` is tested against a negative binomial of mean ``E`` and variance ``E + tau^2 E^2``:
    the Poisson part plus a relative day-to-day variance ``tau^2`` learned from past days at the
    same hour of the day (the first hours of a day swing with when shippers upload their label
    batches, the last hours hardly). ``tau^2`` is robust: the median of the last days'
    ``((C - E)^2 - E) / E^2`` divided by 0.455 (the median of a chi-square with one degree of
    freedom), so one odd day does not blind it. Only the upper tail alarms (drops are the count
    model's), but a day significantly *below* its expectation (a feed outage, a codebook change
    that hides the labels) is not learned either. The score is ``ln(q + 1e-10) / ln(1e-10)``
    (0.5 at ``q = 1e-5``).

    The partner's day starts at the quietest hour of its learned daily profile (its night, in
    the timestamps' clock: the monitor feeds the partner's local wall clock, so the day does
    not move with summer time; for a feed we poll, our UTC clock, on which its polls come),
    fixed once ``warmup_days`` have been seen; the model scores once a full day of checkpoints
    has been learned after that. Hours with a window
    scoring at least ``learn_below`` are not learned, and neither are the checkpoints of a
    flagged day; ``relearn_after`` flagged windows in a row (default 2 days) are accepted as the
    new normal.

    Parameters
    ----------
    window_seconds
        Window length (timestamps are window starts in epoch seconds).
    day_alpha, week_alpha
        Memory of the hourly levels of a day type and of an hour of week, per learned hour.
    warmup_days
        Days seen before the day start is fixed.
    min_expected
        Smallest expected count so far that is tested (the first hours of a day are noise).
    dispersion_prior, dispersion_floor, dispersion_days, excess_cap
        ``tau^2`` of an hour of the day with fewer than 3 learned days (then the mean over all
        hours of the last 3 days), its floor, how many days are kept per hour of the day, and
        the cap of one day's sample.
    flag_threshold, learn_below, relearn_after
        As for :class:`CountModel`.

    Examples
    --------
    Two weeks of a weekday profile with Poisson noise, then a day at twice the volume:

    >>> import random
    >>> rng = random.Random(1)
    >>> model = DailyCountModel()
    >>> t0 = 1_772_409_600.0                               # a Monday, 00:00 UTC
    >>> def rate(i):
    ...     hour = (i % 288) // 12
    ...     return 2.0 if 9 <= hour < 17 else 0.1
    >>> def draw(mean):                                    # Poisson by inversion
    ...     count, threshold, product = 0, math.exp(-mean), rng.random()
    ...     while product > threshold:
    ...         count, product = count + 1, product * rng.random()
    ...     return count
    >>> normal = [model.update(t0 + 300 * i, draw(rate(i))) for i in range(14 * 288)]
    >>> max(normal) < 0.5
    True
    >>> peak = [model.update(t0 + 300 * i, draw(2 * rate(i))) for i in range(14 * 288, 15 * 288)]
    >>> first = next(i for i, s in enumerate(peak) if s >= 0.5)
    >>> 9 * 12 < first < 13 * 12                           # flagged within 4 hours of 09:00
    True
    """

    def __init__(self, *, window_seconds: float = 300.0, day_alpha: float = 0.3,
                 week_alpha: float = 0.5, warmup_days: int = 2, min_expected: float = 50.0,
                 dispersion_prior: float = 0.05, dispersion_floor: float = 0.01,
                 dispersion_days: int = 14, excess_cap: float = 1.0,
                 flag_threshold: float = 0.5,
                 learn_below: float = 0.2, relearn_after: int = 576) -> None:
        self.window_seconds = window_seconds
        self.per_hour = max(1, round(HOUR / window_seconds))
        self.day_alpha = day_alpha
        self.week_alpha = week_alpha
        self.warmup_days = warmup_days
        self.min_expected = min_expected
        self.dispersion_prior = dispersion_prior
        self.dispersion_floor = dispersion_floor
        self.dispersion_days = dispersion_days
        self.excess_cap = excess_cap
        self.flag_threshold = flag_threshold
        self.learn_below = min(learn_below, flag_threshold)
        self.relearn_after = relearn_after
        # hourly totals: (weekend, hour of day) and hour of week
        self.daily: dict[tuple[bool, int], _Level] = {}
        self.weekly: dict[int, _Level] = {}
        self.first: float | None = None
        self.day_start_hour: int | None = None  # UTC hour at which the partner's day starts
        self.hour: tuple[int, float, bool] | None = None  # (hour, count, not to be learned)
        self.day: int | None = None
        self.count = 0.0  # so far in the day
        self.expected = 0.0  # expected so far in the day (< 0: an hour is unknown, not scored)
        self.day_flagged = False
        # ((C - E)^2 - E) / E^2 at the end of each learned hour: per hour of the partner's day
        # (0 = its first hour) and over all hours
        self.excess_at: dict[int, deque[float]] = {}
        self.excess: deque[float] = deque(maxlen=24 * 3)
        self.flagged: list[tuple[int, float]] = []  # (hour, count) of flagged windows

    def _key(self, hour: int) -> tuple[bool, int]:
        """(weekend, hour of day) of an absolute hour, the weekend of the partner's day."""
        offset = self.day_start_hour or 0
        weekday = int(((hour - offset) * HOUR // DAY + 3) % 7)  # epoch day 0 was a Thursday
        return weekday >= 5, hour % 24

    def hour_expected(self, hour: int) -> float | None:
        """Expected count of an absolute hour (``timestamp // 3600``), ``None`` if unknown."""
        weekly = self.weekly.get(int((hour * HOUR % WEEK) // HOUR))
        if weekly is not None and weekly.n >= 1:
            return weekly.mean
        daily = self.daily.get(self._key(hour))
        if daily is not None and daily.n >= 1:
            return daily.mean
        return None

    @property
    def ready(self) -> bool:
        """Whether the day start is fixed and a full day of checkpoints has been learned."""
        return self.day_start_hour is not None and len(self.excess) >= 24

    def relative_variance(self, hour: int | None = None) -> float:
        """``tau^2`` by the end of an absolute hour (see the class docs); without ``hour``, or
        with fewer than 3 learned days at that hour of the day, over all hours."""
        samples: Sequence[float] = self.excess
        if hour is not None and self.day_start_hour is not None:
            at = self.excess_at.get((hour - self.day_start_hour) % 24)
            if at is not None and len(at) >= 3:
                samples = at
        if len(samples) < 3:
            return self.dispersion_prior
        return max(self.dispersion_floor, sum(samples) / len(samples))

    def update(self, timestamp: float, count: float) -> float:
        """Add the window's ``count`` to the day so far, score the day so far, learn."""
        if self.first is None:
            self.first = timestamp
        hour = int(timestamp // HOUR)
        if self.hour is not None and self.hour[0] != hour:
            self._close_hour()
        if self.day_start_hour is None and timestamp - self.first >= self.warmup_days * DAY:
            self._fix_day_start()
        day = None if self.day_start_hour is None else \
            int((timestamp - self.day_start_hour * HOUR) // DAY)
        if day != self.day:
            self.day, self.count, self.expected, self.day_flagged = day, 0.0, 0.0, False
        expected_hour = self.hour_expected(hour)
        score = low = 0.0
        if day is not None and expected_hour is not None and self.expected >= 0.0:
            self.count += count
            self.expected += expected_hour / self.per_hour
            if self.ready and self.expected >= self.min_expected:
                # a rise is tested against the whole current hour's expectation: a feed polled
                # once an hour delivers its hour at once, not 1/12 per window
                rest = expected_hour * (1.0 - self.windows_in_hour(timestamp) / self.per_hour)
                tau2 = self.relative_variance(hour)
                score = _score(negative_binomial_upper_tail(self.count, self.expected + rest,
                                                            tau2), 1)
                low = _score(1.0 - negative_binomial_upper_tail(self.count + 1.0,
                                                                self.expected, tau2), 1)
        elif day is not None:
            self.expected = -1.0  # an hour of this day is not known yet: the day is not scored
        flagged = score >= self.learn_below
        if flagged:
            self.day_flagged = True
            self.flagged.append((hour, count))
            if self.relearn_after and len(self.flagged) >= self.relearn_after:
                self._relearn()
        else:
            self.flagged = []
        if low >= self.learn_below:
            self.day_flagged = True  # a day far below its expectation is not learned either
        _, total, dirty = self.hour if self.hour is not None else (hour, 0.0, False)
        self.hour = (hour, total + count, dirty or flagged or low >= self.learn_below)
        return score

    def windows_in_hour(self, timestamp: float) -> int:
        """How many windows of its hour end by the end of the window at ``timestamp``."""
        return int((timestamp % HOUR) // self.window_seconds) + 1

    def _close_hour(self) -> None:
        """Fold the finished hour into its levels and learn the day-so-far checkpoint."""
        assert self.hour is not None
        hour, total, dirty = self.hour
        self.hour = None
        if dirty:
            return
        self._fold(hour, total)
        if (not self.day_flagged and self.expected >= self.min_expected
                and self.day_start_hour is not None):
            excess = min(((self.count - self.expected) ** 2 - self.expected)
                         / self.expected ** 2, self.excess_cap)
            self.excess.append(excess)
            self.excess_at.setdefault((hour - self.day_start_hour) % 24, deque(
                maxlen=self.dispersion_days)).append(excess)

    def _fold(self, hour: int, total: float) -> None:
        self.daily.setdefault(self._key(hour), _Level()).update(total, self.day_alpha)
        self.weekly.setdefault(int((hour * HOUR % WEEK) // HOUR), _Level()).update(
            total, self.week_alpha)

    def _fix_day_start(self) -> None:
        """The partner's day starts at its quietest hour of day (its night)."""
        levels: dict[int, list[float]] = {}
        for (_, hour_of_day), level in self.daily.items():
            levels.setdefault(hour_of_day, []).append(level.mean)
        if not levels:
            return
        self.day_start_hour = min(range(24), key=lambda h: (sum(levels.get(h, [0.0]))
                                                            / len(levels.get(h, [0.0])), h))
        # the day types were keyed on the UTC day until now: re-key them on the partner's day
        self.daily = {}
        for hour_of_week, level in self.weekly.items():
            # absolute hour h has hour of week h % 168
            self.daily.setdefault(self._key(hour_of_week), _Level()).update_many(
                level.mean, max(1, level.n), self.day_alpha)

    def _relearn(self) -> None:
        held, self.flagged = self.flagged, []
        totals: dict[int, float] = {}
        for hour, count in held:
            totals[hour] = totals.get(hour, 0.0) + count
        for hour, total in sorted(totals.items()):
            self._fold(hour, total)
        self.day_flagged = False
        self.count = self.expected = 0.0
