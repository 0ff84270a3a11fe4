"""Machine-readable outputs against their JSON Schemas, and the first-contact helpers.

The documents validated are real: `status --json` and `transcript verify --json` from the CLI on a
real SoftHSM2 lab, the rehearsal's account from a real ceremony (and, with the session's LocalStack,
a real full rehearsal, whose BYOK imports and compliance report are validated too).
"""

from __future__ import annotations

import json
import stat
import subprocess
import time
from pathlib import Path

import pyrage
import pytest

from hsm_lab import errors
from hsm_lab.ceremony.custodians import load_custodians, load_identities
from hsm_lab.ceremony_day import config, custodians_new, doctor, outputs
from hsm_lab.lab import Lab
from tests.ceremony_day.conftest import REPO, run_day
from tests.conftest import Dealt

SCHEMAS = REPO / "docs" / "schemas"


def validator(name: str):
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed: run scripts/setup.sh (pinned in requirements.txt)"
    )
    from referencing import Registry, Resource

    registry = Registry()
    for path in [*SCHEMAS.glob("*.json"), REPO / "docs" / "verify.schema.json"]:
        registry = registry.with_resource(path.name, Resource.from_contents(json.loads(path.read_text())))
    schema = json.loads(
        (SCHEMAS / name).read_text() if (SCHEMAS / name).exists() else (REPO / "docs" / name).read_text()
    )
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def test_every_schema_file_is_a_valid_2020_12_schema_with_a_versioned_id() -> None:
    for path in SCHEMAS.glob("*.schema.json"):
        doc = json.loads(path.read_text())
        assert doc["$id"].startswith("clefs.") and doc["$id"].rsplit("/", 1)[1].startswith("v")
        assert doc["properties"]["schema"]["const"] == doc["$id"]
        validator(path.name)


def test_status_and_transcript_verify_json_match_their_schemas(day_dealt: Dealt, run_cli) -> None:
    lab = day_dealt.env.lab.root
    status = run_cli("status", "--json", lab=lab, pin=day_dealt.env.pin)
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    validator("status.schema.json").validate(doc)
    verified = run_cli("transcript", "verify", "--json", lab=lab, pin=day_dealt.env.pin)
    assert verified.returncode == 0, verified.stderr
    validator("transcript-verify.schema.json").validate(json.loads(verified.stdout))
    broken = dict(doc, schema="clefs.status/v0")
    assert list(validator("status.schema.json").iter_errors(broken))


def test_the_ceremony_rehearsal_account_matches_its_schema(tmp_path: Path) -> None:
    from hsm_lab.rehearsal import rehearse

    doc = outputs.rehearse_doc(rehearse(tmp_path / "r", seed=1))
    validator("rehearse.schema.json").validate(doc)
    assert doc["aws"] is None and doc["ceremony"]["kcv"]["manifest"] == doc["ceremony"]["kcv"]["recovery"]
    text = json.dumps(doc)
    assert "PIN" not in text.upper().replace("PINNED", "")


