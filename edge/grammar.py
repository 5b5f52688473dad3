"""Licence-plate grammars: Dutch sidecodes and letter rules, a few EU formats, look-alikes.

The grammar settles what pixels cannot: in a modern Dutch plate a letter position never holds a
vowel, C or Q, so an "O" read where the sidecode wants a digit is a "0". It is applied only where
a read is plausibly Dutch; forcing foreign plates onto Dutch sidecodes creates misreads.
Texts here are normalised plate texts: upper case A-Z0-9 without separators.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"

# Dutch sidecodes: X = letter, 9 = digit, "-" as printed (docs: /work/shared/notes/dutch-plates.md).
NL_SIDECODES: dict[int, str] = {
    1: "XX-99-99", 2: "99-99-XX", 3: "99-XX-99", 4: "XX-99-XX", 5: "XX-XX-99", 6: "99-XX-XX",
    7: "99-XXX-9", 8: "9-XXX-99", 9: "XX-999-X", 10: "X-999-XX", 11: "XXX-99-X", 12: "X-99-XXX",
    13: "9-XX-999", 14: "999-XX-9",
}
_NL_CLASS = {k: v.replace("-", "") for k, v in NL_SIDECODES.items()}  # "XX9999"
_CLASS_TO_SIDECODE = {v: k for k, v in _NL_CLASS.items()}

# Letters of modern series (sidecode >= 4): no vowels, never C or Q; Y dropped from sidecode 7 on.
NL_OLD_LETTERS = "ABDEFGHIJKLMNOPRSTUVWXYZ"  # sidecodes 1-3: vowels allowed, but C and Q were never issued
NL_MODERN_LETTERS = "BDFGHJKLMNPRSTVWXYZ"
NL_MODERN_LETTERS_7 = "BDFGHJKLMNPRSTVWXZ"
NL_BANNED = ("GVD", "KKK", "NSB", "PKK", "PSV", "TBS", "SS", "SD", "PVV", "SGP", "VVD")

# Characters a reader confuses; each group is mutually exchangeable.
LOOKALIKE_GROUPS: tuple[str, ...] = ("0ODQ", "1I", "2Z", "5S", "8B", "6G", "4A")
_LOOKALIKE: dict[str, str] = {}
for _g in LOOKALIKE_GROUPS:
    for _c in _g:
        _LOOKALIKE[_c] = _LOOKALIKE.get(_c, "") + _g.replace(_c, "")

_NORMALISE = re.compile(r"[^A-Z0-9]")


def normalise(text: str) -> str:
    """Upper case A-Z0-9 only: separators, spaces and other characters are dropped."""
    return _NORMALISE.sub("", text.upper())


def _shape(text: str) -> str:
    return "".join("9" if c.isdigit() else "X" for c in text)


def nl_sidecode(text: str) -> int | None:
    """The Dutch sidecode whose letter/digit layout `text` has, or None (letter rules not checked)."""
    t = normalise(text)
    if len(t) != 6:
        return None
    return _CLASS_TO_SIDECODE.get(_shape(t))


def nl_allowed(sidecode: int, position: int) -> str:
    """Characters a Dutch plate of `sidecode` may hold at `position` (0-based, no separators)."""
    cls = _NL_CLASS[sidecode][position]
    if cls == "9":
        return DIGITS
    if sidecode <= 3:
        return NL_OLD_LETTERS
    letters = NL_MODERN_LETTERS if sidecode < 7 else NL_MODERN_LETTERS_7
    if position == 0:
        letters += "O"  # semi-trailers lead with O
    return letters


def _letter_groups(text: str) -> list[str]:
    return re.findall(r"[A-Z]+", text)


def is_valid_nl(text: str) -> bool:
    """True when `text` fits a Dutch sidecode and, for sidecodes >= 4, the modern letter rules."""
    t = normalise(text)
    sc = nl_sidecode(t)
    if sc is None:
        return False
    if sc <= 3:
        return True
    if any(c not in nl_allowed(sc, i) for i, c in enumerate(t)):
        return False
    return not any(b in g for g in _letter_groups(t) for b in NL_BANNED)


def is_valid(text: str, country: str) -> bool:
    """Whether `text` can be a plate of `country`: Dutch rules for "NL"; for other countries, whose
    older series vary too much to be checked here, any 2-10 characters A-Z0-9."""
    if country.upper() == "NL":
        return is_valid_nl(text)
    return 2 <= len(text) <= 10 and normalise(text) == text


# Unambiguous formats of other countries (several EU formats share AA999AA and are left out).
_COUNTRY_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ES", re.compile(r"^\d{4}[BCDFGHJKLMNPRSTVWXYZ]{3}$")),
    ("BE", re.compile(r"^[1-9][A-Z]{3}\d{3}$")),
    ("CZ", re.compile(r"^\d[A-Z][A-Z0-9]\d{4}$")),
    ("RO", re.compile(r"^(B\d{2,3}|[A-Z]{2}\d{2})[A-Z]{3}$")),
)


def guess_country(text: str) -> str:
    """ISO country whose plate format `text` fits unambiguously, else ""."""
    t = normalise(text)
    if is_valid_nl(t):
        return "NL"
    for country, pattern in _COUNTRY_PATTERNS:
        if pattern.match(t):
            return country
    return ""


_FORMATS: dict[str, tuple[tuple[re.Pattern[str], str], ...]] = {
    "FR": ((re.compile(r"^([A-Z]{2})(\d{3})([A-Z]{2})$"), r"\1-\2-\3"),),
    "IT": ((re.compile(r"^([A-Z]{2})(\d{3})([A-Z]{2})$"), r"\1 \2\3"),),
    "ES": ((re.compile(r"^(\d{4})([A-Z]{3})$"), r"\1 \2"),),
    "BE": ((re.compile(r"^(\d)([A-Z]{3})(\d{3})$"), r"\1-\2-\3"),),
    "CZ": ((re.compile(r"^(\d[A-Z][A-Z0-9])(\d{4})$"), r"\1 \2"),),
    "SK": ((re.compile(r"^([A-Z]{2})(\d{3}[A-Z]{2})$"), r"\1-\2"),),
    "RO": ((re.compile(r"^([A-Z]{1,2})(\d{2,3})([A-Z]{3})$"), r"\1 \2 \3"),),
    "PL": ((re.compile(r"^([A-Z]{2,3})([A-Z0-9]{4,5})$"), r"\1 \2"),),
}


def format_plate(text: str, country: str) -> str:
    """The text as printed on the plate ("XSNB23", "NL" -> "XS-NB-23"); unknown formats as given."""
    t = normalise(text)
    c = country.upper()
    if c == "NL":
        sc = nl_sidecode(t)
        if sc is None:
            return t
        out, i = [], 0
        for ch in NL_SIDECODES[sc]:
            if ch == "-":
                out.append("-")
            else:
                out.append(t[i])
                i += 1
        return "".join(out)
    for pattern, repl in _FORMATS.get(c, ()):
        if pattern.match(t):
            return pattern.sub(repl, t)
    return t


def lookalike_variants(text: str, country: str = "", limit: int = 32,
                       positions: Collection[int] | None = None) -> list[str]:
    """Texts that differ from `text` only by look-alike characters (0/O/D, 1/I, 2/Z, 5/S, 8/B, 6/G, 4/A).

    Fewest substitutions first. For country "NL" only valid Dutch plates are returned, so the list
    matcher can try what a camera may have misread without inventing impossible plates.
    `positions` (indices into the normalised text) limits the substitutions to those characters.
    """
    t = normalise(text)
    if limit <= 0 or not t:
        return []
    nl_only = country.upper() == "NL"
    allowed = range(len(t)) if positions is None else set(positions)
    positions = [i for i, c in enumerate(t) if c in _LOOKALIKE and i in allowed]
    out: list[str] = []
    seen = {t}
    budget = 20000  # candidates examined; bounds the cost for long texts with many look-alikes
    for k in range(1, len(positions) + 1):
        for combo in itertools.combinations(positions, k):
            for repl in itertools.product(*(_LOOKALIKE[t[i]] for i in combo)):
                budget -= 1
                if budget < 0:
                    return out
                chars = list(t)
                for i, r in zip(combo, repl):
                    chars[i] = r
                v = "".join(chars)
                if v in seen:
                    continue
                seen.add(v)
                if nl_only and not is_valid_nl(v):
                    continue
                out.append(v)
                if len(out) >= limit:
                    return out
    return out


@dataclass(frozen=True)
class ConstrainedRead:
    """The best Dutch reading of per-position character probabilities."""

    text: str
    sidecode: int
    log_prob: float  # sum of log probabilities of the chosen characters
    char_probs: tuple[float, ...]


@lru_cache(maxsize=8)
def _nl_masks(charset: str) -> np.ndarray:
    """(14 sidecodes, 6 positions, len(charset)) mask of the characters each position allows."""
    mask = np.zeros((len(NL_SIDECODES), 6, len(charset)), bool)
    for si, sc in enumerate(NL_SIDECODES):
        for pos in range(6):
            allowed = nl_allowed(sc, pos)
            mask[si, pos] = [c in allowed for c in charset]
    return mask


def nl_constrained_read(position_probs: np.ndarray, charset: str) -> ConstrainedRead | None:
    """Best valid Dutch plate for six character positions, each a probability row over `charset`.

    For every sidecode each position takes its most probable allowed character; the best-scoring
    valid plate wins. Returns None when no sidecode gives a valid plate (e.g. not six positions).
    Callers decide whether the read is plausibly Dutch before trusting the result.
    """
    probs = np.asarray(position_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != 6 or probs.shape[1] != len(charset):
        return None
    masked = np.where(_nl_masks(charset), probs[None], -1.0)  # 14 x 6 x C
    idx = masked.argmax(axis=2)  # 14 x 6
    best_p = np.take_along_axis(masked, idx[..., None], axis=2)[..., 0]
    logp = np.log(np.maximum(best_p, 1e-12)).sum(axis=1)
    sidecodes = list(NL_SIDECODES)
    for si in np.argsort(-logp):
        if (best_p[si] < 0).any():
            continue  # a position with no allowed character in the charset
        text = "".join(charset[j] for j in idx[si])
        if is_valid_nl(text):  # a banned letter group: rare, and then another sidecode may still fit
            return ConstrainedRead(text, sidecodes[si], float(logp[si]), tuple(float(x) for x in best_p[si]))
    return None
