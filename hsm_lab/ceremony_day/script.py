"""The printed ceremony script, ICANN root-KSK style: roles, steps, exact commands, what the
screen must show, and lines for initials and signatures.

Built from the lab's configuration (module, tokens, the verified record when the lab has one)
and a custodians file; rendered as Markdown and as one self-contained HTML file with a print
stylesheet. Values the record already knows (pinned signer, KCV, ceremony id, class-key KCVs)
are printed as hex and as words for reading aloud; values the day will produce are blanks the
witnesses fill in by hand. The step sequence is compared in CI with tests/golden/.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hsm_lab import errors
from hsm_lab.ceremony.custodians import Custodian, load_custodians
from hsm_lab.ceremony.record import RecordState, fingerprint_words, grouped, verify_lab
from hsm_lab.lab import PRIMARY_TOKEN, RECOVERY_TOKEN, Lab

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


@dataclass(frozen=True)
class _Day:
    """What a step's lines are made of: the lab's verified values, or blanks to fill in."""

    step: str
    state: RecordState | None
    custodians: list[Custodian]
    target: str
    k: int
    signer: str | None
    kcv: str | None
    ceremony_id: str | None

    @property
    def expect(self) -> str:
        return f" --expect-signer {self.signer}" if self.signer else " --expect-signer <SIGNER>"

    @property
    def n(self) -> int:
        return len(self.custodians)


def _day(step: str, lab: Lab, custodians: list[Custodian], token: str | None, threshold: int | None) -> _Day:
    if step not in STEPS:
        raise errors.InputError(f"--step {step!r}: choose one of {', '.join(STEPS)}")
    state = verify_lab(lab) if (lab.root / "anchor.json").is_file() else None
    current = state.manifest() if state and state.current else None
    k = threshold or (current.threshold if current else 5)
    if not 1 <= k <= len(custodians):
        raise errors.InputError(f"K = {k} does not fit the {len(custodians)} custodians of the file")
    return _Day(
        step=step,
        state=state,
        custodians=custodians,
        target=token or (PRIMARY_TOKEN if step == "generate" else RECOVERY_TOKEN),
        k=k,
        signer=state.anchor.fingerprint if state else None,
        kcv=current.kcv if current else None,
        ceremony_id=current.ceremony_id if current else None,
    )


def build_script(
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
    day = _day(step, lab, custodians, token, threshold)
    opening = Step(
        "Open the ceremony: attendance, room, equipment sealed and logged",
        "CA",
        ["hsm-lab doctor"],
        ["every check ok (tools, module, tokens, PINs set)"],
        ["participants sign the attendance list below; the IW checks tamper-evident bags by serial number"],
    )
    if step == "generate":
        middle = _generate_steps(day)
    elif step in ("import", "rekey"):
        middle = _session_steps(day)
    else:
        middle = _byok_steps(day, classes)
    steps = [opening, *middle, *_closing_steps(day)]
    return Script(step, str(lab.root), module, day.target, day.k, custodians, steps, _values(lab, day))


def _generate_steps(day: _Day) -> list[Step]:
    k, n, target, signer = day.k, day.n, day.target, day.signer
    return [
        Step(
            f"Initialise token {target}, its signing key, and pin the lab's signer",
            "SO",
            [f"hsm-lab init --token {target}"],
            ["token initialised", *_hex_and_words("pinned ceremony signer", signer)],
            ["the IW writes the fingerprint and words in the record book; they anchor every later check"],
        ),
        Step(
            f"Generate the master key in the HSM and deal {k}-of-{n} shares",
            "CA",
            [f"hsm-lab generate --custodians custodians.toml -k {k} -n {n} --token {target}"],
            [
                f"quorum {k}-of-{n}",
                *_kcv("KCV", None),
                "ceremony cer-________",
                *_hex_and_words("signer", signer),
            ],
            ["no WEAKENED line may appear unless the policy allows it in writing"],
        ),
        Step(
            "Each custodian checks their share alone",
            "CU",
            [
                f"hsm-lab verify-share --share {c.name}.age -i {c.name}.txt --token {target}"
                for c in day.custodians
            ],
            ["share drill: ok matches its commitment"],
            per_custodian=True,
        ),
    ]


def _present_cmd(c: Custodian) -> str:
    share = f"{c.name}.age"
    return f"hsm-lab present --nonce <NONCE> --share {share} --custodian {c.name}" + (
        f" -i {c.name}.txt" if c.recipient else "  # passphrase typed at this terminal"
    )


def _open_cmd(day: _Day) -> str:
    if day.step == "import":
        return (
            f"hsm-lab ceremony open --step import --token {day.target} --authorise-signer"
            f" --expect-kcv {day.kcv or '<KCV>'}{day.expect}"
            f" --expect-ceremony {day.ceremony_id or '<CEREMONY>'}"
        )
    return (
        f"hsm-lab ceremony open --step rekey --custodians new-custodians.toml -k {day.k} --token {day.target}"
    )


def _session_steps(day: _Day) -> list[Step]:
    """import and rekey: a ceremony session the custodians present to."""
    step, target, kcv = day.step, day.target, day.kcv
    steps = [
        Step(
            f"Check token {target} pins the witnessed signer",
            "SO",
            [f"hsm-lab init --token {target}{day.expect}"],
            _hex_and_words("pinned ceremony signer", day.signer),
        ),
        Step(
            f"Open the ceremony session for {step}",
            "CA",
            [_open_cmd(day)],
            [
                f"current share set: ceremony {day.ceremony_id or BLANK}",
                *_kcv("KCV", kcv),
                *_hex_and_words("signer", day.signer),
                f"nonce: {BLANK} (read aloud; each custodian types it)",
            ],
        ),
        Step(
            "Custodians present their shares, each at their own terminal",
            "CU",
            [_present_cmd(c) for c in day.custodians],
            ["accepted: k/K and who presented; a refused share is named and counts nothing"],
            [f"any {day.k} of the {day.n} custodians; stop at K"],
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
    return steps


def _byok_steps(day: _Day, classes: tuple[str, ...]) -> list[Step]:
    kcvs = _class_kcvs(day.state)
    steps = [
        Step(
            "Apply the stack (KMS keys PendingImport in both regions)",
            "CA",
            ["hsm-lab stack apply-localstack"],
            ["resources created or reconciled; outputs written"],
        )
    ]
    for data_class in classes:
        wrap = " --wrapping RSA_AES_KEY_WRAP_SHA_256" if data_class == "health-documents" else ""
        steps.append(
            Step(
                f"Import class key {data_class} (L1) into Paris and Frankfurt",
                "SO",
                [f"hsm-lab byok import --class {data_class}{wrap} --token {day.target}"],
                [
                    *_kcv(f"{data_class} KCV (primary and replica alike)", kcvs.get(data_class)),
                    "proved: encrypted under the primary, decrypted under the replica",
                ],
            )
        )
    steps.append(Step("Compliance from live state", "CA", ["hsm-lab verify"], ["no gap"]))
    return steps


def _closing_steps(day: _Day) -> list[Step]:
    return [
        Step(
            "Verify and export the record",
            "IW",
            [
                f"hsm-lab transcript verify --token {day.target}{day.expect}",
                "hsm-lab transcript export audit-bundle",
            ],
            ["transcript OK", *_hex_and_words("pinned signer", day.signer)],
        ),
        Step(
            "Close the ceremony",
            "CA",
            [],
            [],
            ["shares and identities back in their bags; the IW records bag serial numbers; all sign below"],
        ),
    ]


def _values(lab: Lab, day: _Day) -> dict[str, str]:
    """The printed values that come from this lab (tests normalise them away)."""
    values = {"lab": str(lab.root)}
    signer, kcv = day.signer, day.kcv
    if signer:
        values.update(signer=signer, signer_grouped=grouped(signer), signer_words=fingerprint_words(signer))
    if kcv:
        values.update(kcv=kcv, kcv_words=fingerprint_words(kcv, 2))
    if day.ceremony_id:
        values["ceremony"] = day.ceremony_id
    for data_class, value in _class_kcvs(day.state).items():
        values[f"kcv:{data_class}"] = value
        values[f"kcv-words:{data_class}"] = fingerprint_words(value, 2)
    return values


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
