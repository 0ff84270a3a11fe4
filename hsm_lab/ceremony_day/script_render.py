"""The printed ceremony script rendered: Markdown, and one self-contained HTML file with a print
stylesheet (split out of script.py, which builds the steps)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from hsm_lab.ceremony_day.script import ROLES, SCRIPT_FORMAT, Script
from hsm_lab.fs import atomic_write_text


def to_markdown(script: Script) -> str:
    role_names = {code: name for code, name, _ in ROLES}
    out = [
        f"# Ceremony script: {script.step}",
        "",
        f"Format {SCRIPT_FORMAT}. Lab `{script.lab}`, module `{script.module}`, token `{script.token}`, "
        f"quorum {script.threshold}-of-{len(script.custodians)}.",
        "",
        "Date: __________  Place: __________  Script printed by: __________",
        "",
        "## Roles",
        "",
        "| role | who | duty | name | signature |",
        "|---|---|---|---|---|",
    ]
    out += [f"| {code} | {name} | {duty} | | |" for code, name, duty in ROLES]
    out += ["", "## Custodians", "", "| custodian | sealed to | present (initials) |", "|---|---|---|"]
    for c in script.custodians:
        sealed = f"`{c.recipient[:16]}…`" if c.recipient else "passphrase"
        out.append(f"| {c.name} | {sealed} | |")
    out += ["", "## Steps", ""]
    for number, step in enumerate(script.steps, start=1):
        out += [
            f"### Step {number}: {step.title}",
            "",
            f"Performed by: {role_names[step.role]} ({step.role})",
            "",
        ]
        if step.commands:
            out += ["```sh", *step.commands, "```", ""]
        if step.screen:
            out += ["The screen must show:", "", *[f"    {line}" for line in step.screen], ""]
        out += [f"Note: {note}" for note in step.notes]
        if step.notes:
            out.append("")
        if step.per_custodian:
            out += [f"- [ ] {c.name}  initials: ______  time: ______" for c in script.custodians]
            out.append("")
        out += ["- [ ] done as written   CA initials: ______   IW initials: ______   time: ______", ""]
    out += [
        "## Exceptions",
        "",
        "Any deviation from this script, with the time and what was done instead:",
        "",
        *["____________________________________________________________"] * 3,
        "",
        "## Signatures",
        "",
        "| role | name | signature | date |",
        "|---|---|---|---|",
        *[f"| {name} | | | |" for _, name, _ in ROLES],
        "",
    ]
    return "\n".join(out)


PRINT_CSS = """
body{font:11pt/1.4 Georgia,serif;max-width:48em;margin:2em auto;color:#000}
h1{font-size:18pt}h2{font-size:14pt;border-bottom:1px solid #000}h3{font-size:12pt}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #000;padding:.3em;text-align:left}
pre{background:#f4f4f4;border:1px solid #999;padding:.5em;white-space:pre-wrap;font-size:10pt}
.screen{border-left:4px solid #000;padding-left:.6em;font-family:monospace;white-space:pre-wrap}
.line{display:inline-block;min-width:7em;border-bottom:1px solid #000}
section.step{page-break-inside:avoid;break-inside:avoid;margin-bottom:1.2em}
@media print{body{margin:0;max-width:none}pre{background:none}a{color:#000;text-decoration:none}
@page{size:A4;margin:18mm;@bottom-right{content:counter(page)}}}
"""


def to_html(script: Script) -> str:
    e = html.escape
    role_names = {code: name for code, name, _ in ROLES}
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Ceremony script: {e(script.step)}</title><style>{PRINT_CSS}</style></head><body>",
        f"<h1>Ceremony script: {e(script.step)}</h1>",
        f"<p>Format {SCRIPT_FORMAT}. Lab <code>{e(script.lab)}</code>, "
        f"module <code>{e(script.module)}</code>, "
        f"token <code>{e(script.token)}</code>, quorum {script.threshold}-of-{len(script.custodians)}.</p>",
        "<p>Date <span class='line'></span> Place <span class='line'></span></p>",
        "<h2>Roles</h2><table><tr><th>role</th><th>who</th><th>duty</th><th>name</th><th>signature</th></tr>",
    ]
    parts += [f"<tr><td>{c}</td><td>{e(n)}</td><td>{e(d)}</td><td></td><td></td></tr>" for c, n, d in ROLES]
    parts.append(
        "</table><h2>Custodians</h2><table><tr><th>custodian</th><th>sealed to</th><th>initials</th></tr>"
    )
    for c in script.custodians:
        sealed = e(c.recipient[:16] + "…") if c.recipient else "passphrase"
        parts.append(f"<tr><td>{e(c.name)}</td><td><code>{sealed}</code></td><td></td></tr>")
    parts.append("</table><h2>Steps</h2>")
    for number, step in enumerate(script.steps, start=1):
        parts.append(f"<section class='step'><h3>Step {number}: {e(step.title)}</h3>")
        parts.append(f"<p>Performed by: {e(role_names[step.role])} ({step.role})</p>")
        if step.commands:
            parts.append("<pre>" + e("\n".join(step.commands)) + "</pre>")
        if step.screen:
            parts.append(
                "<p>The screen must show:</p><div class='screen'>" + e("\n".join(step.screen)) + "</div>"
            )
        parts += [f"<p>Note: {e(note)}</p>" for note in step.notes]
        if step.per_custodian:
            parts.append("<table><tr><th>custodian</th><th>initials</th><th>time</th></tr>")
            parts += [f"<tr><td>{e(c.name)}</td><td></td><td></td></tr>" for c in script.custodians]
            parts.append("</table>")
        parts.append(
            "<p>☐ done as written — CA <span class='line'></span> IW <span class='line'></span> "
            "time <span class='line'></span></p></section>"
        )
    parts.append("<h2>Exceptions</h2><p style='height:6em;border:1px solid #000'></p>")
    parts.append(
        "<h2>Signatures</h2><table><tr><th>role</th><th>name</th><th>signature</th><th>date</th></tr>"
    )
    parts += [
        f"<tr><td>{e(n)}</td><td></td><td style='height:2.5em'></td><td></td></tr>" for _, n, _ in ROLES
    ]
    parts.append("</table></body></html>\n")
    return "".join(parts)


def write_script(script: Script, out: Path) -> list[Path]:
    """OUT.md and OUT.html, each whole or absent (temp file + rename)."""
    base = out.with_suffix("") if out.suffix in (".md", ".html") else out
    written = [base.with_suffix(".md"), base.with_suffix(".html")]
    atomic_write_text(written[0], to_markdown(script))
    atomic_write_text(written[1], to_html(script))
    return written


def normalised(text: str, values: dict[str, Any]) -> str:
    """Replace this lab's random values by their names: what a golden file compares."""
    for name, value in sorted(values.items(), key=lambda item: -len(str(item[1]))):
        text = text.replace(str(value), f"<{name}>")
    return text
