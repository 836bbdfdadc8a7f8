"""Collects every `cases/case_*.py` module's CASE into the parametrized `case` fixture (ids = source names)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from filesync.testing.source_conformance import SourceCase

CASES_DIR = Path(__file__).parent / "cases"


def _broken(name: str, exc: Exception) -> SourceCase:
    """A case module that cannot be imported fails each of its tests with the reason, not the whole run."""

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return SourceCase(name=name, store=fail, make=fail)


def load_cases() -> list[SourceCase]:
    cases: list[SourceCase] = []
    for module_path in sorted(CASES_DIR.glob("case_*.py")):
        try:
            module = importlib.import_module(f"{__package__}.cases.{module_path.stem}")
        except ImportError as exc:
            cases.append(_broken(module_path.stem.removeprefix("case_").replace("_", "-"), exc))
            continue
        case = getattr(module, "CASE", None)
        assert isinstance(case, SourceCase), f"{module_path.name} must define CASE = SourceCase(...)"
        cases.append(case)
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        cases = load_cases()
        metafunc.parametrize("case", cases, ids=[c.name for c in cases])
