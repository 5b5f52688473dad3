"""Synthetic plate renderer: valid Dutch texts, every sidecode and country, labels that match rows."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from edge.grammar import is_valid_nl, nl_sidecode, normalise  # noqa: E402
from platesynth import COUNTRIES, degrade, random_nl_text, random_text, render_plate  # noqa: E402


def test_dutch_texts_are_valid_and_cover_every_sidecode():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(600):
        t = random_nl_text(rng)
        assert is_valid_nl(t.text)
        assert nl_sidecode(t.text) == t.sidecode
        assert normalise(t.printed) == t.text and t.printed.count("-") == 2
        seen.add(t.sidecode)
    assert seen == set(range(1, 15))
    with pytest.raises(ValueError, match="sidecode"):
        random_nl_text(rng, 15)


@pytest.mark.parametrize("country", COUNTRIES)
def test_every_country_renders_both_layouts(country):
    rng = np.random.default_rng(zlib.crc32(country.encode()))
    for layout in ("one_row", "two_row"):
        p = render_plate(rng, country, layout=layout, scale=0.5)
        h, w = p.image.shape[:2]
        assert p.image.dtype == np.uint8 and p.image.shape[2] == 3
        assert (w / h > 3.5) if layout == "one_row" else (w / h < 2.0)
        assert p.text == normalise("".join(p.rows)) and p.text.isalnum()
        assert len(p.rows) == (1 if layout == "one_row" else 2)
        assert p.corners[2] == (w - 1.0, h - 1.0)
        assert p.image.std() > 20  # something is drawn


def test_district_codes_are_written_as_they_are():
    """Polish districts and Romanian counties are real codes: their letters are not pattern letters
    ("WA" was once filled as "W" plus any character, "AG" as "8G")."""
    from platesynth.texts import _PL_DISTRICT, _RO_COUNTY

    rng = np.random.default_rng(4)
    for country, codes in (("PL", _PL_DISTRICT), ("RO", _RO_COUNTY)):
        real_codes = 0
        for _ in range(300):
            t = random_text(rng, country)
            head = t.printed.split(" ")[0]
            if country == "RO" and head == "B":
                continue  # Bucharest: B and digits
            assert head.isalpha(), (country, t.printed)
            real_codes += head in codes
        assert real_codes > 0, country  # the real codes are used


def test_foreign_texts_use_only_letters_those_countries_issue():
    """A rendered plate that cannot exist teaches a look-alike where none can be (and makes the
    hold-out ask for it): Czech region digits are 1-9, Bulgarian plates use the twelve letters that are
    also Cyrillic, British plates never carry I or Q and their year letters no O, U or Z either, Swedish
    plates no I, Q or V."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        cz = random_text(rng, "CZ").text
        assert cz[0] in "123456789" and not set(cz) & set("IOQ"), cz
        bg = random_text(rng, "BG").text
        assert set(c for c in bg if c.isalpha()) <= set("ABEKMHOPCTXY"), bg
        gb = random_text(rng, "GB")
        assert not set(gb.text) & set("IQ"), gb.printed
        se = random_text(rng, "SE").text
        assert not set(se) & set("IQV"), se
        if gb.printed[1].isdigit():  # prefix series: year letter first
            assert gb.printed[0] not in "OUZ", gb.printed
        elif gb.printed[-2].isdigit():  # suffix series: year letter last
            assert gb.printed[-1] not in "OUZ", gb.printed


def test_degrade_gives_small_crops_with_corners():
    rng = np.random.default_rng(5)
    for mode in ("rectified", "box"):
        p = render_plate(rng, "NL", scale=0.6)
        d = degrade(rng, p.image, p.corners, mode=mode, out_width=90)
        assert d.image.shape[1] == 90 and d.image.dtype == np.uint8
        pts = np.array(d.corners)
        assert pts.shape == (4, 2)
        assert (pts[:, 0] > -20).all() and (pts[:, 0] < 110).all()
    with pytest.raises(ValueError, match="mode"):
        degrade(rng, p.image, mode="nope")
    with pytest.raises(ValueError, match="BGR"):
        degrade(rng, p.image[..., 0])


@pytest.mark.parametrize("country", ["AT", "CH", "IT", "DE", "NO"])
def test_country_furniture_is_drawn_but_never_part_of_the_label(country):
    """Crests, the IT province box, DE seals and the NO flag are printed beside the characters;
    the label stays the plate text, and the furnished plate differs from the plain one."""
    for layout in ("one_row", "two_row"):
        plain = render_plate(np.random.default_rng(3), country, layout=layout, scale=0.5)
        furnished = render_plate(np.random.default_rng(3), country, layout=layout, scale=0.5, furniture_p=1.0)
        assert furnished.text == plain.text and furnished.rows == plain.rows
        assert furnished.text == normalise("".join(furnished.rows)) and furnished.text.isalnum()
        if country in ("AT", "CH", "NO") or layout == "two_row":
            assert furnished.image.shape != plain.image.shape or np.abs(
                furnished.image.astype(int) - plain.image.astype(int)).mean() > 1.0


def test_austrian_arms_sit_between_district_and_number():
    """Austrian plates print the state arms after the district, also on two-row plates whose top row
    starts the number ("W [arms] 1 / 518 B"); some two-row plates are rendered with such a top row."""
    from platesynth.render import _furnish

    assert _furnish("W 1", "AT", "two_row") == ("W # 1", ["vienna"])  # Vienna: its own arms
    assert _furnish("W", "AT", "two_row") == ("W #", ["vienna"])
    assert _furnish("W 1518B", "AT", "one_row") == ("W # 1518B", ["vienna"])
    assert _furnish("WL 47", "AT", "two_row") == ("WL # 47", ["at"])
    assert _furnish("GU", "AT", "two_row") == ("GU #", ["at"])
    tops = [render_plate(np.random.default_rng([4, i]), "AT", layout="two_row").rows[0] for i in range(40)]
    assert any(" " in t for t in tops) and any(" " not in t for t in tops)
