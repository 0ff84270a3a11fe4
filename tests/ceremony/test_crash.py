"""Item 3: every ceremony step killed (SIGKILL) at every phase leaves a lab the next command repairs.

Each case copies a prepared lab (files and SoftHSM2 token store), runs one step
through the real CLI with CLEFS_TEST_FAULT naming the phase, and checks what
the issue asks: the process died, `status` and `transcript verify` then pass and
say what they did, the step can be re-run (or is found complete), no object on
the token is unexplained, no half-written file is left, and no master key exists
without its share set.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pyrage
import pytest

from hsm_lab.lab import PRIMARY_TOKEN, RECOVERY_TOKEN

NAMES = ("ana", "ben", "cleo", "dan")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, run_cli) -> dict:
    """A lab with two tokens and a generated 3-of-4 ceremony; plus one with only the tokens."""
    root = tmp_path_factory.mktemp("crash")
    keys = root / "keys"
    keys.mkdir()
    entries = []
    for name in NAMES:
        identity = pyrage.x25519.Identity.generate()
        (keys / f"{name}.txt").write_text(f"{identity}\n")
        entries.append(f'[[custodian]]\nname = "{name}"\nrecipient = "{identity.to_public()}"\n')
    custodians = root / "custodians.toml"
    custodians.write_text("\n".join(entries))
    pin, so = "crash-user-pin-1", "crash-so-pin-123"
    bare = root / "bare"
    for token in (PRIMARY_TOKEN, RECOVERY_TOKEN):
        assert run_cli("init", "--token", token, lab=bare, pin=pin, so_pin=so).returncode == 0
    dealt = root / "dealt"
    shutil.copytree(bare, dealt)
    result = run_cli("generate", "--custodians", str(custodians), "-k", "3", lab=dealt, pin=pin)
    assert result.returncode == 0, result.stderr
    return {
        "root": root,
        "keys": keys,
        "custodians": custodians,
        "pin": pin,
        "so": so,
        "bare": bare,
        "dealt": dealt,
    }


def fresh_copy(template: dict, which: str, tmp_path: Path) -> Path:
    lab = tmp_path / "lab"
    shutil.copytree(template[which], lab, ignore=shutil.ignore_patterns("hsm.lock"))
    return lab


def share_args(template: dict, lab: Path, names: tuple[str, ...]) -> list[str]:
    ceremony = (lab / "ceremonies" / "CURRENT").read_text().strip()
    args: list[str] = []
    for name in names:
        args += ["--share", str(lab / "ceremonies" / ceremony / "shares" / f"{name}.age")]
        args += ["-i", str(template["keys"] / f"{name}.txt")]
    return args


def step_args(step: str, template: dict, lab: Path) -> list[str]:
    if step == "generate":
        return ["generate", "--custodians", str(template["custodians"]), "-k", "3"]
    if step == "import":
        return [
            "import",
            "--token",
            RECOVERY_TOKEN,
            "--authorise-signer",
            *share_args(template, lab, NAMES[:3]),
        ]
    return [
        "rekey",
        "--custodians",
        str(template["custodians"]),
        "-k",
        "3",
        *share_args(template, lab, NAMES[1:]),
    ]


def status(run_cli, lab: Path, pin: str, token: str) -> tuple[dict, str]:
    result = run_cli("status", "--token", token, "--json", lab=lab, pin=pin)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout), result.stderr


PHASES = {
    "generate": ["intent", "key", "dealt", "committed"],
    "import": ["intent", "unwrapped", "committed"],
    "rekey": ["intent", "dealt", "committed"],
}
CASES = [(step, f"{step}:{phase}") for step, phases in PHASES.items() for phase in phases] + [
    (step, f"append:{step}:{where}") for step in PHASES for where in ("journaled", "recorded")
]


@pytest.mark.parametrize(("step", "point"), CASES, ids=[point for _step, point in CASES])
def test_a_step_killed_at_any_phase_is_repaired_by_the_next_command(
    template: dict, tmp_path: Path, run_cli, step: str, point: str
) -> None:
    lab = fresh_copy(template, "bare" if step == "generate" else "dealt", tmp_path)
    pin = template["pin"]
    token = RECOVERY_TOKEN if step == "import" else PRIMARY_TOKEN
    before = (lab / "transcript.jsonl").read_text().count("\n")
    killed = run_cli(*step_args(step, template, lab), lab=lab, pin=pin, extra_env={"CLEFS_TEST_FAULT": point})
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)

    doc, warnings = status(run_cli, lab, pin, token)
    assert doc["unexplained"] == [] and doc["missing"] == []
    committed = point.endswith((":committed", ":recorded"))
    if not committed:
        assert "rolled back" in warnings or "discarded" in warnings or step == "import", warnings
    verify = run_cli("transcript", "verify", "--token", token, lab=lab, pin=pin)
    assert verify.returncode == 0, verify.stderr
    assert not list(lab.rglob("*.tmp")), "no half-written file"
    assert not [p for p in (lab / "pending").glob("*") if p.is_file()], "no intent or journal left"
    after = (lab / "transcript.jsonl").read_text().count("\n")
    assert after > before or not committed

    labels = {(o["label"], o["object_class"]) for o in doc["objects"]}
    has_master = ("clefs-master", "secret_key") in labels
    if has_master:  # never a master key without its share set
        current = (lab / "ceremonies" / "CURRENT").read_text().strip()
        manifest = json.loads((lab / "ceremonies" / current / "manifest.json").read_text())["manifest"]
        master = next(o for o in doc["objects"] if o["label"] == "clefs-master")
        assert master["kcv"] == manifest["kcv"] and doc["current_ceremony"] == current
        assert len(list((lab / "ceremonies" / current / "shares").glob("*.age"))) == len(NAMES)
    ceremonies = (
        {p.name for p in (lab / "ceremonies").glob("cer-*")} if (lab / "ceremonies").exists() else set()
    )
    assert ceremonies <= {doc["current_ceremony"], *_retired(lab)}, "no ceremony the record does not know"

    again = run_cli(*step_args(step, template, lab), lab=lab, pin=pin)
    if committed:
        if step == "rekey":
            assert again.returncode == 0, again.stderr  # a further rekey from the new set
        else:
            assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    else:
        assert again.returncode == 0, again.stderr
    final, _ = status(run_cli, lab, pin, token)
    assert final["unexplained"] == [] and final["missing"] == []


def _retired(lab: Path) -> set[str]:
    retired = set()
    for line in (lab / "transcript.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["action"] == "rekey":
            retired.add(entry["params"]["old_ceremony_id"])
    return retired


def test_init_killed_half_way_is_resumed_not_reported_initialised(tmp_path: Path, run_cli) -> None:
    lab = tmp_path / "lab"
    pin, so = "half-init-pin-1", "half-init-so-12"
    killed = run_cli(
        "init", lab=lab, pin=pin, so_pin=so, extra_env={"CLEFS_TEST_FAULT": "append:init:journaled"}
    )
    assert killed.returncode == -signal.SIGKILL
    again = run_cli("init", lab=lab, pin=pin, so_pin=so)
    assert again.returncode == 0, again.stderr
    assert "already initialised" not in again.stdout and "initialised" in again.stdout
    assert run_cli("transcript", "verify", lab=lab, pin=pin).returncode == 0
    third = run_cli("init", lab=lab, pin=pin, so_pin=so)
    assert "already initialised (unchanged)" in third.stdout
