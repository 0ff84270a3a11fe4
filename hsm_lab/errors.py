"""One exception family, one line each: what is wrong and what to do.

The CLI prints ``str(error)`` and exits non-zero; no traceback, no secret.
Authentication failures (wrong PIN, wrong passphrase or identity, tampered
share) each collapse into a single exception type so that the message never
says *which* byte or check failed beyond what the operator needs.
"""

from __future__ import annotations


class ClefsError(Exception):
    """Base for every error the lab reports to a person."""

    exit_code = 1


class HSMError(ClefsError):
    """The PKCS#11 module, token or session refused or failed."""


class ModuleNotFound(HSMError):
    """No PKCS#11 module at the configured path."""


class TokenNotInitialized(HSMError):
    """The lab's token does not exist yet."""


class PinIncorrect(HSMError):
    """A PIN (user or SO) was refused by the token."""


class KeyLabelExists(HSMError):
    """A key with that label is already on the token; we never overwrite."""


class KeyNotFound(HSMError):
    """A key the step needs is not on the token."""


class ShareRejected(ClefsError):
    """A presented share failed a check; the message names the custodian."""


class QuorumError(ClefsError):
    """Not enough valid shares, or the combined key does not match its KCV."""


class ManifestError(ClefsError):
    """The manifest is missing, malformed, or its signature does not verify."""


class TranscriptError(ClefsError):
    """The transcript chain or its signed head does not verify."""


class InputError(ClefsError):
    """Bad input from the operator (files, parameters, custodian lists)."""
