"""Issue 7 items 1-3 for BYOK: killed at any point (between the SO and user sessions included),
`byok import` leaves no TRUSTED key, no class key and nothing extractable on the token,
and the next command says what happened. Real SoftHSM2, real LocalStack KMS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pkcs11 import Attribute, ObjectClass

from hsm_lab.aws.deployment import localstack_clients
from hsm_lab.byok import Byok
from hsm_lab.ceremony.record import Record
from hsm_lab.lab import MASTER_LABEL, PRIMARY_TOKEN
from tests.conftest import LabUnderTest, deal, make_lab

SCRIPT = """
import os, sys
from pathlib import Path
from hsm_lab.byok import Byok
from hsm_lab.aws.deployment import localstack_clients
from hsm_lab.hsm import HSM
from hsm_lab.lab import Lab
lab = Lab(Path(sys.argv[1]))
factory, _pin = localstack_clients(sys.argv[2], lab.root / "tls", ca=Path(sys.argv[5]))
byok = Byok(HSM(lab.root), lab, token="clefs-primary", user_pin=os.environ["CLEFS_USER_PIN"],
            so_pin=os.environ["CLEFS_SO_PIN"], kms_for=lambda region: factory("kms", region),
            primary_region="eu-west-3", actor="crash-test")
byok.import_class("appointments", 1, [sys.argv[3]], wrapping_algorithm=sys.argv[4])
"""


@pytest.fixture(scope="module")
def byok_lab(tmp_path_factory: pytest.TempPathFactory) -> LabUnderTest:
    env = make_lab(tmp_path_factory.mktemp("byok-crash"))
    deal(env, names=("alice", "carol", "dave", "erin"), threshold=3)
    return env


def external_key(localstack, lab: Path) -> str:
    factory, _pin = localstack_clients(localstack.endpoint, lab / "tls", ca=localstack.ca)
    return factory("kms", "eu-west-3").create_key(Origin="EXTERNAL", Description="crash test")["KeyMetadata"][
        "Arn"
    ]


def run_import(
    env: LabUnderTest, endpoint: str, ca: Path, arn: str, algorithm: str, fault: str | None
) -> int:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLEFS_")}
    environment.update(CLEFS_USER_PIN=env.pin, CLEFS_SO_PIN=env.so_pin)
    if fault:
        environment["CLEFS_TEST_FAULT"] = fault
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(env.lab.root), endpoint, arn, algorithm, str(ca)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in done.stderr or done.returncode == -signal.SIGKILL, done.stderr
    return done.returncode


def token_is_clean(env: LabUnderTest) -> None:
    with env.hsm.session(PRIMARY_TOKEN, user_pin=env.pin) as session:
        secret = {
            str(o[Attribute.LABEL])
            for o in session.raw.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
        }
        assert secret == {MASTER_LABEL}, secret
        assert list(session.raw.get_objects({Attribute.TRUSTED: True})) == []
        master = session.require_secret_key(MASTER_LABEL)
        assert master[Attribute.EXTRACTABLE] is False and master[Attribute.SENSITIVE] is True


@pytest.mark.parametrize(
    ("fault", "algorithm"),
    [
        ("byok:so-done", "RSA_AES_KEY_WRAP_SHA_256"),  # between the SO and the user sessions
        ("byok:so-done", "RSAES_OAEP_SHA_1"),
        ("byok:derived", "RSA_AES_KEY_WRAP_SHA_256"),
        ("byok:wrapped", "RSAES_OAEP_SHA_1"),
        ("byok:imported", "RSAES_OAEP_SHA_1"),  # KMS holds the material, the record does not yet
    ],
)
def test_byok_killed_anywhere_leaves_nothing_on_the_token(
    byok_lab: LabUnderTest, localstack, fault: str, algorithm: str
) -> None:
    arn = external_key(localstack, byok_lab.lab.root)
    assert run_import(byok_lab, localstack.endpoint, localstack.ca, arn, algorithm, fault) == -signal.SIGKILL
    token_is_clean(byok_lab)
    with byok_lab.hsm.session(PRIMARY_TOKEN, user_pin=byok_lab.pin) as session:
        warnings = Record.open(byok_lab.lab, session).warnings
    assert any("rolled back the interrupted byok.import" in w for w in warnings), warnings
    if fault == "byok:imported":
        assert any("KMS may already hold the material" in w and arn in w for w in warnings), warnings
    assert run_import(byok_lab, localstack.endpoint, localstack.ca, arn, algorithm, None) == 0, (
        "the step can be re-run"
    )
    token_is_clean(byok_lab)
    factory, _pin = localstack_clients(localstack.endpoint, byok_lab.lab.root / "tls", ca=localstack.ca)
    byok = Byok(
        byok_lab.hsm,
        byok_lab.lab,
        token=PRIMARY_TOKEN,
        user_pin=byok_lab.pin,
        so_pin=byok_lab.so_pin,
        kms_for=lambda region: factory("kms", region),
    )
    assert any(r.key_arn == arn for r in byok.records()), "the re-run is in the verified record"
    assert byok.prove("appointments", arn, arn)
