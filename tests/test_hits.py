"""Hit messages: schema conformance, ids, routing per agency, evidence only when configured."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.hits import (EvidenceConfig, HitIdentity, Site, _evidence_steps, _EvidenceStep, build_hit_message,
                       encode_hit, enqueue_hit, new_hit_id, route_hit, without_evidence)
from edge.outbox import Outbox
from edge.topics import TopicTemplateError, check_topic_template, render_topic
from edge.types import Hit, ListMatch, Passage

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "hit.schema.json").read_text())


def validate(instance, schema, path="$"):
    """Checks the JSON-Schema keywords docs/hit.schema.json uses; returns a list of errors."""
    errs = []
    if "const" in schema and instance != schema["const"]:
        errs.append(f"{path}: {instance!r} != const {schema['const']!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{path}: {instance!r} not in {schema['enum']}")
    t = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float)}
    if t and (not isinstance(instance, types[t]) or isinstance(instance, bool)):
        return errs + [f"{path}: expected {t}, got {type(instance).__name__}"]
    if isinstance(instance, str):
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errs.append(f"{path}: {instance!r} does not match {schema['pattern']}")
        if len(instance) < schema.get("minLength", 0):
            errs.append(f"{path}: too short")
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errs.append(f"{path}: below minimum")
        if "maximum" in schema and instance > schema["maximum"]:
            errs.append(f"{path}: above maximum")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in instance:
                errs.append(f"{path}: missing {k}")
        for k, v in instance.items():
            if k in props:
                errs += validate(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: unexpected key {k}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errs.append(f"{path}: fewer than {schema['minItems']} items")
        for i, v in enumerate(instance):
            errs += validate(v, schema.get("items", {}), f"{path}[{i}]")
    return errs


T0 = datetime(2026, 11, 28, 12, 0, 0, 123000, tzinfo=timezone.utc)
IDENT = HitIdentity("unit-7", "cam1", Site(52.0116, 4.3571, "A13", "Rotterdam"), "synced")


def make_passage(text="XSNB23", crop=True, frame=True) -> Passage:
    rng = np.random.default_rng(1)
    return Passage(track_id=3, text=text, formatted="XS-NB-23", country="NL", confidence=0.973,
                   char_confidences=(0.99,) * len(text), alternatives=(), first_seen_ms=1000.0,
                   last_seen_ms=1840.0, first_seen_utc=T0, last_seen_utc=T0 + timedelta(milliseconds=840),
                   frames=9, direction="approaching",
                   best_crop=rng.integers(0, 255, (40, 180, 3), dtype=np.uint8) if crop else None,
                   best_frame=rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8) if frame else None)


def make_match(list_id="L-stolen", agency="politie", topic="", priority=5, match_type="exact") -> ListMatch:
    return ListMatch(list_id=list_id, name="Stolen vehicles", category="stolen_vehicle", action="intercept",
                     priority=priority, agency=agency, topic=topic, match_type=match_type,
                     matched_text="XSNB23", reason_code="S1", list_version=42)


VERSIONS = {"detector": "det-2026.11", "recognizer": "rec-2026.11", "lists": 42}


def test_hit_ids_are_uuid7_unique_and_time_sorted():
    ids = [new_hit_id(now_ms=1_700_000_000_000 + i) for i in range(500)]
    pat = SCHEMA["properties"]["hit_id"]["pattern"]
    assert all(re.match(pat, i) for i in ids)
    assert ids == sorted(ids)
    same_ms = {new_hit_id(now_ms=5) for _ in range(2000)}
    assert len(same_ms) == 2000
    assert new_hit_id(now_ms=1_700_000_000_000)[:13] == "018bcfe5-6800"  # ms timestamp in the first 48 bits


def test_message_follows_published_schema_without_evidence():
    msg = build_hit_message(Hit(make_passage(), (make_match(),)), IDENT, VERSIONS, EvidenceConfig())
    assert validate(msg, SCHEMA) == []
    assert msg["time"] == "2026-11-28T12:00:00.963Z" and msg["passage"]["first_seen"] == "2026-11-28T12:00:00.123Z"
    assert msg["plate"] == "XSNB23" and msg["plate_formatted"] == "XS-NB-23" and msg["country"] == "NL"
    assert msg["site"] == {"lat": 52.0116, "lon": 4.3571, "road": "A13", "direction": "Rotterdam"}
    assert msg["clock_sync"] == "synced" and msg["passage"]["frames"] == 9
    assert msg["matches"][0]["list_id"] == "L-stolen" and msg["versions"]["lists"] == 42
    assert "evidence" not in msg
    assert json.loads(encode_hit(msg)) == msg


def test_validator_rejects_bad_messages():
    msg = build_hit_message(Hit(make_passage(), (make_match(),)), IDENT, VERSIONS, EvidenceConfig())
    bad = dict(msg, hit_id="not-a-uuid", extra_field=1)
    bad["site"] = dict(msg["site"], lat=123.0)
    errs = validate(bad, SCHEMA)
    assert any("hit_id" in e for e in errs) and any("extra_field" in e for e in errs) and any("lat" in e for e in errs)


@pytest.mark.parametrize("mode,keys", [("crop", {"crop_jpeg"}), ("frame", {"frame_jpeg"}),
                                       ("both", {"crop_jpeg", "frame_jpeg"})])
def test_evidence_is_jpeg_and_frame_is_scaled(mode, keys):
    msg = build_hit_message(Hit(make_passage(), (make_match(),)), IDENT, VERSIONS,
                            EvidenceConfig(mode=mode, jpeg_quality=70, max_frame_width=640))
    assert validate(msg, SCHEMA) == [] and set(msg["evidence"]) == keys
    for k in keys:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(msg["evidence"][k]), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        assert img.shape[:2] == ((40, 180) if k == "crop_jpeg" else (360, 640))


def test_evidence_absent_when_passage_has_no_images():
    msg = build_hit_message(Hit(make_passage(crop=False, frame=False), (make_match(),)), IDENT, VERSIONS,
                            EvidenceConfig(mode="both"))
    assert "evidence" not in msg and validate(msg, SCHEMA) == []


def test_routing_splits_by_agency_topic_and_keeps_lists_apart():
    hit = Hit(make_passage(), (make_match("L-a", "politie", priority=3),
                               make_match("L-b", "douane", topic="customs/{device}/{list}", priority=9),
                               make_match("L-c", "politie", priority=7, match_type="lookalike")))
    out = route_hit(hit, IDENT, VERSIONS, EvidenceConfig(), "anpr/{agency}/{device}/hits")
    by_topic = {o.topic: o for o in out}
    assert set(by_topic) == {"anpr/politie/unit-7/hits", "customs/unit-7/L-b"}
    pol = by_topic["anpr/politie/unit-7/hits"].message
    assert [m["list_id"] for m in pol["matches"]] == ["L-c", "L-a"]  # most urgent first
    assert pol["priority"] == 7 and pol["match_type"] == "exact"
    assert [m["list_id"] for m in by_topic["customs/unit-7/L-b"].message["matches"]] == ["L-b"]
    assert len({o.hit_id for o in out}) == 2
    assert all(validate(o.message, SCHEMA) == [] for o in out)
    assert json.loads(out[0].payload())["hit_id"] == out[0].hit_id


def test_agencies_never_share_a_message_even_on_one_topic():
    """A default template without {agency} (allowed by the config) must not put one agency's lists in
    another agency's message."""
    hit = Hit(make_passage(), (make_match("L-a", "politie", priority=9), make_match("L-b", "douane", priority=5),
                               make_match("L-c", "politie", priority=7)))
    out = route_hit(hit, IDENT, VERSIONS, EvidenceConfig(), "anpr/{device}/hits")
    assert [o.topic for o in out] == ["anpr/unit-7/hits"] * 2 and len({o.hit_id for o in out}) == 2
    by_agency = {o.message["matches"][0]["agency"]: o.message for o in out}
    assert {a: [m["list_id"] for m in msg["matches"]] for a, msg in by_agency.items()} == {
        "politie": ["L-a", "L-c"], "douane": ["L-b"]}
    assert all({m["agency"] for m in msg["matches"]} == {a} for a, msg in by_agency.items())


