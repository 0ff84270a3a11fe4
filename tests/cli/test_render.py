"""The compliance table the CLI prints: one column per cell verify reports, each gap in red."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from hsm_lab.cli.render import COLUMN_TITLES, print_compliance
from hsm_lab.compliance.report import CHECKS, CONFIGURED, OBSERVED, Cell, Report, Row


def _row(failing: str) -> Row:
    cells = {name: Cell(name != failing, f"{name} detail", source=OBSERVED) for name in CHECKS}
    cells["key_policy"].source = CONFIGURED
    return Row("appointments", "eu-west-3", "primary", "b", "arn", False, cells=cells)


@pytest.mark.parametrize("failing", CHECKS)
def test_a_gap_in_any_cell_is_a_column_and_a_red_line(failing: str) -> None:
    out = io.StringIO()
    print_compliance(Console(file=out, width=400, color_system=None), Report([_row(failing)]), "LocalStack")
    text = out.getvalue()
    header = next(line for line in text.splitlines() if "class" in line and "region" in line)
    assert all(COLUMN_TITLES[name] in header for name in CHECKS)
    assert text.count("✘ GAP") == 1 and text.count("✔") == len(CHECKS) - 1
    assert f"gap: appointments eu-west-3 {failing}: {failing} detail" in text
    assert "no gap" not in text
