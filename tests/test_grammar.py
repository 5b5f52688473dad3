"""Plate grammar: Dutch sidecodes, letter rules, formatting, look-alikes, constrained reading."""

import numpy as np
import pytest

from edge.grammar import (
    NL_SIDECODES, format_plate, guess_country, is_valid, is_valid_nl, lookalike_variants, nl_constrained_read,
    nl_sidecode, normalise,
)

CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@pytest.mark.parametrize("text,sc", [
    ("AH3233", 1), ("8220AE", 2), ("33MB33", 3), ("BL77BF", 4), ("MBDL38", 5), ("14VRLV", 6),
    ("32JGV4", 7), ("6VBG67", 8), ("VB038R", 9), ("G123BB", 10), ("GBB12D", 11), ("G12BBD", 12),
    ("1BB123", 13), ("123BB1", 14),
])
def test_every_sidecode_is_recognised(text, sc):
    assert nl_sidecode(text) == sc
    assert len(NL_SIDECODES) == 14


def test_sidecode_rejects_wrong_length_and_layout():
    assert nl_sidecode("ABC1234") is None
    assert nl_sidecode("A1B2C3") is None
    assert nl_sidecode("") is None


def test_format_plate():
    assert format_plate("XSNB23", "NL") == "XS-NB-23"
    assert format_plate("xs-nb-23", "nl") == "XS-NB-23"
    assert format_plate("6VBG67", "NL") == "6-VBG-67"
    assert format_plate("AB123CD", "FR") == "AB-123-CD"
    assert format_plate("1234BCD", "ES") == "1234 BCD"
    assert format_plate("WKZE888", "XX") == "WKZE888"
    assert format_plate("ABC1234", "NL") == "ABC1234"  # no sidecode: unchanged


def test_modern_letter_rules():
    assert is_valid_nl("XSNB23")
    assert not is_valid_nl("XANB23")  # vowel in sidecode 5
    assert not is_valid_nl("XCNB23")  # C never
    assert is_valid_nl("12QA34")  # sidecodes 1-3: old series may hold any letter
    assert is_valid_nl("AH3233")  # sidecode 1: old series may hold vowels
    assert not is_valid_nl("GB12SD")  # banned SD
    assert not is_valid_nl("99PSV9")  # banned PSV
    assert is_valid_nl("OL16JZ")  # semi-trailer plates lead with O
    assert not is_valid_nl("LO16JZ")  # O elsewhere is a misread
    assert not is_valid_nl("99YXZ9")  # no Y from sidecode 7 on
    assert not is_valid_nl("ABC1234")


def test_lookalikes_nl_only_valid_plates():
    # "XSNB2O" has a letter O where sidecode 4/5 wants a digit: the valid reading is XSNB20.
    v = lookalike_variants("XSNB2O", "NL")
    assert "XSNB20" in v
    assert all(is_valid_nl(x) for x in v)
    assert "XSNB2O" not in v
    generic = lookalike_variants("B8", "")
    assert set(generic) == {"88", "BB", "8B"}
    assert len(lookalike_variants("0O0O0O0O", "", limit=5)) == 5
    assert lookalike_variants("", "NL") == []


def test_guess_country():
    assert guess_country("XSNB23") == "NL"
    assert guess_country("1234BCD") == "ES"
    assert guess_country("1ABC123") == "BE"
    assert guess_country("AB123CD") == ""  # FR, IT and SK share this layout
    assert normalise("xs-nb 23") == "XSNB23"


def _probs(text, noise=None):
    p = np.full((len(text), len(CHARSET)), 1e-3)
    for i, c in enumerate(text):
        p[i, CHARSET.index(c)] = 0.9
    for (i, c), v in (noise or {}).items():
        p[i, CHARSET.index(c)] = v
    return p / p.sum(1, keepdims=True)


def test_constrained_read_resolves_lookalikes():
    # The model prefers O at a digit position and 8 at a letter position; the grammar fixes both.
    p = _probs("X5NB2O", {(1, "S"): 0.4, (5, "0"): 0.3})
    r = nl_constrained_read(p, CHARSET)
    assert r is not None
    assert r.text == "XSNB20" and r.sidecode == 5
    assert len(r.char_probs) == 6 and all(0 < x <= 1 for x in r.char_probs)
    assert nl_constrained_read(_probs("ABC1234"), CHARSET) is None


def test_is_valid_per_country():
    assert is_valid("XSNB23", "NL") and not is_valid("XANB23", "NL")
    assert is_valid("WKZE888", "PL") and not is_valid("wk-1", "PL") and not is_valid("A", "DE")
