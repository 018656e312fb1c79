"""Log histograms: exact additivity and the documented quantile error bound."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from carrierwatch.core.sketch import (
    RELATIVE_ERROR,
    bucket_lower_bound,
    bucket_of,
    histogram_of,
    merge,
    quantile,
)

durations = st.lists(st.integers(-10_000, 40 * 86_400_000), min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(durations, durations)
def test_histograms_add_exactly(a: list[int], b: list[int]) -> None:
    assert merge(histogram_of(a), histogram_of(b)) == merge(histogram_of(a + b))


@settings(max_examples=300, deadline=None)
@given(durations, st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_quantile_within_documented_relative_error(values: list[int], q: float) -> None:
    exact = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
    estimate = quantile(histogram_of(values), q)
    assert estimate is not None
    if exact < 1000:
        assert estimate == 0
    else:
        assert abs(estimate - exact) <= RELATIVE_ERROR * exact + 1


def test_bucket_bounds() -> None:
    for bucket in range(1, 400):
        low = bucket_lower_bound(bucket)
        assert bucket_of(math.ceil(low)) == bucket
        assert bucket_of(math.floor(low) - 1) == bucket - 1
    assert round(RELATIVE_ERROR, 4) == 0.0247