def test_a_full_rehearsal_gives_valid_rehearse_byok_and_verify_documents_and_an_auditor_report(
    localstack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hsm_lab.ceremony.record import verify_lab
    from hsm_lab.ceremony_day import audit_report
    from hsm_lab.rehearsal.full import rehearse_pyramid

    for key, value in localstack.client_env().items():
        monkeypatch.setenv(key, value)
    report = rehearse_pyramid(tmp_path / "full", seed=2)
    validator("rehearse.schema.json").validate(outputs.rehearse_doc(report))
    byok = outputs.byok_doc(report.imports, True, report.endpoint)
    validator("byok-import.schema.json").validate(byok)
    assert report.compliance is not None
    validator("verify.schema.json").validate(json.loads(report.compliance.to_json()))
    page = audit_report.render(
        verify_lab(report.ceremony.lab), checked_against="lab files", compliance=report.compliance
    )
    for record in report.imports:
        assert f"{record.region} {record.role} KCV {record.kcv}" in page
    assert "obs</span>" in page and "REVOKED" in page
    (tmp_path / "full-report.html").write_text(page)
    assert len(page.encode()) < 300_000


# -- custodians new -------------------------------------------------------------------


def test_custodians_new_makes_private_identities_and_a_file_generate_reads(tmp_path: Path) -> None:
    out = tmp_path / "people"
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
    result = run_day("custodians", "new", *names, "--out", str(out), lab=tmp_path / "nolab")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    people = load_custodians(out / "custodians.toml")
    assert [p.name for p in people] == names
    for person in people:
        path = out / f"{person.name}.txt"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        identity = load_identities([path])[0]
        assert str(identity.to_public()) == person.recipient
    # the standard age tool reads the identities too
    sealed = pyrage.encrypt(b"hello", [pyrage.x25519.Recipient.from_str(people[0].recipient)])
    opened = subprocess.run(
        ["age", "-d", "-i", str(out / "alice.txt")], input=sealed, capture_output=True, check=False
    )
    assert opened.returncode == 0 and opened.stdout == b"hello"
    again = run_day("custodians", "new", *names, "--out", str(out), lab=tmp_path / "nolab")
    assert again.returncode != 0 and "exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "nolab").exists()


def test_too_few_custodians_for_the_default_quorum_is_said_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(errors.InputError, match="cannot meet the default K = 5"):
        custodians_new.make_custodians(["alice", "bob"], tmp_path / "two")
    assert not (tmp_path / "two").exists()


def test_yubikey_recipients_are_recognised_by_their_own_validator() -> None:
    good = "age1yubikey1" + "q" * 59
    assert custodians_new.check_any_recipient("alice", good) == good
    with pytest.raises(errors.InputError, match="age1yubikey1 recipient"):
        custodians_new.check_any_recipient("alice", "age1yubikey1" + "B" * 59)
    x25519 = str(pyrage.x25519.Identity.generate().to_public())
    assert custodians_new.check_any_recipient("bob", x25519) == x25519
    found = custodians_new.load_any_custodians(
        f'[[custodian]]\nname = "alice"\nrecipient = "{good}"\n'
        '[[custodian]]\nname = "bob"\npassphrase = true\n',
        "c.toml",
    )
    assert found == [("alice", good), ("bob", None)]


# -- clefs.toml -------------------------------------------------------------------------


def test_config_precedence_flags_env_file_defaults(tmp_path: Path) -> None:
    path = tmp_path / "clefs.toml"
    path.write_text(
        'format = "clefs.config/v1"\nlab = "lab/file"\nendpoint = "https://127.0.0.1:4566"\n'
        '[profiles.ci]\nlab = "lab/ci"\nregions = ["eu-west-1"]\n'
    )
    none = config.resolve(environ={})
    assert none.lab == "lab" and none.sources["lab"] == "default"
    from_file = config.resolve(config=path, environ={})
    assert from_file.lab == "lab/file" and from_file.endpoint == "https://127.0.0.1:4566"
    profile = config.resolve(config=path, environ={"CLEFS_PROFILE": "ci"})
    assert (
        profile.lab == "lab/ci"
        and profile.regions == ["eu-west-1"]
        and profile.sources["endpoint"] == str(path)
    )
    env = config.resolve(config=path, profile="ci", environ={"CLEFS_LAB": "lab/env"})
    assert env.lab == "lab/env" and env.sources["lab"] == "env CLEFS_LAB"
    flag = config.resolve({"lab": "lab/flag"}, config=path, environ={"CLEFS_LAB": "lab/env"})
    assert flag.lab == "lab/flag" and flag.sources["lab"] == "flag"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lab = 3\n", "lab must be a str"),
        ('labb = "x"\n', "unknown key 'labb'"),
        ('user_pin = "1234"\n', "looks like a secret"),
        ('format = "clefs.config/v9"\n', "is not clefs.config/v1"),
        ("regions = []\n", "non-empty list"),
        ("lab = \n", "not valid TOML"),
        ('[profiles.ci]\nendpont = "x"\n', r"\[profiles.ci\]: unknown key"),
    ],
)
def test_config_errors_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "clefs.toml"
    path.write_text(text)
    with pytest.raises(errors.InputError, match=message) as caught:
        config.resolve(config=path, environ={})
    assert "\n" not in str(caught.value)


