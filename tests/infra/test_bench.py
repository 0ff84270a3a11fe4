"""bench/program.py runs and reports per size (figures only: no timing is asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from infra.model.data_classes import parse_data_classes

REPO = Path(__file__).resolve().parents[2]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_program", REPO / "bench" / "program.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_classes_are_valid_config_and_start_with_the_defaults() -> None:
    bench = load_bench()
    classes = parse_data_classes(bench.data_classes(5))
    assert [dc.name for dc in classes] == [
        "health-documents",
        "appointments",
        "administrative",
        "class-0003",
        "class-0004",
    ]
    assert [dc.name for dc in parse_data_classes(bench.data_classes(1))] == ["health-documents"]


def test_bench_prints_resources_and_cost_per_resource(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_bench().main(["1", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("default 3 classes, cold:") and "100 resources" in lines[0]
    rows = {int(line.split()[0]): line.split() for line in lines[2:4]}
    assert int(rows[1][1]) == 31 + 23 and int(rows[2][1]) == 31 + 2 * 23  # fixed: roles, transcripts, alarms
    assert all(float(v) > 0 for row in rows.values() for v in row[2:])
    assert lines[-1].startswith("peak RSS")
