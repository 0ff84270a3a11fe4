"""hsm_lab.byok is one import path over several modules (issue 10): every public name resolves there."""

from __future__ import annotations

import hsm_lab.byok as byok


def test_every_public_name_is_importable_from_the_package() -> None:
    missing = [name for name in byok.__all__ if not hasattr(byok, name)]
    assert not missing, missing


def test_the_names_others_import_are_public() -> None:
    assert {"Byok", "ByokError", "ImportRecord"} <= set(byok.__all__)
