"""The quorum ceremony against the real SoftHSM2 module."""

from __future__ import annotations

import itertools
import json
import re
import subprocess

import pkcs11
import pyshamir
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from hsm_lab import ceremony, errors
from hsm_lab.ceremony import shares
from hsm_lab.ceremony.custodians import Custodian
from hsm_lab.ceremony.quorum import quorum_key
from hsm_lab.ceremony.record import Record
from hsm_lab.ceremony.shares import Share
from hsm_lab.hsm import HSM
from hsm_lab.lab import MASTER_LABEL, PRIMARY_TOKEN
from tests.conftest import NAMES, PASSPHRASE_CUSTODIAN, Dealt, LabUnderTest, copy_lab, deal


def import_into(dealt: Dealt, token: str, names: tuple[str, ...]) -> tuple[list[str], str]:
    _manifest, used, kcv = ceremony.import_master(
        dealt.env.hsm,
        dealt.env.lab,
        token=token,
        user_pin=dealt.env.pin,
        sources=[(n, dealt.source(n)) for n in names],
        actor="pytest",
        authorise_signer=True,
    )
    return used, kcv


def test_all_21_five_of_seven_subsets_import_the_same_key(dealt: Dealt) -> None:
    subsets = list(itertools.combinations(NAMES, 5))
    assert len(subsets) == 21
    kcvs = set()
    for number, subset in enumerate(subsets):
        token = dealt.env.new_token(f"subset-{number:02d}")
        used, kcv = import_into(dealt, token, subset)
        assert set(used) == set(subset)
        kcvs.add(kcv)
    assert kcvs == {dealt.manifest.kcv}


def test_every_four_share_subset_is_refused_and_nothing_is_imported(dealt: Dealt) -> None:
    token = dealt.env.new_token("four-of-seven")
    for subset in itertools.combinations(NAMES, 4):
        with pytest.raises(errors.QuorumError, match="4 valid shares presented, 5 needed"):
            import_into(dealt, token, subset)
    with dealt.env.hsm.session(token, user_pin=dealt.env.pin) as session:
        assert session.find_secret_key(MASTER_LABEL) is None


def test_four_shares_would_silently_give_a_wrong_key_without_the_quorum_check(dealt: Dealt) -> None:
    """Why the refusal matters: pyshamir itself returns garbage, not an error."""
    four = [bytearray(dealt.share(n).value) for n in NAMES[:4]]
    wrong = bytearray(pyshamir.combine(four))
    assert ceremony.python_kcv(wrong) != dealt.manifest.kcv


def _wrap_attempts(session, key) -> list[str]:
    """Try to wrap `key` under every key object the session sees, with every wrap mechanism."""
    wrapped = []
    for candidate in session.raw.get_objects():
        if candidate[Attribute.CLASS] not in (ObjectClass.SECRET_KEY, ObjectClass.PUBLIC_KEY):
            continue
        for mechanism in (Mechanism.AES_KEY_WRAP_PAD, Mechanism.AES_KEY_WRAP, Mechanism.RSA_PKCS_OAEP):
            try:
                if mechanism == Mechanism.RSA_PKCS_OAEP:
                    candidate.wrap_key(
                        key, mechanism=mechanism, mechanism_param=(Mechanism.SHA_1, pkcs11.MGF.SHA1, None)
                    )
                else:
                    candidate.wrap_key(key, mechanism=mechanism)
            except (pkcs11.exceptions.PKCS11Error, AttributeError, TypeError, ValueError):
                continue
            wrapped.append(f"{candidate[Attribute.LABEL]} via {mechanism.name}")
    return wrapped


