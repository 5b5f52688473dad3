"""Typed records passed between pipeline stages.

Every stage takes and returns these, never another stage's internals, so each stage can be
replaced or tested alone. Reads and passages hold plate text: they live in memory only and must
never be logged, written or published unless they became a hit (see docs/architecture.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels


def box_iou(a, b) -> float:
    """Intersection over union of two x1 y1 x2 y2 boxes (0 when neither has an area)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def tilt_degrees(quad) -> float:
    """How far a TL TR BR BL quad is turned from level, in degrees (positive: clockwise on screen),
    from the mean direction of its top and bottom edges (so a perspective trapezoid is not a turn)."""
    tl, tr, br, bl = ((float(x), float(y)) for x, y in quad)
    dx, dy = (tr[0] - tl[0]) + (br[0] - bl[0]), (tr[1] - tl[1]) + (br[1] - bl[1])
    return math.degrees(math.atan2(dy, dx))


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image with both clocks: monotonic for tracking, UTC for reporting."""

    image: np.ndarray  # BGR uint8, H x W x 3
    index: int  # running number from the source, starting at 0
    mono_ms: float  # time.monotonic() * 1000 at capture (or video position for replay)
    utc: datetime  # timezone-aware UTC wall clock at capture
    source: str = ""  # a label of the source for status, never a secret URL


@dataclass(frozen=True)
class Detection:
    """A plate found by the detector, in original-image pixels."""

    box: Box
    corners: tuple[Point, Point, Point, Point]  # top-left, top-right, bottom-right, bottom-left
    score: float


@dataclass(frozen=True)
class PlateRead:
    """The recognizer's reading of one plate crop."""

    text: str  # normalised: upper case A-Z0-9, no separators; "" when nothing readable
    formatted: str  # as printed, e.g. "XS-NB-23"; equals text where the format is unknown
    country: str  # ISO 3166-1 alpha-2 upper case ("NL"), "" when unknown
    confidence: float  # 0..1 for the whole plate
    char_confidences: tuple[float, ...] = ()  # one per character of text
    alternatives: tuple[tuple[str, float], ...] = ()  # other plausible texts, best first, with scores


@dataclass(frozen=True, eq=False)
class Observation:
    """One plate in one frame: where it is and what it says."""

    detection: Detection
    read: PlateRead | None  # None when the tracker said this plate needs no fresh read
    frame_index: int
    mono_ms: float
    utc: datetime
    crop: np.ndarray | None = None  # rectified plate crop (BGR), kept only for evidence of hits
    frame: np.ndarray | None = None  # the full frame, only when evidence of whole frames is configured


Direction = Literal["approaching", "receding", "unknown"]


@dataclass(frozen=True, eq=False)
class Passage:
    """One vehicle passage: the consensus of all observations of one tracked plate."""

    track_id: int
    text: str
    formatted: str
    country: str
    confidence: float
    char_confidences: tuple[float, ...]
    alternatives: tuple[tuple[str, float], ...]
    first_seen_ms: float
    last_seen_ms: float
    first_seen_utc: datetime
    last_seen_utc: datetime
    frames: int
    direction: Direction = "unknown"
    best_crop: np.ndarray | None = None  # plate crop of the best observation
    best_frame: np.ndarray | None = None  # full frame of the best observation (evidence only)


MatchType = Literal["exact", "alternative", "lookalike"]
Action = Literal["intercept", "observe", "record"]


@dataclass(frozen=True)
class ListMatch:
    """One reference list that a passage matched."""

    list_id: str
    name: str
    category: str  # fine, tax_debt, stolen_vehicle, stolen_plate, warrant, driving_ban, ...
    action: Action
    priority: int  # higher is more urgent
    agency: str
    topic: str  # MQTT topic template for this list's hits ("" = the configured default)
    match_type: MatchType
    matched_text: str  # the variant that matched (a hit may reveal it: the plate is wanted)
    reason_code: str = ""
    list_version: int = 0


@dataclass(frozen=True, eq=False)
class Hit:
    """A passage that matched at least one active list: the only thing that may leave the unit."""

    passage: Passage
    matches: tuple[ListMatch, ...]
    extra: dict = field(default_factory=dict)
