"""Matching: variants, enabled lists, activation, time windows, expiry, and swapping under load."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from edge.lists.matcher import ListMatcher, plate_variants
from edge.lists.model import TimeWindow
from lists_support import FRIDAY_NOON, make_fleet, write_csv

UTC = timezone.utc


@pytest.fixture
def fleet(tmp_path):
    f = make_fleet(tmp_path)
    sealed, _ = f.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    f.store_ = f.store("cam1")
    assert f.store_.apply(sealed.snapshot).status == "applied"
    return f


def ids(matches):
    return [m.list_id for m in matches]


def test_exact_alternative_and_lookalike(fleet):
    m = ListMatcher(fleet.store_, ["*"])
    exact = m.match("XSNB23", [], "NL", FRIDAY_NOON)
    assert ids(exact) == ["stolen", "tax"]  # highest priority first
    s = exact[0]
    assert (s.category, s.action, s.priority, s.agency, s.match_type, s.matched_text, s.reason_code) == \
        ("stolen_vehicle", "intercept", 90, "Politie", "exact", "XSNB23", "STOLEN-1")
    assert s.topic == "anpr/urgent/{device}" and s.list_version == fleet.store_.version
    alt = m.match("XSNB28", [("XS-NB-23", 0.3)], "NL", FRIDAY_NOON)
    assert [x.match_type for x in alt] == ["alternative", "alternative"]
    look = m.match("XSN823", [], "NL", FRIDAY_NOON)  # 8 read for B: a look-alike the NL grammar allows
    assert ids(look) == ["stolen", "tax"] and look[0].match_type == "lookalike" and look[0].matched_text == "XSNB23"
    assert m.match("XSNB24", [], "NL", FRIDAY_NOON) == []
    assert m.match("", [], "", FRIDAY_NOON) == []


def test_lookalikes_only_for_doubtful_characters(fleet):
    """A confidently read plate is not swapped for a listed look-alike: that would report a vehicle
    that is on no list (the review's case: a sure "G123BB" hitting a listed "6123BB")."""
    m = ListMatcher(fleet.store_, ["*"], lookalike_below=0.99)
    sure = (0.999,) * 6
    assert m.match("XSN823", [], "NL", FRIDAY_NOON, char_confidences=sure) == []
    doubtful = (0.999, 0.999, 0.999, 0.62, 0.999, 0.999)  # the "8" was a close call
    look = m.match("XSN823", [], "NL", FRIDAY_NOON, char_confidences=doubtful)
    assert ids(look) == ["stolen", "tax"] and look[0].match_type == "lookalike" and look[0].matched_text == "XSNB23"
    other_doubt = (0.62, 0.999, 0.999, 0.999, 0.999, 0.999)  # doubt elsewhere does not open the "8"
    assert m.match("XSN823", [], "NL", FRIDAY_NOON, char_confidences=other_doubt) == []
    assert ids(m.match("XSNB23", [], "NL", FRIDAY_NOON, char_confidences=sure)) == ["stolen", "tax"]  # exact
    assert ListMatcher(fleet.store_, ["*"], lookalike_below=1.0).match(
        "XSN823", [], "NL", FRIDAY_NOON, char_confidences=sure)  # 1.0: every character may be a look-alike
    assert ListMatcher(fleet.store_, ["*"], lookalike_below=0.0).match(
        "XSN823", [], "NL", FRIDAY_NOON, char_confidences=(0.1,) * 6) == []  # 0: no look-alikes at all
    assert plate_variants("XSN823", [], "NL", char_confidences=sure) == [("XSN823", "exact")]


def test_variants_are_bounded_and_ranked():
    v = plate_variants("XSN823", [("XSNB23", 0.4), ("xs-n8-23", 0.2), ("bad?!", 0.1)], "NL", limit=32)
    assert v[0] == ("XSN823", "exact") and v[1] == ("XSNB23", "alternative")
    assert len(v) == len({t for t, _ in v}) <= 32
    assert all(how == "lookalike" for _, how in v[2:])
    assert len(plate_variants("O0O0O0O0", [], "", limit=32)) == 32


def test_only_enabled_lists_hit(fleet):
    assert ids(ListMatcher(fleet.store_, ["tax"]).match("XSNB23", [], "NL", FRIDAY_NOON)) == ["tax"]
    assert ListMatcher(fleet.store_, []).match("XSNB23", [], "NL", FRIDAY_NOON) == []
    assert ListMatcher(fleet.store_, ["other"]).match("XSNB23", [], "NL", FRIDAY_NOON) == []


def test_time_windows_in_the_lists_time_zone(fleet):
    m = ListMatcher(fleet.store_, ["*"])
    assert ids(m.match("12ABC3", [], "NL", FRIDAY_NOON)) == ["tax"]
    assert m.match("12ABC3", [], "NL", datetime(2026, 11, 27, 18, 30, tzinfo=UTC)) == []  # 19:30 CET
    assert m.match("12ABC3", [], "NL", datetime(2026, 11, 28, 11, 0, tzinfo=UTC)) == []  # Saturday
    # 05:30 UTC is 06:30 in winter (outside) but 07:30 in summer (inside)
    assert m.match("12ABC3", [], "NL", datetime(2026, 11, 27, 5, 30, tzinfo=UTC)) == []
    assert ids(m.match("12ABC3", [], "NL", datetime(2026, 7, 3, 5, 30, tzinfo=UTC))) == ["tax"]
    # the night window starts Saturday 22:00 and runs past midnight
    assert ids(m.match("KL012B", [], "NL", datetime(2026, 11, 28, 23, 0, tzinfo=UTC))) == ["night"]
    assert ids(m.match("KL012B", [], "NL", datetime(2026, 11, 29, 3, 59, tzinfo=UTC))) == ["night"]
    assert m.match("KL012B", [], "NL", datetime(2026, 11, 29, 4, 0, tzinfo=UTC)) == []
    assert m.match("KL012B", [], "NL", datetime(2026, 11, 27, 23, 0, tzinfo=UTC)) == []  # Friday night


def test_window_edges():
    w = TimeWindow(days=("mon",), start="07:00", end="24:00")
    monday = datetime(2026, 11, 23, 7, 0)
    assert w.contains(monday) and w.contains(monday.replace(hour=23, minute=59))
    assert not w.contains(monday.replace(hour=6, minute=59)) and not w.contains(monday + timedelta(days=1))
    with pytest.raises(ValueError, match="HH:MM"):
        TimeWindow(start="7h")


def test_inactive_list_and_activation_delta(fleet, tmp_path):
    m = ListMatcher(fleet.store_, ["*"])
    assert m.match("GB123X", [], "NL", FRIDAY_NOON) == []  # obs is inactive
    sealed = fleet.central.delta_rows([], [], activate=("obs",))
    assert fleet.store_.apply(sealed.delta).status == "applied"
    assert ids(m.match("GB123X", [], "NL", FRIDAY_NOON)) == ["obs"]
    sealed = fleet.central.delta_rows([], [], deactivate=("stolen",))
    assert fleet.store_.apply(sealed.delta).status == "applied"
    assert ids(m.match("XSNB23", [], "NL", FRIDAY_NOON)) == ["tax"]
    # the central copy agrees: a new snapshot of this state gives the same answers
    fresh = fleet.store("cam2", cache=False)
    assert fresh.apply(sealed.snapshot).status == "applied"
    assert ids(ListMatcher(fresh, ["*"]).match("XSNB23", [], "NL", FRIDAY_NOON)) == ["tax"]
    assert ids(ListMatcher(fresh, ["*"]).match("GB123X", [], "NL", FRIDAY_NOON)) == ["obs"]


def test_expired_lists_and_entries(fleet, tmp_path, caplog):
    store = fleet.store_
    m = ListMatcher(store, ["*"])
    assert m.match("99XX99", [], "NL", FRIDAY_NOON) == []  # list "old" expired on 2026-01-01
    assert ids(m.match("99XX99", [], "NL", datetime(2025, 12, 31, 23, 0, tzinfo=UTC))) == ["old"]
    assert store.check_expiry(FRIDAY_NOON) == ["old"]
    assert store.status(FRIDAY_NOON)["expired"] == ["old"]
    assert "reference list old expired" in caplog.text
    # a per-entry valid-until date: the hit stops after that day (UTC)
    write_csv(tmp_path / "add.csv", [f"AA-11-BB,stolen,R,{(FRIDAY_NOON + timedelta(days=1)).date()}"])
    sealed, _ = fleet.central.delta(add_csv=tmp_path / "add.csv", now=FRIDAY_NOON)
    assert store.apply(sealed.delta).status == "applied"
    assert ids(m.match("AA11BB", [], "NL", FRIDAY_NOON + timedelta(days=1, hours=12))) == ["stolen"]
    assert m.match("AA11BB", [], "NL", FRIDAY_NOON + timedelta(days=2)) == []


def test_delta_add_remove_replace(fleet, tmp_path):
    store = fleet.store_
    m = ListMatcher(store, ["*"])
    write_csv(tmp_path / "add.csv", ["ZZ-999-Z,stolen,URG,", "XS-NB-23,stolen,NEWREASON,"])
    write_csv(tmp_path / "rm.csv", ["12-ABC-3,tax"], remove=True)
    sealed, _ = fleet.central.delta(add_csv=tmp_path / "add.csv", remove_csv=tmp_path / "rm.csv")
    assert store.apply(sealed.delta).status == "applied"
    assert ids(m.match("ZZ999Z", [], "NL", FRIDAY_NOON)) == ["stolen"]
    assert m.match("12ABC3", [], "NL", FRIDAY_NOON) == []
    hits = m.match("XSNB23", [], "NL", FRIDAY_NOON)
    assert [(x.list_id, x.reason_code) for x in hits] == [("stolen", "NEWREASON"), ("tax", "T9")]
    counts = {x["id"]: x["entries"] for x in store.status()["lists"]}
    assert counts["stolen"] == 2 and counts["tax"] == 1
    write_csv(tmp_path / "rm2.csv", ["ZZ-999-Z,stolen"], remove=True)
    sealed, _ = fleet.central.delta(remove_csv=tmp_path / "rm2.csv")
    assert store.apply(sealed.delta).status == "applied"
    assert m.match("ZZ999Z", [], "NL", FRIDAY_NOON) == []
    assert {x["id"]: x["entries"] for x in store.status()["lists"]}["stolen"] == 1
    # the snapshot of the same seq folds the overlay into the sorted arrays, with the same answers
    assert store.index.overlay_size > 0
    assert store.apply(sealed.snapshot).status == "applied"
    assert store.index.overlay_size == 0 and store.status()["overlay"] == 0
    assert store.apply(sealed.snapshot).status == "duplicate"
    assert m.match("ZZ999Z", [], "NL", FRIDAY_NOON) == [] and m.match("12ABC3", [], "NL", FRIDAY_NOON) == []
    assert [(x.list_id, x.reason_code) for x in m.match("XSNB23", [], "NL", FRIDAY_NOON)] == \
        [("stolen", "NEWREASON"), ("tax", "T9")]
    assert store.status()["package_created"]
    # the republished snapshot carries the same state
    fresh = fleet.store("cam2", cache=False)
    fresh.apply(sealed.snapshot)
    fm = ListMatcher(fresh, ["*"])
    assert fm.match("ZZ999Z", [], "NL", FRIDAY_NOON) == [] and fm.match("12ABC3", [], "NL", FRIDAY_NOON) == []
    assert [(x.list_id, x.reason_code) for x in fm.match("XSNB23", [], "NL", FRIDAY_NOON)] == \
        [("stolen", "NEWREASON"), ("tax", "T9")]


def test_swap_does_not_pause_or_break_matching(fleet, tmp_path):
    """Matching threads keep getting consistent answers while snapshots and deltas are swapped in."""
    store = fleet.store_
    m = ListMatcher(store, ["stolen"])
    stop = threading.Event()
    errors, counts = [], [0]

    def reader():
        while not stop.is_set():
            try:
                got = ids(m.match("XSNB23", [], "NL", FRIDAY_NOON))
                assert got == ["stolen"], got
                counts[0] += 1
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for n in range(5):
        sealed, _ = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
        assert store.apply(sealed.snapshot).status == "applied"
        write_csv(tmp_path / "add.csv", [f"QQ-{n:02d}-QQ,stolen,R,"])
        d, _ = fleet.central.delta(add_csv=tmp_path / "add.csv")
        assert store.apply(d.delta).status == "applied"
    stop.set()
    for t in threads:
        t.join()
    assert not errors and counts[0] > 0
