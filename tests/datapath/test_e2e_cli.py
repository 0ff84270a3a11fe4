"""End to end (health documents) and the `hsm-lab data` commands, against a real LocalStack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyrage
import pytest
from typer.testing import CliRunner

from hsm_lab.cli import data as data_cli
from hsm_lab.datapath import DataPathError, EndToEndError, RecordNotFound
from hsm_lab.datapath import envelope as env
from hsm_lab.datapath import store as dp
from hsm_lab.datapath.envelope import (
    RecordAuthenticationError,
)
from hsm_lab.errors import ClefsError, InputError
from tests.datapath.support import (
    HOME,
    Deployment,
    recipients,
    rid,
)

# --------------------------------------------------------------------- end to end


def test_health_document_is_unreadable_by_the_platform(
    deployment: Deployment, people: dict[str, pyrage.x25519.Identity]
) -> None:
    datapath = deployment.datapath()
    record, document = rid(), b"%PDF-1.7 compte rendu: diagnostic confidentiel" * 20
    datapath.put("health-documents", record, document, recipients=recipients(people))

    # The platform role: S3 + KMS. get() without an identity refuses ...
    with pytest.raises(EndToEndError, match="end-to-end encrypted: only the patient's or practitioner's"):
        datapath.get("health-documents", record)
    # ... and everything S3 + KMS can produce is age ciphertext, not the document.
    sealed = datapath.get_sealed("health-documents", record)
    raw = deployment.raw("health-documents", record)
    opened = deployment.datapath().crypter.decrypt(
        raw,
        data_class="health-documents",
        record_id=record,
        key_arn=deployment.target("health-documents")["key_arn"],
        region=HOME,
    )
    assert opened.plaintext == sealed and sealed.startswith(b"age-encryption.org/v1\n-> X25519 ")
    for blob in (sealed, raw):
        assert document not in blob and document[:16] not in blob
    with pytest.raises(pyrage.DecryptError):
        pyrage.decrypt(sealed, [pyrage.x25519.Identity.generate()])  # e.g. a platform-held age key

    # The patient and the practitioner each open it; a third person cannot.
    assert datapath.get("health-documents", record, identity=people["patient"]) == document
    assert datapath.get("health-documents", record, identity=[people["practitioner"]]) == document
    assert dp.open_document(sealed, people["patient"]) == document
    with pytest.raises(EndToEndError, match="this identity cannot open it"):
        datapath.get("health-documents", record, identity=people["stranger"])


def test_e2e_rules(deployment: Deployment, people: dict[str, pyrage.x25519.Identity]) -> None:
    datapath = deployment.datapath()
    with pytest.raises(InputError, match="needs at least one recipient"):
        datapath.put("health-documents", rid(), b"doc")
    with pytest.raises(InputError, match="not an age X25519 recipient"):
        datapath.put("health-documents", rid(), b"doc", recipients=["age1notakey"])
    with pytest.raises(InputError, match="not end-to-end"):
        datapath.put("appointments", rid(), b"x", recipients=recipients(people))
    # A platform writing a health document without e2e (a downgrade) is refused on read.
    record = rid()
    where = deployment.target("health-documents")
    blob = datapath.crypter.encrypt(
        "health-documents", record, b"plain", key_arn=where["key_arn"], region=HOME
    )
    deployment.store_raw("health-documents", record, bytes(blob))
    with pytest.raises(RecordAuthenticationError, match="end-to-end mode none does not match"):
        datapath.get("health-documents", record, identity=people["patient"])


# --------------------------------------------------------------------- CLI


def test_cli_put_get(
    deployment: Deployment,
    people: dict[str, pyrage.x25519.Identity],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in deployment.localstack.client_env().items():
        monkeypatch.setenv(name, value)
    outputs = tmp_path / "stack-outputs.json"
    outputs.write_text(json.dumps({"primary_region": HOME, "classes": deployment.classes}))
    common = ["--outputs", str(outputs), "--lab", str(deployment.lab)]
    runner = CliRunner()
    note, document = tmp_path / "note.txt", tmp_path / "report.pdf"
    note.write_bytes(b"rendez-vous mardi")
    document.write_bytes(b"%PDF secret diagnostic")
    identity = tmp_path / "patient.key"
    identity.write_text(f"# patient\n{people['patient']}\n")
    stranger = tmp_path / "stranger.key"
    stranger.write_text(f"{people['stranger']}\n")

    def run(*args: str) -> Any:
        return runner.invoke(data_cli.app, [*args, *common])

    done = run("put", "--class", "appointments", "--id", "cli-1", "--file", str(note))
    assert done.exit_code == 0, done.output
    assert "s3://" in done.stdout and "TLS verified against the lab's own CA" in done.stdout
    out = tmp_path / "out" / "note.txt"
    done = run("get", "--class", "appointments", "--id", "cli-1", "--out", str(out))
    assert done.exit_code == 0 and out.read_bytes() == b"rendez-vous mardi"

    args = ["--class", "health-documents", "--id", "cli-doc"]
    rec = [x for r in recipients(people) for x in ("--recipient", r)]
    done = run("put", *args, "--file", str(document), *rec)
    assert done.exit_code == 0, done.output
    assert "end to end (age) to 2 recipient(s)" in done.stdout
    refused = run("get", *args)
    assert refused.exit_code == 1
    assert "end-to-end encrypted" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert b"secret" not in refused.stdout_bytes
    done = run("get", *args, "--identity", str(identity))
    assert done.exit_code == 0 and done.stdout_bytes == b"%PDF secret diagnostic"
    sealed = tmp_path / "doc.age"
    done = run("get", *args, "--sealed", "--out", str(sealed))
    assert done.exit_code == 0
    assert pyrage.decrypt(sealed.read_bytes(), [people["practitioner"]]) == b"%PDF secret diagnostic"
    refused = run("get", *args, "--identity", str(stranger))
    assert refused.exit_code == 1 and "cannot open it" in refused.stderr

    for bad in (
        ["get", "--class", "appointments", "--id", "../x"],
        ["get", "--class", "nope", "--id", "x1"],
        ["get", "--class", "appointments", "--id", "missing-1"],
        ["put", "--class", "appointments", "--id", "x1", "--file", str(tmp_path / "absent")],
    ):
        refused = run(*bad)
        assert refused.exit_code == 1, bad
        assert refused.stderr.startswith("error:") and len(refused.stderr.strip().splitlines()) == 1, bad


def test_errors_are_clefs_errors() -> None:
    for error in (
        RecordAuthenticationError,
        env.KeyServiceError,
        DataPathError,
        RecordNotFound,
        EndToEndError,
    ):
        assert issubclass(error, ClefsError)
