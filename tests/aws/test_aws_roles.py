"""Issue 9 items 1 and 2: each AWS call by the session of its role; no endpoint can be swapped.

BYOK runs on the real SoftHSM2 module against botocore Stubbers, one per role: a stub with no
queued response raises on any call, so a call by the wrong role cannot go unnoticed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hsm_lab import errors
from hsm_lab.aws import access as aws_access
from hsm_lab.byok import Byok, ByokError
from hsm_lab.lab import PRIMARY_TOKEN
from tests.conftest import LabUnderTest, deal, make_lab

ACCT = "111122223333"
PRIMARY = f"arn:aws:kms:eu-west-3:{ACCT}:key/mrk-0123456789abcdef0123456789abcdef"
REPLICA = f"arn:aws:kms:eu-central-1:{ACCT}:key/mrk-0123456789abcdef0123456789abcdef"


def kms_client(region: str) -> Any:
    return boto3.client(
        "kms",
        region_name=region,
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="x" * 40,
    )


class Role:
    """One role's KMS clients (per region), each behind a Stubber."""

    def __init__(self) -> None:
        self.clients = {r: kms_client(r) for r in ("eu-west-3", "eu-central-1")}
        self.stubs = {r: Stubber(c) for r, c in self.clients.items()}
        for stub in self.stubs.values():
            stub.activate()

    def __call__(self, region: str) -> Any:
        return self.clients[region]

    def done(self) -> None:
        for stub in self.stubs.values():
            stub.assert_no_pending_responses()


