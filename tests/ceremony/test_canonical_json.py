"""Canonical JSON is RFC 8785 (the `rfc8785` package), and the bytes of our documents did not change.

Manifests, transcript entries, heads and anchors were signed over the former hand-written form
(sorted keys, no whitespace, UTF-8). For every document the ceremony writes, that form and
RFC 8785 are the same bytes, so every signature made before the switch still verifies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsm_lab.ceremony.jose import canonical_json
from hsm_lab.ceremony.record import verify_lab
from tests.conftest import Dealt


def legacy_canonical_json(document: Any) -> bytes:
    """The form used before rfc8785 (kept here only to prove the bytes are unchanged)."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def test_rfc8785_section_3_2_2_example() -> None:
    document = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(document) == expected.encode("utf-8")


def test_rfc8785_section_3_2_3_sorting_by_utf16_code_units() -> None:
    document = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    keys = list(json.loads(canonical_json(document)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert legacy_canonical_json(document) != canonical_json(document)  # the old form sorted wrongly


def test_large_integers_are_refused_not_silently_rounded() -> None:
    with pytest.raises(ValueError):
        canonical_json({"n": 2**60})


def _documents(root: Path) -> list[Any]:
    docs: list[Any] = []
    for path in sorted(root.rglob("*.json")):
        docs.append(json.loads(path.read_text()))
    for path in sorted(root.rglob("*.jsonl")):
        docs.extend(json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return docs


def _walk(document: Any) -> list[Any]:
    """Every sub-document too: signatures cover bodies nested inside the files."""
    found = [document]
    if isinstance(document, dict):
        for value in document.values():
            found.extend(_walk(value))
    elif isinstance(document, list):
        for value in document:
            found.extend(_walk(value))
    return found


def test_the_labs_documents_have_the_same_bytes_as_before(dealt: Dealt) -> None:
    root = dealt.env.lab.root
    documents = [d for doc in _documents(root) for d in _walk(doc) if isinstance(d, (dict, list))]
    assert len(documents) > 20
    for document in documents:
        assert canonical_json(document) == legacy_canonical_json(document)
    verify_lab(dealt.env.lab)  # manifests, heads and the chain, signed before, still verify


ASCII_KEY = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.text(max_size=20))
DOCUMENT = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ASCII_KEY, inner, max_size=4)
)


@given(DOCUMENT)
def test_documents_shaped_like_ours_have_the_same_bytes(document: Any) -> None:
    assert canonical_json(document) == legacy_canonical_json(document)
