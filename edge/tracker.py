"""Tracking plates across frames and turning each track into one vehicle passage.

Association is greedy on a cost that combines the distance to the track's predicted position
(constant-velocity, in plate widths), the change of plate size and, where both have text, the edit
distance between the read and the track's consensus. A track survives missed frames for
`close_after_s`; a lost track can be picked up again by text alone (a plate that leaves the view or
is hidden and comes back), and a closed track's text is remembered for `rejoin_s` so the same
vehicle re-appearing does not give a second passage.

When passages are emitted (the decision the matcher relies on):
- early, as soon as a track has `early_reads` reads, at least two of them say exactly its consensus
  and those weigh at least `early_weight` (far, small and unmoved plates weigh less: far plates are
  misread alike frame after frame), the consensus is a valid plate of a known grammar and its
  confidence reaches `confident_at` (`emit_early`): an intercept is urgent. The track then stays open but silent until
  the plate is gone, so a car parked in view for hours gives exactly one passage. A silent track is
  re-read only every `reread_every` of its frames (the pipeline skips the recognizer otherwise),
  and a confident re-read that contradicts its text ends it and starts a new track (the next vehicle
  at that spot; if that track votes to the same text, it stays silent);
- otherwise when the track has been gone for `close_after_s`, or at `flush()` (end of a replay),
  provided it has at least `min_frames` observations and its consensus reaches `min_confidence`
  and `min_chars`.
A passage whose text is the text, or a part (see `is_fragment`), of a passage out less than `rejoin_s`
ago, or of a longer and likely enough read of a track still open, is not sent: the same vehicle, or
its plate cut by the frame edge as it leaves or half hidden behind another vehicle. Nor is a less
sure read one character off (same length) of a track still open whose passage is out and whose box
overlaps this track's: the same plate, partly hidden, followed by a second track (a different plate
one character off, at the same place at the same time, is not a case that happens).

Call `update` for every frame the pipeline processes, with an empty list when the detector ran and
found nothing. When `settled` is True (every open track silent) and nothing moved, the pipeline may
skip detection and `update` for that frame. Plate texts live only in memory here; nothing is logged.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pydantic import Field

from edge.configbase import Section
from edge.types import Detection, Direction, Frame, Observation, Passage, PlateRead
from edge.voting import Consensus, vote


class TrackerConfig(Section):
    close_after_s: float = Field(1.5, gt=0, description=(
        "A track not seen for this long is closed; its passage is emitted unless it was emitted early."))
    confident_at: float = Field(0.995, gt=0, le=1, description=(
        "Consensus confidence at which a track counts as read: its passage is emitted early (see emit_early) "
        "and it is no longer re-read every frame."))
    emit_early: bool = Field(True, description=(
        "Emit a passage as soon as the track is confident (fast alerts) instead of when the vehicle has gone; "
        "the track then stays open but silent, so one vehicle still gives one passage."))
    min_frames: int = Field(3, ge=1, description=(
        "Observations a track needs before it yields a passage (shorter tracks are taken for false detections)."))
    min_confidence: float = Field(0.25, ge=0, le=1, description=(
        "A track whose consensus stays below this confidence gives no passage when it closes (false detections "
        "such as signs or lettering on a van read as garbage); such a passage could never be matched anyway."))
    min_chars: int = Field(4, ge=1, description=(
        "A track whose consensus has fewer characters gives no passage (a plate cut by the frame edge, or a "
        "far plate read as one or two characters)."))
    early_reads: int = Field(4, ge=1, description=(
        "Reads a track needs before its passage may be emitted early (fewer reads wait for the track to close)."))
    early_weight: float = Field(3.0, ge=0, description=(
        "Vote weight that the reads saying exactly the consensus must add up to before the passage may be "
        "emitted early (a read of a moving plate at least full_weight_width wide weighs 1, narrower or unmoved "
        "ones less): far, small plates are misread alike in consecutive frames, so their agreement alone must "
        "not settle a track before the plate has come closer."))
    max_match_distance: float = Field(1.0, gt=0, description=(
        "Largest distance, in plate widths, between a track's predicted position and a detection that can "
        "continue it (grows with frames missed in a row)."))
    max_size_change: float = Field(1.7, gt=1, description=(
        "Largest ratio between a detection's width and the track's predicted or last width for them to be the "
        "same plate (grows with frames missed in a row)."))
    reread_every: int = Field(10, ge=1, description=(
        "A confidently read track is read again only every this many of its frames, to confirm it is still "
        "the same plate; the recognizer is skipped for it otherwise."))
    text_match_distance: int = Field(3, ge=0, description=(
        "Edit distance up to which a read counts as the same plate as a track's text; further apart, a "
        "confident read does not join the track."))
    full_weight_width: float = Field(80.0, ge=0, description=(
        "Plate width in pixels from which a read counts fully in the vote; reads of narrower plates count "
        "proportionally less (down to a third), as small plates are misread more often (0 = all count fully)."))
    rejoin_s: float = Field(10.0, ge=0, description=(
        "A plate whose text equals a passage closed less than this long ago continues that passage silently "
        "instead of giving a new one (a vehicle hidden for a moment, a plate that leaves and re-enters)."))
    max_reads: int = Field(40, ge=1, description=(
        "Reads kept per track for voting (the most confident ones); bounds memory for parked vehicles. A track "
        "read this often without getting confident is then re-read only every reread_every frames."))
    static_read_weight: float = Field(0.3, gt=0, le=1, description=(
        "Vote weight of a read of a plate that has not moved since the track's previous read (a parked or "
        "queued vehicle): such frames are nearly the same image, so their reads are not independent evidence and "
        "must not add up to a confident passage on their own."))
    static_move: float = Field(0.03, ge=0, description=(
        "Movement (of centre or width, as a share of the plate width) below which a plate counts as not moved "
        "since the previous read."))
    direction_ratio: float = Field(1.06, gt=1, description=(
        "Plate width growth (or shrink) over the observed frames, from a least-squares fit, that marks a "
        "vehicle as approaching (or receding); below it the vertical motion decides (cameras hang above plate "
        "height, approaching plates move down), and a plate that neither grows nor moves is 'unknown' (parked)."))
    max_tracks: int = Field(64, ge=1, description=(
        "Most tracks open at once (a traffic jam or a car park stays well below it); beyond it the track "
        "longest unseen is closed early. Bounds memory: a track may hold a few evidence frames."))


_VETO_CHAR_CONFIDENCE = 0.6  # a garbage read of a small or blurred plate must not end a track
# In the vote, a read also counts by how sure the recognizer was of it against the track's surest read
# (the ratio of their confidences to this power, floored): on a far or blurred plate the recognizer is
# still sure of single characters it gets wrong, and thirty such frames of a parked car must not outvote
# the few clear reads as it comes near. Reads of a track that are all alike unsure count as before.
_VOTE_CONFIDENCE_POWER = 0.5
_VOTE_CONFIDENCE_FLOOR = 0.05


def _vote_weights(reads: list[tuple[PlateRead, float]]) -> list[float]:
    """Each read's weight in the vote: its track weight times its confidence against the surest read's
    (see _VOTE_CONFIDENCE_POWER)."""
    best = max(max(float(r.confidence) for r, _ in reads), _VOTE_CONFIDENCE_FLOOR)
    return [w * (max(float(r.confidence), _VOTE_CONFIDENCE_FLOOR) / best) ** _VOTE_CONFIDENCE_POWER
            for r, w in reads]


def _center(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _width(box) -> float:
    return max(1.0, box[2] - box[0])


def _moved(a, b) -> float:
    """How far box b lies from box a: the larger of centre shift and width change, in plate widths."""
    wa = _width(a)
    (ax, ay), (bx, by) = _center(a), _center(b)
    return max(abs(bx - ax), abs(by - ay), abs(_width(b) - wa)) / wa


def _last_row(a: str, b: str, free_start: bool) -> list[int]:
    """Last row of the edit-distance table of a against b: entry j is the cost of turning a into
    b[:j], or (free_start) into a substring of b ending at j. Plates are short: the plain table is fast."""
    prev = [0] * (len(b) + 1) if free_start else list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance."""
    return _last_row(a, b, free_start=False)[-1]


