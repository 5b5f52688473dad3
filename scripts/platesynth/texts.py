"""Random plate texts per country, as printed (with separators) and normalised.

Dutch texts follow the sidecodes and the modern letter rules of edge.grammar, so every rendered
Dutch plate is one that could exist. Other countries use their common current formats; a generic
EU format and a set of "other European" formats cover the countries without their own entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.grammar import DIGITS, LETTERS, NL_SIDECODES, is_valid_nl, nl_allowed, normalise


@dataclass(frozen=True)
class PlateText:
    """One plate text: `printed` keeps separators (" ", "-"), `text` is the normalised label."""

    printed: str
    text: str
    country: str
    sidecode: int | None = None


def _pick(rng: np.random.Generator, chars: str) -> str:
    return chars[int(rng.integers(len(chars)))]


def random_nl_text(rng: np.random.Generator, sidecode: int | None = None) -> PlateText:
    """A valid Dutch plate text for `sidecode` (1-14; random, weighted towards current series)."""
    if sidecode is None:
        codes = np.arange(1, 15)
        weights = np.array([3, 3, 3, 5, 6, 7, 8, 8, 8, 8, 6, 4, 3, 3], dtype=float)
        sidecode = int(rng.choice(codes, p=weights / weights.sum()))
    if sidecode not in NL_SIDECODES:
        raise ValueError(f"unknown Dutch sidecode {sidecode}, expected 1-14")
    layout = NL_SIDECODES[sidecode]
    for _ in range(100):
        chars = []
        for pos in range(6):
            allowed = nl_allowed(sidecode, pos)
            if pos == 0 and "O" in allowed and allowed != LETTERS and rng.random() > 0.03:
                allowed = allowed.replace("O", "")  # semi-trailer plates are rare
            chars.append(_pick(rng, allowed))
        text = "".join(chars)
        if is_valid_nl(text):
            out, i = [], 0
            for ch in layout:
                if ch == "-":
                    out.append("-")
                else:
                    out.append(text[i])
                    i += 1
            return PlateText("".join(out), text, "NL", sidecode)
    raise RuntimeError("could not draw a valid Dutch plate text")  # pragma: no cover


# Pattern language: L letter (country letter set), 9 digit, N digit 1-9, A letter or digit, P a British
# registration-period letter (prefix and suffix series), anything else literal.
_ES_LETTERS = "BCDFGHJKLMNPRSTVWXYZ"
_NO_IOQ = "ABCDEFGHJKLMNPRSTUVWXYZ"
_BG_LETTERS = "ABEKMHOPCTXY"  # only letters that are also Cyrillic, so the plate reads the same in both
_GB_LETTERS = "ABCDEFGHJKLMNOPRSTUVWXYZ"  # I and Q are never issued
_GB_PERIOD = "ABCDEFGHJKLMNPRSTVWXY"  # the year letter of the prefix/suffix series: no I, O, Q, U, Z
_SE_LETTERS = "ABCDEFGHJKLMNOPRSTUWXYZ"  # I, Q and V are not issued (nor the Swedish vowels)
_COUNTRY_LETTERS = {"ES": _ES_LETTERS, "FR": _NO_IOQ, "IT": _NO_IOQ, "CZ": _NO_IOQ, "SK": _NO_IOQ, "PT": _NO_IOQ,
                    "BG": _BG_LETTERS, "GB": _GB_LETTERS, "SE": _SE_LETTERS}
_DE_DISTRICT = ("B", "M", "K", "F", "S", "H", "D", "HH", "HB", "DO", "KA", "MZ", "BN", "KS", "WI", "LU",
                "AC", "GE", "BO", "OF", "HD", "RE", "BM", "EN", "MG", "LB", "NE", "SU", "DA", "ERH",
                "WES", "REC", "MTK", "HSK", "GER", "LDS", "RDG", "FFB", "ROW", "SHA")
_PL_DISTRICT = ("WA", "WI", "WK", "WX", "KR", "KK", "PO", "PZ", "GD", "GA", "LU", "DW", "CB", "EL",
                "SK", "BI", "WZ", "WPR", "KRA", "PZ", "SC", "ZS", "OP", "RZ", "TK", "NO", "CIN", "DLU")
_RO_COUNTY = ("AB", "AR", "AG", "BC", "BH", "BN", "BT", "BV", "BR", "BZ", "CS", "CL", "CJ", "CT", "CV",
              "DB", "DJ", "GL", "GR", "GJ", "HR", "HD", "IL", "IS", "IF", "MM", "MH", "MS", "NT", "OT",
              "PH", "SM", "SJ", "SB", "SV", "TR", "TM", "TL", "VS", "VL", "VN")

FORMATS: dict[str, tuple[str, ...]] = {
    "DE": (),  # built in _de_text
    "BE": ("9-LLL-999", "LLL-999"),
    "FR": ("LL-999-LL", "999 LLL 99", "9999 LL 99"),
    "ES": ("9999 LLL", "L 9999 LL", "LL 9999 L"),
    "IT": ("LL 999LL", "LL 99999"),
    "PL": ("LL 99999", "LL 9999L", "LL 999LL", "LLL 9999", "LLL 99LL", "LLL L999", "LL 9L999"),
    "CZ": ("NL9 9999", "NLL 9999", "NL 99999"),  # the region's digit is never 0
    "SK": ("LL-999LL", "LL 999LL"),
    "RO": ("B 999 LLL", "B 99 LLL", "LL 99 LLL"),
    "AT": ("L 999LL", "LL 999L", "LL 99LL", "L 9999L", "LL 9999"),
    "CH": ("LL 99999", "LL 9999", "LL 999999"),
    "DK": ("LL 99 999",),
    "SE": ("LLL 999", "LLL 99L"),
    "NO": ("LL 99999",),
    "GB": ("LL99 LLL", "P999 LLL", "LLL 999P"),
    "GR": ("LLL-9999",),
    "BG": ("L 9999 LL", "LL 9999 LL"),
    "LT": ("LLL 999",),
    "LV": ("LL-9999", "L-9999"),
    "HU": ("LLL-999", "LLLL-999"),
    "PT": ("99-LL-99", "LL-99-LL", "99-99-LL"),
    "IE": ("999-L-9999", "99-LL-9999"),
    "FI": ("LLL-999", "LL-999"),
    "SI": ("LL 99-999", "LL L9-99L"),
    "EU": ("AAAAAAA", "AAAAAA", "AAAAA", "AAAA AAA", "AAA AAAA", "AA AAAAA", "AAAAAAAA", "AA-AAA-AA"),
}
COUNTRIES = ("NL",) + tuple(FORMATS)


def _fill(rng: np.random.Generator, pattern: str, letters: str) -> str:
    out = []
    for ch in pattern:
        if ch == "L":
            out.append(_pick(rng, letters))
        elif ch == "9":
            out.append(_pick(rng, DIGITS))
        elif ch == "N":
            out.append(_pick(rng, DIGITS[1:]))
        elif ch == "P":
            out.append(_pick(rng, _GB_PERIOD))
        elif ch == "A":
            out.append(_pick(rng, LETTERS + DIGITS))
        else:
            out.append(ch)
    return "".join(out)


def _de_text(rng: np.random.Generator) -> str:
    district = _DE_DISTRICT[int(rng.integers(len(_DE_DISTRICT)))]
    letters = _fill(rng, "L" * int(rng.integers(1, 3)), "ABCDEFGHJKLMNPRSTUVWXYZ")
    n_digits = int(rng.integers(1, 5))
    while len(district) + len(letters) + n_digits > 8:
        n_digits -= 1
    number = str(int(rng.integers(1, 10)))
    number += _fill(rng, "9" * (max(n_digits, 1) - 1), "")
    suffix = "E" if rng.random() < 0.04 else ("H" if rng.random() < 0.04 and len(district + letters + number) < 8 else "")
    return f"{district}-{letters} {number}{suffix}"


def random_text(rng: np.random.Generator, country: str | None = None) -> PlateText:
    """A random plate text of `country` (ISO alpha-2 or "EU" generic); random country when None."""
    if country is None:
        country = str(rng.choice(COUNTRIES))
    c = country.upper()
    if c == "NL":
        return random_nl_text(rng)
    if c not in FORMATS:
        raise ValueError(f"unknown plate country {country!r}, expected one of {', '.join(COUNTRIES)}")
    if c == "DE":
        printed = _de_text(rng)
    else:
        patterns = FORMATS[c]
        pattern = patterns[int(rng.integers(len(patterns)))]
        prefix = ""  # a real district/county code, written over the pattern's first letters
        if c == "PL":
            district = _PL_DISTRICT[int(rng.integers(len(_PL_DISTRICT)))]
            if len(district) == pattern.index(" "):  # a real district where the pattern has that many letters
                prefix = district
        if c == "RO" and pattern.startswith("LL"):
            prefix = _RO_COUNTY[int(rng.integers(len(_RO_COUNTY)))]
        letters = _COUNTRY_LETTERS.get(c, LETTERS)
        printed = _fill(rng, pattern, letters)
        printed = prefix + printed[len(prefix):]  # (filled, not pattern letters: "WA" must not become "W5")
    return PlateText(printed, normalise(printed), c)
