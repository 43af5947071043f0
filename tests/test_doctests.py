"""The examples in the modules' docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "qecat_core").rglob("*.py")
    if ">>> " in p.read_text()
)


def test_modules_with_examples_found():
    assert {"qecat_core.enumerate.infer", "qecat_core.enumerate.text", "qecat_core.model.train.losses",
            "qecat_core.common.hashing", "qecat_core.common.atomic", "qecat_core.results.schema"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
