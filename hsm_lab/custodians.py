"""Custodians and their age identities: stable path; the code lives in :mod:`hsm_lab.ceremony.custodians`."""

from hsm_lab.ceremony.custodians import (
    MIN_PASSPHRASE,
    NAME_PATTERN,
    Custodian,
    check_distinct,
    check_name,
    check_passphrase,
    check_recipient,
    load_custodians,
    load_identities,
    parse_custodians,
    passphrase_env,
    passphrase_from_env,
)

__all__ = [
    "MIN_PASSPHRASE",
    "NAME_PATTERN",
    "Custodian",
    "check_distinct",
    "check_name",
    "check_passphrase",
    "check_recipient",
    "load_custodians",
    "load_identities",
    "parse_custodians",
    "passphrase_env",
    "passphrase_from_env",
]
