"""hsm_lab.hsm is one import path over several modules (issue 10): every public name resolves there."""

from __future__ import annotations

import hsm_lab.hsm as hsm


def test_every_public_name_is_importable_from_the_package() -> None:
    missing = [name for name in hsm.__all__ if not hasattr(hsm, name)]
    assert not missing, missing


def test_the_names_others_import_are_public() -> None:
    others = {"HSM", "KeyInfo", "TokenSession", "SIGNING_LABEL", "KCV_LEN", "MASTER_KEY_TEMPLATE"}
    others |= {"enforce_template", "find_module", "probe_module", "class_key_label"}
    assert others <= set(hsm.__all__)
