"""Issue 7's insiders, on the real SoftHSM2: each attack that worked on the old main is refused.

(a) can read and write every lab file but knows no PIN: they may add tokens of
their own to the lab's store with `softhsm2-util`, edit, delete or restore files.
(b) also knows the user PIN: they can sign with the token and create objects in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pkcs11
import pyrage
import pytest
from pkcs11 import Attribute, KeyType, ObjectClass

from hsm_lab import ceremony, errors
from hsm_lab.ceremony import dealing, record
from hsm_lab.ceremony.custodians import Custodian
from hsm_lab.ceremony.manifest import load_manifest, sign_manifest
from hsm_lab.ceremony.record import Record, verify_lab
from hsm_lab.ceremony.transcripts import entry_hash, sign_head
from hsm_lab.lab import MASTER_LABEL, PRIMARY_TOKEN, Lab
from tests.conftest import NAMES, Dealt, LabUnderTest, copy_lab, deal

EVIL_PIN = "attacker-pin-0001"
EVIL_SO = "attacker-so-00001"


def attacker_token(env: LabUnderTest, label: str = "evil") -> str:
    """(a): a token of their own in the lab's store, their own PINs, their own signing key."""
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", EVIL_SO, "--pin", EVIL_PIN],
        env={**os.environ, "SOFTHSM2_CONF": str(env.hsm.softhsm_conf)},
        check=True,
        capture_output=True,
    )
    env.hsm.lib.reinitialize()
    with env.hsm.session(label, user_pin=EVIL_PIN) as session:
        session.ensure_signing_key()
    return label


def entries(lab: Lab) -> list[dict]:
    return [json.loads(line) for line in lab.transcript.read_text().splitlines()]


def rechain(items: list[dict]) -> list[dict]:
    prev = "0" * 64
    for entry in items:
        entry["prev"] = prev
        entry["hash"] = entry_hash(entry)
        prev = entry["hash"]
    return items


def write_entries(lab: Lab, items: list[dict]) -> None:
    lab.transcript.write_text("".join(json.dumps(e) + "\n" for e in items))


def resign_head(env: LabUnderTest, token: str, pin: str, last: dict) -> None:
    with env.hsm.session(token, user_pin=pin) as session:
        env.lab.transcript_head.write_text(json.dumps(sign_head(session, last)))


def open_record(env: LabUnderTest, token: str = PRIMARY_TOKEN) -> Record:
    with env.hsm.session(token, user_pin=env.pin) as session:
        return Record.open(env.lab, session)


@pytest.fixture
def copied(dealt: Dealt, tmp_path: Path) -> LabUnderTest:
    return copy_lab(dealt.env, tmp_path / "copy")


# -- (a) a token of the attacker's own ----------------------------------------------------


def test_a_transcript_re_signed_by_the_attackers_token_is_refused_naming_both_keys(
    copied: LabUnderTest, run_cli
) -> None:
    evil = attacker_token(copied)
    items = entries(copied.lab)
    items[1]["params"]["threshold"] = 2
    rechain(items)
    write_entries(copied.lab, items)
    resign_head(copied, evil, EVIL_PIN, items[-1])
    with pytest.raises(errors.TranscriptError, match="not an authorised signer") as caught:
        verify_lab(copied.lab)
    anchor = record.require_anchor(copied.lab)
    assert anchor.key_id in str(caught.value) and "evil" in str(caught.value)
    for how in ({"pin": copied.pin}, {"extra_env": {"CLEFS_EXPECT_SIGNER": anchor.fingerprint}}):
        result = run_cli("transcript", "verify", lab=copied.lab.root, **how)
        assert result.returncode == 1 and "not an authorised signer" in result.stderr
        assert "transcript OK" not in result.stdout


def test_transcript_show_refuses_a_tampered_record(copied: LabUnderTest, run_cli) -> None:
    tamper_entry(copied.lab)
    result = run_cli("transcript", "show", lab=copied.lab.root)
    assert result.returncode == 1 and "transcript entry 2 (generate)" in result.stderr


def test_a_deleted_anchor_file_is_restored_from_the_pinned_token(copied: LabUnderTest, run_cli) -> None:
    before = record.require_anchor(copied.lab).fingerprint
    record.anchor_path(copied.lab).unlink()
    refused = run_cli("status", lab=copied.lab.root, pin=copied.pin)
    assert refused.returncode == 1 and "no pinned ceremony signer: run `hsm-lab init`" in refused.stderr
    again = run_cli("init", lab=copied.lab.root, pin=copied.pin, so_pin=copied.so_pin)
    assert again.returncode == 0 and "restored anchor.json" in again.stderr
    assert record.require_anchor(copied.lab).fingerprint == before


