"""The canonical event model: the fast constructor builds the very events the dataclass does."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carrierwatch.core.model import CanonicalEvent, Location, event_id, new_event

_TEXT = st.text(max_size=12)
_OPT_TEXT = st.none() | _TEXT
_OPT_INT = st.none() | st.integers(min_value=-(2**62), max_value=2**62)
_LOCATION = st.none() | st.builds(Location, _OPT_TEXT, _OPT_TEXT, _OPT_TEXT, _OPT_TEXT,
                                  st.none() | st.floats(allow_nan=False),
                                  st.none() | st.floats(allow_nan=False))


@st.composite
def _fields(draw: st.DrawFn) -> tuple[object, ...]:
    return (draw(_TEXT), draw(_TEXT), draw(_TEXT), draw(_TEXT), draw(_TEXT),
            draw(st.floats(0, 1)), draw(_TEXT), draw(st.integers()), draw(st.integers()),
            draw(st.booleans()), draw(_OPT_TEXT), draw(_OPT_TEXT), draw(_OPT_TEXT),
            draw(_LOCATION), draw(_OPT_INT), draw(_OPT_INT), draw(_OPT_INT), draw(_OPT_INT),
            draw(_OPT_TEXT), draw(_OPT_TEXT), draw(st.booleans()), draw(_TEXT), draw(_OPT_INT))


@given(_fields())
def test_new_event_equals_the_dataclass_constructor(values: tuple[object, ...]) -> None:
    fast = new_event(*values)  # type: ignore[arg-type]
    slow = CanonicalEvent(*values)  # type: ignore[arg-type]
    assert type(fast) is CanonicalEvent
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert fast.to_record() == slow.to_record()
    assert tuple(getattr(fast, f.name) for f in dataclasses.fields(fast)) == values


def _sample() -> CanonicalEvent:
    return new_event(event_id("ups", "ups:1Z", "delivered", 5), "ups", "ups:1Z", "1Z",
                     "delivered", 1.0, "D", 5, 7, False, None, None, None,
                     Location(country="US"), None, None, None, 1, "photo", None, False, "1",
                     None)


def test_fast_events_stay_frozen_and_behave_like_dataclasses() -> None:
    event = _sample()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.status = "lost"  # type: ignore[misc]
    assert dataclasses.replace(event, synthetic=True).synthetic is True
    assert pickle.loads(pickle.dumps(event)) == event
    assert copy.deepcopy(event) == event
    assert CanonicalEvent.from_record(event.to_record()) == event
    assert not hasattr(event, "__dict__")