def test_topic_templates_are_checked_and_values_sanitised():
    assert check_topic_template("anpr/{agency}/{priority}/{camera}") == "anpr/{agency}/{priority}/{camera}"
    for bad, word in [("anpr/{plate}/x", "unknown field"), ("anpr/+/x", "wildcard"), ("anpr/#", "wildcard"),
                      ("$SYS/{device}", "reserved"), ("", "empty"), ("anpr/{device", "malformed")]:
        with pytest.raises(TopicTemplateError, match=word):
            check_topic_template(bad)
    t = render_topic("a/{agency}/{list}", device="d", camera="c", match=make_match("x/+#", agency=""))
    assert t == "a/_/x___"


def test_naive_time_is_refused_with_a_clear_error():
    p = make_passage()
    naive = Passage(**{**p.__dict__, "last_seen_utc": datetime(2026, 1, 1)})
    with pytest.raises(ValueError, match="timezone-aware"):
        build_hit_message(Hit(naive, (make_match(),)), IDENT, VERSIONS, EvidenceConfig())


def test_enqueue_hit_stores_routes_and_applies_cooldown_per_list(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=300)
    hit = Hit(make_passage(), (make_match("L-a", "politie"), make_match("L-b", "douane")))
    r = enqueue_hit(ob, hit, IDENT, VERSIONS, EvidenceConfig(), "anpr/{agency}/{device}/hits", now=1000.0)
    assert len(r.queued) == 2 and r.suppressed == 0 and r.refused == 0 and ob.depth() == 2
    stored = {p.topic: json.loads(p.payload) for p in ob.pending(10, now=1000.0)}
    assert set(stored) == {"anpr/politie/unit-7/hits", "anpr/douane/unit-7/hits"}
    assert all(validate(m, SCHEMA) == [] for m in stored.values())
    # Same plate again within the cool-down: both lists suppressed, nothing stored.
    again = enqueue_hit(ob, hit, IDENT, VERSIONS, EvidenceConfig(), "anpr/{agency}/{device}/hits", now=1100.0)
    assert again.queued == () and again.suppressed == 2 and ob.depth() == 2
    # A third list that was not sent yet still goes out; the cooled-down one does not.
    hit3 = Hit(make_passage(), (make_match("L-a", "politie"), make_match("L-c", "politie")))
    r3 = enqueue_hit(ob, hit3, IDENT, VERSIONS, EvidenceConfig(), "anpr/{agency}/{device}/hits", now=1200.0)
    assert r3.suppressed == 1 and [m["list_id"] for m in r3.queued[0].message["matches"]] == ["L-c"]
    # After the cool-down the plate is reported again.
    r4 = enqueue_hit(ob, hit, IDENT, VERSIONS, EvidenceConfig(), "anpr/{agency}/{device}/hits", now=1301.0)
    assert len(r4.queued) == 2