def test_a_manifest_re_signed_with_threshold_4_is_refused(
    copied: LabUnderTest, dealt: Dealt, run_cli
) -> None:
    evil = attacker_token(copied)
    path = copied.lab.manifest_path(dealt.manifest.ceremony_id)
    manifest = load_manifest(path)
    body = dict(manifest.body, threshold=4)
    with copied.hsm.session(evil, user_pin=EVIL_PIN) as session:
        sign_manifest(body, session).write(path)
    with pytest.raises(errors.TranscriptError, match="not the one committed"):
        verify_lab(copied.lab)
    # ... and when the attacker also rewrites the record to match, the head is theirs: refused
    items = entries(copied.lab)
    generate = next(e for e in items if e["action"] == "generate")
    generate["params"]["manifest_sha256"] = load_manifest(path).digest()
    rechain(items)
    write_entries(copied.lab, items)
    resign_head(copied, evil, EVIL_PIN, items[-1])
    with pytest.raises(errors.TranscriptError, match=r"is signed by .*not by an authorised signer"):
        verify_lab(copied.lab)
    result = run_cli("verify-all", lab=copied.lab.root, pin=copied.pin)
    assert result.returncode == 1 and "authorised signer" in result.stderr


def test_a_share_set_dealt_by_the_attacker_is_never_imported(
    copied: LabUnderTest, dealt: Dealt, tmp_path
) -> None:
    """(a) deals their own key to the custodians' public keys and points CURRENT at it."""
    fresh = copied.new_token("fresh-hsm")  # the operator's new HSM, ready before the attack
    shadow = copy_lab(copied, tmp_path / "shadow")
    evil = attacker_token(shadow)
    with shadow.hsm.session(evil, user_pin=EVIL_PIN) as session:
        key = bytearray(os.urandom(32))
        custodians = [
            Custodian(c["name"], c["recipient"]) for c in dealt.manifest.body["custodians"] if c["recipient"]
        ]
        deal_ = ceremony.Deal(
            "cer-20260101T000000Z-0badc0de", ceremony.python_kcv(key), MASTER_LABEL, custodians, 4, {}, [], []
        )
        forged = dealing.deal_shares(shadow.lab, session, key, deal_)
    shutil.copytree(shadow.lab.ceremony_dir(forged.ceremony_id), copied.lab.ceremony_dir(forged.ceremony_id))
    copied.lab.set_current_ceremony(forged.ceremony_id)
    opened: list[str] = []
    with pytest.raises(errors.TranscriptError, match="rolled back or edited"):
        ceremony.import_master(
            copied.hsm,
            copied.lab,
            token=fresh,
            user_pin=copied.pin,
            sources=[(n, lambda n=n: opened.append(n)) for n in NAMES],  # never called
            authorise_signer=True,
        )
    assert opened == [], "no custodian was asked for a share"
    with copied.hsm.session(fresh, user_pin=copied.pin) as session:
        assert session.find_secret_key(MASTER_LABEL) is None


# -- head and record tampering, then every command -----------------------------------------


def tamper_entry(lab: Lab) -> bytes:
    items = entries(lab)
    items[1]["params"]["kcv"] = "000000"
    write_entries(lab, items)
    return lab.transcript.read_bytes()