@pytest.mark.parametrize("where", ["generated", "imported"])
def test_the_master_key_can_never_be_extracted_not_even_under_a_trusted_key(dealt: Dealt, where: str) -> None:
    """Item 1: L0 is never extractable; no key on the token, TRUSTED or not, can wrap it."""
    env = dealt.env
    token = PRIMARY_TOKEN
    if where == "imported":
        token = env.new_token("attributes")
        import_into(dealt, token, NAMES[2:7])
    with env.hsm.session(token, so_pin=env.so_pin) as so:  # the SO plants TRUSTED wrapping keys
        so.raw.generate_key(
            KeyType.AES,
            256,
            label=f"planted-trusted-{where}",
            store=True,
            template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.TRUSTED: True,
                Attribute.WRAP: True,
                Attribute.SENSITIVE: False,
                Attribute.EXTRACTABLE: True,
            },
        )
        pair = so.raw.generate_keypair(
            KeyType.RSA,
            2048,
            store=True,
            label=f"planted-rsa-{where}",
            public_template={Attribute.TOKEN: True, Attribute.TRUSTED: True, Attribute.WRAP: True},
            private_template={Attribute.TOKEN: True, Attribute.PRIVATE: False},
        )
        assert pair
    try:
        with env.hsm.session(token, user_pin=env.pin) as session:
            key = session.require_secret_key(MASTER_LABEL)
            session.raw.generate_key(
                KeyType.AES,
                256,
                store=False,
                label="untrusted",
                template={Attribute.WRAP: True, Attribute.TOKEN: False},
            )
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                key[Attribute.VALUE]
            for attribute, value in {
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.TOKEN: True,
                Attribute.DERIVE: True,
                Attribute.ENCRYPT: False,
                Attribute.DECRYPT: False,
                Attribute.SIGN: False,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
            }.items():
                assert key[attribute] is value, attribute
            with pytest.raises(pkcs11.exceptions.PKCS11Error):
                key[Attribute.EXTRACTABLE] = True  # tightened for good, never loosened
            trusted = [o for o in session.raw.get_objects({Attribute.TRUSTED: True})]
            assert len(trusted) >= 2, "the SO's planted TRUSTED keys are there to try"
            assert _wrap_attempts(session, key) == []
            assert session.kcv(key) == dealt.manifest.kcv
    finally:
        with env.hsm.session(token, so_pin=env.so_pin) as so:
            for label in (f"planted-trusted-{where}", f"planted-rsa-{where}"):
                so.destroy_objects(label)


