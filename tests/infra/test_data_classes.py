"""The data-class model: defaults, config parsing and its one-line errors (no pulumi here)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.model.data_classes import (
    DEFAULT_DATA_CLASSES,
    ENCRYPTION_CONTEXT_KEY,
    NAME_MAX,
    DataClass,
    DataClassConfigError,
    name_problem,
    parse_data_classes,
    to_config,
)
from infra.model.settings import settings_from_mapping


def test_defaults_are_the_three_platform_classes() -> None:
    assert [dc.name for dc in DEFAULT_DATA_CLASSES] == ["health-documents", "appointments", "administrative"]
    assert {dc.name: dc.end_to_end for dc in DEFAULT_DATA_CLASSES} == {
        "health-documents": True,
        "appointments": False,
        "administrative": False,
    }
    assert parse_data_classes(None) == DEFAULT_DATA_CLASSES


def test_protection_levels_and_client_side_flag_follow_end_to_end() -> None:
    health, appointments, _ = DEFAULT_DATA_CLASSES
    assert health.protection == ("at-rest", "in-transit", "end-to-end")
    assert health.client_side_encryption is True
    assert appointments.protection == ("at-rest", "in-transit")
    assert appointments.client_side_encryption is False


def test_alias_and_encryption_context_use_the_class_name() -> None:
    dc = DataClass("appointments")
    assert settings_from_mapping({}, stack="prod").alias(dc.name) == "alias/clefs/prod/appointments"
    assert (
        settings_from_mapping({"namePrefix": "acme"}, stack="eu").alias(dc.name)
        == "alias/acme/eu/appointments"
    )
    assert ENCRYPTION_CONTEXT_KEY == "data_class"
    assert dc.encryption_context("r-1") == {"data_class": "appointments", "record_id": "r-1"}
    assert dc.encryption_context() == {"data_class": "appointments"}


def test_adding_a_class_is_one_config_entry() -> None:
    config = [
        *to_config(DEFAULT_DATA_CLASSES),
        {"name": "prescriptions", "protection": ["at-rest", "in-transit", "end-to-end"]},
    ]
    classes = parse_data_classes(config)
    assert classes[:3] == DEFAULT_DATA_CLASSES
    assert classes[3] == DataClass("prescriptions", end_to_end=True)
    assert parse_data_classes([{"name": "billing"}]) == (DataClass("billing"),)


def test_to_config_round_trips() -> None:
    assert parse_data_classes(to_config(DEFAULT_DATA_CLASSES)) == DEFAULT_DATA_CLASSES


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("health-documents", "clefs:dataClasses: expected a list of classes, got str"),
        ({"name": "x"}, "clefs:dataClasses: expected a list of classes, got dict"),
        ([], "clefs:dataClasses: at least one data class is required"),
        (["appointments"], "clefs:dataClasses[0]: expected a mapping with a name, got str"),
        ([{"protection": ["at-rest", "in-transit"]}], "clefs:dataClasses[0]: missing 'name'"),
        ([{"name": "ok-name", "colour": "red"}], "clefs:dataClasses[0]: unknown key 'colour'"),
        ([{"name": "Health"}], "clefs:dataClasses[0].name: 'Health' is invalid"),
        ([{"name": "ab"}], "clefs:dataClasses[0].name: 'ab' is invalid"),
        ([{"name": "a" * (NAME_MAX + 1)}], "is invalid: use 3-32 characters"),
        ([{"name": "double--hyphen"}], "'double--hyphen' is invalid"),
        ([{"name": "-lead"}], "'-lead' is invalid"),
        ([{"name": "under_score"}], "'under_score' is invalid"),
        ([{"name": 42}], "clefs:dataClasses[0].name: expected a string, got int"),
        ([{"name": "abc"}, {"name": "abc"}], "clefs:dataClasses[1].name: 'abc' duplicates entry 0"),
        ([{"name": "abc", "protection": "end-to-end"}], "clefs:dataClasses[0].protection: expected a list"),
        ([{"name": "abc", "protection": ["at-rest", "in-transit", "quantum"]}], "unknown level 'quantum'"),
        (
            [{"name": "abc", "protection": ["at-rest", "end-to-end"]}],
            "in-transit is mandatory for every class",
        ),
        ([{"name": "abc", "protection": ["at-rest", "at-rest", "in-transit"]}], "'at-rest' is listed twice"),
        ([{"name": "abc", "description": 7}], "clefs:dataClasses[0].description: expected a string"),
    ],
)
def test_invalid_config_gives_one_precise_line(raw: object, message: str) -> None:
    with pytest.raises(DataClassConfigError) as info:
        parse_data_classes(raw)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_direct_construction_validates_the_name() -> None:
    with pytest.raises(DataClassConfigError, match="'Bad Name' is invalid"):
        DataClass("Bad Name")


_SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@given(st.lists(_SEGMENT, min_size=1, max_size=4).map("-".join))
def test_generated_kebab_names_are_valid_exactly_when_long_enough(name: str) -> None:
    problem = name_problem(name)
    assert (problem is None) == (3 <= len(name) <= NAME_MAX)
    if problem is None:
        assert parse_data_classes([{"name": name}]) == (DataClass(name),)


@given(st.text(min_size=1, max_size=40))
def test_any_accepted_name_is_safe_for_bucket_names_and_aliases(name: str) -> None:
    if name_problem(name) is None:
        assert name == name.lower().strip("-")
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
        assert "--" not in name


def test_module_does_not_import_pulumi() -> None:
    code = (
        "import sys, infra.model.data_classes, infra.model.settings, infra.program.documents;"
        " print('pulumi' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_class_name_grammar_for_config_outputs_and_envelope() -> None:
    """The config rule, the stack-outputs check and the envelope parser share one pattern."""
    from hsm_lab.datapath import envelope, store
    from hsm_lab.errors import InputError
    from infra.model.data_classes import CLASS_NAME_PATTERN

    assert envelope.CLASS_RE.pattern == CLASS_NAME_PATTERN
    assert CLASS_NAME_PATTERN.encode() in envelope._HEADER_RE.pattern
    assert name_problem("appointments\n") is not None  # `^...$` with match() let a final newline in
    with pytest.raises(InputError, match="not a class name"):
        store.parse_classes({"ab": {"regions": {"eu-west-3": {"key_arn": "a", "bucket": "b"}}}})
