"""Clefs HSM lab: the quorum key ceremony, BYOK and data path, driven through PKCS#11."""

__version__ = "0.1.0"
