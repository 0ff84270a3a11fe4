"""Issue 7 item 6 (custodian hygiene, file modes) and item 9's module facts, through the real CLI."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pyrage
import pytest

from hsm_lab import errors
from hsm_lab.ceremony.custodians import Custodian, check_distinct, parse_custodians
from hsm_lab.lab import RECOVERY_TOKEN
from tests.conftest import LabUnderTest


def toml(entries: list[tuple[str, str | None]]) -> str:
    out = []
    for name, recipient in entries:
        if recipient is None:
            out.append(f'[[custodian]]\nname = "{name}"\npassphrase = true\n')
        else:
            out.append(f'[[custodian]]\nname = "{name}"\nrecipient = "{recipient}"\n')
    return "\n".join(out)


def recipient() -> str:
    return str(pyrage.x25519.Identity.generate().to_public())


@pytest.fixture
def lab(tmp_path: Path, run_cli) -> dict:
    pins = {"pin": secrets.token_urlsafe(12), "so_pin": secrets.token_urlsafe(12)}
    root = tmp_path / "lab"
    assert run_cli("init", lab=root, **pins).returncode == 0
    return {"root": root, "pins": pins, "tmp": tmp_path}


def one_line(result) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_one_recipient_cannot_hold_two_custodian_slots(lab: dict, run_cli) -> None:
    shared = recipient()
    people = lab["tmp"] / "dup.toml"
    people.write_text(toml([("ana", shared), ("ben", recipient()), ("cleo", recipient()), ("dan", shared)]))
    result = run_cli(
        "generate", "--custodians", str(people), "-k", "3", lab=lab["root"], pin=lab["pins"]["pin"]
    )
    assert "custodians ana and dan have the same recipient" in one_line(result)
    assert not (lab["root"] / "ceremonies").exists()


def test_every_slot_on_one_key_is_refused_in_the_api_too() -> None:
    key = recipient()
    with pytest.raises(errors.InputError, match="same recipient"):
        check_distinct([Custodian(f"c{i}", key) for i in range(7)])
    with pytest.raises(errors.InputError, match="same recipient"):
        parse_custodians(toml([(f"c{i}", key) for i in range(7)]))


def test_seven_of_seven_needs_allow_no_spare_and_is_recorded(lab: dict, run_cli) -> None:
    people = lab["tmp"] / "seven.toml"
    people.write_text(toml([(f"c{i}", recipient()) for i in range(7)]))
    pin = lab["pins"]["pin"]
    refused = run_cli("generate", "--custodians", str(people), "-k", "7", lab=lab["root"], pin=pin)
    assert "--allow-no-spare" in one_line(refused)
    accepted = run_cli(
        "generate", "--custodians", str(people), "-k", "7", "--allow-no-spare", lab=lab["root"], pin=pin
    )
    assert accepted.returncode == 0, accepted.stderr
    assert "WEAKENED" in accepted.stdout and "no spare" in accepted.stdout


@pytest.mark.parametrize("passphrase", ["Zq", "Zq9-short!x"])
def test_a_short_passphrase_is_refused(lab: dict, run_cli, passphrase: str) -> None:
    people = lab["tmp"] / "pass.toml"
    people.write_text(
        toml([("ana", recipient()), ("ben", recipient()), ("cleo", recipient()), ("gus", None)])
    )
    result = run_cli(
        "generate",
        "--custodians",
        str(people),
        "-k",
        "3",
        lab=lab["root"],
        pin=lab["pins"]["pin"],
        extra_env={"CLEFS_PASSPHRASE_GUS": passphrase},
    )
    line = one_line(result)
    assert "passphrase of custodian gus is shorter than 12" in line
    assert passphrase not in result.stderr + result.stdout, "a secret is never printed"


def test_everything_the_lab_writes_is_owner_only(lab: dict, run_cli) -> None:
    """Shares, keys, the token store, the record: files 0600, directories 0700 (checked with stat)."""
    identities = {f"c{i}": pyrage.x25519.Identity.generate() for i in range(4)}
    people = lab["tmp"] / "people.toml"
    people.write_text(toml([(n, str(i.to_public())) for n, i in identities.items()]))
    keys = lab["tmp"] / "keys"
    keys.mkdir()
    pin, so = lab["pins"]["pin"], lab["pins"]["so_pin"]
    assert run_cli("init", "--token", RECOVERY_TOKEN, lab=lab["root"], pin=pin, so_pin=so).returncode == 0
    assert (
        run_cli("generate", "--custodians", str(people), "-k", "3", lab=lab["root"], pin=pin).returncode == 0
    )
    current = (lab["root"] / "ceremonies" / "CURRENT").read_text().strip()
    args = []
    for name in ("c0", "c1", "c2"):
        (keys / f"{name}.txt").write_text(f"{identities[name]}\n")
        args += ["--share", str(lab["root"] / "ceremonies" / current / "shares" / f"{name}.age")]
        args += ["-i", str(keys / f"{name}.txt")]
    imported = run_cli(
        "import", "--token", RECOVERY_TOKEN, "--authorise-signer", *args, lab=lab["root"], pin=pin
    )
    assert imported.returncode == 0, imported.stderr
    rekeyed = run_cli("rekey", "--custodians", str(people), "-k", "3", *args, lab=lab["root"], pin=pin)
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert (
        run_cli("transcript", "export", str(lab["tmp"] / "bundle"), lab=lab["root"], pin=pin).returncode == 0
    )
    loose = []
    for root in (lab["root"], lab["tmp"] / "bundle"):
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            wanted = 0o700 if path.is_dir() else 0o600
            if mode != wanted:
                loose.append(f"{oct(mode)} {path.relative_to(lab['tmp'])}")
    assert loose == []
    assert any((lab["root"] / "tokens").rglob("*.object")), "the SoftHSM2 store was checked too"


def test_the_modules_pin_range_is_read_from_the_token_info(lab_env: LabUnderTest) -> None:
    low, high = lab_env.hsm.pin_range()
    assert (low, high) == (4, 255)  # SoftHSM2 2.6.1's range, read through C_GetTokenInfo
    with pytest.raises(errors.InputError, match="4 to 255 bytes"):
        lab_env.hsm.init_token("short-pin", "so-pin-ok", "abc")


@pytest.mark.parametrize(
    "command", [["status"], ["verify-all"], ["transcript", "verify"], ["import", "--share", "x"]]
)
def test_no_command_but_init_creates_a_lab(tmp_path: Path, run_cli, command: list[str]) -> None:
    """Issue 11: a typo in --lab must not silently make a new, empty lab."""
    missing = tmp_path / "not-a-lab"
    result = run_cli(*command, lab=missing, pin="user-pin-0000")
    assert result.returncode == 1 and f"no lab at {missing}: run `hsm-lab init`" in result.stderr
    assert not missing.exists()


def test_generate_checks_the_pin_before_any_custodian_types_a_passphrase(lab: dict, run_cli) -> None:
    people = lab["tmp"] / "pass.toml"
    people.write_text(
        toml([("ana", recipient()), ("ben", recipient()), ("cleo", recipient()), ("gus", None)])
    )
    result = run_cli(
        "generate", "--custodians", str(people), "-k", "3", lab=lab["root"], pin="wrong-pin-0000"
    )
    line = one_line(result)
    assert "PIN was refused" in line and "passphrase" not in line