def test_an_unknown_profile_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clefs.toml"
    path.write_text('lab = "x"\n')
    with pytest.raises(errors.InputError, match="no profile 'prod'"):
        config.resolve(config=path, profile="prod", environ={})


# -- doctor -----------------------------------------------------------------------------


def test_doctor_on_a_missing_lab_fails_says_what_next_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nolab"
    result = run_day("doctor", "--endpoint", "https://127.0.0.1:9", lab=missing)
    assert result.returncode != 0
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("ok   tools") for line in lines)
    assert any(line.startswith("FAIL lab") and "next: hsm-lab init" in line for line in lines)
    assert any(line.startswith("FAIL endpoint") and "hsm-lab localstack start" in line for line in lines)
    assert not missing.exists()
    assert len(result.stderr.strip().splitlines()) == 1


def test_doctor_on_a_real_lab_checks_the_token_and_the_pin(day_dealt: Dealt, tmp_path: Path) -> None:
    lab = day_dealt.env.lab
    checks = {c.name: c for c in doctor.check_tokens(lab, None, "clefs-primary", day_dealt.env.pin)}
    assert checks["tokens"].status == "ok" and checks["pin"].status == "ok"
    wrong = {c.name: c for c in doctor.check_tokens(lab, None, "clefs-primary", "not-the-pin")}
    assert wrong["pin"].status == "fail" and "not-the-pin" not in wrong["pin"].line()
    assert doctor.check_lab(lab).status == "ok"
    assert doctor.check_outputs(lab).status == "fail" and "apply-localstack" in doctor.check_outputs(lab).next
    assert doctor.check_tools(lambda _tool: None).status == "fail"
    assert doctor.check_venvs(tmp_path).next == "bash scripts/setup.sh"
    assert Lab(tmp_path).root.exists()
    started = time.perf_counter()
    doctor.check_endpoint("https://127.0.0.1:9")
    assert time.perf_counter() - started < 5


def _outputs(**change: object) -> dict[str, object]:
    arn = "arn:aws:kms:{region}:123456789012:key/mrk-0123456789abcdef0123456789abcdef"
    regions = {
        r: {"key_arn": arn.format(region=r), "bucket": f"b-{r}"} for r in ("eu-west-3", "eu-central-1")
    }
    document: dict[str, object] = {
        "schema": "clefs.stack-outputs/v1",
        "primary_region": "eu-west-3",
        "classes": {"appointments": {"end_to_end": False, "regions": regions}},
    }
    document.update(change)
    return {k: v for k, v in document.items() if v is not None}


@pytest.mark.parametrize(
    ("document", "status", "words"),
    [
        (_outputs(), "ok", "classes appointments"),
        (_outputs(schema=None), "ok", "no schema: read as clefs.stack-outputs/v1"),
        (_outputs(schema="clefs.stack-outputs/v9"), "fail", "clefs.stack-outputs/v9"),
        (_outputs(primary_region="us-east-1"), "fail", "primary"),
        ("not json", "fail", "JSON"),
    ],
    ids=["good", "no-schema", "other-schema", "primary-not-in-class", "not-json"],
)
def test_doctor_reads_the_stack_outputs_through_the_one_contract(
    tmp_path: Path, document: object, status: str, words: str
) -> None:
    """doctor trusts the outputs file only as far as the typed parser does (docs/stack-outputs.md)."""
    lab = Lab(tmp_path)
    path = lab.root / "stack-outputs.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    check = doctor.check_outputs(lab)
    assert check.status == status, check.line()
    assert words in check.line()
    assert len(check.line().splitlines()) == 1
