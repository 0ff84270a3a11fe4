"""The auditor's report: one self-contained HTML file, no script, no external resource.

Three sections, each saying where its truth comes from:
- the key pyramid as inline SVG: L0 in the HSM token(s) that the verified transcript says hold
  it (with the KCV), L1 per data class in each region with KCV and expiry from the transcript's
  byok.import entries, L2 (KMS data keys) and L3 (records, counted by the compliance scan);
- the transcript as a timeline: every entry of the verified hash chain, the signed head and its
  signer's fingerprint (hex and words), and the verification result;
- the compliance table (an `hsm_lab.compliance.Report` or its `clefs.verify/v2` JSON), each cell
  marked observed / configured / not checked.

A Content-Security-Policy forbids scripts and remote loads: the file shows the same thing
offline, printed, or archived.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hsm_lab import errors
from hsm_lab.ceremony.jose import key_id
from hsm_lab.ceremony.record import RecordState, fingerprint_words, grouped, verify_lab
from hsm_lab.compliance import report
from hsm_lab.fs import atomic_write_text
from hsm_lab.lab import Lab

REPORT_FORMAT = "clefs.audit-report/v1"
COMPLIANCE_SCHEMA = report.SCHEMA
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CELLS = report.CHECKS  # every cell `verify` reports, versioning included
SOURCES = {
    report.OBSERVED: ("obs", "read from live state and checked"),
    report.CONFIGURED: ("cfg", "read and evaluated; not enforced by the emulator"),
    report.NOT_CHECKED: ("–", "not checked"),
}

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#111}
h1{font-size:1.6em}h2{border-bottom:2px solid #333;margin-top:1.6em}
table{border-collapse:collapse;width:100%;font-size:.92em}td,th{border:1px solid #bbb;padding:.25em .4em;
text-align:left;vertical-align:top}th{background:#eee}code,.mono{font-family:ui-monospace,monospace}
.ok{color:#05610f;font-weight:600}.gap{color:#a00000;font-weight:700}.dim{color:#666}
.src{font-size:.8em;border:1px solid #999;border-radius:3px;padding:0 .25em;margin-left:.3em}
ol.timeline{list-style:none;padding-left:0;border-left:3px solid #333}
ol.timeline li{margin:0 0 .5em 0;padding-left:1em;position:relative}
ol.timeline li:before{content:'';position:absolute;left:-.45em;top:.45em;width:.6em;height:.6em;
border-radius:50%;background:#333}
.truth{background:#f6f6f0;border-left:4px solid #886;padding:.4em .8em}
svg text{font-family:system-ui,sans-serif}
@media print{body{margin:0;max-width:none}section{break-inside:avoid-page}}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def compliance_doc(compliance: Any) -> dict[str, Any] | None:
    """A Report object, its JSON text, or the parsed dict; checked for the schema it claims."""
    if compliance is None:
        return None
    if hasattr(compliance, "to_json"):
        compliance = compliance.to_json()
    if isinstance(compliance, str | bytes):
        try:
            compliance = json.loads(compliance)
        except json.JSONDecodeError:
            raise errors.InputError("the compliance file is not JSON (`hsm-lab verify --json`)") from None
    if not isinstance(compliance, Mapping) or compliance.get("schema") != COMPLIANCE_SCHEMA:
        raise errors.InputError(
            f"the compliance document is not {COMPLIANCE_SCHEMA} (`hsm-lab verify --json`)"
        )
    return dict(compliance)


def _l0(state: RecordState) -> list[dict[str, str]]:
    held: dict[str, dict[str, str]] = {}
    for entry in state.entries:
        p = entry["params"]
        if entry["action"] in ("generate", "import") and p.get("token"):
            held[str(p["token"])] = {
                "token": str(p["token"]),
                "kcv": str(p.get("kcv")),
                "seq": str(entry["seq"]),
            }
    return list(held.values())


def _l1(state: RecordState) -> list[dict[str, Any]]:
    imports: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in state.entries:
        if entry["action"] == "byok.import":
            p = entry["params"]
            imports[(str(p.get("data_class")), str(p.get("region")))] = {**p, "seq": entry["seq"]}
        elif entry["action"] == "byok.revoke":
            p = entry["params"]
            for item in imports.values():
                if item.get("key_arn") == p.get("key_arn"):
                    item["revoked"] = entry["seq"]
    return sorted(imports.values(), key=lambda i: (i["data_class"], i.get("role") != "primary", i["region"]))


Box = tuple[str, str, str]  # title, line 1, line 2
BOX_W, BOX_GAP, TIER_STEP = 190, 12, 94


def _scanned(compliance: dict[str, Any] | None) -> dict[str, int]:
    scanned: dict[str, int] = {}
    for cell_row in (compliance or {}).get("rows", []):
        scanned[cell_row["data_class"]] = scanned.get(cell_row["data_class"], 0) + int(
            cell_row.get("objects_scanned", 0)
        )
    return scanned


def _l1_box(i: dict[str, Any]) -> Box:
    return (
        f"{i['data_class']} v{i.get('version')}",
        f"{i['region']} {i.get('role')} KCV {i.get('kcv')}",
        ("REVOKED, entry " + str(i["revoked"]))
        if i.get("revoked")
        else f"expires {(i.get('expires') or 'never')[:10]}",
    )


def _tiers(state: RecordState, compliance: dict[str, Any] | None) -> list[tuple[str, list[Box], str]]:
    """The four tiers (heading, boxes, fill), every label from the record or the compliance scan."""
    l0, l1 = _l0(state), _l1(state)
    classes = sorted({i["data_class"] for i in l1}) or sorted(
        {r["data_class"] for r in (compliance or {}).get("rows", [])}
    )
    scanned = _scanned(compliance)
    l3 = [
        (c, f"{scanned[c]} object versions scanned" if c in scanned else "not scanned", "SSE-KMS over HTTPS")
        for c in classes
    ]
    return [
        (
            "L0 master key (HSM)",
            [(f"token {i['token']}", f"KCV {i['kcv']}", f"non-extractable; entry {i['seq']}") for i in l0]
            or [("no master key recorded", "", "")],
            "#f3e3c3",
        ),
        (
            "L1 class keys (KMS, BYOK)",
            [_l1_box(i) for i in l1] or [("no class key imported", "", "")],
            "#dfe9f7",
        ),
        (
            "L2 data keys (KMS GenerateDataKey)",
            [(c, "under its L1 key, cached", "never stored in the clear") for c in classes]
            or [("no class", "", "")],
            "#e3f2e1",
        ),
        ("L3 records (clefs.envelope/v2)", l3 or [("no class", "", "")], "#efe3f4"),
    ]


def _row(y: int, width: int, items: list[Box], fill: str) -> list[str]:
    total = len(items) * (BOX_W + BOX_GAP) - BOX_GAP
    x = (width - total) // 2
    parts = []
    for title, line1, line2 in items:
        parts.append(
            f"<g><rect x='{x}' y='{y}' width='{BOX_W}' height='62' rx='6' fill='{fill}' stroke='#333'/>"
            f"<text x='{x + 8}' y='{y + 18}' font-size='12' font-weight='bold'>{_e(title)}</text>"
            f"<text x='{x + 8}' y='{y + 36}' font-size='11'>{_e(line1)}</text>"
            f"<text x='{x + 8}' y='{y + 52}' font-size='11'>{_e(line2)}</text></g>"
        )
        x += BOX_W + BOX_GAP
    return parts


def pyramid_svg(state: RecordState, compliance: dict[str, Any] | None) -> str:
    """L0 to L3 as boxes; every label comes from the verified transcript or the compliance scan."""
    tiers = _tiers(state, compliance)
    width = max(len(items) for _, items, _ in tiers) * (BOX_W + BOX_GAP) + BOX_GAP
    parts: list[str] = []
    for index, (heading, items, fill) in enumerate(tiers):
        y = 24 + index * TIER_STEP
        parts.append(f"<text x='8' y='{y - 8}' font-size='13' font-weight='bold'>{heading}</text>")
        parts += _row(y, width, items, fill)
    return (
        "<svg xmlns='http://www.w3.org/2000/svg' role='img' aria-label='key pyramid' "
        f"style='width:100%;max-width:{width}px;height:auto' viewBox='0 0 {width} 380'>{''.join(parts)}</svg>"
    )


def _params(params: Mapping[str, Any]) -> str:
    shown = []
    for key in (
        "token",
        "ceremony_id",
        "kcv",
        "data_class",
        "region",
        "role",
        "custodians",
        "quorum_used",
        "threshold",
        "shares",
        "key_arn",
        "expires",
        "decrypt",
        "same_material",
    ):
        if key in params and params[key] not in (None, "", []):
            value = params[key]
            shown.append(f"{key}={', '.join(map(str, value)) if isinstance(value, list) else value}")
    refused = params.get("refused") or []
    if refused:
        shown.append(f"refused={len(refused)}")
    return "; ".join(shown)


def timeline_html(state: RecordState) -> str:
    head = state.head
    signer_by_id = {key_id(s.public_key): s for s in state.signers.values()}
    signer = signer_by_id.get(head.signer_key_id) if head else None
    items = []
    for entry in state.entries:
        last = head is not None and entry["seq"] == state.entries[-1]["seq"]
        verdict = "chain link verified" + ("; signed head" if last else "")
        items.append(
            f"<li><span class='mono'>#{_e(entry['seq'])} {_e(entry['time'])}</span> "
            f"<b>{_e(entry['action'])}</b>"
            f" by {_e(entry['actor'])} <span class='ok'>✔ {verdict}</span><br>"
            f"<span class='dim mono'>{_e(_params(entry['params']))}</span></li>"
        )
    signed = (
        f"<p>Head <code>{_e(head.head[:16])}…</code> over {len(state.entries)} entries, "
        "signed in the HSM by token "
        f"<code>{_e(head.signer_token)}</code>, key id <code>{_e(head.signer_key_id)}</code>"
        + (
            f", fingerprint <code>{_e(grouped(signer.fingerprint))}</code> "
            f"(<i>{_e(fingerprint_words(signer.fingerprint))}</i>), {_e(signer.how)}"
            if signer
            else ""
        )
        + ". <span class='ok'>✔ signature verified</span></p>"
        if head
        else "<p class='gap'>no signed head</p>"
    )
    signers = "".join(
        f"<li><code>{_e(grouped(s.fingerprint))}</code> token {_e(s.token)}: {_e(s.how)}</li>"
        for s in state.signers.values()
    )
    return f"{signed}<p>Authorised signers:</p><ul>{signers}</ul><ol class='timeline'>{''.join(items)}</ol>"


def compliance_html(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return "<p class='dim'>No compliance report was given (`hsm-lab verify --json > verify.json`).</p>"
    head = "".join(f"<th>{_e(c.replace('_', ' '))}</th>" for c in CELLS)
    rows = []
    for row in doc["rows"]:
        cells = []
        for name in CELLS:
            cell = row["cells"].get(name)
            if cell is None or cell["source"] == report.NOT_CHECKED:
                cells.append("<td class='dim'>– not checked</td>")
                continue
            mark, _ = SOURCES[cell["source"]]
            verdict = (
                f"<span class='ok'>✔</span> {_e(cell['short'])}"
                if cell["ok"]
                else "<span class='gap'>✘ GAP</span>"
            )
            cells.append(f"<td title='{_e(cell['detail'])}'>{verdict}<span class='src'>{mark}</span></td>")
        rows.append(f"<tr><td>{_e(row['data_class'])}</td><td>{_e(row['region'])}</td>{''.join(cells)}</tr>")
    legend = "".join(
        f"<li><span class='src'>{m}</span> {_e(k)}: {_e(d)}</li>" for k, (m, d) in SOURCES.items()
    )
    gaps = "".join(f"<li class='gap'>{_e(g)}</li>" for g in doc["gaps"]) or "<li class='ok'>no gap</li>"
    enforced = (
        "<p>Not enforced by the emulator: " + _e("; ".join(doc["not_enforced"])) + "</p>"
        if doc["not_enforced"]
        else ""
    )
    return (
        f"<p>Target <b>{_e(doc['target'])}</b>; {doc['objects_scanned']} stored object versions scanned "
        f"(at most {doc['max_objects']} per bucket).</p>"
        f"<table><tr><th>class</th><th>region</th>{head}</tr>{''.join(rows)}</table>"
        f"<ul>{legend}</ul>{enforced}<ul>{gaps}</ul>"
    )


def render(
    state: RecordState, *, checked_against: str, compliance: Any = None, title: str = "Clefs auditor's report"
) -> str:
    """The whole page as a string (no script, no external resource)."""
    doc = compliance_doc(compliance)
    made = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    anchor = state.anchor.fingerprint
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<meta name='generator' content='{REPORT_FORMAT}'><title>{_e(title)}</title>"
        f"<style>{CSS}</style></head>"
        f"<body><h1>{_e(title)}</h1>"
        f"<p>Format {REPORT_FORMAT}, written {made}. Pinned signer <code>{_e(grouped(anchor))}</code> "
        f"(<i>{_e(fingerprint_words(anchor))}</i>): compare it with the fingerprint witnessed at the "
        "ceremony.</p>"
        "<section id='pyramid'><h2>Key pyramid</h2>"
        "<p class='truth'>Where this comes from: the verified transcript "
        f"({_e(checked_against)}) for L0 and L1;"
        " the compliance scan for L3 counts. Nothing here was read from the HSM's key material.</p>"
        f"{pyramid_svg(state, doc)}</section>"
        "<section id='transcript'><h2>Transcript</h2>"
        f"<p class='truth'>Where this comes from: {_e(checked_against)}. "
        "Each entry's hash links to the one before;"
        " the last is covered by the head signature.</p>"
        f"{timeline_html(state)}</section>"
        "<section id='compliance'><h2>Compliance</h2>"
        "<p class='truth'>Where this comes from: `hsm-lab verify` reading live S3 and KMS state; "
        "each cell says"
        " whether it was observed, only configured, or not checked.</p>"
        f"{compliance_html(doc)}</section></body></html>\n"
    )


def write_report(lab: Lab, out: Path, *, compliance: Any = None, expect: str | None = None) -> Path:
    """Verify the lab's record (against `expect` if given) and write the report atomically."""
    state = verify_lab(lab, expect=expect)
    where = "lab files" + (
        f" checked against the expected signer {expect[:16]}…"
        if expect
        else " checked against the lab's own pinned signer (pass --expect-signer)"
    )
    atomic_write_text(out, render(state, checked_against=where, compliance=compliance))
    return out


def load_compliance(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return compliance_doc(path.read_text())
    except OSError as exc:
        raise errors.InputError(f"cannot read {path}: {exc.strerror}") from None