def is_fragment(part: str, whole: str) -> bool:
    """Whether `part` is `whole` or a piece of it: a substring, or (shorter than `whole`) a substring with
    one character misread, dropped or added. A plate cut by the frame edge or half hidden behind another
    vehicle is read as such a piece; a different plate of the same length must not count, so only an
    exact match may be as long as `whole`."""
    if part in whole:
        return True
    if len(part) >= len(whole) or len(part) < 3:
        return False
    # edit distance from part to the best-matching substring of whole (free start and end in whole)
    return min(_last_row(part, whole, free_start=True)) <= 1


def _one_substitution(a: str, b: str) -> bool:
    """Same length, exactly one character different."""
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1


def _overlap_of_smaller(a, b) -> float:
    """Intersection area over the smaller box's area (1.0 when one box lies inside the other)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / max(smaller, 1e-9)


def _one_per_plate(observations: list[Observation]) -> list[Observation]:
    """Drop detections nested in another one of the same frame (a loose and a tight box of one plate,
    which IoU-based suppression keeps): two tracks would follow one plate and give two passages.
    The observation with the more confident read (then the higher detector score) stays."""
    def rank(o: Observation) -> tuple[float, float]:
        return (o.read.confidence if o.read is not None and o.read.text else -1.0, o.detection.score)

    kept: list[Observation] = []
    for o in sorted(observations, key=rank, reverse=True):
        if all(_overlap_of_smaller(o.detection.box, k.detection.box) < 0.7 for k in kept):
            kept.append(o)
    return kept


_BEST_TEXTS = 4  # best observation kept per read text, for this many texts (frames can be large)

@dataclass
class _Track:
    id: int
    first_ms: float
    first_utc: datetime
    last_ms: float
    last_utc: datetime
    box: tuple[float, float, float, float]
    velocity: tuple[float, float] = (0.0, 0.0)  # pixels per ms of the centre
    growth: float = 0.0  # change of log plate width per ms (approaching > 0)
    frames: int = 0
    misses: int = 0  # processed frames in a row without this track
    since_read: int = 0  # frames since the last read
    doubt: int = 0  # reads in a row that contradict the text of this silent track (another plate?)
    reads: list[tuple[PlateRead, float]] = field(default_factory=list)  # (read, weight), best max_reads kept
    n_reads: int = 0  # reads with text so far
    read_box: tuple[float, float, float, float] | None = None  # box at the last read with text
    sizes_first: list[tuple[float, float, float]] = field(default_factory=list)  # (mono_ms, width, centre y)
    sizes_last: deque = field(default_factory=lambda: deque(maxlen=20))  # the same for the latest frames
    best: dict[str, tuple[float, Observation]] = field(default_factory=dict)  # text -> best (score, observation)
    consensus: Consensus | None = None
    emitted: bool = False  # its passage is out; the track stays silent until it closes
    replaces: str = ""  # text of the silent track this one took over from (a contradicting read)

    def predict(self, mono_ms: float) -> tuple[float, float, float]:
        """Centre x, y and plate width expected at mono_ms (constant velocity and growth)."""
        dt = min(max(mono_ms - self.last_ms, 0.0), 1000.0)  # never extrapolate far (gated or stopped)
        cx, cy = _center(self.box)
        grow = math.exp(max(-0.7, min(0.7, self.growth * dt)))  # at most double or halve
        return cx + self.velocity[0] * dt, cy + self.velocity[1] * dt, _width(self.box) * grow


class PassageTracker:
    """Frames of observations in, vehicle passages out (see the module doc for when)."""

    def __init__(self, cfg: TrackerConfig):
        self.cfg = cfg
        self._tracks: list[_Track] = []
        self._recent: deque[tuple[str, float]] = deque(maxlen=256)  # (text, closed mono_ms) for rejoin_s
        self._next_id = 1
        self._now_ms = 0.0

    @property
    def active(self) -> int:
        """Open tracks (seen recently, including silent ones whose passage is out)."""
        return len(self._tracks)

    @property
    def settled(self) -> bool:
        """True when every open track is silent (its passage is out): on a frame where nothing moved the
        pipeline may then skip detection and not call `update` at all, and a parked car costs nothing."""
        return all(t.emitted for t in self._tracks)

    # --- association -------------------------------------------------------------------------------

    def _position_cost(self, t: _Track, det: Detection, mono_ms: float) -> float | None:
        """Distance in plate widths to the prediction, plus size change; None when out of the gate."""
        px, py, w_p = t.predict(mono_ms)
        cx, cy = _center(det.box)
        w_d = _width(det.box)
        w_l = _width(t.box)
        # detector boxes jitter by 10-20%: the width may match the prediction or the last width
        ratio = min(max(w_p, w_d) / min(w_p, w_d), max(w_l, w_d) / min(w_l, w_d))
        if ratio > self.cfg.max_size_change ** (1 + 0.5 * min(t.misses, 4)):
            return None
        # distance in widths of what was actually seen: an extrapolated width must not widen the gate
        dist = math.hypot(cx - px, cy - py) / max(w_l, w_d)
        gate = self.cfg.max_match_distance * (1 + 0.25 * min(t.misses, 4))  # at most twice as wide
        if dist > gate:
            return None
        return dist + math.log(ratio)

    def _text_cost(self, t: _Track, read: PlateRead | None) -> float | None:
        """Extra cost from text (0 when unknown); None when a read contradicts a track's fairly sure text.

        A veto keeps a neighbouring car from taking over a track, and tells a silent track that the
        plate at its spot changed (the next car pulled up). An unsure read does not veto, but it puts
        a silent track in doubt: it is read on every frame again, and a second contradicting read in
        a row vetoes however unsure it is (a new plate, first seen small, that a silent track picked
        up after a gap would otherwise be swallowed). A wrong veto costs little: the stray
        read starts a short track that stays below min_frames, or gets the same text and is kept
        silent as a duplicate.
        """
        if read is None or not read.text or t.consensus is None or not t.consensus.text:
            return 0.0
        d = edit_distance(read.text, t.consensus.text)
        # fairly sure: two reads said exactly this (garbage reads of a far plate rarely agree)
        sure = t.emitted or (t.consensus.confidence >= 0.9
                             and sum(r.text == t.consensus.text for r, _ in t.reads) >= 2)
        per_char = max(read.confidence, 0.0) ** (1 / len(read.text))  # long plates have lower whole-plate scores
        if sure and d > self.cfg.text_match_distance and (per_char >= _VETO_CHAR_CONFIDENCE or t.doubt):
            return None  # an unsure read may veto too when the read before it contradicted the silent track
        return 0.3 * min(d, 3)

    def wants_read(self, detection: Detection, frame: Frame) -> bool:
        """False only when the detection clearly continues a silent (confidently read) track that is not
        due a re-read: close to its prediction and within reach of no other track."""
        near = []
        for t in self._tracks:
            c = self._position_cost(t, detection, frame.mono_ms)
            if c is not None:
                near.append((c, t))
        if len(near) != 1:
            return True  # a new plate, or ambiguous between tracks: the read decides
        cost, t = near[0]
        if cost > 0.5 * self.cfg.max_match_distance:
            return True
        if not t.emitted and t.n_reads < self.cfg.max_reads:
            return True
        if t.doubt:
            return True  # its last read said another plate: read until that is settled either way
        # silent, or read max_reads times without getting confident (an unreadable parked plate)
        return t.since_read + 1 >= self.cfg.reread_every

    def update(self, frame: Frame, observations: list[Observation]) -> list[Passage]:
        """Add one processed frame's observations; returns the passages that this frame closed or made confident."""
        if frame.mono_ms < self._now_ms:
            self._shift_clock(frame.mono_ms - self._now_ms)
        self._now_ms = frame.mono_ms
        out: list[Passage] = []
        observations = _one_per_plate(observations)
        pairs = []
        vetoed: dict[int, tuple[float, int]] = {}  # observation -> (position cost, silent track it contradicts)
        for oi, obs in enumerate(observations):
            for ti, t in enumerate(self._tracks):
                c = self._position_cost(t, obs.detection, frame.mono_ms)
                if c is None:
                    continue
                tc = self._text_cost(t, obs.read)
                if tc is None:
                    if c < vetoed.get(oi, (math.inf, -1))[0]:
                        vetoed[oi] = (c, ti)
                    continue
                pairs.append((c + tc, oi, ti))
        pairs.sort()
        used_o: set[int] = set()
        used_t: set[int] = set()
        for _, oi, ti in pairs:
            if oi in used_o or ti in used_t:
                continue
            used_o.add(oi)
            used_t.add(ti)
            self._add(self._tracks[ti], observations[oi], frame)
        # a silent track contradicted by an unmatched read at its place has been replaced: end it
        replaced = {self._tracks[ti].id for oi, (_, ti) in vetoed.items()
                    if oi not in used_o and ti not in used_t and self._tracks[ti].emitted}
        # unmatched observations: rejoin a lost track by text, else start a new track
        for oi, obs in enumerate(observations):
            if oi in used_o:
                continue
            t = self._rejoin(obs, used_t)
            if t is None:
                t = self._new_track(obs)
                if oi in vetoed:
                    old = self._tracks[vetoed[oi][1]]
                    t.replaces = old.consensus.text if old.consensus is not None and old.emitted else ""
                self._tracks.append(t)
            used_t.add(self._tracks.index(t))
            self._add(t, obs, frame)

        for ti, t in enumerate(self._tracks):
            if ti not in used_t:
                t.misses += 1
        # early emission of confident tracks
        for t in self._tracks:
            if not t.emitted and self.cfg.emit_early and self._is_confident(t):
                p = self._emit(t)
                if p is not None:
                    out.append(p)
        # too many open tracks (detector clutter, a crowded car park): close the longest unseen first
        if len(self._tracks) > self.cfg.max_tracks:
            ranked = sorted(self._tracks, key=lambda t: (t.misses == 0, t.last_ms, t.frames))
            replaced |= {t.id for t in ranked[:len(self._tracks) - self.cfg.max_tracks]}
        # close tracks gone for close_after_s
        keep = []
        for t in self._tracks:
            if t.id in replaced or (t.misses > 0 and frame.mono_ms - t.last_ms >= self.cfg.close_after_s * 1000):
                p = self._close(t)
                if p is not None:
                    out.append(p)
            else:
                keep.append(t)
        self._tracks = keep
        return out

    def flush(self) -> list[Passage]:
        """Close every open track (end of a replay or shutdown) and return the passages not yet emitted."""
        out = [p for p in (self._close(t) for t in self._tracks) if p is not None]
        self._tracks = []
        self._recent.clear()
        return out

    # --- internals ---------------------------------------------------------------------------------

    def _shift_clock(self, delta_ms: float) -> None:
        """The monotonic clock went back (a restarted source or replay): move every stored time by
        delta_ms, so the last frame seen counts as now. Tracks then close close_after_s later as usual
        instead of staying open until the clock catches up again, and rejoin_s keeps its meaning."""
        for t in self._tracks:
            t.first_ms += delta_ms
            t.last_ms += delta_ms
            t.sizes_first = [(ms + delta_ms, w, y) for ms, w, y in t.sizes_first]
            t.sizes_last = deque(((ms + delta_ms, w, y) for ms, w, y in t.sizes_last), maxlen=t.sizes_last.maxlen)
        self._recent = deque(((text, ms + delta_ms) for text, ms in self._recent), maxlen=self._recent.maxlen)

    def _new_track(self, obs: Observation) -> _Track:
        t = _Track(id=self._next_id, first_ms=obs.mono_ms, first_utc=obs.utc, last_ms=obs.mono_ms,
                   last_utc=obs.utc, box=obs.detection.box)
        self._next_id += 1
        return t

    def _rejoin(self, obs: Observation, used_t: set[int]) -> _Track | None:
        """A lost track whose text the observation's read matches (re-entry after leaving the view)."""
        r = obs.read
        if r is None or not r.text or r.confidence < 0.5:
            return None
        best, best_d = None, self.cfg.text_match_distance // 2 + 1
        for ti, t in enumerate(self._tracks):
            if ti in used_t or t.misses == 0 or t.consensus is None:
                continue
            d = edit_distance(r.text, t.consensus.text)
            if d < best_d:
                best, best_d = t, d
        return best

    def _add(self, t: _Track, obs: Observation, frame: Frame) -> None:
        det = obs.detection
        dt = obs.mono_ms - t.last_ms
        if t.frames > 0 and 0 < dt <= 1000 and t.misses <= 2:
            (ox, oy), (nx, ny) = _center(t.box), _center(det.box)
            v = ((nx - ox) / dt, (ny - oy) / dt)
            g = math.log(_width(det.box) / _width(t.box)) / dt
            if t.frames > 1:
                v = (0.5 * t.velocity[0] + 0.5 * v[0], 0.5 * t.velocity[1] + 0.5 * v[1])
                g = 0.7 * t.growth + 0.3 * g  # widths jitter more than positions: smooth harder
            t.velocity, t.growth = v, g
        elif t.misses > 2:
            t.velocity, t.growth = (0.0, 0.0), 0.0
        t.box = det.box
        t.last_ms, t.last_utc = obs.mono_ms, obs.utc
        t.frames += 1
        t.misses = 0
        w = _width(det.box)
        sample = (obs.mono_ms, w, _center(det.box)[1])
        if len(t.sizes_first) < 20:
            t.sizes_first.append(sample)
        else:
            t.sizes_last.append(sample)
        if obs.read is None:
            t.since_read += 1
            return
        t.since_read = 0
        if not obs.read.text:
            return
        if t.emitted and t.consensus is not None:
            far = edit_distance(obs.read.text, t.consensus.text) > self.cfg.text_match_distance
            t.doubt = t.doubt + 1 if far else 0
        fw = self.cfg.full_weight_width
        weight = 1.0 if fw <= 0 else min(1.0, max(1 / 3, w / fw))
        if t.read_box is not None and _moved(t.read_box, det.box) < self.cfg.static_move:
            weight *= self.cfg.static_read_weight
        t.read_box = det.box
        t.reads.append((obs.read, weight))
        t.n_reads += 1
        if len(t.reads) > self.cfg.max_reads:
            t.reads.remove(min(t.reads, key=lambda rw: rw[0].confidence))
        if t.emitted:
            return  # the passage is out: no new consensus, and no evidence kept (a parked car must not hold frames)
        score = obs.read.confidence * min(1.0, w / 200.0) ** 0.25
        text = obs.read.text
        if text not in t.best or score > t.best[text][0]:
            t.best[text] = (score, obs)
            if len(t.best) > _BEST_TEXTS:
                del t.best[min(t.best, key=lambda k: t.best[k][0])]
        t.consensus = vote([r for r, _ in t.reads], _vote_weights(t.reads))

    def _is_confident(self, t: _Track) -> bool:
        c = t.consensus
        # early only for a text a known grammar accepts: a reader that drops a character does so
        # consistently, and "RJZ02" from four frames would otherwise go out as a confident passage
        # and only when two reads said exactly this: real misreads are correlated (the same glyph read
        # the same wrong way), so a vote stitched from different misreads can look surer than it is
        if c is None or len(t.reads) < max(self.cfg.early_reads, self.cfg.min_frames):
            return False
        agreeing = [w for r, w in t.reads if r.text == c.text]
        return (c.confidence >= self.cfg.confident_at and c.valid
                and len(agreeing) >= 2 and sum(agreeing) >= self.cfg.early_weight)

    def _direction(self, t: _Track) -> Direction:
        """Approaching when the plate grows, receding when it shrinks (least-squares fit of log width).

        When the growth is too small to tell (a far, slow vehicle in its first frames), the plate's
        vertical motion decides: cameras hang above plate height, so approaching plates move down.
        """
        last_first = t.sizes_first[-1][0] if t.sizes_first else -1.0
        samples = t.sizes_first + [s for s in t.sizes_last if s[0] > last_first]
        if len(samples) < 3:
            return "unknown"
        a = np.array(samples, dtype=np.float64)
        ts = (a[:, 0] - a[0, 0]) / 1000.0
        span = ts[-1]
        if span <= 0:
            return "unknown"
        slope = float(np.polyfit(ts, np.log(a[:, 1]), 1)[0])
        if math.exp(abs(slope) * span) >= self.cfg.direction_ratio:
            return "approaching" if slope > 0 else "receding"
        dy = float(np.polyfit(ts, a[:, 2], 1)[0]) * span / float(np.median(a[:, 1]))
        if abs(dy) >= 0.3:  # moved at least 0.3 plate widths up or down
            return "approaching" if dy > 0 else "receding"
        return "unknown"

    def _emit_passage(self, t: _Track) -> Passage | None:
        """Mark the track's passage as out; None when the same plate was just reported (rejoin)."""
        t.emitted = True
        c = t.consensus
        if c is None:
            return None
        horizon = self._now_ms - self.cfg.rejoin_s * 1000
        # the same plate again, or a part of it (the plate cut by the frame edge as the vehicle leaves)
        if any(is_fragment(c.text, text) and ms >= horizon for text, ms in self._recent):
            return None
        for o in self._tracks:  # a split of another track that is still open: the same plate, partly hidden
            oc = o.consensus
            if o is t or oc is None:
                continue
            if (o.emitted and oc.confidence > c.confidence and _one_substitution(c.text, oc.text)
                    and _overlap_of_smaller(t.box, o.box) >= 0.5):
                return None  # the reported plate, read one character off by a second track on its box
            if not is_fragment(c.text, oc.text):
                continue
            if o.emitted or (len(oc.text) > len(c.text) and oc.confidence >= self.cfg.min_confidence):
                return None
        if t.replaces and edit_distance(t.replaces, c.text) <= 1:
            return None  # the contradicting read was a misread: still the vehicle already reported
        return self._passage(t, c)

    def _emit(self, t: _Track) -> Passage | None:
        try:
            return self._emit_passage(t)
        finally:
            t.best.clear()  # the evidence (crops, maybe full frames) is not needed once the passage is out

    def _close(self, t: _Track) -> Passage | None:
        p = None
        if (not t.emitted and t.consensus is not None and t.frames >= self.cfg.min_frames
                and t.consensus.confidence >= self.cfg.min_confidence
                and len(t.consensus.text) >= self.cfg.min_chars):
            p = self._emit(t)
        if t.emitted and t.consensus is not None:
            self._recent.append((t.consensus.text, self._now_ms))
        return p

    def _passage(self, t: _Track, c: Consensus) -> Passage:
        # the evidence shows what the passage says: the best observation read as the consensus text,
        # else as the nearest text (a read several characters off may be another vehicle's plate)
        best = None
        if t.best:
            text = min(t.best, key=lambda k: (edit_distance(k, c.text), -t.best[k][0]))
            best = t.best[text][1]
        return Passage(
            track_id=t.id, text=c.text, formatted=c.formatted, country=c.country, confidence=c.confidence,
            char_confidences=c.char_confidences, alternatives=c.alternatives,
            first_seen_ms=t.first_ms, last_seen_ms=t.last_ms, first_seen_utc=t.first_utc, last_seen_utc=t.last_utc,
            frames=t.frames, direction=self._direction(t),
            best_crop=best.crop if best is not None else None,
            best_frame=best.frame if best is not None else None,
        )
