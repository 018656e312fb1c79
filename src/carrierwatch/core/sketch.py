"""Fixed-bucket logarithmic histograms: exactly additive quantile sketches for durations.

Quantiles (event latency p50/p95, exception resolution p90) cannot be added across windows or
shards, but histograms over a *fixed* set of buckets can: the histogram of an hour is the sum of
the histograms of its twelve 5-minute windows, bucket by bucket, so rollups and shard sums stay
exact. A histogram is a sparse mapping ``bucket index -> count`` (zero counts are never stored).

Bucket layout (durations in milliseconds):

* bucket ``0`` holds every value below one second (``v < 1000``), negative values included
  (a clock that runs ahead of ours); it is represented by the value ``0``;
* bucket ``b >= 1`` holds ``1000 * GAMMA**(b-1) <= v < 1000 * GAMMA**b`` with ``GAMMA = 1.05``;
  the last bucket, :data:`MAX_BUCKET`, also takes everything longer (about 10 years).

A quantile is read as the geometric midpoint of the bucket that holds the rank, so for any value of
one second or more the estimate's relative error is at most ``sqrt(GAMMA) - 1`` (≈ 2.47 %);
values under one second read as ``0``. The rank is the nearest-rank definition
(``ceil(q * n)``-th smallest value), the same a sorted list would give.

A maintained library (DDSketch) offers the same idea, but its bucket mapping is an implementation
detail that may change between versions; here the layout is part of the stored data contract
(ClickHouse ``Map(UInt16, UInt64)`` columns), so it is pinned in these few lines.

Examples
--------
>>> bucket_of(500), bucket_of(1000), bucket_of(1049), bucket_of(1050)
(0, 1, 1, 2)
>>> h = histogram_of([1_000, 2_000, 60_000, 60_000, 3_600_000])
>>> quantile(h, 0.5)   # true median 60 000 ms, within 2.47 %
58790
>>> merged = merge({1: 2}, {1: 1, 5: 1})
>>> merged
{1: 3, 5: 1}
>>> quantile({}, 0.9) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

__all__ = [
    "GAMMA",
    "MAX_BUCKET",
    "RELATIVE_ERROR",
    "add_into",
    "bucket_lower_bound",
    "bucket_of",
    "histogram_of",
    "merge",
    "quantile",
]

GAMMA = 1.05
"""Ratio between consecutive bucket bounds."""

MAX_BUCKET = 700
"""Index of the last bucket (1 s × 1.05**699 ≈ 6e14 ms: far beyond any useful duration)."""

RELATIVE_ERROR = math.sqrt(GAMMA) - 1
"""Largest relative error of a quantile estimate for values of one second or more."""

_LOG_GAMMA = math.log(GAMMA)


def bucket_of(value_ms: int) -> int:
    """The bucket index of a duration in milliseconds.

    >>> bucket_of(-5), bucket_of(999), bucket_of(60_000)
    (0, 0, 84)
    """
    if value_ms < 1000:
        return 0
    bucket = int(math.log(value_ms / 1000) / _LOG_GAMMA) + 1
    return bucket if bucket < MAX_BUCKET else MAX_BUCKET


def bucket_lower_bound(bucket: int) -> float:
    """Smallest duration (ms) a bucket holds (``0`` for bucket 0).

    >>> bucket_lower_bound(0), bucket_lower_bound(1), round(bucket_lower_bound(2), 6)
    (0.0, 1000.0, 1050.0)
    """
    if bucket <= 0:
        return 0.0
    return 1000.0 * GAMMA ** (bucket - 1)


def _representative(bucket: int) -> int:
    if bucket <= 0:
        return 0
    value: float = 1000.0 * GAMMA ** (bucket - 0.5)
    return round(value)


def histogram_of(values_ms: Iterable[int]) -> dict[int, int]:
    """Build a histogram from raw durations (used by tests and small tools)."""
    hist: dict[int, int] = {}
    for value in values_ms:
        bucket = bucket_of(value)
        hist[bucket] = hist.get(bucket, 0) + 1
    return hist


def add_into(target: dict[int, int], other: Mapping[int, int], sign: int = 1) -> None:
    """Add ``sign * other`` into ``target`` in place, dropping buckets that reach zero.

    >>> h = {1: 2, 3: 1}
    >>> add_into(h, {1: 2}, -1)
    >>> h
    {3: 1}
    """
    for bucket, count in other.items():
        total = target.get(bucket, 0) + sign * count
        if total:
            target[bucket] = total
        else:
            target.pop(bucket, None)


def merge(*histograms: Mapping[int, int]) -> dict[int, int]:
    """Sum histograms bucket by bucket (exact); keys come out sorted."""
    total: dict[int, int] = {}
    for hist in histograms:
        add_into(total, hist)
    return dict(sorted(total.items()))


def quantile(histogram: Mapping[int, int], q: float) -> int | None:
    """The ``q``-quantile (0 < q <= 1) estimated from a histogram; ``None`` when it is empty.

    >>> quantile({0: 9, 85: 1}, 0.9), quantile({0: 9, 85: 1}, 0.95)
    (0, 61730)
    """
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= rank:
            return _representative(bucket)
    return _representative(max(histogram))
