"""Stack settings: every clefs:* key, defaults and one-line errors."""

from __future__ import annotations

import pytest

from infra.model.data_classes import DEFAULT_DATA_CLASSES, DataClass
from infra.model.settings import ConfigError, StackSettings, settings_from_mapping


def test_defaults() -> None:
    s = settings_from_mapping({})
    assert s == StackSettings()
    assert s.regions == ("eu-west-3", "eu-central-1")
    assert s.data_classes == DEFAULT_DATA_CLASSES
    assert s.transcript_retention_days == 365
    assert s.key_deletion_window_days == 30
    assert s.endpoint is None and not s.localstack
    assert s.allowed_account_ids == ()
    assert dict(s.trusted_principals) == {}


def test_full_config_is_parsed() -> None:
    s = settings_from_mapping(
        {
            "clefs:primaryRegion": "eu-west-1",
            "clefs:replicaRegion": "eu-north-1",
            "clefs:dataClasses": [{"name": "billing"}],
            "clefs:transcriptRetentionDays": "30",
            "clefs:keyDeletionWindowDays": "7",
            "clefs:endpoint": "http://127.0.0.1:4566/",
            "clefs:allowedAccountIds": ["123456789012"],
            "clefs:trustedPrincipals": {"admin": ["arn:aws:iam::123456789012:role/ops"]},
            "aws:region": "ignored-other-namespace",
        }
    )
    assert s.regions == ("eu-west-1", "eu-north-1")
    assert s.data_classes == (DataClass("billing"),)
    assert (s.transcript_retention_days, s.key_deletion_window_days) == (30, 7)
    assert s.endpoint == "http://127.0.0.1:4566" and s.localstack
    assert s.allowed_account_ids == ("123456789012",)
    assert dict(s.trusted_principals) == {"admin": ("arn:aws:iam::123456789012:role/ops",)}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"primaryRegion": "paris"}, "clefs:primaryRegion: 'paris' is not an AWS region name"),
        ({"replicaRegion": "eu-west-3"}, "clefs:replicaRegion: must differ from clefs:primaryRegion"),
        ({"transcriptRetentionDays": "ten"}, "clefs:transcriptRetentionDays: expected an integer"),
        ({"transcriptRetentionDays": "0"}, "clefs:transcriptRetentionDays: 0 is out of range"),
        ({"keyDeletionWindowDays": "6"}, "clefs:keyDeletionWindowDays: 6 is out of range [7, 30]"),
        ({"endpoint": "localhost:4566"}, "clefs:endpoint: 'localhost:4566' is not an http(s) URL"),
        ({"allowedAccountIds": "123456789012"}, "clefs:allowedAccountIds: expected a list"),
        ({"allowedAccountIds": ["1234"]}, "clefs:allowedAccountIds: '1234' is not a 12-digit"),
        ({"trustedPrincipals": ["x"]}, "clefs:trustedPrincipals: expected a mapping"),
        ({"trustedPrincipals": {"root": ["arn:aws:iam::123456789012:root"]}}, "unknown role 'root'"),
        ({"trustedPrincipals": {"app": []}}, "clefs:trustedPrincipals.app: expected a non-empty list"),
        ({"trustedPrincipals": {"app": ["bob"]}}, "clefs:trustedPrincipals.app: 'bob' is not an IAM ARN"),
        ({"dataClasses": [{"name": "X"}]}, "clefs:dataClasses[0].name: 'X' is invalid"),
        ({"clefs:regions": ["eu-west-3"]}, "clefs:regions: unknown config key"),
        (
            {"primaryRegion": "eu-southwestnorth-12", "dataClasses": [{"name": "a" * 32}]},
            "makes bucket names in eu-southwestnorth-12 71 characters long with namespace 'clefs-dev' "
            "(S3 maximum 63)",
        ),
    ],
)
def test_invalid_settings_give_one_precise_line(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(config)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_longest_class_name_fits_with_the_longest_real_region_names() -> None:
    """Names carry `<prefix>-<stack>` (issue 9): the longest class fits a short namespace, and
    a too-long combination is refused naming what to shorten."""
    config = {"primaryRegion": "ap-southeast-5", "dataClasses": [{"name": "a" * 32}], "namePrefix": "c"}
    s = settings_from_mapping(config, stack="p")
    assert s.data_classes[0].name == "a" * 32
    with pytest.raises(ConfigError, match="shorten the class, clefs:namePrefix or the stack name"):
        settings_from_mapping({**config, "namePrefix": "clefs"}, stack="production")


@pytest.mark.parametrize(
    ("config", "stack", "message"),
    [
        ({"namePrefix": "Clefs"}, "dev", "clefs:namePrefix: 'Clefs' must be 1-16"),
        ({"deployerArn": "arn:aws:sts::123456789012:assumed-role/x/y"}, "dev", "an STS session ARN changes"),
        ({}, "Prod_1", "stack name 'Prod_1'"),
    ],
)
def test_names_and_the_deployer_are_checked(config: dict[str, object], stack: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(config, stack=stack)


def test_the_deployer_is_the_role_of_the_session_running_pulumi() -> None:
    from infra.model.settings import deployer_from_caller

    assert (
        deployer_from_caller("arn:aws:sts::123456789012:assumed-role/clefs-deployer/alice")
        == "arn:aws:iam::123456789012:role/clefs-deployer"
    )
    assert deployer_from_caller("arn:aws:iam::123456789012:user/ci") == "arn:aws:iam::123456789012:user/ci"
