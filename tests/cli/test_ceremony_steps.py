"""The `hsm-lab` CLI end to end, as a person runs it: real SoftHSM2, real files, exit codes."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pyrage
import pytest

from hsm_lab.lab import RECOVERY_TOKEN

NAMES = ("ana", "ben", "cleo", "dan", "eva", "fay", "gus")


@pytest.fixture(scope="module")
def cli_lab(tmp_path_factory: pytest.TempPathFactory, run_cli) -> dict:
    root = tmp_path_factory.mktemp("cli")
    lab = root / "lab"
    keys = root / "custodian-keys"  # custodians' own keys: outside the lab
    keys.mkdir()
    entries = []
    for name in NAMES[:-1]:
        identity = pyrage.x25519.Identity.generate()
        (keys / f"{name}.txt").write_text(f"# {name}\n{identity}\n")
        entries.append(f'[[custodian]]\nname = "{name}"\nrecipient = "{identity.to_public()}"\n')
    entries.append(f'[[custodian]]\nname = "{NAMES[-1]}"\npassphrase = true\n')
    custodians = root / "custodians.toml"
    custodians.write_text("\n".join(entries))
    state = {
        "root": root,
        "lab": lab,
        "keys": keys,
        "custodians": custodians,
        "pin": secrets.token_urlsafe(10),
        "so_pin": secrets.token_urlsafe(10),
        "passphrase": {"CLEFS_PASSPHRASE_GUS": secrets.token_urlsafe(12)},
    }
    for token in ("clefs-primary", RECOVERY_TOKEN):
        result = run_cli("init", "--token", token, lab=lab, pin=state["pin"], so_pin=state["so_pin"])
        assert result.returncode == 0, result.stderr
    result = run_cli(
        "generate", "--custodians", str(custodians), lab=lab, pin=state["pin"], extra_env=state["passphrase"]
    )
    assert result.returncode == 0, result.stderr
    state["generate_out"] = result.stdout
    state["ceremony"] = (lab / "ceremonies" / "CURRENT").read_text().strip()
    return state


def share_args(state: dict, names: tuple[str, ...]) -> list[str]:
    args = []
    for name in names:
        args += ["--share", str(state["lab"] / "ceremonies" / state["ceremony"] / "shares" / f"{name}.age")]
        if name != "gus":
            args += ["-i", str(state["keys"] / f"{name}.txt")]
    return args


def one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_generate_prints_the_share_set(cli_lab: dict) -> None:
    out = cli_lab["generate_out"]
    assert "quorum 5-of-7" in out and all(name in out for name in NAMES)
    assert "passphrase (scrypt)" in out
    assert cli_lab["pin"] not in out


def test_init_is_idempotent(cli_lab: dict, run_cli) -> None:
    again = run_cli("init", lab=cli_lab["lab"], pin=cli_lab["pin"], so_pin=cli_lab["so_pin"])
    assert again.returncode == 0 and "already initialised" in again.stdout


def test_verify_share_and_verify_all(cli_lab: dict, run_cli) -> None:
    one = run_cli("verify-share", *share_args(cli_lab, ("ana",)), lab=cli_lab["lab"], pin=cli_lab["pin"])
    assert one.returncode == 0, one.stderr
    assert "ana" in one.stdout and "ok" in one.stdout
    ids = [a for name in NAMES[:-1] for a in ("-i", str(cli_lab["keys"] / f"{name}.txt"))]
    every = run_cli(
        "verify-all", *ids, lab=cli_lab["lab"], pin=cli_lab["pin"], extra_env=cli_lab["passphrase"]
    )
    assert every.returncode == 0, every.stderr
    assert every.stdout.count(" ok ") == 7


def test_verify_all_fails_when_a_custodian_cannot_open_their_share(cli_lab: dict, run_cli) -> None:
    ids = [a for name in NAMES[:-2] for a in ("-i", str(cli_lab["keys"] / f"{name}.txt"))]
    result = run_cli(
        "verify-all", *ids, lab=cli_lab["lab"], pin=cli_lab["pin"], extra_env=cli_lab["passphrase"]
    )
    line = one_line_error(result)
    assert "fay: cannot open the share" in line


def test_import_with_too_few_shares_is_refused(cli_lab: dict, run_cli) -> None:
    result = run_cli(
        "import",
        "--token",
        RECOVERY_TOKEN,
        "--authorise-signer",
        *share_args(cli_lab, NAMES[:4]),
        lab=cli_lab["lab"],
        pin=cli_lab["pin"],
    )
    assert "4 valid shares presented, 5 needed" in one_line_error(result)


def test_import_into_a_new_token_needs_the_quorum_to_authorise_it(cli_lab: dict, run_cli) -> None:
    result = run_cli(
        "import",
        "--token",
        RECOVERY_TOKEN,
        *share_args(cli_lab, NAMES[1:6]),
        lab=cli_lab["lab"],
        pin=cli_lab["pin"],
    )
    assert "pass --authorise-signer" in one_line_error(result)


def test_import_with_a_quorum_then_status_and_transcript(cli_lab: dict, run_cli) -> None:
    result = run_cli(
        "import",
        "--token",
        RECOVERY_TOKEN,
        "--authorise-signer",
        *share_args(cli_lab, NAMES[1:6]),
        lab=cli_lab["lab"],
        pin=cli_lab["pin"],
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((cli_lab["lab"] / "ceremonies" / cli_lab["ceremony"] / "manifest.json").read_text())
    kcv = manifest["manifest"]["kcv"]
    assert f"HSM KCV {kcv} = manifest KCV {kcv}" in result.stdout
    assert f"current share set: ceremony {cli_lab['ceremony']}, 5-of-7, KCV {kcv}" in result.stdout
    status = run_cli("status", "--token", RECOVERY_TOKEN, "--json", lab=cli_lab["lab"], pin=cli_lab["pin"])
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert doc["schema"] == "clefs.status/v1" and doc["unexplained"] == [] and doc["missing"] == []
    keys = {(k["label"], k["object_class"]): k for k in doc["objects"]}
    master = keys[("clefs-master", "secret_key")]
    assert master["kcv"] == kcv
    assert master["attributes"]["sensitive"] and not master["attributes"]["extractable"]
    assert len(doc["authorised_signers"]) == 2, "the quorum authorised the recovery token's key"
    again = run_cli(
        "import",
        "--token",
        RECOVERY_TOKEN,
        *share_args(cli_lab, NAMES[1:6]),
        lab=cli_lab["lab"],
        pin=cli_lab["pin"],
    )
    assert "refusing to overwrite" in one_line_error(again)
    verify = run_cli(
        "transcript", "verify", "--token", RECOVERY_TOKEN, lab=cli_lab["lab"], pin=cli_lab["pin"]
    )
    assert verify.returncode == 0 and "transcript OK" in verify.stdout
    unanchored = run_cli("transcript", "verify", lab=cli_lab["lab"])
    assert "nothing to anchor the check to" in one_line_error(unanchored)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["status"], {"CLEFS_USER_PIN": "wrong-pin-000"}, "user PIN was refused"),
        (["status"], {"CLEFS_PKCS11_MODULE": "/nonexistent/module.so"}, "no PKCS#11 module at /nonexistent"),
        (["status", "--token", "nope"], {}, "no token 'nope'"),
        (["status"], {"CLEFS_USER_PIN": ""}, "no user PIN: set CLEFS_USER_PIN"),
        (["generate", "--custodians", "/nonexistent.toml"], {}, "cannot read custodian file"),
        (["verify-share", "--share", "/nonexistent.age"], {}, "nonexistent: cannot read"),
    ],
)
def test_refusals_are_one_line_with_non_zero_exit(cli_lab: dict, run_cli, args, env, message) -> None:
    result = run_cli(*args, lab=cli_lab["lab"], pin=cli_lab["pin"], extra_env=env)
    assert message in one_line_error(result)


def test_generating_again_is_refused_and_changes_nothing(cli_lab: dict, run_cli) -> None:
    before = sorted(p.name for p in (cli_lab["lab"] / "ceremonies").iterdir())
    result = run_cli(
        "generate",
        "--custodians",
        str(cli_lab["custodians"]),
        lab=cli_lab["lab"],
        pin=cli_lab["pin"],
        extra_env=cli_lab["passphrase"],
    )
    assert "refusing to overwrite" in one_line_error(result)
    assert sorted(p.name for p in (cli_lab["lab"] / "ceremonies").iterdir()) == before


def test_weak_quorum_needs_the_flag_and_is_shown(tmp_path: Path, run_cli) -> None:
    pin, so = secrets.token_urlsafe(10), secrets.token_urlsafe(10)
    lab = tmp_path / "weak"
    assert run_cli("init", lab=lab, pin=pin, so_pin=so).returncode == 0
    people = tmp_path / "three.toml"
    people.write_text(
        "".join(
            f'[[custodian]]\nname = "p{i}"\nrecipient = "{pyrage.x25519.Identity.generate().to_public()}"\n'
            for i in range(4)
        )
    )
    refused = run_cli("generate", "--custodians", str(people), "-k", "2", lab=lab, pin=pin)
    assert "--allow-weak-quorum" in one_line_error(refused)
    accepted = run_cli(
        "generate", "--custodians", str(people), "-k", "2", "--allow-weak-quorum", lab=lab, pin=pin
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "WEAKENED" in accepted.stdout


def test_transcript_records_init_and_each_step(cli_lab: dict) -> None:
    lines = (cli_lab["lab"] / "transcript.jsonl").read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    actions = [e["action"] for e in entries]
    assert actions[:2] == ["init", "generate"], "a second token signs nothing until a quorum authorises it"
    assert entries[0]["params"]["token"] == "clefs-primary"
    assert all(e["actor"] == "pytest-cli" for e in entries)
    text = "\n".join(lines)
    assert cli_lab["pin"] not in text and cli_lab["so_pin"] not in text
