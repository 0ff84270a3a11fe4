"""The printed script (golden files) and the auditor's report, from real labs on real SoftHSM2.

The golden scripts are made from a lab that ran the rehearsal's steps (init, generate 5-of-7);
this lab's random values (signer fingerprint, words, KCV, ceremony id, path) are replaced by
their names, so a change in the ceremony's steps or wording shows up as a diff a reviewer reads.
Regenerate after an intended change with CLEFS_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hsm_lab import errors
from hsm_lab.ceremony.custodians import Custodian
from hsm_lab.ceremony.record import verify_lab
from hsm_lab.ceremony_day import audit_report, script, script_render
from hsm_lab.lab import Lab
from tests.ceremony_day.conftest import run_day
from tests.conftest import NAMES, Dealt

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def custodians_of(dealt: Dealt) -> list[Custodian]:
    return [Custodian(c["name"], c["recipient"]) for c in dealt.manifest.body["custodians"]]


@pytest.mark.parametrize("step", script.STEPS)
def test_the_printed_script_matches_its_golden_file(dealt: Dealt, step: str) -> None:
    built = script.build_script(step, dealt.env.lab, custodians_of(dealt), module="<module>")
    # the recipients are this lab's random keys, too
    text = re.sub(r"`age1[0-9a-z]{12}…`", "`<recipient>`", script_render.to_markdown(built))
    text = script_render.normalised(text, built.values)
    for value in ("signer", "kcv", "ceremony"):
        assert value in built.values
    assert not re.search(r"\b[0-9a-f]{64}\b", text), "an unnormalised fingerprint"
    golden = GOLDEN / f"script-{step}.md"
    if os.environ.get("CLEFS_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.is_file(), f"no golden file {golden}: run with CLEFS_UPDATE_GOLDEN=1 and review it"
    assert text == golden.read_text(), f"the {step} script changed: diff it against {golden}"


def test_the_script_shows_fingerprint_and_kcv_as_hex_and_words(dealt: Dealt) -> None:
    built = script.build_script("import", dealt.env.lab, custodians_of(dealt))
    text = script_render.to_markdown(built)
    assert built.values["signer_grouped"] in text and built.values["signer_words"] in text
    assert f"KCV: {dealt.manifest.kcv} (read aloud: {built.values['kcv_words']})" in text
    assert (
        f"--expect-kcv {dealt.manifest.kcv}" in text
        and f"--expect-ceremony {dealt.manifest.ceremony_id}" in text
    )
    for name in NAMES:
        assert f"--custodian {name}" in text
    page = script_render.to_html(built)
    assert (
        "@media print" in page
        and "<script" not in page
        and page.count("<section class='step'>") == len(built.steps)
    )


def test_a_script_for_a_new_lab_has_blanks_and_creates_nothing(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "not-yet")
    people = [Custodian(n, None) for n in NAMES]
    built = script.build_script("generate", lab, people)
    assert script.BLANK in script_render.to_markdown(built)
    assert not lab.root.exists()
    with pytest.raises(errors.InputError, match="does not fit"):
        script.build_script("generate", lab, people[:3], threshold=5)
    with pytest.raises(errors.InputError, match="choose one of"):
        script.build_script("dance", lab, people)


def test_script_command_writes_md_and_html(dealt: Dealt, tmp_path: Path) -> None:
    toml = tmp_path / "custodians.toml"
    toml.write_text(
        "".join(
            f'[[custodian]]\nname = "{c.name}"\nrecipient = "{c.recipient}"\n\n'
            for c in custodians_of(dealt)
            if c.recipient
        )
        + '[[custodian]]\nname = "bob"\npassphrase = true\n'
    )
    result = run_day(
        "script",
        "--step",
        "rekey",
        "--custodians",
        str(toml),
        "--out",
        str(tmp_path / "day"),
        lab=dealt.env.lab.root,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "day.md").is_file() and (tmp_path / "day.html").is_file()
    assert oct((tmp_path / "day.html").stat().st_mode & 0o777) == "0o600"


def test_the_report_has_its_three_sections_and_no_script(dealt: Dealt, tmp_path: Path) -> None:
    state = verify_lab(dealt.env.lab)
    page = audit_report.render(state, checked_against="lab files")
    for section in ("id='pyramid'", "id='transcript'", "id='compliance'", "<svg", "Content-Security-Policy"):
        assert section in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert f"KCV {dealt.manifest.kcv}" in page
    assert page.count("chain link verified") == len(state.entries)
    with pytest.raises(errors.InputError, match=r"clefs\.verify/v2"):
        audit_report.render(state, checked_against="x", compliance='{"schema": "other"}')
    written = run_day("report", "--html", str(tmp_path / "r.html"), lab=dealt.env.lab.root)
    assert written.returncode == 0, written.stderr
    missing = run_day("report", "--html", str(tmp_path / "x.html"), lab=tmp_path / "none")
    assert missing.returncode != 0 and not (tmp_path / "none").exists() and not (tmp_path / "x.html").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str, page: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    result = subprocess.run(
        [
            CHROMIUM or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result, time.perf_counter() - started


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(dealt: Dealt, tmp_path: Path) -> None:
    if CHROMIUM is None:
        print("SKIP reason: chromium is not installed (run scripts/install-chromium.sh)")
        pytest.skip("chromium is not installed: run scripts/install-chromium.sh")
    page = tmp_path / "report.html"
    audit_report.write_report(dealt.env.lab, page)
    dom, dom_seconds = chromium("--dump-dom", page=page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in ('id="pyramid"', 'id="transcript"', 'id="compliance"', "<svg", "<rect"):
        assert section in dom.stdout
    assert not re.search(r"Uncaught|CONSOLE\(\d+\).*[Ee]rror", dom.stderr), dom.stderr[-2000:]
    pdf, _ = chromium(f"--print-to-pdf={tmp_path / 'report.pdf'}", "--no-pdf-header-footer", page=page)
    assert pdf.returncode == 0, pdf.stderr[-2000:]
    assert (tmp_path / "report.pdf").read_bytes().startswith(b"%PDF")
    shot, _ = chromium(f"--screenshot={tmp_path / 'report.png'}", "--window-size=1280,2000", page=page)
    assert shot.returncode == 0, shot.stderr[-2000:]
    png = (tmp_path / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    print(
        f"chromium --dump-dom {dom_seconds:.2f} s (browser start included); page {page.stat().st_size} bytes"
    )


@pytest.fixture
def dealt(day_dealt: Dealt) -> Dealt:
    """This module's own lab (the suite-wide `dealt` is shared with tests that change it)."""
    return day_dealt


def test_the_compliance_table_shows_every_cell_verify_reports() -> None:
    """A gap in any cell `verify` reports (versioning included) is a red GAP in the report."""
    from hsm_lab.compliance import report

    def cell(ok: bool) -> dict[str, object]:
        return {"source": report.OBSERVED, "ok": ok, "short": "fine", "detail": "read live"}

    cells = {name: cell(name != "versioning") for name in report.CHECKS}
    row = {"data_class": "appointments", "region": "eu-west-3", "cells": cells}
    doc = {
        "schema": report.SCHEMA,
        "rows": [row],
        "gaps": ["versioning: suspended"],
        "not_enforced": [],
        "target": "LocalStack",
        "objects_scanned": 0,
        "max_objects": 10,
    }
    page = audit_report.compliance_html(doc)
    for name in report.CHECKS:
        assert f"<th>{name.replace('_', ' ')}</th>" in page
    assert page.count("✘ GAP") == 1 and page.count("✔") == len(report.CHECKS) - 1
