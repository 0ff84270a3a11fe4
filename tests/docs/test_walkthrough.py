"""The README's step-by-step blocks, run exactly as written, against a LocalStack they start.

The two ```sh blocks under "## Step by step, by hand" (the walkthrough, then "After a LocalStack
restart") run in one bash, in a fresh directory where `.venv` links to the repository's. The
walkthrough must end with `hsm-lab verify` exiting 0; the restart must be reported in one line
and recovered. LocalStack is started by the block on a free loopback port (LOCALSTACK_HOST) and
stopped by it; a leftover one is stopped by PID here.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

from hsm_lab.aws import localstack as ls
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]



def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Step by step, by hand") : text.index("## The ceremony CLI")]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def test_the_readme_walkthrough_runs_green_and_survives_a_restart(tmp_path: Path) -> None:
    walkthrough, restart = readme_blocks()
    assert "hsm-lab verify " in walkthrough and "byok import --class administrative" in walkthrough
    work = tmp_path / "reader"
    work.mkdir()
    (work / ".venv").symlink_to(REPO / ".venv")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLEFS_", "LOCALSTACK_", "AWS_", "VIRTUAL_ENV"))
    }
    env.update(
        CLEFS_USER_PIN=secrets.token_urlsafe(10),
        CLEFS_SO_PIN=secrets.token_urlsafe(10),
        LOCALSTACK_HOST=f"127.0.0.1:{free_port()}",
        COLUMNS="200",
        CLEFS_ACTOR="pytest-readme",
    )
    marker = "echo '--- restart ---'\n"
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", walkthrough + marker + restart],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
    finally:
        ls.stop(work / "lab" / "mine")  # only if the block left it running
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    before, after = (" ".join(part.split()) for part in result.stdout.split("--- restart ---"))
    assert "no gap" in before and "transcript OK" in before
    assert (work / "rx-copy.txt").read_text() == (work / "rx.txt").read_text()
    restarted = [line for line in result.stderr.splitlines() if "keeps no state, so it was restarted" in line]
    assert restarted and "hsm-lab stack apply-localstack" in restarted[0], result.stderr[-2000:]
    assert "LocalStack no longer holds this stack" in after and "recreated all" in after
    assert "no gap" in after.rsplit("Compliance from live state", 1)[-1]
    assert "keeps no state" in result.stderr  # `localstack stop` warns
    for secret in (env["CLEFS_USER_PIN"], env["CLEFS_SO_PIN"]):
        assert secret not in result.stdout + result.stderr
    assert not (work / "lab" / "mine" / "localstack" / "localstack.pid").exists()
