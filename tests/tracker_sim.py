"""Synthetic observations from ground truth plus realistic recognizer noise, for tracker/voting tests.

Noise follows what plate readers get wrong: look-alike swaps (0/D, 8/B, 2/Z ...), random wrong
characters, a dropped or doubled character, empty reads, missed detections and lower confidence
on wrong characters (but not always: some wrong characters come with high confidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from edge import grammar
from edge.types import Detection, Frame, Observation, PlateRead

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
LOOK = {"0": "DO", "O": "0D", "D": "0O", "1": "I", "I": "1", "2": "Z", "Z": "2", "5": "S", "S": "5",
        "8": "B", "B": "8", "6": "G", "G": "6", "4": "A", "A": "4", "H": "N", "N": "H", "M": "N", "R": "P", "P": "R"}
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def random_nl_plate(rng: np.random.Generator) -> str:
    """A valid modern Dutch plate text, drawn via the project grammar."""
    while True:
        sc = int(rng.integers(4, 15))
        text = "".join(rng.choice(list(grammar.nl_allowed(sc, i).replace("O", ""))) for i in range(6))
        if grammar.is_valid_nl(text):
            return text


@dataclass
class Noise:
    char_error: float = 0.08  # per character
    length_error: float = 0.04  # per read: drop or double a character
    empty: float = 0.03  # per read: nothing readable
    wrong_conf_high: float = 0.2  # share of wrong characters that still get a high confidence


def noisy_read(rng: np.random.Generator, truth: str, noise: Noise, country: str = "") -> PlateRead:
    if rng.random() < noise.empty:
        return PlateRead(text="", formatted="", country="", confidence=0.05)
    chars, confs = [], []
    for c in truth:
        if rng.random() < noise.char_error:
            w = rng.choice(list(LOOK[c])) if c in LOOK and rng.random() < 0.7 else rng.choice(list(ALNUM.replace(c, "")))
            chars.append(str(w))
            confs.append(float(rng.uniform(0.75, 0.97) if rng.random() < noise.wrong_conf_high else rng.uniform(0.25, 0.7)))
        else:
            chars.append(c)
            confs.append(float(rng.uniform(0.7, 0.995)))
    if rng.random() < noise.length_error:
        i = int(rng.integers(0, len(chars)))
        if rng.random() < 0.5:
            del chars[i], confs[i]
        else:
            chars.insert(i, chars[i])
            confs.insert(i, float(rng.uniform(0.3, 0.8)))
    text = "".join(chars)
    conf = float(np.prod(confs)) if confs else 0.0
    return PlateRead(text=text, formatted=text, country=country, confidence=conf, char_confidences=tuple(confs))


def frame_at(index: int, fps: float, shape=(480, 640)) -> Frame:
    ms = index * 1000.0 / fps
    return Frame(image=np.zeros((*shape, 3), np.uint8), index=index, mono_ms=ms, utc=T0 + timedelta(milliseconds=ms))


def detection(cx: float, cy: float, w: float) -> Detection:
    h = w * 0.22
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    return Detection(box=box, corners=((box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])), score=0.9)


@dataclass
class SimCar:
    """A plate moving linearly between two points, growing or shrinking, over a frame range."""

    text: str
    start: int
    end: int  # last frame index (inclusive)
    p0: tuple[float, float]
    p1: tuple[float, float]
    w0: float
    w1: float
    hidden: frozenset[int] = frozenset()  # frames where the detector misses it

    def at(self, i: int) -> Detection | None:
        if i < self.start or i > self.end or i in self.hidden:
            return None
        f = (i - self.start) / max(1, self.end - self.start)
        jitter = 1 + 0.02 * np.sin(i * 2.3)  # detector boxes wobble by a few percent
        return detection(self.p0[0] + f * (self.p1[0] - self.p0[0]), self.p0[1] + f * (self.p1[1] - self.p0[1]),
                         (self.w0 + f * (self.w1 - self.w0)) * jitter)


def run(tracker, cars: list[SimCar], frames: int, fps: float, rng: np.random.Generator, noise: Noise,
        country: str = "", miss: float = 0.0):
    """Drive the tracker as the pipeline does; returns (passages, reads done, reads skipped)."""
    passages, reads, skipped = [], 0, 0
    for i in range(frames):
        fr = frame_at(i, fps)
        obs = []
        for car in cars:
            det = car.at(i)
            if det is None or rng.random() < miss:
                continue
            read = None
            if tracker.wants_read(det, fr):
                read = noisy_read(rng, car.text, noise, country)
                reads += 1
            else:
                skipped += 1
            obs.append(Observation(detection=det, read=read, frame_index=i, mono_ms=fr.mono_ms, utc=fr.utc,
                                   crop=np.zeros((20, 90, 3), np.uint8) if read is not None else None))
        passages += tracker.update(fr, obs)
    passages += tracker.flush()
    return passages, reads, skipped


def run_scene(tracker, scene, rng: np.random.Generator, min_width: float = 40.0):
    """Drive the tracker with the plates of a rendered-video scene (scripts/make_test_videos.py), frame by
    frame, as a detector would see them: hidden behind nearer cars or occluders, lost in blurred frames,
    below `min_width`, with jittered corners; reads get more noise on small or glared plates."""
    from make_test_videos import _covered, _in, plate_corners

    passages = []
    for i in range(int(round(scene.duration_s * scene.fps))):
        t = i / scene.fps
        fr = Frame(image=np.zeros((1, 1, 3), np.uint8), index=i, mono_ms=t * 1000, utc=T0 + timedelta(seconds=t))
        obs = []
        for v in scene.vehicles:
            z = v.z_at(t)
            if z is None:
                continue
            c = plate_corners(scene, v, z)
            rel = t - v.start_s
            if _covered(scene, v, z, c, t) or _in(rel, v.hidden_s) or (i in scene.blur_frames and rng.random() < 0.5):
                continue
            if c[:, 0].min() < 0 or c[:, 1].min() < 0 or c[:, 0].max() >= scene.width or c[:, 1].max() >= scene.height:
                continue
            w = c[1, 0] - c[0, 0]
            if w < min_width:
                continue
            c = c + rng.normal(0, 1.5, (4, 2))
            box = (c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max())
            det = Detection(box=box, corners=tuple(map(tuple, c)), score=0.9)
            read = None
            if tracker.wants_read(det, fr):
                err = 0.3 if _in(rel, v.glare_s) else 0.05 if w > 70 else 0.12
                read = noisy_read(rng, v.plate.text, Noise(char_error=err), v.plate.country)
            obs.append(Observation(detection=det, read=read, frame_index=i, mono_ms=fr.mono_ms, utc=fr.utc))
        passages += tracker.update(fr, obs)
    return passages + tracker.flush()
