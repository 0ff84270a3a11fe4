"""The stack-outputs contract clefs.stack-outputs/v1: one parser, and a JSON Schema that agrees with it."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from hsm_lab import errors
from hsm_lab.aws import deployment
from infra.model.outputs import SCHEMA, OutputsError, load_outputs, parse_outputs

REPO = Path(__file__).resolve().parents[2]
VALIDATOR = Draft202012Validator(json.loads((REPO / "docs/schemas/stack-outputs.schema.json").read_text()))
ARN = "arn:aws:kms:{region}:123456789012:key/mrk-0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def program_outputs() -> dict[str, Any]:
    """What the real program exports (under mocks), as the harness and `pulumi up` return it."""
    from infra.mocks import run_program

    return dict(run_program(stack="prod").outputs)


def minimal() -> dict[str, Any]:
    regions = {
        r: {"key_arn": ARN.format(region=r), "bucket": f"b-{r}"} for r in ("eu-west-3", "eu-central-1")
    }
    return {
        "schema": SCHEMA,
        "primary_region": "eu-west-3",
        "classes": {"appointments": {"end_to_end": False, "regions": regions}},
    }


def edit(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    document = minimal()
    change(document)
    return document


def region(document: dict[str, Any], name: str = "eu-west-3") -> dict[str, Any]:
    return document["classes"]["appointments"]["regions"][name]


# Documents both the parser and the JSON Schema must refuse: (what, document, words of the message)
BAD = [
    ("not an object", [], "must be a JSON object"),
    (
        "another schema",
        edit(lambda d: d.update(schema="clefs.stack-outputs/v2")),
        "reads clefs.stack-outputs/v1",
    ),
    ("no classes", edit(lambda d: d.pop("classes")), "needs 'classes'"),
    ("no primary region", edit(lambda d: d.pop("primary_region")), "needs 'classes' and 'primary_region'"),
    ("bad primary region", edit(lambda d: d.update(primary_region="Paris")), "primary_region 'Paris' is not"),
    ("classes a list", edit(lambda d: d.update(classes=[])), "classes must be an object"),
    ("bad class name", edit(lambda d: d["classes"].update(AB=d["classes"]["appointments"])), "'AB'"),
    ("no end_to_end", edit(lambda d: d["classes"]["appointments"].pop("end_to_end")), "needs end_to_end"),
    (
        "end_to_end a string",
        edit(lambda d: d["classes"]["appointments"].update(end_to_end="yes")),
        "end_to_end must be true or false",
    ),
    ("empty regions", edit(lambda d: d["classes"]["appointments"].update(regions={})), "regions is empty"),
    ("no key arn", edit(lambda d: region(d).pop("key_arn")), "has no key_arn"),
    ("key arn not an ARN", edit(lambda d: region(d).update(key_arn="a")), "is not a KMS key ARN"),
    ("bucket null", edit(lambda d: region(d).update(bucket=None)), "bucket must be a non-empty string"),
    ("bucket not a bucket name", edit(lambda d: region(d).update(bucket="B_[x]")), "not an S3 bucket name"),
    ("unknown region field", edit(lambda d: region(d).update(extra="x")), "unknown field 'extra'"),
    ("unknown class field", edit(lambda d: d["classes"]["appointments"].update(e2e=True)), "unknown field"),
    ("unknown top-level field", edit(lambda d: d.update(outputs={})), "unknown field 'outputs'"),
    ("null optional field", edit(lambda d: d.update(transcript_bucket=None)), "transcript_bucket must be"),
    ("account not 12 digits", edit(lambda d: d.update(account_id="12")), "account_id '12' is not 12 digits"),
    ("roles incomplete", edit(lambda d: d.update(roles={"app": "arn:aws:iam::1:role/a"})), "roles has no"),
    ("region key not a region", edit(lambda d: d["classes"]["appointments"]["regions"].update(x={})), "'x'"),
    (
        "protection not strings",
        edit(lambda d: d["classes"]["appointments"].update(protection=[1])),
        "protection must be a list",
    ),
]
# Rules JSON Schema cannot say (its description lists them): the parser alone refuses these.
PARSER_ONLY = [
    (
        "key arn of another region",
        edit(lambda d: region(d).update(key_arn=ARN.format(region="us-east-1"))),
        "names region us-east-1",
    ),
    (
        "primary region missing from a class",
        edit(lambda d: d["classes"]["appointments"]["regions"].pop("eu-west-3")),
        "has no primary region",
    ),
    (
        "flat key disagrees",
        edit(lambda d: d.update({"appointments/eu-west-3/bucket": "other"})),
        "disagrees with",
    ),
]


def test_the_program_outputs_parse_and_round_trip(program_outputs: dict[str, Any]) -> None:
    stack = parse_outputs(program_outputs, "program")
    assert stack.declared == ("schema" in program_outputs)  # save_outputs stamps it either way
    document = stack.to_document()
    assert document == {**program_outputs, "schema": SCHEMA}
    assert parse_outputs(document).declared
    VALIDATOR.validate(document)
    assert stack.key_arns("health-documents")[0].split(":")[3] == stack.primary_region
    assert stack.roles is not None and stack.roles.app == program_outputs["roles"]["app"]


def test_a_minimal_document_is_enough() -> None:
    document = minimal()
    VALIDATOR.validate(document)
    stack = parse_outputs(document)
    assert stack.roles is None and stack.transcript_bucket is None and stack.account_id is None
    assert list(stack.classes["appointments"].regions) == ["eu-west-3", "eu-central-1"]


def test_an_older_file_without_schema_is_read_as_v1() -> None:
    document = minimal()
    del document["schema"]
    VALIDATOR.validate(document)
    assert parse_outputs(document).declared is False


@pytest.mark.parametrize(("what", "document", "words"), BAD, ids=[b[0] for b in BAD])
def test_parser_and_schema_refuse_the_same_documents(what: str, document: Any, words: str) -> None:
    assert not VALIDATOR.is_valid(document), what
    with pytest.raises(OutputsError) as refused:
        parse_outputs(document, "lab/stack-outputs.json")
    message = str(refused.value)
    assert words in message
    assert message.startswith("lab/stack-outputs.json: ") and message.endswith("; apply the stack again")
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize(("what", "document", "words"), PARSER_ONLY, ids=[b[0] for b in PARSER_ONLY])
def test_what_only_the_parser_checks(what: str, document: Any, words: str) -> None:
    assert VALIDATOR.is_valid(document), f"{what}: now expressible in the schema? move it to BAD"
    with pytest.raises(OutputsError, match=words):
        parse_outputs(document)


def test_hostile_values_stay_one_short_line() -> None:
    document = edit(lambda d: region(d).update(bucket="[/x]" + "\x1b" * 2000))
    with pytest.raises(OutputsError) as refused:
        parse_outputs(document)
    assert len(str(refused.value)) < 300


def test_load_outputs_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "stack-outputs.json"
    path.write_bytes(b"\xff\xfe[/x]")
    with pytest.raises(OutputsError, match="is not JSON; apply the stack again"):
        load_outputs(path)
    with pytest.raises(
        errors.InputError, match=r"no stack outputs at .*: run `hsm-lab stack apply-localstack`"
    ):
        deployment.load_stack(tmp_path / "absent.json")


def test_save_outputs_stamps_and_refuses_a_bad_document(
    tmp_path: Path, program_outputs: dict[str, Any]
) -> None:
    path = tmp_path / "stack-outputs.json"
    deployment.save_outputs(path, program_outputs)
    written = json.loads(path.read_text())
    assert written["schema"] == SCHEMA and deployment.load_stack(path).declared
    assert deployment.load_outputs(path) == written, "the adapter returns the checked document"
    bad = copy.deepcopy(program_outputs)
    bad["classes"]["appointments"]["end_to_end"] = "no"
    with pytest.raises(errors.InputError, match="end_to_end must be true or false"):
        deployment.save_outputs(tmp_path / "other.json", bad)
    assert not (tmp_path / "other.json").exists()


def test_the_contract_imports_without_pulumi() -> None:
    code = "import sys, infra.model.outputs; print('pulumi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
