"""Consensus voting over noisy reads, constrained by the plate grammars in edge.grammar."""

from __future__ import annotations

import numpy as np
import pytest

from edge import grammar
from edge.types import PlateRead
from edge.voting import vote
from tracker_sim import Noise, noisy_read, random_nl_plate


def _read(text, confs, country=""):
    if isinstance(confs, float):
        confs = (confs,) * len(text)
    return PlateRead(text=text, formatted=text, country=country, confidence=float(np.prod(confs)),
                     char_confidences=tuple(confs))


def test_agreeing_reads_give_a_formatted_confident_dutch_plate():
    c = vote([_read("HXNB23", 0.9)] * 4)
    assert (c.text, c.formatted, c.country, c.valid) == ("HXNB23", "HX-NB-23", "NL", True)
    assert c.confidence > 0.99 and len(c.char_confidences) == 6 and c.reads == 4


def test_confidence_grows_with_agreement():
    one = vote([_read("HXNB23", 0.9)])
    three = vote([_read("HXNB23", 0.9)] * 3)
    assert one.confidence < 0.9 and three.confidence > 0.99


def test_per_position_vote_fixes_a_different_error_in_every_read():
    reads = [_read("HXN823", 0.9), _read("HX5B23", 0.9), _read("HXNB28", 0.9), _read("HXHB23", 0.9)]
    assert vote(reads).text == "HXNB23"


def test_character_confidence_outweighs_count_of_weak_reads():
    strong = _read("HXNB23", (0.95,) * 6)
    weak = _read("HXNB28", (0.95,) * 5 + (0.3,))
    assert vote([strong, weak, weak]).text == "HXNB23"
    assert vote([strong, weak, weak], weights=[1, 1, 1]).text == "HXNB23"


def test_length_vote_outvotes_dropped_and_doubled_characters():
    reads = [_read("HXNB23", 0.9), _read("HXB23", 0.9), _read("HXNB23", 0.85), _read("HXNNB23", 0.6)]
    assert vote(reads).text == "HXNB23"


def test_grammar_turns_a_consistent_lookalike_misread_into_a_valid_plate():
    # every read has Z where sidecode 5 (XX-XX-99) needs the digit 2
    c = vote([_read("HXNBZ3", 0.9)] * 3)
    assert c.text == "HXNB23" and c.valid and c.country == "NL"
    assert "HXNBZ3" in [a for a, _ in c.alternatives]
    # a letter the modern Dutch series never uses (O at the end) becomes the look-alike D
    c = vote([_read("H098JO", 0.9)] * 2 + [_read("H098JD", 0.7)])
    assert c.text == "H098JD" and grammar.is_valid_nl(c.text)
    assert c.confidence > 0.5


def test_grammar_does_not_force_foreign_plates_into_dutch_sidecodes():
    c = vote([_read("B123ABC", 0.9, "RO")] * 3)
    assert (c.text, c.country) == ("B123ABC", "RO")
    de = vote([_read("MAB1234", 0.9, "DE")] * 3)
    assert (de.text, de.country) == ("MAB1234", "DE")
    assert not de.valid  # no German grammar in edge.grammar: kept as read, never forced


def test_alternatives_offer_the_runner_up_to_the_matcher():
    reads = [_read("HXNB23", 0.9), _read("HXNB23", 0.85), _read("HXNB28", 0.9)]
    c = vote(reads)
    assert c.text == "HXNB23"
    alts = dict(c.alternatives)
    assert "HXNB28" in alts and all(0 < p <= 1 for p in alts.values())


def test_noisy_reads_vote_to_the_truth():
    rng = np.random.default_rng(0)
    for n, want in ((5, 0.97), (10, 0.995)):
        ok = 0
        for _ in range(300):
            truth = random_nl_plate(rng)
            ok += vote([noisy_read(rng, truth, Noise()) for _ in range(n)]).text == truth
        assert ok / 300 >= want, f"{n} reads: {ok}/300 correct"


def test_nothing_readable_and_bad_input():
    assert vote([]) is None
    assert vote([PlateRead("", "", "", 0.0)]) is None
    with pytest.raises(ValueError) as e:
        vote([_read("HXNB23", 0.9)], weights=[1.0, 2.0])
    assert "HXNB23" not in str(e.value)  # no plate text in error messages


def test_a_confidently_read_foreign_plate_is_not_made_dutch_by_two_unsure_reads():
    sure = _read("MSF956", (0.99,) * 6)
    unsure = PlateRead(text="MSF95G", formatted="MSF-95-G", country="NL", confidence=0.02,
                       char_confidences=(1.0,) * 5 + (0.02,))
    c = vote([sure] * 8 + [unsure] * 2)
    assert c.text == "MSF956"


def test_confident_reads_of_a_foreign_plate_are_not_turned_dutch_by_a_lookalike():
    # LLL-DDD is no Dutch sidecode; 6 -> G would make it sidecode 5, but three reads saw the 6 clearly
    reads = [_read("KXD681", (0.99,) * 6)] * 3 + [_read("KX0681", (1.0, 0.72, 0.01, 0.89, 0.85, 0.89))]
    c = vote(reads, weights=[0.9, 0.95, 1.0, 0.5])
    assert c.text == "KXD681"
    assert c.country != "NL" and not c.valid  # not presented as a Dutch plate either
    # the same look-alike read with doubt in every frame is still settled by the Dutch grammar
    c = vote([_read("KXD681", (0.99, 0.99, 0.99, 0.6, 0.99, 0.99))] * 3)
    assert (c.text, c.country, c.valid) == ("KXDG81", "NL", True)


def test_an_unsure_dutch_guess_does_not_replace_a_clearly_favoured_foreign_text():
    # Belgian OJG641 seen far away: most reads give the first character as a very unsure 0, two shorter
    # reads see an O. The only Dutch reading (0-JG-641) is one the reads barely support: as the
    # consensus it would come out far below a passage's minimum confidence and the vehicle would be
    # lost. The clearly favoured text goes out instead.
    reads = [_read("0JG641", (q,) + (0.99,) * 5) for q in (0.04, 0.08, 0.09, 0.03, 0.02, 0.01)]
    reads += [_read("OJG64", (0.92, 1.0, 0.99, 1.0, 1.0)), _read("OJG64", (0.88, 1.0, 0.99, 0.99, 0.44))]
    c = vote(reads)
    assert (c.text, c.valid) == ("OJG641", False) and c.country != "NL"
    assert c.confidence > 0.9

