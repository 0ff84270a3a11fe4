"""The rehearsal end to end, and what it leaves on disk (no key, no plaintext share)."""

from __future__ import annotations

import base64
import multiprocessing
from pathlib import Path

import pyshamir
import pytest

from hsm_lab import ceremony
from hsm_lab.ceremony import shares
from hsm_lab.hsm import HSM
from hsm_lab.lab import PRIMARY_TOKEN
from hsm_lab.rehearsal import Rehearsal, rehearse


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Rehearsal:
    return rehearse(tmp_path_factory.mktemp("rehearsal") / "lab", seed=7)


def test_rehearsal_tells_a_consistent_story(rehearsal: Rehearsal) -> None:
    assert (
        rehearsal.kcv_manifest == rehearsal.kcv_primary == rehearsal.kcv_recovery == rehearsal.kcv_after_rekey
    )
    assert (rehearsal.threshold, rehearsal.share_count) == (5, 7)
    assert (rehearsal.new_threshold, rehearsal.new_share_count) == (5, 8)
    assert len(set(rehearsal.import_quorum)) == 5 and len(set(rehearsal.rekey_quorum)) == 5
    assert "gaelle" not in rehearsal.rekey_quorum
    assert "retired by " + rehearsal.second_ceremony in rehearsal.retired_share_refusal
    assert rehearsal.transcript_entries >= 5
    assert rehearsal.recovery_key is not None and rehearsal.recovery_key.attributes["sensitive"]


def secret_encodings(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def test_no_file_in_the_lab_holds_the_master_key_or_a_plaintext_share(rehearsal: Rehearsal) -> None:
    lab = rehearsal.lab
    secrets_found: list[bytes] = []
    for ceremony_id in (rehearsal.first_ceremony, rehearsal.second_ceremony):
        manifest = ceremony.load_manifest(lab.manifest_path(ceremony_id))
        opened = []
        for name in manifest.custodians:
            person = rehearsal.custodians[name]
            share = shares.unseal(lab.share_path(ceremony_id, name).read_bytes(), name, [person.identity])
            opened.append(bytes(share.value))
        key = bytes(pyshamir.combine([bytearray(v) for v in opened[:5]]))
        assert ceremony.python_kcv(bytearray(key)) == rehearsal.kcv_manifest
        secrets_found += [key, *opened, *(v[:-1] for v in opened)]
    assert len(set(secrets_found)) == 1 + 15 + 15  # one key (both sets), 15 shares, their y parts
    files = [p for p in Path(lab.root).rglob("*") if p.is_file()]
    assert any(p.suffix == ".object" for p in files), "the SoftHSM2 token store was scanned too"
    for path in files:
        data = path.read_bytes()
        for secret in secrets_found:
            for encoded in secret_encodings(secret):
                assert encoded not in data, f"{path} holds a secret"


def _status_loop(lab: str, pin: str, rounds: int) -> int:
    hsm = HSM(lab)
    for _ in range(rounds):
        with hsm.session(PRIMARY_TOKEN, user_pin=pin) as session:
            session.signing_public_key()
    return rounds


def test_two_processes_at_once_do_not_corrupt_the_token(lab_env) -> None:
    context = multiprocessing.get_context("spawn")  # never fork after loading the module
    with context.Pool(2) as pool:
        done = pool.starmap(_status_loop, [(str(lab_env.lab.root), lab_env.pin, 40)] * 2)
    assert done == [40, 40]
    with lab_env.hsm.session(PRIMARY_TOKEN, user_pin=lab_env.pin) as session:
        assert session.signing_public_key()


def test_rehearsal_refuses_a_used_lab_directory(rehearsal: Rehearsal) -> None:
    from hsm_lab import errors

    with pytest.raises(errors.InputError, match="not empty"):
        rehearse(rehearsal.lab.root)
