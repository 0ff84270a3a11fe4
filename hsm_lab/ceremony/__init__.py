"""The key ceremony: custodians, shares, manifests, the transcript and its record, the steps.

`from hsm_lab import ceremony` then `ceremony.init_token/generate/import_master/rekey/verify_shares/
Quorum/check_share/SignedManifest/transcript` is the stable API; the steps live in
:mod:`hsm_lab.ceremony.steps`.
"""

from hsm_lab.ceremony.steps import (
    KCV_METHOD,
    SCHEME,
    Deal,
    DrillResult,
    Event,
    InitResult,
    Quorum,
    ShareSource,
    SignedManifest,
    Warn,
    check_custodians,
    check_expectations,
    check_share,
    current_manifest,
    describe_manifest,
    generate,
    import_master,
    init_token,
    load_manifest,
    new_ceremony_id,
    python_kcv,
    quorum_weaknesses,
    rekey,
    transcript,
    verify_shares,
)

__all__ = [
    "KCV_METHOD",
    "SCHEME",
    "Deal",
    "DrillResult",
    "Event",
    "InitResult",
    "Quorum",
    "ShareSource",
    "SignedManifest",
    "Warn",
    "check_custodians",
    "check_expectations",
    "check_share",
    "current_manifest",
    "describe_manifest",
    "generate",
    "import_master",
    "init_token",
    "load_manifest",
    "new_ceremony_id",
    "python_kcv",
    "quorum_weaknesses",
    "rekey",
    "transcript",
    "verify_shares",
]
