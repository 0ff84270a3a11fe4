"""The printed ceremony script, ICANN root-KSK style: roles, steps, exact commands, what the
screen must show, and lines for initials and signatures.

Built from the lab's configuration (module, tokens, the verified record when the lab has one)
and a custodians file; rendered as Markdown and as one self-contained HTML file with a print
stylesheet. Values the record already knows (pinned signer, KCV, ceremony id, class-key KCVs)
are printed as hex and as words for reading aloud; values the day will produce are blanks the
witnesses fill in by hand. The step sequence is compared in CI with tests/golden/.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsm_lab import errors
from hsm_lab.custodians import Custodian, load_custodians
from hsm_lab.fs import atomic_write_text
from hsm_lab.lab import PRIMARY_TOKEN, RECOVERY_TOKEN, Lab
from hsm_lab.record import RecordState, fingerprint_words, grouped, verify_lab

SCRIPT_FORMAT = "clefs.ceremony-script/v1"
STEPS = ("generate", "import", "rekey", "byok")
BLANK = "________________"
DEFAULT_CLASSES = ("appointments", "administrative", "health-documents")
ROLES = (
    ("CA", "Ceremony administrator", "runs every command, reads each screen aloud"),
    ("SO", "Security officer", "holds the SO PIN; initialises tokens; installs wrapping keys (BYOK)"),
    ("IW", "Internal witness", "compares what is read aloud with this script; initials each step"),
    ("CU", "Custodians", "each holds one share and its age identity or passphrase"),
)


@dataclass
class Step:
    title: str
    role: str
    commands: list[str]
    screen: list[str] = field(default_factory=list)  # what must appear, read aloud
    notes: list[str] = field(default_factory=list)
    per_custodian: bool = False  # one initials line per custodian


@dataclass
class Script:
    step: str
    lab: str
    module: str
    token: str
    threshold: int
    custodians: list[Custodian]
    steps: list[Step]
    values: dict[str, str]  # the values printed that come from this lab (for normalising)


def _hex_and_words(label: str, value: str | None, count: int = 8) -> list[str]:
    if not value:
        return [f"{label}: {BLANK} (write it down as shown)", f"  read aloud: {BLANK}"]
    return [f"{label}: {grouped(value)}", f"  read aloud: {fingerprint_words(value, count)}"]


def _kcv(label: str, value: str | None) -> list[str]:
    if not value:
        return [f"{label}: {BLANK} (6 hex digits, as shown)"]
    return [f"{label}: {value} (read aloud: {fingerprint_words(value, 2)})"]


def _class_kcvs(state: RecordState | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for entry in state.entries if state else []:
        if entry["action"] == "byok.import":
            found[str(entry["params"].get("data_class"))] = str(entry["params"].get("kcv"))
    return found


def build_script(  # noqa: C901 - one branch per ceremony step: it reads like the printed script
    step: str,
    lab: Lab,
    custodians: list[Custodian],
    *,
    module: str = "",
    token: str | None = None,
    threshold: int | None = None,
    classes: tuple[str, ...] = DEFAULT_CLASSES,
) -> Script:
    """The script for one step; reads the lab's verified record if the lab has one."""
    if step not in STEPS:
        raise errors.InputError(f"--step {step!r}: choose one of {', '.join(STEPS)}")
    state = verify_lab(lab) if (lab.root / "anchor.json").is_file() else None
    signer = state.anchor.fingerprint if state else None
    current = state.manifest() if state and state.current else None
    kcv = current.kcv if current else None
    ceremony_id = current.ceremony_id if current else None
    k = threshold or (current.threshold if current else 5)
    if not 1 <= k <= len(custodians):
        raise errors.InputError(f"K = {k} does not fit the {len(custodians)} custodians of the file")
    expect = f" --expect-signer {signer}" if signer else " --expect-signer <SIGNER>"
    target = token or (PRIMARY_TOKEN if step == "generate" else RECOVERY_TOKEN)
    names = [c.name for c in custodians]

    def present_cmd(c: Custodian) -> str:
        share = f"{c.name}.age"
        return f"hsm-lab present --nonce <NONCE> --share {share} --custodian {c.name}" + (
            f" -i {c.name}.txt" if c.recipient else "  # passphrase typed at this terminal"
        )

    opening = Step(
        "Open the ceremony: attendance, room, equipment sealed and logged",
        "CA",
        ["hsm-lab doctor"],
        ["every check ok (tools, module, tokens, PINs set)"],
        ["participants sign the attendance list below; the IW checks tamper-evident bags by serial number"],
    )
    steps: list[Step] = [opening]
    if step == "generate":
        steps += [
            Step(
                f"Initialise token {target}, its signing key, and pin the lab's signer",
                "SO",
                [f"hsm-lab init --token {target}"],
                ["token initialised", *_hex_and_words("pinned ceremony signer", signer)],
                ["the IW writes the fingerprint and words in the record book; they anchor every later check"],
            ),
            Step(
                f"Generate the master key in the HSM and deal {k}-of-{len(custodians)} shares",
                "CA",
                [
                    f"hsm-lab generate --custodians custodians.toml -k {k} -n {len(custodians)} "
                    f"--token {target}"
                ],
                [
                    f"quorum {k}-of-{len(custodians)}",
                    *_kcv("KCV", None),
                    "ceremony cer-________",
                    *_hex_and_words("signer", signer),
                ],
                ["no WEAKENED line may appear unless the policy allows it in writing"],
            ),
            Step(
                "Each custodian checks their share alone",
                "CU",
                [f"hsm-lab verify-share --share {n}.age -i {n}.txt --token {target}" for n in names],
                ["share drill: ok matches its commitment"],
                per_custodian=True,
            ),
        ]
    elif step in ("import", "rekey"):
        steps.append(
            Step(
                f"Check token {target} pins the witnessed signer",
                "SO",
                [f"hsm-lab init --token {target}{expect}"],
                _hex_and_words("pinned ceremony signer", signer),
            )
        )
        if step == "import":
            open_cmd = (
                f"hsm-lab ceremony open --step import --token {target} --authorise-signer"
                f" --expect-kcv {kcv or '<KCV>'}{expect} --expect-ceremony {ceremony_id or '<CEREMONY>'}"
            )
        else:
            open_cmd = (
                f"hsm-lab ceremony open --step rekey --custodians new-custodians.toml -k {k} --token {target}"
            )
        steps += [
            Step(
                f"Open the ceremony session for {step}",
                "CA",
                [open_cmd],
                [
                    f"current share set: ceremony {ceremony_id or BLANK}",
                    *_kcv("KCV", kcv),
                    *_hex_and_words("signer", signer),
                    f"nonce: {BLANK} (read aloud; each custodian types it)",
                ],
            ),
            Step(
                "Custodians present their shares, each at their own terminal",
                "CU",
                [present_cmd(c) for c in custodians],
                ["accepted: k/K and who presented; a refused share is named and counts nothing"],
                [f"any {k} of the {len(custodians)} custodians; stop at K"],
                per_custodian=True,
            ),
            Step(
                f"The session performs the {step}",
                "CA",
                [],
                [
                    "session done: "
                    + ("HSM KCV = manifest KCV" if step == "import" else "new share set, old set retired"),
                    *_kcv("KCV", kcv),
                ],
            ),
        ]
        if step == "rekey":
            steps.append(
                Step(
                    "Each new custodian checks their new share alone",
                    "CU",
                    [f"hsm-lab verify-share --share <new set>/NAME.age -i NAME.txt --token {target}"],
                    ["share drill: ok matches its commitment"],
                    per_custodian=True,
                )
            )
    else:  # byok
        kcvs = _class_kcvs(state)
        steps.append(
            Step(
                "Apply the stack (KMS keys PendingImport in both regions)",
                "CA",
                ["hsm-lab stack apply-localstack"],
                ["resources created or reconciled; outputs written"],
            )
        )
        for data_class in classes:
            wrap = " --wrapping RSA_AES_KEY_WRAP_SHA_256" if data_class == "health-documents" else ""
            steps.append(
                Step(
                    f"Import class key {data_class} (L1) into Paris and Frankfurt",
                    "SO",
                    [f"hsm-lab byok import --class {data_class}{wrap} --token {target}"],
                    [
                        *_kcv(f"{data_class} KCV (primary and replica alike)", kcvs.get(data_class)),
                        "proved: encrypted under the primary, decrypted under the replica",
                    ],
                )
            )
        steps.append(Step("Compliance from live state", "CA", ["hsm-lab verify"], ["no gap"]))
    steps += [
        Step(
            "Verify and export the record",
            "IW",
            [f"hsm-lab transcript verify --token {target}{expect}", "hsm-lab transcript export audit-bundle"],
            ["transcript OK", *_hex_and_words("pinned signer", signer)],
        ),
        Step(
            "Close the ceremony",
            "CA",
            [],
            [],
            ["shares and identities back in their bags; the IW records bag serial numbers; all sign below"],
        ),
    ]
    values = {"lab": str(lab.root)}
    if signer:
        values.update(signer=signer, signer_grouped=grouped(signer), signer_words=fingerprint_words(signer))
    if kcv:
        values.update(kcv=kcv, kcv_words=fingerprint_words(kcv, 2))
    if ceremony_id:
        values["ceremony"] = ceremony_id
    for data_class, value in _class_kcvs(state).items():
        values[f"kcv:{data_class}"] = value
        values[f"kcv-words:{data_class}"] = fingerprint_words(value, 2)
    return Script(step, str(lab.root), module, target, k, custodians, steps, values)


def load_script(
    step: str, lab: Lab, custodians_file: Path, *, token: str | None = None, threshold: int | None = None
) -> Script:
    from hsm_lab.hsm import find_module

    try:
        module = str(find_module(None))
    except errors.ClefsError:
        module = "(no PKCS#11 module found: run `hsm-lab doctor`)"
    return build_script(
        step, lab, load_custodians(custodians_file), module=module, token=token, threshold=threshold
    )


# -- rendering ---------------------------------------------------------------------------


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
