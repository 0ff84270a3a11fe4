"""Every `hsm-lab ...` command shown in README.md and docs/*.md exists with the options it shows.

The README's step-by-step blocks are run for real by tests/docs/test_walkthrough.py; here every other
command line in a ```sh block is parsed by the CLI itself (click rejects an unknown command or
option before `--help` is honoured), so documentation cannot drift from the CLI.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from hsm_lab.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.DOTALL):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                line = line.split("  #", 1)[0].split("||", 1)[0].strip()
                if line.startswith("hsm-lab "):
                    found.append((doc.name, line))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) > 30


@pytest.mark.parametrize(("doc", "line"), COMMANDS, ids=[f"{d}:{line[:60]}" for d, line in COMMANDS])
def test_a_documented_command_parses(doc: str, line: str) -> None:
    words = shlex.split(re.sub(r"\$\([^)]*\)", "X", line))[1:]
    command = typer.main.get_command(app)
    path: list[str] = []
    while getattr(command, "commands", None) is not None and words and not words[0].startswith("-"):
        sub = command.commands.get(words[0])
        where = " ".join(path) or "hsm-lab"
        assert sub is not None, f"{doc}: `{line}`: no command {words[0]!r} under {where}"
        path.append(words.pop(0))
        command = sub
    # every option shown exists (values are checked by the commands' own tests and the walkthrough)
    known = {
        name for param in command.params for name in [*param.opts, *getattr(param, "secondary_opts", [])]
    }
    shown = [w.split("=", 1)[0] for w in words if w.startswith("-") and w not in ("-", "--")]
    unknown = [w for w in shown if w not in known]
    assert not unknown, f"{doc}: `{line}`: {' '.join(path)} has no option {unknown[0]}"
