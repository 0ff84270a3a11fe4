"""The data path: envelope format, data-key cache, crypter, the S3 store and end-to-end sealing."""

from hsm_lab.datapath.e2e import EndToEndError, Identities, open_document, parse_recipients, seal_document
from hsm_lab.datapath.envelope_format import HEADER_BYTES
from hsm_lab.datapath.store import (
    DEFAULT_REGION,
    E2E_NONE,
    KEY_STATE_TTL,
    META_E2E,
    META_FORMAT,
    OUTPUTS_NAME,
    ClassTarget,
    DataPath,
    DataPathError,
    KeyNotReady,
    Record,
    RecordNotFound,
    RegionTarget,
    RolledBack,
    load_outputs,
    parse_classes,
)

__all__ = [
    "DEFAULT_REGION",
    "E2E_NONE",
    "HEADER_BYTES",
    "KEY_STATE_TTL",
    "META_E2E",
    "META_FORMAT",
    "OUTPUTS_NAME",
    "ClassTarget",
    "DataPath",
    "DataPathError",
    "EndToEndError",
    "Identities",
    "KeyNotReady",
    "Record",
    "RecordNotFound",
    "RegionTarget",
    "RolledBack",
    "load_outputs",
    "open_document",
    "parse_classes",
    "parse_recipients",
    "seal_document",
]
