"""Every benchmark the docs cite still imports and has its ``main`` (a renamed name in app/
breaks a benchmark silently otherwise: no test runs them, they take minutes)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
HELPERS = {"__init__", "measure", "network", "report"}  # shared by the benchmarks


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in HELPERS)
)
def test_the_benchmark_imports_and_has_a_main(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main), name