def test_pkcs11_tool_shows_the_master_key_never_extractable(dealt: Dealt) -> None:
    env = dealt.env
    listing = subprocess.run(
        [
            "pkcs11-tool",
            "--module",
            str(env.hsm.module),
            "--token-label",
            PRIMARY_TOKEN,
            "--list-objects",
            "--login",
            "--pin",
            env.pin,
        ],
        env={"SOFTHSM2_CONF": str(env.hsm.softhsm_conf), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert env.pin not in listing
    master = listing.split("label:      clefs-master")[1].split("Object;")[0]
    access = next(line for line in master.splitlines() if "Access:" in line)
    # pkcs11-tool prints "extractable" for CKA_EXTRACTABLE and "never extractable" for
    # CKA_NEVER_EXTRACTABLE, which PKCS#11 sets false on every unwrapped key (docs/softhsm.md):
    # L0 is unwrapped because it had to exist in memory to be split.
    assert "sensitive" in access and "extractable" not in access, access
    private = listing.split("Private Key Object")[1].split("Object")[0]
    assert "clefs-signing" in private and "never extractable" in private  # generated in the HSM


# -- refusals (item 4), each naming what is wrong ----------------------------------


def refused(dealt: Dealt, sources: list, match: str) -> None:
    """The bad share is refused by name, counts nothing, and too few remain: nothing imported."""
    token = f"refusal-{len(dealt.env.tokens)}"
    dealt.env.new_token(token)
    events: list[tuple[str, str]] = []
    with pytest.raises(errors.QuorumError, match=r"valid shares presented, 5 needed .*refused"):
        ceremony.import_master(
            dealt.env.hsm,
            dealt.env.lab,
            token=token,
            user_pin=dealt.env.pin,
            sources=sources,
            actor="pytest",
            authorise_signer=True,
            on_event=lambda who, what: events.append((who, what)),
        )
    refusals = [what for _who, what in events if what.startswith("refused")]
    assert refusals and re.search(match, refusals[-1]), events
    with dealt.env.hsm.session(token, user_pin=dealt.env.pin) as session:
        assert session.find_secret_key(MASTER_LABEL) is None, "nothing half-imported"


def test_bad_shares_are_skipped_and_k_good_ones_still_import(dealt: Dealt) -> None:
    """Item 7: a bad share is named with why, and the import goes on until K valid ones (Vault-style)."""
    token = dealt.env.new_token("skip-bad")
    events: list[tuple[str, str]] = []
    sources = [
        ("alice", lambda: flipped_value(dealt.share("alice"))),
        ("bob", dealt.source("bob")),
        ("bob", dealt.source("bob")),
        ("mallory", lambda: Share(dealt.manifest.ceremony_id, "mallory", bytearray(33) + b"")),
        *[(n, dealt.source(n)) for n in NAMES[2:6]],
        ("grace", dealt.source("grace")),  # not needed: K reached before
    ]
    _manifest, used, kcv = ceremony.import_master(
        dealt.env.hsm,
        dealt.env.lab,
        token=token,
        user_pin=dealt.env.pin,
        sources=sources,
        actor="pytest",
        authorise_signer=True,
        on_event=lambda who, what: events.append((who, what)),
    )
    assert kcv == dealt.manifest.kcv and used == ["bob", *NAMES[2:6]]
    progress = [what for who, what in events if what.startswith("accepted")]
    assert progress == [f"accepted ({n}/5)" for n in range(1, 6)]
    refusals = {who: what for who, what in events if what.startswith("refused")}
    assert "commitment" in refusals["alice"] and "already presented" in refusals["bob"]
    assert "not a custodian" in refusals["mallory"]
    assert "grace" not in {who for who, _ in events}
    entry = ceremony.transcript(dealt.env.lab).entries()[-1]
    assert entry["action"] == "import" and len(entry["params"]["refused"]) == 3


def test_the_combined_key_and_the_shares_are_wiped_however_the_step_ends(dealt: Dealt, tmp_path) -> None:
    """The collect+combine helper that import and rekey share wipes L0 and every share on any exit."""
    copied = copy_lab(dealt.env, tmp_path / "copy")
    presented: list[Share] = []

    def source(name: str):
        def give() -> Share:
            presented.append(dealt.share(name))
            return presented[-1]

        return give

    def quiet(_who: str, _what: str) -> None:
        return None

    with copied.hsm.session(PRIMARY_TOKEN, user_pin=copied.pin) as session:
        record = Record.open(copied.lab, session, actor="pytest")
        manifest = record.state.manifest()
        sources = [(n, source(n)) for n in NAMES[:5]]
        with quorum_key(record, manifest, sources, quiet, "import", "pytest") as combined:
            key = combined.key
            assert ceremony.python_kcv(key) == manifest.kcv and combined.refused == []
        assert key == bytearray(32) and len(presented) == 5
        assert all(s.value == bytearray(33) for s in presented)
        presented.clear()
        with (
            pytest.raises(RuntimeError, match="the step failed"),
            quorum_key(record, manifest, sources, quiet, "import", "pytest") as combined,
        ):
            key = combined.key
            raise RuntimeError("the step failed")
        assert key == bytearray(32) and len(presented) == 5
        assert all(s.value == bytearray(33) for s in presented)
        presented.clear()
        with (
            pytest.raises(errors.QuorumError, match="4 valid shares presented, 5 needed"),
            quorum_key(record, manifest, sources[:4], quiet, "import", "pytest"),
        ):
            pytest.fail("too few shares never reach the step")
        assert len(presented) == 4 and all(s.value == bytearray(33) for s in presented)
    assert ceremony.transcript(copied.lab).entries()[-1]["action"] == "import.aborted"


def flipped_value(share: Share) -> Share:
    value = bytearray(share.value)
    value[3] ^= 0x01
    return Share(share.ceremony_id, share.custodian, value)


def test_duplicate_share_is_refused_naming_the_custodian(dealt: Dealt) -> None:
    refused(
        dealt,
        [("alice", dealt.source("alice")), ("alice", dealt.source("alice"))],
        "alice: share already presented",
    )


def test_same_share_under_another_name_is_refused_as_a_duplicate(dealt: Dealt) -> None:
    alice = dealt.share("alice")
    renamed = Share(alice.ceremony_id, "carol", alice.value)
    refused(dealt, [("alice", dealt.source("alice")), ("carol", lambda: renamed)], "carol")


def test_bit_flipped_share_value_is_refused_by_its_commitment(dealt: Dealt) -> None:
    refused(
        dealt,
        [("dave", lambda: flipped_value(dealt.share("dave")))],
        "dave: share does not match its commitment",
    )


def test_bit_flipped_share_file_cannot_be_opened(dealt: Dealt) -> None:
    blob = bytearray(dealt.sealed("erin"))
    blob[-5] ^= 0x01
    identity = dealt.identities["erin"]
    refused(
        dealt,
        [("erin", lambda: shares.unseal(bytes(blob), "erin", [identity]))],
        "erin: cannot open the share",
    )


def test_share_of_another_ceremony_is_refused(dealt: Dealt, fresh_env: LabUnderTest) -> None:
    other = deal(fresh_env, names=("alice", "carol", "dave", "erin"), threshold=3)
    foreign = other.share("alice")
    refused(dealt, [("alice", lambda: foreign)], "alice: share of another ceremony")


def test_share_of_a_non_custodian_is_refused(dealt: Dealt) -> None:
    stranger = Share(dealt.manifest.ceremony_id, "mallory", bytearray(dealt.share("alice").value))
    refused(dealt, [("mallory", lambda: stranger)], "mallory is not a custodian")


def test_wrong_passphrase_and_wrong_identity_are_the_same_refusal(dealt: Dealt) -> None:
    sealed_bob = dealt.sealed(PASSPHRASE_CUSTODIAN)
    assert shares.is_passphrase_sealed(sealed_bob)
    refused(
        dealt,
        [("bob", lambda: shares.unseal(sealed_bob, "bob", passphrase="not-" + dealt.passphrase))],
        "bob: cannot open the share: wrong passphrase or identity",
    )
    refused(
        dealt,
        [("carol", lambda: shares.unseal(dealt.sealed("carol"), "carol", [dealt.identities["dave"]]))],
        "carol: cannot open the share: wrong passphrase or identity",
    )


def test_passphrase_custodian_share_opens_with_the_right_passphrase(dealt: Dealt) -> None:
    share = shares.unseal(dealt.sealed(PASSPHRASE_CUSTODIAN), "bob", passphrase=dealt.passphrase)
    assert share.custodian == "bob" and share.value == dealt.share("bob").value


def test_wrong_pin_is_refused_and_the_next_login_works(lab_env: LabUnderTest) -> None:
    with pytest.raises(errors.PinIncorrect, match="user PIN was refused"):
        with lab_env.hsm.session(PRIMARY_TOKEN, user_pin="wrong-" + lab_env.pin):
            pass
    with pytest.raises(errors.PinIncorrect, match="SO PIN was refused"):
        with lab_env.hsm.session(PRIMARY_TOKEN, so_pin="wrong-" + lab_env.so_pin):
            pass
    with lab_env.hsm.session(PRIMARY_TOKEN, so_pin=lab_env.so_pin):
        pass  # a failed login must not leak a session (docs/softhsm.md)
    with lab_env.hsm.session(PRIMARY_TOKEN, user_pin=lab_env.pin) as session:
        assert session.signing_public_key()


def test_missing_module_is_refused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.ModuleNotFound, match=r"no PKCS#11 module at /nonexistent/lib\.so"):
        HSM(tmp_path, "/nonexistent/lib.so")
    monkeypatch.setenv("CLEFS_PKCS11_MODULE", str(tmp_path / "missing.so"))
    with pytest.raises(errors.ModuleNotFound, match="CLEFS_PKCS11_MODULE"):
        HSM(tmp_path)


def test_uninitialised_token_is_refused(lab_env: LabUnderTest) -> None:
    with pytest.raises(errors.TokenNotInitialized, match=r"no token .never-made.*hsm-lab init"):
        with lab_env.hsm.session("never-made", user_pin=lab_env.pin):
            pass


def test_existing_master_key_label_is_never_overwritten(dealt: Dealt) -> None:
    env = dealt.env
    with env.hsm.session(PRIMARY_TOKEN, user_pin=env.pin) as session:
        before = session.kcv(session.require_secret_key(MASTER_LABEL))
    with pytest.raises(errors.KeyLabelExists, match="refusing to overwrite"):
        ceremony.generate(
            env.hsm,
            env.lab,
            token=PRIMARY_TOKEN,
            user_pin=env.pin,
            custodians=[Custodian(n, str(i.to_public())) for n, i in dealt.identities.items()],
        )
    with pytest.raises(errors.KeyLabelExists, match="refusing to overwrite"):
        import_into(dealt, PRIMARY_TOKEN, NAMES[:5])
    with env.hsm.session(PRIMARY_TOKEN, user_pin=env.pin) as session:
        assert session.kcv(session.require_secret_key(MASTER_LABEL)) == before


def test_failed_generate_leaves_nothing_half_written(fresh_env: LabUnderTest) -> None:
    custodians = [Custodian("x", None), Custodian("y", None), Custodian("z", None), Custodian("w", None)]
    with pytest.raises(errors.InputError, match="no passphrase for custodian"):
        ceremony.generate(
            fresh_env.hsm,
            fresh_env.lab,
            token=PRIMARY_TOKEN,
            user_pin=fresh_env.pin,
            custodians=custodians,
            threshold=3,
            passphrases={"x": "one-long-enough-passphrase"},
        )
    with fresh_env.hsm.session(PRIMARY_TOKEN, user_pin=fresh_env.pin) as session:
        assert session.find_secret_key(MASTER_LABEL) is None
    assert not fresh_env.lab.ceremonies.exists() or not any(fresh_env.lab.ceremonies.iterdir())


def test_rekey_keeps_the_key_and_retires_the_old_set(fresh_env: LabUnderTest) -> None:
    first = deal(fresh_env, names=("alice", "carol", "dave", "erin"), threshold=3)
    newcomer = {n: i for n, i in first.identities.items() if n != "erin"}
    people = [Custodian(n, str(i.to_public())) for n, i in newcomer.items()]
    old, new, used = ceremony.rekey(
        fresh_env.hsm,
        fresh_env.lab,
        token=PRIMARY_TOKEN,
        user_pin=fresh_env.pin,
        sources=[(n, first.source(n)) for n in ("erin", "alice", "dave")],
        custodians=people,
        threshold=2,
        allow_weak=True,
        actor="pytest",
    )
    assert new.kcv == old.kcv == first.manifest.kcv
    assert used == ["erin", "alice", "dave"]
    assert new.body["retires"][0]["ceremony_id"] == old.ceremony_id
    assert new.body["weakened"], "a weakened quorum is recorded in the signed manifest"
    assert fresh_env.lab.current_ceremony() == new.ceremony_id
    # the old share set is refused by name, the new one verifies
    results = ceremony.verify_shares(
        fresh_env.hsm,
        fresh_env.lab,
        token=PRIMARY_TOKEN,
        user_pin=fresh_env.pin,
        sources=[("alice", first.source("alice"))],
    )
    assert not results[0].ok and "retired by " + new.ceremony_id in results[0].detail
    fresh = shares.unseal(
        fresh_env.lab.share_path(new.ceremony_id, "alice").read_bytes(), "alice", [first.identities["alice"]]
    )
    ok = ceremony.verify_shares(
        fresh_env.hsm,
        fresh_env.lab,
        token=PRIMARY_TOKEN,
        user_pin=fresh_env.pin,
        sources=[("alice", lambda: fresh)],
    )
    assert ok[0].ok
    transcript = ceremony.transcript(fresh_env.lab).entries()
    assert [e["action"] for e in transcript][-3:] == ["rekey", "verify-share", "verify-share"]


def test_manifest_edited_after_signing_is_refused(dealt: Dealt, tmp_path) -> None:
    path = dealt.env.lab.manifest_path(dealt.manifest.ceremony_id)
    doc = json.loads(path.read_text())
    for field, value in (("threshold", 2), ("kcv", "000000"), ("key_label", "other")):
        edited = json.loads(json.dumps(doc))
        edited["manifest"][field] = value
        copy = tmp_path / f"{field}.json"
        copy.write_text(json.dumps(edited))
        with pytest.raises(errors.ManifestError, match="signature does not verify"):
            ceremony.load_manifest(copy)


def test_manifest_signed_by_another_key_is_refused_when_pinned(dealt: Dealt, fresh_env: LabUnderTest) -> None:
    other = deal(fresh_env, names=("alice", "carol", "dave", "erin"), threshold=3)
    other_path = fresh_env.lab.manifest_path(other.manifest.ceremony_id)
    pinned = dealt.env.hsm.signing_public_key(PRIMARY_TOKEN)
    with pytest.raises(errors.ManifestError, match="do not trust this manifest"):
        ceremony.load_manifest(other_path, pinned)


def test_transcript_records_each_step_without_secrets(dealt: Dealt) -> None:
    text = dealt.env.lab.transcript.read_text()
    for name in NAMES:
        value = dealt.share(name).value
        assert bytes(value).hex() not in text and shares.b64(bytes(value)) not in text
    assert dealt.env.pin not in text and dealt.passphrase not in text
    assert [json.loads(line)["action"] for line in text.splitlines()[:2]] == ["init", "generate"]


def test_share_source_types_are_the_real_objects(dealt: Dealt) -> None:
    with dealt.env.hsm.session(PRIMARY_TOKEN, user_pin=dealt.env.pin) as session:
        keys = {(k.label, k.object_class) for k in session.inventory()}
        raw = list(session.raw.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}))
    assert ("clefs-master", "secret_key") in keys and ("clefs-signing", "private_key") in keys
    assert len(raw) == 1