def der(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def import_parameters(key: Any = None) -> dict[str, Any]:
    key = key or rsa.generate_private_key(65537, 2048).public_key()
    return {
        "KeyId": PRIMARY,
        "ImportToken": b"token",
        "PublicKey": der(key),
        "ParametersValidTo": dt.datetime(2030, 1, 1, tzinfo=dt.UTC),
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> LabUnderTest:
    lab = make_lab(tmp_path_factory.mktemp("roles"))
    deal(lab, names=("alice", "carol", "dave", "erin"), threshold=3)
    return lab


def byok(env: LabUnderTest, ceremony: Role, app: Role, auditor: Role) -> Byok:
    return Byok(
        env.hsm,
        env.lab,
        token=PRIMARY_TOKEN,
        user_pin=env.pin,
        so_pin=env.so_pin,
        kms_for=ceremony,
        app_kms_for=app,
        auditor_kms_for=auditor,
        actor="pytest",
    )


def test_import_is_made_by_the_ceremony_and_the_proof_by_the_app(env: LabUnderTest) -> None:
    ceremony, app, auditor = Role(), Role(), Role()
    for arn, region in ((PRIMARY, "eu-west-3"), (REPLICA, "eu-central-1")):
        stub = ceremony.stubs[region]
        stub.add_response(
            "get_parameters_for_import",
            {**import_parameters(), "KeyId": arn},
            {"KeyId": arn, "WrappingAlgorithm": "RSAES_OAEP_SHA_1", "WrappingKeySpec": "RSA_2048"},
        )
        stub.add_response(
            "import_key_material",
            {"KeyId": arn},
            {
                "KeyId": arn,
                "ImportToken": b"token",
                "EncryptedKeyMaterial": ANY,
                "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
            },
        )
    driver = byok(env, ceremony, app, auditor)
    records = driver.import_class("appointments", 1, [PRIMARY, REPLICA])
    assert [r.role for r in records] == ["primary", "replica"]
    assert len(driver.wrapping_keys) == 2 and all(len(f) == 64 for _arn, f in driver.wrapping_keys)
    probe = b"p" * 32
    app.stubs["eu-west-3"].add_response(
        "encrypt",
        {"CiphertextBlob": b"blob", "KeyId": PRIMARY},
        {"KeyId": PRIMARY, "Plaintext": probe, "EncryptionContext": {"data_class": "appointments"}},
    )
    app.stubs["eu-central-1"].add_response(
        "decrypt",
        {"Plaintext": probe, "KeyId": REPLICA},
        {"KeyId": REPLICA, "CiphertextBlob": b"blob", "EncryptionContext": {"data_class": "appointments"}},
    )
    assert driver.prove("appointments", PRIMARY, REPLICA, probe=probe)
    for role in (ceremony, app, auditor):
        role.done()  # auditor: nothing was ever queued, and no call was attempted


def test_revocation_uses_each_role_for_its_own_call(env: LabUnderTest) -> None:
    ceremony, app, auditor = Role(), Role(), Role()
    context = {"data_class": "appointments"}
    app.stubs["eu-west-3"].add_response(
        "encrypt",
        {"CiphertextBlob": b"blob", "KeyId": PRIMARY},
        {"KeyId": PRIMARY, "Plaintext": ANY, "EncryptionContext": context},
    )
    ceremony.stubs["eu-west-3"].add_response("delete_imported_key_material", {}, {"KeyId": PRIMARY})
    auditor.stubs["eu-west-3"].add_response(
        "describe_key", {"KeyMetadata": {"KeyId": PRIMARY, "KeyState": "PendingImport"}}, {"KeyId": PRIMARY}
    )
    app.stubs["eu-west-3"].add_client_error("decrypt", "KMSInvalidStateException")
    assert byok(env, ceremony, app, auditor).revoke(PRIMARY, "appointments") == "KMSInvalidStateException"
    for role in (ceremony, app, auditor):
        role.done()


@pytest.mark.parametrize(
    "wrapping_key",
    [
        lambda: rsa.generate_private_key(65537, 1024).public_key(),  # noqa: S505 - the attacker's, not the size asked for
        lambda: ec.generate_private_key(ec.SECP256R1()).public_key(),  # not RSA at all
    ],
    ids=["rsa-1024", "ec"],
)
def test_a_wrapping_key_that_is_not_what_kms_was_asked_for_is_refused_before_the_hsm_wraps(
    env: LabUnderTest, wrapping_key: Any
) -> None:
    ceremony, app, auditor = Role(), Role(), Role()
    ceremony.stubs["eu-west-3"].add_response(
        "get_parameters_for_import", import_parameters(wrapping_key()), None
    )
    driver = byok(env, ceremony, app, auditor)
    before = env.lab.transcript.read_text()
    with pytest.raises(ByokError, match="is not RSA_2048; nothing was wrapped"):
        driver.get_parameters(PRIMARY)
    assert env.lab.transcript.read_text() == before, "nothing recorded, nothing wrapped"
    assert driver.wrapping_keys == []


# -- the endpoint cannot be swapped ---------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KMS",
        "AWS_ENDPOINT_URL_S3",
        "LOCALSTACK_HOST",
        "CLEFS_LOCALSTACK_ENDPOINT",
    ],
)
def test_real_aws_refuses_every_endpoint_override_in_the_environment(variable: str) -> None:
    with pytest.raises(aws_access.EndpointRefused, match=f"unset {variable}"):
        aws_access.real_aws(environ={variable: "http://127.0.0.1:4566"})
    with pytest.raises(aws_access.EndpointRefused, match=f"unset {variable}"):  # a trusted CA changes nothing
        aws_access.real_aws(environ={variable: "http://127.0.0.1:4566"}, trust_ca_bundle=True)


def test_a_ca_bundle_is_refused_unless_trusted_explicitly_and_then_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, "[default]\nregion = eu-west-3\n", monkeypatch)
    with pytest.raises(aws_access.EndpointRefused, match="pass --trust-ca-bundle"):
        aws_access.real_aws(environ={"AWS_CA_BUNDLE": "/etc/proxy-ca.pem"})
    trusted = aws_access.real_aws(
        environ={"AWS_CA_BUNDLE": "/etc/proxy-ca.pem", "CLEFS_TRUST_CA_BUNDLE": "1"}
    )
    assert "CA bundle /etc/proxy-ca.pem (--trust-ca-bundle)" in trusted.describe()


def write_config(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.write_text(text)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))


