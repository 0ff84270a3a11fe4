"""The README's main command end to end: the full rehearsal against a real LocalStack."""

from __future__ import annotations

import json
from pathlib import Path

from hsm_lab import ceremony
from hsm_lab.aws import localstack
from hsm_lab.lab import Lab
from tests.support import free_port


def test_full_rehearsal_on_the_session_localstack(localstack, run_cli, tmp_path: Path) -> None:
    lab = tmp_path / "full"
    result = run_cli(
        "rehearse",
        "--lab",
        str(lab),
        "--seed",
        "3",
        lab=lab,
        extra_env=localstack.client_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "no gap" in out and "rehearsal OK" in out
    assert "the platform's KMS and S3 rights yield ciphertext only" in out
    assert "RSA-AES-KWP-SHA256" in out and "OAEP-SHA1" in out
    assert "decrypt refused (KMSInvalidStateException)" in out
    outputs = json.loads((lab / "stack-outputs.json").read_text())
    records = json.loads((lab / "byok.json").read_text())["imports"]
    imported = {(r["data_class"], r["region"]) for r in records}
    assert {(c, r) for c in outputs["classes"] for r in outputs["classes"][c]["regions"]} <= imported
    actions = [e["action"] for e in ceremony.transcript(Lab(lab)).entries()]
    for action in ("generate", "import", "rekey", "byok.import", "byok.prove", "byok.revoke"):
        assert action in actions


def test_the_rehearsal_stops_the_localstack_it_started(run_cli, tmp_path: Path) -> None:
    port = free_port()
    lab = tmp_path / "own"
    result = run_cli(
        "rehearse", "--lab", str(lab), lab=lab, extra_env={"LOCALSTACK_HOST": f"127.0.0.1:{port}"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "started and stopped by the rehearsal" in result.stdout
    assert localstack.health(f"http://127.0.0.1:{port}", timeout=1) is None
    assert not (lab / "localstack" / "localstack.pid").exists()
    assert (lab / "localstack" / "localstack.log").exists(), "logs are kept"
