"""Shares against the real `age` tool: custodians can open theirs, and a share forged with it is refused."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hsm_lab import ceremony, errors
from hsm_lab.ceremony import shares
from tests.conftest import Dealt

pytestmark = pytest.mark.skipif(shutil.which("age") is None, reason="the age tool is not installed")


def test_a_custodian_opens_their_share_with_the_age_tool(dealt: Dealt, tmp_path: Path) -> None:
    identity = tmp_path / "alice.txt"
    identity.write_text(f"{dealt.identities['alice']}\n")
    os.chmod(identity, 0o600)
    opened = subprocess.run(
        [
            "age",
            "--decrypt",
            "-i",
            str(identity),
            str(dealt.env.lab.share_path(dealt.manifest.ceremony_id, "alice")),
        ],
        capture_output=True,
        check=True,
    ).stdout
    share = shares.parse_share(opened, "alice")
    assert share.custodian == "alice" and share.ceremony_id == dealt.manifest.ceremony_id
    assert shares.matches_commitment(share, dealt.manifest.custodians["alice"]["commitment"])


def test_a_share_forged_with_age_to_a_custodians_public_key_is_refused_by_name(
    dealt: Dealt, tmp_path: Path
) -> None:
    """Anyone can seal to a public key: the manifest's commitment is what makes a share genuine."""
    forged = json.dumps(
        {
            "format": shares.SHARE_FORMAT,
            "ceremony_id": dealt.manifest.ceremony_id,
            "custodian": "carol",
            "share": base64.b64encode(os.urandom(32) + bytes([7])).decode(),
        }
    ).encode()
    recipient = dealt.manifest.custodians["carol"]["recipient"]
    sealed = subprocess.run(["age", "-r", recipient], input=forged, capture_output=True, check=True).stdout
    share = shares.unseal(sealed, "carol", [dealt.identities["carol"]])
    with pytest.raises(errors.ShareRejected, match="carol: share does not match its commitment"):
        ceremony.check_share(dealt.manifest, share, {}, "carol")
