"""The Examples of the simulator's modules run as doctests."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

from carrierwatch.synthetic import incidents, lifecycle, rawlog, simulator


@pytest.mark.parametrize("module", [incidents, lifecycle, rawlog, simulator],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