def test_enqueue_hit_reports_refusal_when_outbox_full(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", max_items=10, cooldown_s=0)
    for i in range(10):
        ob.put("t", b"{}", f"id-{i}")
    r = enqueue_hit(ob, Hit(make_passage(), (make_match(),)), IDENT, VERSIONS, EvidenceConfig(), "a/{device}")
    assert r.queued == () and r.refused == 1 and ob.rejected == 1


def test_evidence_that_cannot_be_encoded_is_left_out_not_the_hit(tmp_path, caplog):
    p = make_passage()
    odd = Passage(**{**p.__dict__, "best_crop": np.zeros((40, 180, 2), np.uint8)})  # 2 channels: no JPEG
    hit = Hit(odd, (make_match(),))
    msg = build_hit_message(hit, IDENT, VERSIONS, EvidenceConfig(mode="both", max_frame_width=320))
    assert set(msg["evidence"]) == {"frame_jpeg"} and validate(msg, SCHEMA) == []
    assert "crop_jpeg left out" in caplog.text and "XSNB23" not in caplog.text
    ob = Outbox(tmp_path / "o.sqlite")
    r = enqueue_hit(ob, hit, IDENT, VERSIONS, EvidenceConfig(mode="crop"), "a/{device}", now=1.0)
    assert len(r.queued) == 1 and ob.depth() == 1  # the hit is stored, just without the image


def test_enqueue_hit_stores_each_message_with_its_highest_priority(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    fine = enqueue_hit(ob, Hit(make_passage(), (make_match("L-fine", priority=100),)), IDENT, VERSIONS,
                       EvidenceConfig(), "anpr/{agency}/{device}/hits", now=1000.0)
    hit = Hit(make_passage(), (make_match("L-a", "politie", priority=900), make_match("L-b", "politie", priority=100),
                               make_match("L-c", "douane", priority=300)))
    r = enqueue_hit(ob, hit, IDENT, VERSIONS, EvidenceConfig(), "anpr/{agency}/{device}/hits", now=1001.0)
    assert len(r.queued) == 2
    got = [(i.topic, i.priority, i.hit_id) for i in ob.pending(10, now=1002.0)]
    assert [(t, p) for t, p, _ in got] == [("anpr/politie/unit-7/hits", 900), ("anpr/douane/unit-7/hits", 300),
                                          ("anpr/politie/unit-7/hits", 100)]
    assert got[-1][2] == fine.queued[0].hit_id



# -- a hit too large for the broker would never arrive: its evidence shrinks to fit -------------------

def noisy_passage(crop_shape=(40, 180, 3), frame_shape=(720, 1280, 3)) -> Passage:
    """Noise images: JPEG cannot compress them, so the evidence is as large as real frames get."""
    rng = np.random.default_rng(2)
    return Passage(**{**make_passage().__dict__,
                      "best_crop": rng.integers(0, 255, crop_shape, dtype=np.uint8),
                      "best_frame": rng.integers(0, 255, frame_shape, dtype=np.uint8)})


def decode(b64: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)


def test_evidence_over_max_message_bytes_is_reduced_until_the_hit_fits(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge.hits")
    hit = Hit(noisy_passage(), (make_match(),))
    cfg = EvidenceConfig(mode="both", jpeg_quality=85, max_frame_width=1280, max_message_bytes=200_000)
    full = build_hit_message(hit, IDENT, VERSIONS, cfg.model_copy(update={"max_message_bytes": 10_000_000}))
    assert len(encode_hit(full)) > 900_000 and "evidence_reduced" not in full  # as configured it fits a big limit
    msg = build_hit_message(hit, IDENT, VERSIONS, cfg, hit_id=full["hit_id"])
    assert len(encode_hit(msg)) <= 200_000 and validate(msg, SCHEMA) == []
    # quality first (85 -> 70 -> 50 -> 30), then the frame halved: both images still there, smaller
    assert msg["evidence_reduced"] == "jpeg quality 30, frame 640 px wide to fit evidence.max_message_bytes 200000"
    assert decode(msg["evidence"]["frame_jpeg"]).shape[:2] == (360, 640)
    assert decode(msg["evidence"]["crop_jpeg"]).shape[:2] == (40, 180)
    assert {k: v for k, v in msg.items() if not k.startswith("evidence")} == \
        {k: v for k, v in full.items() if k != "evidence"}  # the hit itself is untouched
    # deterministic: the same hit gives the same bytes
    assert encode_hit(build_hit_message(hit, IDENT, VERSIONS, cfg, hit_id=full["hit_id"])) == encode_hit(msg)
    told = [r for r in caplog.records if "evidence reduced" in r.getMessage()]
    assert told and all(r.levelno == logging.WARNING and full["hit_id"] in r.getMessage() for r in told)
    assert "XSNB23" not in caplog.text and "XS-NB-23" not in caplog.text
    assert msg["evidence"]["crop_jpeg"][:40] not in caplog.text  # no image data either
    # the same cap applies on the way into the outbox
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    r = enqueue_hit(ob, hit, IDENT, VERSIONS, cfg, "anpr/{agency}/{device}/hits", now=1.0)
    (stored,) = ob.pending(10, now=2.0)
    assert len(stored.payload) <= 200_000 and stored.hit_id == r.queued[0].hit_id
    assert json.loads(stored.payload)["evidence_reduced"].startswith("jpeg quality 30, frame 640 px wide")


def test_evidence_that_cannot_fit_is_left_out_frame_before_crop():
    big_crop = noisy_passage(crop_shape=(400, 1600, 3))  # ~240 KB of base64 even at quality 30
    cfg = EvidenceConfig(mode="both", max_message_bytes=16 * 1024)
    msg = build_hit_message(Hit(big_crop, (make_match(),)), IDENT, VERSIONS, cfg)
    assert "evidence" not in msg and validate(msg, SCHEMA) == [] and len(encode_hit(msg)) <= 16 * 1024
    assert msg["evidence_reduced"] == "frame left out, crop left out to fit evidence.max_message_bytes 16384"
    # crop only: quality goes down as far as the ladder allows, then the crop goes
    crop_only = build_hit_message(Hit(big_crop, (make_match(),)), IDENT, VERSIONS,
                                  EvidenceConfig(mode="crop", jpeg_quality=60, max_message_bytes=300_000))
    assert set(crop_only["evidence"]) == {"crop_jpeg"} and len(encode_hit(crop_only)) <= 300_000
    assert crop_only["evidence_reduced"] in ("jpeg quality 50 to fit evidence.max_message_bytes 300000",
                                             "jpeg quality 30 to fit evidence.max_message_bytes 300000")


def test_the_reduction_ladder_is_fixed_quality_then_frame_size_then_frame_then_crop():
    cfg = EvidenceConfig(mode="both", jpeg_quality=85)
    S = _EvidenceStep
    assert _evidence_steps(cfg, True, 1280) == [
        S(85, 1280, True), S(70, 1280, True), S(50, 1280, True), S(30, 1280, True),
        S(30, 640, True), S(30, 320, True), S(30, 160, True), S(30, None, True), S(30, None, False)]
    assert _evidence_steps(EvidenceConfig(jpeg_quality=55), True, None) == [
        S(55, None, True), S(50, None, True), S(30, None, True), S(30, None, False)]
    assert _evidence_steps(EvidenceConfig(jpeg_quality=20), False, 300) == [S(20, 300, False), S(20, None, False)]


def test_max_message_bytes_is_bounded_and_documented():
    assert EvidenceConfig().max_message_bytes == 256 * 1024
    for bad in (1000, 300_000_000):
        with pytest.raises(ValueError, match="max_message_bytes"):
            EvidenceConfig(max_message_bytes=bad)
    assert all(f.description for f in EvidenceConfig.model_fields.values())


def test_without_evidence_drops_only_the_evidence_of_a_json_hit():
    msg = build_hit_message(Hit(make_passage(), (make_match(),)), IDENT, VERSIONS, EvidenceConfig(mode="crop"))
    slim = json.loads(without_evidence(encode_hit(msg), "broker maximum packet size 1000 bytes"))
    assert slim == {**{k: v for k, v in msg.items() if k != "evidence"},
                    "evidence_omitted": "broker maximum packet size 1000 bytes"}
    assert validate(slim, SCHEMA) == []
    plain = build_hit_message(Hit(make_passage(), (make_match(),)), IDENT, VERSIONS, EvidenceConfig())
    for payload in (encode_hit(plain), b"\xff not json", b"[1, 2]", b'"evidence"', b"[" * 100_000):
        assert without_evidence(payload, "x") is None  # nothing to leave out: sent or kept as it is