@pytest.mark.parametrize(
    ("config", "found"),
    [
        ("[profile ceremony]\nregion = eu-west-3\nendpoint_url = http://mitm.example:4566\n", "endpoint_url"),
        ("[profile ceremony]\nca_bundle = /tmp/mitm.pem\n", "ca_bundle"),
        (
            "[profile ceremony]\nservices = mitm\n\n[services mitm]\nkms =\n  endpoint_url = http://mitm.example\n",
            "services.mitm.kms.endpoint_url",
        ),
    ],
)
def test_real_aws_refuses_a_profile_that_redirects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, found: str
) -> None:
    write_config(tmp_path, config + "\n[profile app]\n\n[profile auditor]\n", monkeypatch)
    with pytest.raises(aws_access.EndpointRefused, match=f"ceremony role\\) sets {found}"):
        aws_access.real_aws({"ceremony": "ceremony", "app": "app", "auditor": "auditor"}, environ={})


def test_each_role_gets_its_own_profile_botocores_endpoint_and_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(
        tmp_path,
        "".join(
            f"[profile {role}]\nregion = eu-west-3\n\n" for role in ("ops-ceremony", "ops-app", "ops-audit")
        ),
        monkeypatch,
    )
    access = aws_access.real_aws(
        {"ceremony": "ops-ceremony", "app": "ops-app"}, environ={"CLEFS_AUDITOR_PROFILE": "ops-audit"}
    )
    assert access.profiles == {"ceremony": "ops-ceremony", "app": "ops-app", "auditor": "ops-audit"}
    assert {role: s.profile_name for role, s in access.sessions.items()} == access.profiles
    client = access.clients("ceremony")("kms", "eu-central-1")
    assert client.meta.endpoint_url == "https://kms.eu-central-1.amazonaws.com"
    assert client._endpoint.http_session._verify is True
    assert "ceremony as ops-ceremony" in access.describe()


def test_an_unknown_profile_is_one_line_naming_the_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(tmp_path, "[profile app]\n", monkeypatch)
    with pytest.raises(errors.InputError, match=r"for the ceremony role: .*pass --ceremony-profile"):
        aws_access.real_aws({"ceremony": "nope"}, environ={})


# -- the CLI: one flag, refusals before any AWS call ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--expires-in-days", "0"], "--expires-in-days 0 is outside 1-365"),
        (["--expires-in-days", "366"], "--expires-in-days 366 is outside 1-365"),
        (["--expires-in-days", "100000000"], "--expires-in-days 100000000 is outside 1-365"),
        (["--expires-in-days", "30", "--no-expiry"], "contradict each other"),
    ],
)
def test_expiry_outside_awss_limit_is_refused_before_anything(
    run_cli, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_cli("byok", "import", "--class", "appointments", *args, lab=tmp_path / "lab")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "lab").exists(), "refused before the lab, the PINs or AWS"


@pytest.fixture
def deployed_lab(tmp_path: Path) -> Path:
    """A lab holding stack outputs (from the program under mocks): what --aws commands read first."""
    from hsm_lab.aws.deployment import save_outputs
    from infra.mocks import run_program

    lab = tmp_path / "lab"
    save_outputs(lab / "stack-outputs.json", run_program(stack="prod").outputs)
    return lab


@pytest.mark.parametrize(
    "command", [["verify"], ["byok", "revoke", "--class", "appointments", "--region", "eu-west-3"]]
)
@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_KMS", "LOCALSTACK_HOST"])
def test_aws_commands_refuse_an_endpoint_override_in_one_line(
    run_cli, deployed_lab: Path, command: list[str], variable: str
) -> None:
    result = run_cli(
        *command,
        "--aws",
        lab=deployed_lab,
        pin="user-pin-0000",
        extra_env={
            variable: "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "x",
        },
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert f"real AWS refuses endpoint overrides: unset {variable}" in lines[0]


def test_the_old_flag_name_is_gone_and_one_name_serves_every_command(run_cli, tmp_path: Path) -> None:
    for command in (
        ["verify"],
        ["byok", "import", "--class", "x"],
        ["byok", "revoke", "--class", "x", "--region", "r"],
    ):
        helped = run_cli(*command, "--help", lab=tmp_path / "lab", extra_env={"COLUMNS": "200"})
        assert "--aws" in helped.stdout and "--real-aws" not in helped.stdout, command
    for command in (["data", "put"], ["data", "get"]):
        helped = run_cli(*command, "--help", lab=tmp_path / "lab", extra_env={"COLUMNS": "200"})
        assert "--aws" in helped.stdout