COMMANDS = {
    "status": lambda lab, extra: ["status"],
    "verify-share": lambda lab, extra: ["verify-share", "--share", extra["share"], "-i", extra["identity"]],
    "verify-all": lambda lab, extra: ["verify-all", "-i", extra["identity"]],
    "import": lambda lab, extra: [
        "import",
        "--token",
        extra["token"],
        "--authorise-signer",
        "--share",
        extra["share"],
    ],
    "rekey": lambda lab, extra: ["rekey", "--custodians", extra["custodians"], "--share", extra["share"]],
    "generate": lambda lab, extra: ["generate", "--custodians", extra["custodians"], "--label", "other"],
    "transcript verify": lambda lab, extra: ["transcript", "verify"],
    "transcript export": lambda lab, extra: ["transcript", "export", extra["bundle"]],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_tampered_record_stops_every_command_and_nothing_is_appended(
    dealt: Dealt, tmp_path: Path, run_cli, command: str
) -> None:
    env = copy_lab(dealt.env, tmp_path / "lab")
    env.new_token("spare")
    identity = tmp_path / "alice.txt"
    identity.write_text(str(dealt.identities["alice"]) + "\n")
    people = tmp_path / "people.toml"
    people.write_text(
        "".join(
            f'[[custodian]]\nname = "p{i}"\nrecipient = "{pyrage.x25519.Identity.generate().to_public()}"\n'
            for i in range(7)
        )
    )
    extra = {
        "share": str(env.lab.share_path(dealt.manifest.ceremony_id, "alice")),
        "identity": str(identity),
        "token": "spare",
        "custodians": str(people),
        "bundle": str(tmp_path / "bundle"),
    }
    tampered = tamper_entry(env.lab)
    head = env.lab.transcript_head.read_bytes()
    result = run_cli(*COMMANDS[command](env.lab, extra), lab=env.lab.root, pin=env.pin)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "transcript entry 2 (generate)" in lines[0], result.stderr
    assert env.lab.transcript.read_bytes() == tampered and env.lab.transcript_head.read_bytes() == head
    assert not (tmp_path / "bundle").exists()


def test_a_rolled_back_lab_is_caught_by_the_token_and_the_retired_share_stays_refused(
    fresh_env: LabUnderTest, tmp_path: Path, run_cli
) -> None:
    first = deal(fresh_env, names=("alice", "carol", "dave", "erin"), threshold=3)
    snapshot = tmp_path / "before-rekey"
    shutil.copytree(fresh_env.lab.root, snapshot, ignore=shutil.ignore_patterns("tokens", "hsm.lock"))
    people = [Custodian(n, str(i.to_public())) for n, i in first.identities.items() if n != "erin"]
    people.append(Custodian("zoe", str(pyrage.x25519.Identity.generate().to_public())))
    ceremony.rekey(
        fresh_env.hsm,
        fresh_env.lab,
        token=PRIMARY_TOKEN,
        user_pin=fresh_env.pin,
        sources=[(n, first.source(n)) for n in ("alice", "carol", "dave")],
        custodians=people,
        threshold=3,
    )
    # (a) restores every lab file from before the rekey (the token store is not theirs to roll back)
    for item in ("transcript.jsonl", "transcript.head.json", "ceremonies"):
        target = fresh_env.lab.root / item
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        src = snapshot / item
        shutil.copytree(src, target) if src.is_dir() else shutil.copy(src, target)
    with pytest.raises(errors.TranscriptError, match="truncated or rolled back"):
        ceremony.verify_shares(
            fresh_env.hsm,
            fresh_env.lab,
            token=PRIMARY_TOKEN,
            user_pin=fresh_env.pin,
            sources=[("erin", first.source("erin"))],
        )
    result = run_cli("status", lab=fresh_env.lab.root, pin=fresh_env.pin)
    assert result.returncode == 1 and "truncated or rolled back" in result.stderr


def test_current_pointed_back_at_the_retired_set_is_refused(fresh_env: LabUnderTest) -> None:
    first = deal(fresh_env, names=("alice", "carol", "dave", "erin"), threshold=3)
    people = [Custodian(n, str(i.to_public())) for n, i in first.identities.items() if n != "erin"]
    people.append(Custodian("zoe", str(pyrage.x25519.Identity.generate().to_public())))
    _old, new, _used = ceremony.rekey(
        fresh_env.hsm,
        fresh_env.lab,
        token=PRIMARY_TOKEN,
        user_pin=fresh_env.pin,
        sources=[(n, first.source(n)) for n in ("alice", "carol", "dave")],
        custodians=people,
        threshold=3,
    )
    # the departed custodian's share: refused while the record stands
    drill = ceremony.verify_shares(
        fresh_env.hsm,
        fresh_env.lab,
        token=PRIMARY_TOKEN,
        user_pin=fresh_env.pin,
        sources=[("erin", first.source("erin"))],
    )
    assert not drill[0].ok and "retired by" in drill[0].detail
    shutil.rmtree(fresh_env.lab.ceremony_dir(new.ceremony_id))
    fresh_env.lab.set_current_ceremony(first.manifest.ceremony_id)
    with pytest.raises(errors.TranscriptError, match=r"cannot read manifest|rolled back or edited"):
        ceremony.verify_shares(
            fresh_env.hsm,
            fresh_env.lab,
            token=PRIMARY_TOKEN,
            user_pin=fresh_env.pin,
            sources=[("erin", first.source("erin"))],
        )


# -- (b) the user PIN: signing is possible, rewriting the committed past is not -------------------


def test_a_pin_holder_who_rewrites_the_past_and_re_signs_is_caught_by_the_tokens_heads(
    copied: LabUnderTest,
) -> None:
    items = entries(copied.lab)
    items[1]["params"]["custodians"] = ["mallory (x25519)"]
    rechain(items)
    write_entries(copied.lab, items)
    resign_head(copied, PRIMARY_TOKEN, copied.pin, items[-1])  # the real token signs: (b) can do that
    verify_lab(copied.lab)  # the files alone are consistent ...
    with pytest.raises(errors.TranscriptError, match="is not the entry the token recorded"):
        open_record(copied)  # ... the token is not fooled


def test_a_pin_holder_cannot_plant_a_head_record_that_hides_a_rewrite(copied: LabUnderTest) -> None:
    items = entries(copied.lab)
    items[1]["params"]["threshold"] = 2
    rechain(items)
    write_entries(copied.lab, items)
    resign_head(copied, PRIMARY_TOKEN, copied.pin, items[-1])
    with copied.hsm.session(PRIMARY_TOKEN, user_pin=copied.pin) as session:
        session.write_record(*record.head_record(items[-1] | {"seq": len(items)}))
        held = list(
            session.raw.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: "clefs"})
        )
        assert len(held) >= 3
        for obj in held:  # append-only, even under the user PIN
            with pytest.raises(pkcs11.exceptions.PKCS11Error):
                obj.destroy()
            with pytest.raises(pkcs11.exceptions.PKCS11Error):
                obj[Attribute.VALUE] = b"{}"
    with pytest.raises(errors.TranscriptError, match="is not the entry the token recorded"):
        open_record(copied)


