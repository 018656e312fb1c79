"""The Examples sections of the decisions modules run as tests."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["unary", "table", "facts", "engine"]


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name: str) -> None:
    module = importlib.import_module(f"carrierwatch.decisions.{name}")
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    assert attempted > 0
