"""Auditor's report: size of the HTML and render time in headless Chromium (goals: < 300 KB, < 2 s).

Runs a real ceremony rehearsal (SoftHSM2) in a temporary lab, writes the report, then times
Chromium three ways (DOM dump, PDF, screenshot), each a whole browser run (start included).
With CLEFS_LOCALSTACK_ENDPOINT (+ CLEFS_LOCALSTACK_CA) set, or --full, the full rehearsal runs
(BYOK, compliance) so the report has every section filled in.

    .venv/bin/python bench/report_html.py [--full]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hsm_lab.ceremony.record import verify_lab
from hsm_lab.ceremony_day import audit_report


def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    full = "--full" in sys.argv
    with tempfile.TemporaryDirectory(prefix="clefs-report-") as tmp:
        lab_dir = Path(tmp) / "lab"
        started = time.perf_counter()
        compliance = None
        if full:
            from hsm_lab.rehearsal.full import rehearse_pyramid

            report = rehearse_pyramid(lab_dir, seed=1)
            lab, compliance = report.ceremony.lab, report.compliance
        else:
            from hsm_lab.rehearsal import rehearse

            lab = rehearse(lab_dir, seed=1).lab
        print(f"rehearsal ({'full' if full else 'ceremony only'}): {time.perf_counter() - started:.1f} s")
        page = Path(tmp) / "report.html"
        began = time.perf_counter()
        page.write_text(
            audit_report.render(verify_lab(lab), checked_against="lab files", compliance=compliance)
        )
        size = page.stat().st_size
        print(
            f"write: {(time.perf_counter() - began) * 1000:.0f} ms; size {size} bytes "
            f"({size / 1024:.1f} KB; goal < 300 KB: {'met' if size < 300_000 else 'MISSED'})"
        )
        if chromium is None:
            print("chromium not installed (scripts/install-chromium.sh): render time not measured")
            return
        base = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ]
        for name, extra in (
            ("dump-dom", ["--dump-dom"]),
            ("pdf", [f"--print-to-pdf={Path(tmp) / 'r.pdf'}", "--no-pdf-header-footer"]),
            ("screenshot", [f"--screenshot={Path(tmp) / 'r.png'}", "--window-size=1280,2000"]),
        ):
            runs = []
            for _ in range(3):
                began = time.perf_counter()
                subprocess.run([*base, *extra, page.as_uri()], capture_output=True, check=True, timeout=120)
                runs.append(time.perf_counter() - began)
            best = min(runs)
            print(
                f"chromium {name}: best {best:.2f} s of 3 (median {sorted(runs)[1]:.2f} s), browser start "
                f"included; goal < 2 s: {'met' if best < 2 else 'MISSED'}"
            )


if __name__ == "__main__":
    main()