def test_a_second_signer_pin_planted_in_the_token_is_refused(copied: LabUnderTest) -> None:
    with copied.hsm.session(PRIMARY_TOKEN, user_pin=copied.pin) as session:
        session.write_record(record.ANCHOR_LABEL, b'{"format":"clefs.anchor/v1","fingerprint":"00"}')
    with pytest.raises(errors.TranscriptError, match="holds 2 signer pins"):
        open_record(copied)


def test_a_replaced_lab_pin_is_refused(copied: LabUnderTest) -> None:
    evil = attacker_token(copied)
    anchor = record.Anchor.of(copied.hsm.signing_public_key(evil), evil)
    record.save_anchor(copied.lab, anchor)
    with pytest.raises(errors.TranscriptError, match="the lab's pin was replaced"):
        open_record(copied)


def test_two_tokens_with_the_same_label_are_refused(copied: LabUnderTest) -> None:
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            PRIMARY_TOKEN,
            "--so-pin",
            EVIL_SO,
            "--pin",
            EVIL_PIN,
        ],
        env={**os.environ, "SOFTHSM2_CONF": str(copied.hsm.softhsm_conf)},
        check=True,
        capture_output=True,
    )
    copied.hsm.lib.reinitialize()
    with pytest.raises(errors.HSMError, match=r"2 tokens .* labelled 'clefs-primary'"):
        open_record(copied)


def test_expect_signer_pins_the_record_out_of_band(copied: LabUnderTest, run_cli) -> None:
    anchor = record.require_anchor(copied.lab)
    ok = run_cli("transcript", "verify", "--expect-signer", anchor.fingerprint, lab=copied.lab.root)
    assert ok.returncode == 0, ok.stderr
    other = "ab" * 32
    bad = run_cli("transcript", "verify", lab=copied.lab.root, extra_env={"CLEFS_EXPECT_SIGNER": other})
    assert bad.returncode == 1 and "not the expected abababab" in bad.stderr


# -- leftovers and planted recovery files --------------------------------------------------------


def test_a_planted_trusted_key_is_removed_by_the_next_command_with_a_warning(copied: LabUnderTest) -> None:
    with copied.hsm.session(PRIMARY_TOKEN, so_pin=copied.so_pin) as so:
        so.raw.generate_key(
            KeyType.AES,
            256,
            label="clefs-kms-wrap/left-over",
            store=True,
            template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.TRUSTED: True,
                Attribute.WRAP: True,
            },
        )
    opened = open_record(copied)
    assert any("leftover" in w and "clefs-kms-wrap/left-over" in w for w in opened.warnings)
    assert entries(copied.lab)[-1]["action"] == "recover"
    with copied.hsm.session(PRIMARY_TOKEN, user_pin=copied.pin) as session:
        assert list(session.raw.get_objects({Attribute.TRUSTED: True})) == []


