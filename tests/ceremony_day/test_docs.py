"""The ceremony-day docs: every `hsm-lab` line parses against the sub-app,
and the CI recipe is a workflow of the shape it claims (LocalStack service, endpoint, CA)."""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from hsm_lab.cli import app
from tests.ceremony_day.conftest import REPO

PREFIX = "hsm-lab "
DOCS = [REPO / "docs" / "ceremony-day.md", REPO / "docs" / "inspecting.md"]


def day_lines() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #", 1)[0].strip()
                if line.startswith(PREFIX):
                    found.append((doc.name, line))
    return found


LINES = day_lines()


def test_the_guide_shows_the_ceremony_day_commands() -> None:
    shown = {line.split()[1] for _doc, line in LINES}
    assert {"custodians", "doctor", "script", "ceremony", "present", "report"} <= shown


@pytest.mark.parametrize(("doc", "line"), LINES, ids=[line[len(PREFIX) :][:50] for _d, line in LINES])
def test_a_documented_day_command_parses(doc: str, line: str) -> None:
    words = shlex.split(line)[1:]
    command = typer.main.get_command(app)
    while getattr(command, "commands", None) is not None and words and not words[0].startswith("-"):
        sub = command.commands.get(words[0])
        assert sub is not None, f"{doc}: `{line}`: no command {words[0]!r}"
        command = sub
        words.pop(0)
    known = {name for p in command.params for name in [*p.opts, *getattr(p, "secondary_opts", [])]}
    unknown = [w for w in words if w.startswith("-") and w not in known]
    assert not unknown, f"{doc}: `{line}`: no option {unknown[0]}"


def test_the_ci_recipe_runs_the_rehearsal_against_a_localstack_service() -> None:
    yaml = pytest.importorskip("yaml")
    flow = yaml.safe_load((REPO / "docs" / "examples" / "github-actions.yml").read_text())
    job = flow["jobs"]["rehearse"]
    assert job["services"]["localstack"]["image"].startswith("localstack/localstack")
    assert job["env"]["CLEFS_LOCALSTACK_ENDPOINT"].startswith("https://127.0.0.1:")
    assert "CLEFS_LOCALSTACK_CA" in job["env"]
    runs = " ".join(step.get("run", "") for step in job["steps"])
    assert "hsm-lab rehearse" in runs and "scripts/setup.sh" in runs
