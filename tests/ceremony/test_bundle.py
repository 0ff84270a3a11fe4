"""Issue 7 item 8: the auditor's bundle, checked by `transcript verify --bundle` and by openssl alone."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hsm_lab.ceremony import record
from tests.conftest import Dealt

THREAT_MODEL = Path(__file__).resolve().parents[2] / "docs" / "threat-model.md"


@pytest.fixture(scope="module")
def bundle(dealt: Dealt, tmp_path_factory: pytest.TempPathFactory, run_cli) -> dict:
    target = tmp_path_factory.mktemp("audit") / "bundle"
    # the openssl recipe checks a head signed by the pinned key: act on the pinned token last
    assert run_cli("status", lab=dealt.env.lab.root, pin=dealt.env.pin).returncode == 0
    result = run_cli("transcript", "export", str(target), lab=dealt.env.lab.root, pin=dealt.env.pin)
    assert result.returncode == 0, result.stderr
    anchor = record.require_anchor(dealt.env.lab)
    assert anchor.fingerprint[:4] in result.stdout  # printed for the auditor, grouped
    return {"dir": target, "fingerprint": anchor.fingerprint}


def tampered(bundle: dict, tmp_path: Path) -> Path:
    copy = tmp_path / "tampered"
    shutil.copytree(bundle["dir"], copy)
    return copy


def test_the_bundle_verifies_without_an_hsm_against_the_given_fingerprint(
    bundle: dict, run_cli, tmp_path
) -> None:
    result = run_cli(
        "transcript",
        "verify",
        "--bundle",
        str(bundle["dir"]),
        "--expect-signer",
        bundle["fingerprint"],
        lab=tmp_path / "no-lab-here",
    )
    assert result.returncode == 0, result.stderr
    assert "transcript OK" in result.stdout and "bundle" in result.stdout
    assert not (tmp_path / "no-lab-here").exists(), "verifying a bundle needs no lab"


def test_a_bundle_without_an_expected_signer_is_refused(bundle: dict, run_cli, tmp_path) -> None:
    result = run_cli("transcript", "verify", "--bundle", str(bundle["dir"]), lab=tmp_path / "x")
    assert result.returncode == 1 and "carries its own pin" in result.stderr


def test_a_bundle_with_another_signer_is_refused(bundle: dict, run_cli, tmp_path) -> None:
    result = run_cli(
        "transcript",
        "verify",
        "--bundle",
        str(bundle["dir"]),
        "--expect-signer",
        "cd" * 32,
        lab=tmp_path / "x",
    )
    assert result.returncode == 1 and "not the expected cdcdcdcd" in result.stderr


@pytest.mark.parametrize("what", ["entry", "manifest", "head"])
def test_a_tampered_bundle_is_refused(bundle: dict, run_cli, tmp_path: Path, what: str) -> None:
    copy = tampered(bundle, tmp_path)
    if what == "entry":
        text = (copy / "transcript.jsonl").read_text()
        (copy / "transcript.jsonl").write_text(text.replace('"threshold":5', '"threshold":4', 1))
    elif what == "manifest":
        path = next((copy / "manifests").glob("*.json"))
        doc = json.loads(path.read_text())
        doc["manifest"]["threshold"] = 4
        path.write_text(json.dumps(doc))
    else:
        doc = json.loads((copy / "transcript.head.json").read_text())
        doc["head"]["seq"] -= 1
        (copy / "transcript.head.json").write_text(json.dumps(doc))
    result = run_cli(
        "transcript",
        "verify",
        "--bundle",
        str(copy),
        "--expect-signer",
        bundle["fingerprint"],
        lab=tmp_path / "x",
    )
    assert result.returncode == 1 and "transcript OK" not in result.stdout


def openssl_recipe() -> str:
    text = THREAT_MODEL.read_text()
    found = re.search(r"<!-- verify-bundle.sh -->\n```bash\n(.*?)```", text, re.S)
    assert found, "docs/threat-model.md keeps the openssl recipe in a marked block"
    return found.group(1)


def run_recipe(directory: Path, fingerprint: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "verify-bundle.sh"
    script.write_text(openssl_recipe())
    return subprocess.run(
        ["bash", str(script), str(directory), fingerprint],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_documented_openssl_recipe_checks_the_same_bundle(bundle: dict, tmp_path: Path) -> None:
    ok = run_recipe(bundle["dir"], bundle["fingerprint"], tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("OK:"), ok.stdout + ok.stderr
    assert run_recipe(bundle["dir"], "ab" * 32, tmp_path).returncode == 1
    copy = tampered(bundle, tmp_path)
    text = (copy / "transcript.jsonl").read_text()
    (copy / "transcript.jsonl").write_text(text.replace('"threshold":5', '"threshold":4', 1))
    edited = run_recipe(copy, bundle["fingerprint"], tmp_path)
    assert edited.returncode == 1 and "edited" in edited.stdout
