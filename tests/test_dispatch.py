"""Passage → hit: real signed/encrypted list package, real matcher, real SQLite outbox."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest

from edge.dispatch import HitDispatcher
from edge.hits import EvidenceConfig, HitIdentity, Site
from edge.lists.matcher import ListMatcher
from edge.outbox import Outbox
from edge.types import Passage
from lists_support import FRIDAY_NOON, make_fleet


def passage(text: str, conf: float = 0.97, alternatives=(), formatted: str | None = None) -> Passage:
    return Passage(track_id=1, text=text, formatted=formatted or text, country="NL", confidence=conf,
                   char_confidences=tuple([conf] * len(text)), alternatives=tuple(alternatives),
                   first_seen_ms=0.0, last_seen_ms=900.0, first_seen_utc=FRIDAY_NOON - timedelta(seconds=1),
                   last_seen_utc=FRIDAY_NOON, frames=9, direction="approaching",
                   best_crop=np.full((40, 180, 3), 200, np.uint8))


@pytest.fixture
def setup(tmp_path):
    fleet = make_fleet(tmp_path, devices=("cam1",))
    sealed, _ = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    store = fleet.store("cam1")
    assert store.apply(sealed.snapshot).status == "applied"
    outbox = Outbox(tmp_path / "outbox.sqlite", max_items=100, cooldown_s=300)
    matcher = ListMatcher(store, ["*"])
    identity = HitIdentity(device="unit-1", camera="cam1", site=Site(52.0, 4.3, "A13", "north"), clock_sync="synced")
    disp = HitDispatcher(
        match=lambda p, now: matcher.match(p.text, p.alternatives, p.country, now, p.char_confidences), outbox=outbox,
        identity=lambda: identity, versions=lambda: {"lists": store.version}, evidence=EvidenceConfig(mode="crop"),
        default_topic="anpr/{agency}/{device}/hits", min_confidence=0.5)
    yield disp, outbox
    outbox.close()


def messages(outbox):
    return [(item.topic, json.loads(item.payload)) for item in outbox.pending(100, now=FRIDAY_NOON.timestamp() + 10)]


def test_non_hit_leaves_no_trace(setup):
    disp, outbox = setup
    assert disp.handle(passage("ZZ999Z"), FRIDAY_NOON) == []
    assert outbox.depth() == 0


def test_hit_goes_to_each_lists_agency_topic(setup):
    disp, outbox = setup
    hits = disp.handle(passage("XSNB23", formatted="XS-NB-23"), FRIDAY_NOON)
    assert hits
    msgs = messages(outbox)
    topics = sorted(t for t, _ in msgs)
    # 'stolen' has its own topic template; 'tax' (inside its Friday window) goes to the default per agency
    assert topics == ["anpr/CJIB/unit-1/hits", "anpr/urgent/unit-1"]
    by_topic = dict(msgs)
    urgent = by_topic["anpr/urgent/unit-1"]
    assert urgent["plate"] == "XSNB23" and urgent["matches"][0]["list_id"] == "stolen"
    assert urgent["matches"][0]["action"] == "intercept" and urgent["match_type"] == "exact"
    assert urgent["site"]["road"] == "A13" and "crop_jpeg" in urgent["evidence"]
    assert by_topic["anpr/CJIB/unit-1/hits"]["matches"][0]["list_id"] == "tax"
    assert urgent["hit_id"] != by_topic["anpr/CJIB/unit-1/hits"]["hit_id"]


def test_alternative_reading_can_hit(setup):
    disp, outbox = setup
    disp.handle(passage("XSNB28", alternatives=[("XSNB23", 0.3)]), FRIDAY_NOON)
    msgs = messages(outbox)
    assert msgs and all(m["match_type"] == "alternative" for _, m in msgs)


def test_cooldown_suppresses_repeats_of_the_same_plate_and_list(setup):
    disp, outbox = setup
    disp.handle(passage("XSNB23"), FRIDAY_NOON)
    depth = outbox.depth()
    assert disp.handle(passage("XSNB23"), FRIDAY_NOON + timedelta(seconds=60)) == []
    assert outbox.depth() == depth and disp.stats.suppressed == 2
    assert disp.handle(passage("XSNB23"), FRIDAY_NOON + timedelta(seconds=400))
    assert outbox.depth() == 2 * depth


def test_low_confidence_passage_is_not_matched(setup):
    disp, outbox = setup
    assert disp.handle(passage("XSNB23", conf=0.2), FRIDAY_NOON) == []
    assert outbox.depth() == 0 and disp.stats.below_confidence == 1


def test_non_hit_is_not_logged_only_counted(setup, caplog):
    """No log line per passage that is not a hit, at any level, from any logger: a timestamped line per
    vehicle ('passage of 9 frames, confidence 0.97: no match') is a record of that passage on disk."""
    import logging

    disp, outbox = setup
    caplog.set_level(logging.DEBUG)  # the root logger, where every logger propagates; restored afterwards
    for name in ("edge", "edge.dispatch", "edge.hits", "edge.outbox", "edge.lists"):
        caplog.set_level(logging.DEBUG, logger=name)  # in case one of them was set higher elsewhere
    p = passage("ZZ999Z", formatted="ZZ-999-Z")
    assert disp.handle(p, FRIDAY_NOON) == []
    assert outbox.depth() == 0
    assert not [r for r in caplog.records if r.name == "edge.dispatch"], caplog.text
    for needle in ("ZZ999Z", "ZZ-999-Z", "passage", "forgotten", "no match", f"{p.confidence:.2f}",
                   f"{p.frames} frames"):
        assert needle not in caplog.text, (needle, caplog.text)
    assert (disp.stats.passages, disp.stats.unmatched, disp.stats.matched, disp.stats.hits) == (1, 1, 0, 0)
    # a hit is still counted and logged (by its hit id and list, as before)
    assert disp.handle(passage("XSNB23"), FRIDAY_NOON)
    assert (disp.stats.passages, disp.stats.unmatched, disp.stats.matched) == (2, 1, 1) and disp.stats.hits == 2
    assert "accepted for list(s)" in caplog.text


def test_outbox_write_failure_is_counted_not_raised_and_logs_no_plate(setup, caplog):
    """Disk full: the outbox cannot store the hit. The daemon must keep running (not crash-loop); the
    refusal is counted and logged by hit id and list ids, never with the plate."""
    import dataclasses
    import logging

    disp, outbox = setup
    pages = outbox._db.execute("PRAGMA page_count").fetchone()[0]
    outbox._db.execute(f"PRAGMA max_page_count={pages}")  # SQLite: "database or disk is full" on the next insert
    caplog.set_level(logging.DEBUG)
    noisy = np.random.default_rng(0).integers(0, 256, (40, 180, 3), dtype=np.uint8)  # a crop too big for free pages
    p = dataclasses.replace(passage("XSNB23", formatted="XS-NB-23"), best_crop=noisy)
    assert disp.handle(p, FRIDAY_NOON) == []
    assert disp.stats.outbox_refused == 2 and disp.stats.hits == 0 and outbox.depth() == 0
    errors = [r for r in caplog.records if r.name == "edge.dispatch" and r.levelno >= logging.ERROR]
    assert len(errors) == 2 and "NOT stored" in caplog.text and "stolen" in caplog.text and "tax" in caplog.text
    for needle in ("XSNB23", "XS-NB-23"):
        assert needle not in caplog.text, caplog.text
    # space again: the same plate is not held back by a cool-down that never started, and is stored
    outbox._db.execute("PRAGMA max_page_count=1073741823")
    assert disp.handle(passage("XSNB23"), FRIDAY_NOON + timedelta(seconds=5))
    assert outbox.depth() == 2 and disp.stats.hits == 2 and disp.stats.suppressed == 0


def test_hits_are_stored_with_their_lists_priority(setup):
    """The outbox sends urgent hits first; the dispatcher must hand it each message's priority."""
    disp, outbox = setup
    assert disp.handle(passage("XSNB23", formatted="XS-NB-23"), FRIDAY_NOON)
    items = outbox.pending(100, now=FRIDAY_NOON.timestamp() + 10)
    prios = {json.loads(i.payload)["matches"][0]["list_id"]: i.priority for i in items}
    assert prios["stolen"] == 90 and prios["tax"] < 90
    assert items[0].priority == max(prios.values())  # the most urgent leaves first
