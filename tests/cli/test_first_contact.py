"""Issue 11 item 4 and 5 at the CLI: machine-readable rehearsal, a failure that still shows what
succeeded, shell completion. Real SoftHSM2; the failing AWS side is a LocalStack nobody runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.ceremony_day.test_outputs_and_first_contact import validator


def test_rehearse_json_is_the_document_alone_and_matches_its_schema(run_cli, tmp_path: Path) -> None:
    result = run_cli(
        "rehearse", "--ceremony-only", "--json", "--lab", str(tmp_path / "r"), lab=tmp_path / "r"
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)  # nothing else on stdout
    validator("rehearse.schema.json").validate(doc)
    assert doc["schema"] == "clefs.rehearse/v1" and doc["ok"] is True and doc["aws"] is None
    assert "→ " in result.stderr, "the steps go to stderr"


def test_a_failed_rehearsal_still_shows_the_ceremony_that_succeeded(run_cli, tmp_path: Path) -> None:
    result = run_cli(
        "rehearse",
        "--lab",
        str(tmp_path / "r"),
        lab=tmp_path / "r",
        extra_env={"CLEFS_LOCALSTACK_ENDPOINT": "http://127.0.0.1:9"},  # nothing listens there
    )
    assert result.returncode == 1
    assert "ceremony OK" in result.stdout and "Key check values" in result.stdout
    assert "the AWS side stopped after: ceremony" in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr


def test_shell_completion_is_installable(run_cli, tmp_path: Path) -> None:
    result = run_cli("--show-completion", "bash", lab=tmp_path / "lab")
    assert (
        result.returncode == 0
        and "hsm_lab_completion()" in result.stdout
        and "complete -o default" in result.stdout
    )


def test_clefs_toml_names_the_lab_when_neither_flag_nor_environment_does(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "clefs.toml").write_text('lab = "from-config"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLEFS_")}
    env.update(CLEFS_USER_PIN="user-pin-0000", CLEFS_SO_PIN="so-pin-000000")
    done = subprocess.run(
        [sys.executable, "-m", "hsm_lab", "init"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from-config" / "anchor.json").exists() and not (tmp_path / "lab").exists()
    env["CLEFS_LAB"] = str(tmp_path / "from-env")  # the environment wins over the file
    done = subprocess.run(
        [sys.executable, "-m", "hsm_lab", "status"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "no lab at" in done.stderr and "from-env" in done.stderr


def test_the_ceremony_account_fits_80_and_100_columns(run_cli, tmp_path: Path) -> None:
    from rich.cells import cell_len

    for width in ("80", "100"):
        lab = tmp_path / f"w{width}"
        result = run_cli(
            "rehearse", "--ceremony-only", "--lab", str(lab), lab=lab, extra_env={"COLUMNS": width}
        )
        assert result.returncode == 0, result.stderr
        widest = max(cell_len(line) for line in result.stdout.splitlines())
        assert widest <= int(width), (width, widest)