def test_a_planted_intent_never_destroys_a_committed_master_key(copied: LabUnderTest) -> None:
    pending = copied.lab.root / "pending"
    pending.mkdir(exist_ok=True)
    doc = {
        "format": "clefs.step-intent/v1",
        "txn": "txn-00000000deadbeef",
        "step": "generate",
        "token": PRIMARY_TOKEN,
        "objects": [MASTER_LABEL, "clefs-signing"],
        "ceremony_id": None,
    }
    (pending / "txn-00000000deadbeef.json").write_text(json.dumps(doc))
    opened = open_record(copied)
    assert any("rolled back" in w and "destroyed no HSM object" in w for w in opened.warnings)
    with copied.hsm.session(PRIMARY_TOKEN, user_pin=copied.pin) as session:
        assert session.find_secret_key(MASTER_LABEL) is not None, "a committed key is never touched"
        assert session.signing_key_exists(), "nor the signing key"


def test_a_planted_append_journal_is_discarded_not_completed(copied: LabUnderTest) -> None:
    items = entries(copied.lab)
    fake = {"seq": len(items) + 1, "time": "x", "actor": "mallory", "action": "status", "params": {}}
    fake["prev"] = items[-1]["hash"]
    fake["hash"] = entry_hash(fake)
    evil = attacker_token(copied)
    with copied.hsm.session(evil, user_pin=EVIL_PIN) as session:
        head = sign_head(session, fake)
    journal = copied.lab.root / "pending" / "append-journal.json"
    journal.parent.mkdir(exist_ok=True)
    journal.write_text(json.dumps({"format": "x", "token": PRIMARY_TOKEN, "entry": fake, "head": head}))
    opened = open_record(copied)
    assert any("discarded" in w for w in opened.warnings)
    assert len(entries(copied.lab)) == len(items) and not journal.exists()


# -- witnessed values before any share is opened --------------------------------------------------


@pytest.mark.parametrize(
    ("expect", "message"),
    [
        ({"expect_kcv": "000000"}, "not the witnessed 000000"),
        ({"expect_signer": "ab" * 8}, "not the witnessed abababab"),
        ({"expect_ceremony": "cer-20260101T000000Z-00000000"}, "may have been rolled back"),
    ],
)
def test_import_checks_the_witnessed_values_before_any_share(
    dealt: Dealt, expect: dict, message: str
) -> None:
    token = dealt.env.new_token(f"witness-{len(dealt.env.tokens)}")
    asked: list[str] = []
    with pytest.raises(errors.QuorumError, match=message):
        ceremony.import_master(
            dealt.env.hsm,
            dealt.env.lab,
            token=token,
            user_pin=dealt.env.pin,
            sources=[(n, lambda n=n: asked.append(n)) for n in NAMES],
            authorise_signer=True,
            **expect,
        )
    assert asked == []


# -- the module is trusted only as far as it proves -------------------------------------------


def test_a_key_whose_attributes_differ_from_the_template_is_destroyed(lab_env: LabUnderTest) -> None:
    from hsm_lab.hsm import MASTER_KEY_TEMPLATE, enforce_template

    with lab_env.hsm.session(PRIMARY_TOKEN, user_pin=lab_env.pin) as session:
        lax = session.raw.generate_key(
            KeyType.AES,
            256,
            label="lax",
            store=True,
            template={Attribute.EXTRACTABLE: True, Attribute.DERIVE: True},
        )
        with pytest.raises(errors.HSMError, match="EXTRACTABLE to True, not False"):
            enforce_template(lax, MASTER_KEY_TEMPLATE, "key 'lax'")
        assert (
            list(session.raw.get_objects({Attribute.LABEL: "lax", Attribute.CLASS: ObjectClass.SECRET_KEY}))
            == []
        )


def test_a_file_that_is_not_a_pkcs11_module_is_named_with_the_reason(tmp_path: Path) -> None:
    from hsm_lab.hsm import HSM

    fake = tmp_path / "libnot-a-module.so"
    shutil.copy("/usr/lib/x86_64-linux-gnu/libz.so.1", fake) if Path(
        "/usr/lib/x86_64-linux-gnu/libz.so.1"
    ).exists() else fake.write_bytes(b"\x7fELF not really")
    with pytest.raises(errors.ModuleNotFound, match=f"cannot load PKCS#11 module {fake}: .+"):
        HSM(tmp_path / "lab", fake).token_labels()


def test_the_softhsm_module_passes_the_probe(lab_env: LabUnderTest) -> None:
    from hsm_lab.hsm import probe_module

    with lab_env.hsm.session(PRIMARY_TOKEN, so_pin=lab_env.so_pin) as so:
        assert probe_module(so) == []
