"""Hit messages: the only thing a unit ever sends about a plate.

A `Hit` (a passage that matched reference lists) becomes one JSON message per destination topic,
following the versioned schema in docs/hit.schema.json. When a passage matches lists of several
agencies, each agency gets its own message carrying only its own lists, so no agency learns what
another agency is looking for. Evidence images are encoded here, for hits only.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from pydantic import Field

from edge.configbase import Section
from edge.topics import render_topic
from edge.types import Hit, ListMatch

if TYPE_CHECKING:
    from edge.outbox import Outbox

log = logging.getLogger(__name__)
SCHEMA_ID = "https://anpr-edge.org/schemas/hit/1.json"
SCHEMA_VERSION = 1
ClockSync = Literal["synced", "unsynced", "unknown"]
_MATCH_RANK = {"exact": 0, "alternative": 1, "lookalike": 2}
_MQTT_MAX_PAYLOAD = 268_435_455  # MQTT's largest remaining length: no message can be larger
_LOWER_QUALITIES = (70, 50, 30)  # JPEG qualities tried, in order, below the configured one, for a hit too large
_MIN_FRAME_WIDTH = 160  # a too-large hit's frame is halved down to this width (pixels) before it is left out


class EvidenceConfig(Section):
    mode: Literal["none", "crop", "frame", "both"] = Field(
        "none", description="Images attached to hit messages: none, the plate crop, the full frame, or both.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality (10-100) of evidence images.")
    max_frame_width: int = Field(1280, ge=64, description="Evidence frames wider than this are scaled down (pixels).")
    max_message_bytes: int = Field(256 * 1024, ge=16 * 1024, le=_MQTT_MAX_PAYLOAD, description=(
        "Largest hit message (UTF-8 JSON bytes). A larger one gets smaller evidence, step by step until it "
        "fits: lower JPEG quality, then a narrower frame, then no frame, then no crop; the message's "
        "evidence_reduced says what was done. Keep it below the broker's maximum packet size less the "
        "topic length and ~10 bytes."))


@dataclass(frozen=True)
class Site:
    """Where the camera stands; copied into every hit."""

    lat: float
    lon: float
    road: str = ""
    direction: str = ""


@dataclass(frozen=True)
class HitIdentity:
    """Who saw the hit and how far its clock can be trusted."""

    device: str
    camera: str
    site: Site
    clock_sync: ClockSync = "unknown"


@dataclass(frozen=True)
class OutgoingHit:
    """One message ready for the outbox: where it goes and what it says."""

    topic: str
    hit_id: str
    message: dict

    def payload(self) -> bytes:
        return encode_hit(self.message)


def new_hit_id(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds then 74 random bits, so ids sort by time."""
    ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _utc_iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError("hit time must be timezone-aware UTC (got a naive datetime)")
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _jpeg_b64(image: np.ndarray, quality: int, max_width: int | None = None) -> str:
    if image is None or not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError("evidence image must be a non-empty HxW or HxWx3 uint8 array")
    if max_width is not None and image.shape[1] > max_width:
        scale = max_width / image.shape[1]
        image = cv2.resize(image, (max_width, max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("evidence image could not be encoded as JPEG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _match_dict(m: ListMatch) -> dict:
    return {"list_id": m.list_id, "name": m.name, "category": m.category, "action": m.action,
            "priority": int(m.priority), "agency": m.agency, "match_type": m.match_type,
            "matched_text": m.matched_text, "reason_code": m.reason_code, "list_version": int(m.list_version)}


def build_hit_message(hit: Hit, identity: HitIdentity, versions: dict, evidence: EvidenceConfig,
                      hit_id: str | None = None) -> dict:
    """The JSON-ready message of one hit (schema docs/hit.schema.json), with all of hit.matches."""
    if not hit.matches:
        raise ValueError("a hit needs at least one list match")
    p = hit.passage
    best = min(hit.matches, key=lambda m: _MATCH_RANK.get(m.match_type, 9))
    msg: dict = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "hit_id": hit_id or new_hit_id(),
        "device": identity.device,
        "camera": identity.camera,
        "site": {"lat": float(identity.site.lat), "lon": float(identity.site.lon),
                 "road": identity.site.road, "direction": identity.site.direction},
        "time": _utc_iso(p.last_seen_utc),
        "clock_sync": identity.clock_sync,
        "plate": p.text,
        "plate_formatted": p.formatted or p.text,
        "country": p.country,
        "confidence": round(float(p.confidence), 4),
        "match_type": best.match_type,
        "priority": max(int(m.priority) for m in hit.matches),
        "matches": [_match_dict(m) for m in sorted(hit.matches, key=lambda m: -m.priority)],
        "passage": {"frames": int(p.frames), "direction": p.direction,
                    "first_seen": _utc_iso(p.first_seen_utc), "last_seen": _utc_iso(p.last_seen_utc),
                    "duration_ms": round(max(0.0, p.last_seen_ms - p.first_seen_ms), 1)},
        "versions": {str(k): v for k, v in versions.items()},
    }
    crop = p.best_crop if evidence.mode in ("crop", "both") else None
    frame = p.best_frame if evidence.mode in ("frame", "both") else None
    if crop is not None or frame is not None:
        _attach_evidence(msg, crop, frame, evidence)
    return msg


@dataclass(frozen=True)
class _EvidenceStep:
    """One rung of the ladder a too-large hit's evidence goes down: quality, frame width (None: no frame), crop."""

    quality: int
    frame_width: int | None
    crop: bool


def _evidence_steps(cfg: EvidenceConfig, crop: bool, frame_width: int | None) -> list[_EvidenceStep]:
    """The fixed order of reductions (the first step is the evidence as configured), so the result is deterministic.

    Quality goes first (the picture keeps its size and content), then frame resolution, then the
    frame (it shows the scene), and the plate crop, the most telling image, last.
    """
    qualities = [cfg.jpeg_quality] + [q for q in _LOWER_QUALITIES if q < cfg.jpeg_quality]
    low = qualities[-1]
    steps = [_EvidenceStep(q, frame_width, crop) for q in qualities]
    if frame_width is not None:
        width = frame_width // 2
        while width >= _MIN_FRAME_WIDTH:
            steps.append(_EvidenceStep(low, width, crop))
            width //= 2
        if crop:
            steps.append(_EvidenceStep(low, None, True))
    steps.append(_EvidenceStep(low, None, False))
    return steps


def _describe_reduction(cfg: EvidenceConfig, step: _EvidenceStep, crop: bool, frame_width: int | None) -> str:
    """evidence_reduced: what the consumer gets less of than configured, e.g. 'jpeg quality 30, frame left out ...'."""
    parts = []
    if step.quality < cfg.jpeg_quality and (step.crop or step.frame_width is not None):
        parts.append(f"jpeg quality {step.quality}")
    if frame_width is not None and step.frame_width is not None and step.frame_width < frame_width:
        parts.append(f"frame {step.frame_width} px wide")
    if frame_width is not None and step.frame_width is None:
        parts.append("frame left out")
    if crop and not step.crop:
        parts.append("crop left out")
    return f"{', '.join(parts)} to fit evidence.max_message_bytes {cfg.max_message_bytes}"


def _attach_evidence(msg: dict, crop: np.ndarray | None, frame: np.ndarray | None, cfg: EvidenceConfig) -> None:
    """Add the evidence images to msg, reduced step by step until the message fits cfg.max_message_bytes.

    A hit too large for the broker would never be delivered; a hit with smaller pictures (or none)
    still tells the operator. What was reduced is written into the message (evidence_reduced).
    """
    encoded: dict[tuple[str, int, int | None], str] = {}  # each image, quality and width is encoded once
    failed: set[str] = set()

    def jpeg(key: str, image: np.ndarray, quality: int, width: int | None) -> str | None:
        if key in failed:
            return None
        if (key, quality, width) not in encoded:
            # Evidence is optional, the hit is not: an image that cannot be encoded (odd shape or channels,
            # an OpenCV error) is left out and logged, instead of the exception losing the whole hit.
            try:
                encoded[(key, quality, width)] = _jpeg_b64(image, quality, width)
            except Exception as e:  # noqa: BLE001 - cv2.error is not a ValueError
                failed.add(key)
                log.warning("hit %s: evidence %s left out, it could not be encoded: %s", msg["hit_id"], key,
                            str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
                return None
        return encoded[(key, quality, width)]

    def images(step: _EvidenceStep) -> dict:
        ev = {}
        if step.crop and crop is not None and (b64 := jpeg("crop_jpeg", crop, step.quality, None)) is not None:
            ev["crop_jpeg"] = b64
        if step.frame_width is not None and frame is not None and (
                b64 := jpeg("frame_jpeg", frame, step.quality, step.frame_width)) is not None:
            ev["frame_jpeg"] = b64
        return ev

    first = _EvidenceStep(cfg.jpeg_quality, cfg.max_frame_width, True)
    ev = images(first)  # as configured; also finds images that cannot be encoded at all
    if ev:
        msg["evidence"] = ev
    full = len(encode_hit(msg))
    if full <= cfg.max_message_bytes:
        return
    if not ev:
        log.warning("hit %s: %d bytes without evidence, over evidence.max_message_bytes %d; stored as it is",
                    msg["hit_id"], full, cfg.max_message_bytes)
        return
    has_crop = "crop_jpeg" in ev
    frame_width = min(frame.shape[1], cfg.max_frame_width) if "frame_jpeg" in ev and frame is not None else None
    size = full
    for step in _evidence_steps(cfg, has_crop, frame_width)[1:]:
        ev = images(step)
        msg.pop("evidence", None)
        if ev:
            msg["evidence"] = ev
        msg["evidence_reduced"] = _describe_reduction(cfg, step, has_crop, frame_width)
        size = len(encode_hit(msg))
        if size <= cfg.max_message_bytes:
            break
    # hit id and sizes only: the message carries plate text, the log must not
    log.warning("hit %s: %d bytes with its evidence, over evidence.max_message_bytes %d; evidence reduced to "
                "%d bytes: %s", msg["hit_id"], full, cfg.max_message_bytes, size, msg["evidence_reduced"])
    if size > cfg.max_message_bytes:
        log.warning("hit %s: still %d bytes without evidence, over evidence.max_message_bytes %d; "
                    "stored as it is", msg["hit_id"], size, cfg.max_message_bytes)


def without_evidence(payload: bytes, note: str) -> bytes | None:
    """A stored hit payload with its evidence left out and evidence_omitted=note added (same hit_id).

    For the publisher, when the broker cannot take the whole message: the hit itself matters more than
    its pictures. None when the payload is not a JSON object with evidence (nothing to leave out).
    """
    try:
        msg = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or absurdly nested: not a hit of ours
        return None
    if not isinstance(msg, dict) or "evidence" not in msg:
        return None
    del msg["evidence"]
    msg["evidence_omitted"] = note
    return encode_hit(msg)


def encode_hit(message: dict) -> bytes:
    """Compact UTF-8 JSON, the bytes that go into the outbox and onto the wire."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def route_hit(hit: Hit, identity: HitIdentity, versions: dict, evidence: EvidenceConfig,
              default_template: str) -> list[OutgoingHit]:
    """Split a hit by destination topic (a list's own template, or the default) and agency; build each message.

    Matches of one agency that land on the same topic share one message; each message has its own hit
    id. Agencies never share a message, even on one topic (a template without {agency}), so a message
    names only its own agency's lists.
    """
    groups: dict[tuple[str, str], list[ListMatch]] = {}
    for m in hit.matches:
        topic = render_topic(m.topic or default_template, device=identity.device, camera=identity.camera, match=m)
        groups.setdefault((topic, m.agency), []).append(m)
    out = []
    for (topic, _agency), matches in groups.items():
        sub = Hit(passage=hit.passage, matches=tuple(matches), extra=hit.extra)
        msg = build_hit_message(sub, identity, versions, evidence)
        out.append(OutgoingHit(topic=topic, hit_id=msg["hit_id"], message=msg))
    return out


@dataclass(frozen=True)
class EnqueueResult:
    """What became of one hit: messages stored, lists held back by the cool-down, messages refused (outbox full)."""

    queued: tuple[OutgoingHit, ...]
    suppressed: int
    refused: int


def enqueue_hit(outbox: "Outbox", hit: Hit, identity: HitIdentity, versions: dict, evidence: EvidenceConfig,
                default_template: str, now: float | None = None) -> EnqueueResult:
    """The pipeline's one call per hit: drop lists in cool-down, route, store durably, start cool-downs.

    Returns once every message is on disk (or refused because the outbox is full). Each message is
    stored with its highest match priority, so the publisher sends urgent hits (intercept) first.
    """
    plate = hit.passage.text
    fresh = tuple(m for m in hit.matches if not outbox.suppressed(plate, m.list_id, now))
    suppressed = len(hit.matches) - len(fresh)
    if not fresh:
        return EnqueueResult((), suppressed, 0)
    queued, refused = [], 0
    for out in route_hit(Hit(hit.passage, fresh, hit.extra), identity, versions, evidence, default_template):
        lists = tuple((plate, m["list_id"]) for m in out.message["matches"])
        if outbox.put(out.topic, out.payload(), out.hit_id, cooldown=lists, now=now,
                      priority=int(out.message["priority"])):
            queued.append(out)
        else:
            refused += 1
    return EnqueueResult(tuple(queued), suppressed, refused)
