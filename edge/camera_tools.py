"""Technician commands for mounting and aiming the camera: `anpr-edge camera snapshot` and `camera aim`.

`snapshot` saves one frame with the detected plates drawn on it; with `-o -` it writes the JPEG to
stdout (to be carried over ssh to the technician's laptop) so the frame never touches the unit's
storage, and it warns when told to write a file that is not in RAM. `aim` prints live figures while
the technician turns and focuses the camera: plate width in pixels, sharpness (variance of the
Laplacian of the plate crop), how far plates lean (the camera's roll), exposure (mean grey and
clipped share) and the read rate over the last vehicles, with advice when a figure is out of range.

Privacy: by default neither command shows what a plate says, only counts and sizes. The plate
texts appear on the technician's own terminal (or in the snapshot) only with --show-text; they
are never logged or written anywhere else.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from edge.paths import default_models_dir
from edge.plate_lean import lean_degrees, roll_argument
from edge.sources import DEFAULT_READ_TIMEOUT_S, FrameSource, SourceError, make_source
from edge.types import Detection, Frame, Observation, Passage, PlateRead, Point

SHARPNESS_WIDTH = 160  # crops are scaled to this width first, so sharpness compares across zoom levels
DEFAULT_TIMEOUT_S = 15.0  # a camera that sends no frame this long is reported unreachable, not waited for


# ----- measurements ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Targets:
    """Ranges a roadside camera should reach; outside them `advise` says what to change."""

    width_min: float = 100.0  # plate width in pixels where reading is reliable
    width_max: float = 200.0  # wider wastes field of view: the lane may no longer fit
    ignored_below: float = 40.0  # detection.min_plate_width: the daemon ignores narrower plates
    sharpness_min: float = 60.0  # variance of the Laplacian at SHARPNESS_WIDTH; motion blur or defocus below
    tilt_max: float = 8.0  # degrees a plate may lean: read as well as level ones up to here (scripts/eval_turned_reads.py)
    plate_mean_min: float = 60.0  # mean grey of plate crops
    plate_mean_max: float = 200.0
    clipped_max: float = 0.05  # share of frame pixels at 250..255
    black_max: float = 0.30  # share of frame pixels at 0..5
    read_rate_min: float = 0.8  # of the last vehicles, share read confidently
    min_vehicles: int = 5  # read rate advice only from this many vehicles on
    min_read_confidence: float = 0.5  # a vehicle counts as read from this passage confidence on


def plate_width(det: Detection) -> float:
    """Width in pixels along the plate's top and bottom edges (not the axis-aligned box of a tilted plate)."""
    (tlx, tly), (trx, try_), (brx, bry), (blx, bly) = det.corners
    return float(max(np.hypot(trx - tlx, try_ - tly), np.hypot(brx - blx, bry - bly)))


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of a plate crop scaled to SHARPNESS_WIDTH px wide (higher is sharper)."""
    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    h, w = crop.shape[:2]
    if w < 2 or h < 2:
        return 0.0
    nh = max(2, round(h * SHARPNESS_WIDTH / w))
    scaled = cv2.resize(crop, (SHARPNESS_WIDTH, nh), interpolation=cv2.INTER_AREA if w > SHARPNESS_WIDTH
                        else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(scaled, cv2.CV_64F).var())


@dataclass(frozen=True)
class Exposure:
    mean: float  # mean grey 0..255
    clipped: float  # share of pixels at 250..255 (blown out)
    black: float  # share of pixels at 0..5


def exposure(image: np.ndarray) -> Exposure:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    hist = cv2.calcHist([grey], [0], None, [256], [0, 256]).ravel()
    n = max(float(hist.sum()), 1.0)
    return Exposure(mean=float(grey.mean()), clipped=float(hist[250:].sum() / n), black=float(hist[:6].sum() / n))


def inside(polygon: Sequence[Point] | None, det: Detection) -> bool:
    if not polygon:
        return True
    cx, cy = (det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2
    return cv2.pointPolygonTest(np.asarray(polygon, np.float32), (float(cx), float(cy)), False) >= 0


@dataclass(frozen=True, eq=False)
class PlateFigures:
    """One detected plate in one frame. `read` holds text: shown only with --show-text."""

    detection: Detection
    width: float
    sharpness: float
    mean: float
    used: bool  # inside the ROI and wide enough: the daemon would read it
    read: PlateRead | None = None
    tilt: float = 0.0  # degrees the plate leans, clockwise on screen positive (edge.plate_lean)


@dataclass
class Report:
    """What `aim` prints: figures of the recent frames and vehicles, and advice. No plate text
    unless `texts` was filled on request."""

    frames: int
    fps: float
    frame_size: tuple[int, int]
    plates: int  # plates in the recent window
    plates_ignored: int  # of those, outside the ROI or too narrow for the daemon
    width_px: dict | None  # median/min/max
    sharpness: float | None  # median
    tilt_deg: float | None  # median lean of the plates, clockwise on screen positive
    roll_deg: float  # camera.roll_degrees the frames were searched with (turned level by this much)
    plate_mean: float | None  # median mean grey of the plate crops
    exposure_mean: float
    clipped: float
    black: float
    vehicles: int  # of the last N vehicle passages
    vehicles_read: int
    read_rate: float | None
    advice: list[str]
    texts: list[str] | None = None  # vehicle texts, only when asked for with --show-text

    def as_dict(self) -> dict:
        d = asdict(self)
        if self.texts is None:
            d.pop("texts")
        return d

    def lines(self) -> list[str]:
        w, h = self.frame_size
        out = [f"frames {self.frames}  {self.fps:.1f} frames/s  {w}x{h}",
               f"exposure: mean grey {self.exposure_mean:.0f}, clipped {self.clipped:.1%}, black {self.black:.1%}"]
        if self.width_px is None:
            out.append("plates: none in the recent frames")
        else:
            out.append(f"plates: {self.plates} in the recent frames ({self.plates_ignored} ignored: outside ROI "
                       f"or too narrow); width {self.width_px['median']:.0f} px (min {self.width_px['min']:.0f}, "
                       f"max {self.width_px['max']:.0f})")
            rolled = f" (camera.roll_degrees {self.roll_deg:+g})" if self.roll_deg else ""
            out.append(f"plate sharpness {self.sharpness:.0f}, plate lean {self.tilt_deg:+.1f} deg{rolled}, "
                       f"plate mean grey {self.plate_mean:.0f}")
        if self.vehicles:
            out.append(f"read rate: {self.vehicles_read} of the last {self.vehicles} vehicles "
                       f"({self.read_rate:.0%})")
        else:
            out.append("read rate: no vehicle passages yet")
        out.extend(f"  vehicle: {t}" for t in self.texts or ())
        out.extend(f"advice: {a}" for a in self.advice)
        return out


def advise(width: float | None, sharp: float | None, plate_mean: float | None, exp: Exposure,
           vehicles: int, read: int, frames_without_plates: int, t: Targets,
           tilt: float | None = None, roll: float = 0.0) -> list[str]:
    """Plain-language advice for the figures out of range, most important first."""
    out: list[str] = []
    if width is None:
        if frames_without_plates >= 20:
            out.append(f"no plates seen in the last {frames_without_plates} frames: check that the camera "
                       "looks at the lane (and that the ROI covers it)")
    elif width < t.width_min:
        extra = (f"; below {t.ignored_below:.0f} px the unit ignores them" if width < t.ignored_below else "")
        out.append(f"plates are {width:.0f} px wide: zoom in to reach {t.width_min:.0f}-{t.width_max:.0f} px{extra}")
    elif width > t.width_max:
        out.append(f"plates are {width:.0f} px wide: zoom out to {t.width_min:.0f}-{t.width_max:.0f} px "
                   "so the whole lane stays in view")
    if sharp is not None and sharp < t.sharpness_min:
        out.append(f"plates are blurred (sharpness {sharp:.0f}, want at least {t.sharpness_min:.0f}): "
                   "focus on the plates, or shorten the exposure time against motion blur")
    if tilt is not None and abs(tilt - roll) > t.tilt_max:
        # a camera's roll is fixed where it is mounted: the unit can search its frames turned level
        side = "clockwise" if tilt > 0 else "anticlockwise"
        now = f", camera.roll_degrees undoes {roll:g}" if roll else ""
        out.append(f"plates lean {abs(tilt):.0f} degrees {side} on screen{now} (want at most {t.tilt_max:.0f} "
                   f"left over): set camera.roll_degrees: {tilt:.0f} so frames are searched turned level, or level "
                   "the camera's roll")
    if plate_mean is not None and plate_mean < t.plate_mean_min:
        out.append(f"plates are dark (mean grey {plate_mean:.0f}, want {t.plate_mean_min:.0f}-{t.plate_mean_max:.0f}): "
                   "raise exposure or gain, open the iris, or add infrared light")
    elif plate_mean is not None and plate_mean > t.plate_mean_max:
        out.append(f"plates are too bright (mean grey {plate_mean:.0f}, want {t.plate_mean_min:.0f}-"
                   f"{t.plate_mean_max:.0f}): lower exposure or gain, or the infrared light")
    if exp.clipped > t.clipped_max:
        out.append(f"{exp.clipped:.0%} of the frame is blown out white: lower the exposure, or keep sky and "
                   "headlights out of view")
    if exp.black > t.black_max:
        out.append(f"{exp.black:.0%} of the frame is black: raise exposure or gain, or add light")
    if vehicles >= t.min_vehicles and read / vehicles < t.read_rate_min:
        out.append(f"only {read} of the last {vehicles} vehicles were read ({read / vehicles:.0%}, want "
                   f"{t.read_rate_min:.0%}): fix the figures above, or reduce the angle to the plates")
    if not out and width is not None:
        out.append("all figures in range")
    return out


# ----- the aiming loop ----------------------------------------------------------------------------

class Aimer:
    """Runs detection, reading and tracking on frames as the daemon would, and keeps the figures.

    Unlike the daemon it measures every plate, also those it would ignore (outside the ROI or too
    narrow), because those are what the technician must fix.
    """

    def __init__(self, detector, recognizer, tracker, *, roi: Sequence[Point] | None = None, roll: float = 0.0,
                 min_score: float = 0.4, targets: Targets = Targets(), window: int = 25, vehicles: int = 20):
        self.detector = detector
        self.recognizer = recognizer
        self.tracker = tracker
        self.roi = list(roi) if roi else None
        self.roll = float(roll)  # camera.roll_degrees: frames are searched turned level, as the daemon does
        self.min_score = min_score
        self.targets = targets
        self.plates: deque[list[PlateFigures]] = deque(maxlen=window)  # per recent frame
        self.passages: deque[Passage] = deque(maxlen=vehicles)
        self.frames = 0
        self.frames_without_plates = 0
        self.last_exposure = Exposure(0.0, 0.0, 0.0)
        self.frame_size = (0, 0)
        self._times: deque[float] = deque(maxlen=window)

    def measure(self, frame: Frame) -> list[PlateFigures]:
        """Figures of every plate in the frame (reading those the daemon would read)."""
        image = frame.image
        out = []
        observations = []
        for det in self.detector.detect(image, roll=self.roll):
            if det.score < self.min_score:
                continue
            try:
                crop = self.recognizer.rectify(image, det.corners)
            except ValueError:  # degenerate corners: too small to measure
                continue
            width = plate_width(det)
            # the daemon's own rule (edge/pipeline.py): inside the ROI and box width >= min_plate_width
            used = inside(self.roi, det) and (det.box[2] - det.box[0]) >= self.targets.ignored_below
            read = None
            if used and self.tracker.wants_read(det, frame):
                read = self.recognizer.read_crop(crop)
            grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
            out.append(PlateFigures(det, width, sharpness(grey), float(grey.mean()), used, read,
                                    lean_degrees(image, det.box)))
            if used:
                observations.append(Observation(detection=det, read=read, frame_index=frame.index,
                                                mono_ms=frame.mono_ms, utc=frame.utc))
        self.passages.extend(self.tracker.update(frame, observations))
        return out

    def process(self, frame: Frame) -> list[PlateFigures]:
        plates = self.measure(frame)
        self.frames += 1
        self.frame_size = (frame.image.shape[1], frame.image.shape[0])
        self.last_exposure = exposure(frame.image)
        self.plates.append(plates)
        self.frames_without_plates = 0 if plates else self.frames_without_plates + 1
        self._times.append(time.monotonic())
        return plates

    def finish(self) -> None:
        """Close the open tracks (end of a file), so their vehicles count in the read rate."""
        self.passages.extend(self.tracker.flush())

    def report(self, show_text: bool = False) -> Report:
        recent = [p for plates in self.plates for p in plates]
        widths = [p.width for p in recent]
        width = statistics.median(widths) if widths else None
        sharp = statistics.median(p.sharpness for p in recent) if recent else None
        tilt = statistics.median(p.tilt for p in recent) if recent else None
        pmean = statistics.median(p.mean for p in recent) if recent else None
        t = self.targets
        read = sum(1 for p in self.passages if p.text and p.confidence >= t.min_read_confidence)
        n = len(self.passages)
        fps = (len(self._times) - 1) / (self._times[-1] - self._times[0]) if len(self._times) > 1 and \
            self._times[-1] > self._times[0] else 0.0
        exp = self.last_exposure
        return Report(
            frames=self.frames, fps=round(fps, 2), frame_size=self.frame_size, plates=len(recent),
            plates_ignored=sum(1 for p in recent if not p.used),
            width_px=None if width is None else {"median": round(width, 1), "min": round(min(widths), 1),
                                                 "max": round(max(widths), 1)},
            sharpness=None if sharp is None else round(sharp, 1),
            tilt_deg=None if tilt is None else round(tilt, 1), roll_deg=self.roll,
            plate_mean=None if pmean is None else round(pmean, 1),
            exposure_mean=round(exp.mean, 1), clipped=round(exp.clipped, 4), black=round(exp.black, 4),
            vehicles=n, vehicles_read=read, read_rate=None if n == 0 else round(read / n, 3),
            advice=advise(width, sharp, pmean, exp, n, read, self.frames_without_plates, t, tilt, self.roll),
            texts=[f"{p.formatted or '(unread)'} {p.country or '?'} {p.confidence:.2f}" for p in self.passages]
            if show_text else None,
        )


# ----- drawing -------------------------------------------------------------------------------------

def draw(image: np.ndarray, plates: list[PlateFigures], roi: Sequence[Point] | None, targets: Targets,
         show_text: bool = False) -> np.ndarray:
    """The frame with the ROI and every plate: green in range, orange out of range, grey ignored."""
    out = image.copy()
    if roi:
        cv2.polylines(out, [np.round(np.asarray(roi)).astype(np.int32)], True, (0, 255, 255), 2)
    scale = max(out.shape[1] / 960, 0.6)
    for p in plates:
        ok = targets.width_min <= p.width <= targets.width_max and p.sharpness >= targets.sharpness_min
        color = (160, 160, 160) if not p.used else (0, 200, 0) if ok else (0, 140, 255)
        quad = np.round(np.asarray(p.detection.corners)).astype(np.int32)
        cv2.polylines(out, [quad], True, color, max(1, round(2 * scale)))
        label = f"{p.width:.0f}px s{p.sharpness:.0f}"
        if show_text and p.read is not None and p.read.text:
            label = f"{p.read.formatted} {label}"
        x, y = int(quad[:, 0].min()), int(quad[:, 1].min()) - 6
        _text(out, label, (x, max(y, int(40 * scale))), scale, color)
    exp = exposure(image)
    band = out[: int(32 * scale)]
    band[:] = (band * 0.4).astype(np.uint8)  # darken the top strip so the header reads on any sky
    _text(out, f"{len(plates)} plate(s)  exposure: mean {exp.mean:.0f}, clipped {exp.clipped:.1%}, "
               f"black {exp.black:.1%}", (int(8 * scale), int(22 * scale)), scale, (255, 255, 255))
    return out


def _text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, color) -> None:
    """Text with a dark outline, readable on any background."""
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), max(3, round(4 * scale)),
                cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, color, max(1, round(1.5 * scale)),
                cv2.LINE_AA)


# ----- command line -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """What both commands need, from a config file or from flags."""

    source: str
    width: int | None
    height: int | None
    models: Path
    threads: int
    min_score: float
    roi: list[Point] | None
    roll: float  # camera.roll_degrees, or --roll
    targets: Targets
    tracking: object | None


def _source_string(value: str) -> str:
    """A --source value: a config-style source, or a plain path to a video file or image folder."""
    if ":" in value.split("/", 1)[0] and not Path(value).exists():
        return value
    return f"file:{Path(value).resolve()}"


def setup_from_args(args) -> Setup:
    targets = Targets(width_min=args.width_min, width_max=args.width_max)
    if args.config:
        from edge.config import load_config  # imported late: the full config needs every module's section

        cfg = load_config(args.config)
        models = Path(args.models) if args.models else cfg.models.dir
        targets = Targets(width_min=args.width_min, width_max=args.width_max,
                          ignored_below=cfg.detection.min_plate_width,
                          min_read_confidence=cfg.detection.min_read_confidence)
        return Setup(source=_source_string(args.source) if args.source else cfg.camera.source,
                     width=cfg.camera.width, height=cfg.camera.height, models=models,
                     threads=args.threads if args.threads is not None else cfg.models.threads,
                     min_score=args.min_score if args.min_score is not None else cfg.detection.min_score,
                     roi=[tuple(p) for p in cfg.camera.roi] if cfg.camera.roi else None,
                     roll=args.roll if args.roll is not None else cfg.camera.roll_degrees,
                     targets=targets, tracking=cfg.tracking)
    if not args.source:
        print("anpr-edge camera: give --config FILE or --source URL", file=sys.stderr)
        raise SystemExit(2)  # a usage error, like argparse's own
    return Setup(source=_source_string(args.source), width=None, height=None,
                 models=Path(args.models) if args.models else default_models_dir(),
                 threads=args.threads if args.threads is not None else 1,
                 min_score=args.min_score if args.min_score is not None else 0.4, roi=None,
                 roll=args.roll if args.roll is not None else 0.0,
                 targets=targets, tracking=None)


def load_stages(setup: Setup):
    from edge.factory import load_models
    from edge.tracker import PassageTracker, TrackerConfig

    detector, recognizer = load_models(setup.models, threads=setup.threads)
    return detector, recognizer, PassageTracker(setup.tracking or TrackerConfig())


def frames(source: FrameSource, limit: int = 0, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[Frame]:
    """Frames until the source ends, `limit` frames were given (0 = no limit), or Ctrl-C.

    A live camera is read in the background keeping only the newest frame, so the figures follow
    the camera as it is turned instead of lagging behind a backlog; a dropped stream is reopened,
    but a camera that gives no frame for `timeout` seconds (0 = wait for ever) is a SourceError:
    the technician needs to hear that it is unreachable, not wait at a silent prompt.
    A file gives every frame in order."""
    if source.live:
        yield from _live_frames(source, limit, timeout)
        return
    source.open()
    try:
        n = 0
        while limit <= 0 or n < limit:
            frame = source.read()
            if frame is None:
                return
            yield frame
            n += 1
    finally:
        source.close()


def _live_frames(source: FrameSource, limit: int, timeout: float) -> Iterator[Frame]:
    from edge.capture import Capture

    def say(state: str, error: str) -> None:
        print(f"camera {state}{': ' + error if error else ''}", file=sys.stderr, flush=True)

    capture = Capture(source, queue_size=1, backoff_initial_s=1.0, backoff_max_s=5.0, on_state=say).start()
    try:
        n = 0
        deadline = time.monotonic() + timeout
        while limit <= 0 or n < limit:
            frame = capture.get(timeout=1.0 if timeout <= 0 else max(0.0, min(1.0, deadline - time.monotonic())))
            if frame is None:
                if capture.ended:
                    return
                if timeout > 0 and time.monotonic() >= deadline:
                    # the label (and the error) have the URL's credentials masked already
                    reason = capture.stats.last_error.removeprefix(f"{source.label}: ")
                    raise SourceError(f"{source.label}: no frame within {timeout:g} s "
                                      f"({'last error: ' + reason if reason else 'the camera does not answer'})")
                continue
            yield frame
            n += 1
            deadline = time.monotonic() + timeout  # from when the next frame is asked for
    finally:
        capture.stop()


def open_source(setup: Setup, timeout: float = DEFAULT_TIMEOUT_S) -> FrameSource:
    """The camera or file; a camera's single open or read gives up within `timeout` too (at most 10 s)."""
    read_timeout = min(DEFAULT_READ_TIMEOUT_S, timeout) if timeout > 0 else DEFAULT_READ_TIMEOUT_S
    return make_source(setup.source, width=setup.width, height=setup.height, read_timeout_s=read_timeout)


RAM_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def _unescape_mount(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in paths as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """Type of the file system that `path` (existing or not) would be written to, from the mount table:
    that of the longest mount point above its real path (a later mount over the same point wins).
    None when it cannot be told (no mount table, nothing matches)."""
    try:
        target = Path(os.path.realpath(path))
        table = mounts.read_text(errors="replace").splitlines()
    except (OSError, ValueError):
        return None
    best: tuple[int, str] | None = None
    for line in table:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = Path(_unescape_mount(fields[1]))
        if point.is_absolute() and target.is_relative_to(point) and (best is None or len(point.parts) >= best[0]):
            best = (len(point.parts), fields[2])
    return best[1] if best else None


def storage_warning(path: Path) -> str | None:
    """A warning when `path` is not on a RAM file system (or that cannot be told), else None."""
    fstype = filesystem_type(path)
    if fstype in RAM_FILESYSTEMS:
        return None
    where = (f"on a file system of type {fstype}, not in RAM" if fstype
             else "on a file system that could not be determined (not known to be in RAM)")
    return (f"anpr-edge camera snapshot: WARNING: {path} is {where}. The frame shows the plates of passing "
            "vehicles and stays on the unit's storage; deleting it does not reliably erase it from flash. "
            "Use -o - to send the image over ssh to your own machine instead (see the field guide).")


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While the JPEG for `-o -` is made, whatever is printed (by this code or by a library, at the file
    descriptor level) goes to stderr, so that stdout carries the image and nothing else."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def cmd_snapshot(args) -> int:
    if args.output != "-":
        return _snapshot(args, to_stdout=False)[0]
    if sys.stdout.isatty():
        print("anpr-edge camera snapshot: -o - writes the JPEG to stdout, which is a terminal here: redirect it, "
              "e.g. ssh unit 'anpr-edge camera snapshot ... -o -' > aim.jpg", file=sys.stderr)
        return 2
    with _stdout_to_stderr():
        rc, jpeg = _snapshot(args, to_stdout=True)
    if rc == 0 and jpeg is not None:
        sys.stdout.flush()
        sys.stdout.buffer.write(jpeg)
        sys.stdout.buffer.flush()
    return rc


def _snapshot(args, to_stdout: bool) -> tuple[int, bytes | None]:
    """The snapshot; with to_stdout the JPEG is returned (for stdout) and never written to a file."""
    setup = setup_from_args(args)
    say = sys.stderr if to_stdout else sys.stdout  # with -o - stdout is the image's alone
    out = Path("-") if to_stdout else Path(args.output)
    if not to_stdout and out.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        print(f"anpr-edge camera snapshot: -o {out}: use a .jpg or .png file name, or - for stdout", file=sys.stderr)
        return 2, None
    detector, recognizer, tracker = load_stages(setup)
    source = open_source(setup, args.timeout)
    skip = args.skip if args.skip is not None else (10 if source.live else 0)
    frame = None
    for frame in frames(source, skip + 1, args.timeout):
        pass
    if frame is None:
        print(f"anpr-edge camera snapshot: {source.label}: no frame", file=sys.stderr)
        return 1, None
    aimer = Aimer(detector, recognizer, tracker, roi=setup.roi, roll=setup.roll, min_score=setup.min_score,
                  targets=setup.targets)
    plates = aimer.process(frame)
    image = draw(frame.image, plates, setup.roi, setup.targets, show_text=args.show_text)
    jpeg = None
    if to_stdout:
        ok, buf = cv2.imencode(".jpg", image)
        if not ok:
            print("anpr-edge camera snapshot: cannot encode the frame as JPEG", file=sys.stderr)
            return 1, None
        jpeg = buf.tobytes()
    else:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file where a folder should be, no permission, read-only file system
            print(f"anpr-edge camera snapshot: cannot write {out}: folder {out.parent}: {e.strerror}", file=sys.stderr)
            return 1, None
        warning = storage_warning(out)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        if not cv2.imwrite(str(out), image):
            print(f"anpr-edge camera snapshot: cannot write {out}", file=sys.stderr)
            return 1, None
    report = aimer.report()
    summary = {"output": str(out), "frame_index": frame.index, "frame_size": list(report.frame_size),
               "plates": [{"width_px": round(p.width, 1), "sharpness": round(p.sharpness, 1),
                           "score": round(p.detection.score, 3), "used": p.used,
                           "box": [round(v, 1) for v in p.detection.box]} for p in plates],
               "advice": report.advice}
    if args.json:
        print(json.dumps(summary), file=say)
    else:
        widths = ", ".join(f"{p['width_px']:.0f}" for p in summary["plates"]) or "none"
        print(f"{'stdout' if to_stdout else out}: frame {frame.index} of {source.label}, "
              f"{report.frame_size[0]}x{report.frame_size[1]}, {len(plates)} plate(s), widths {widths} px", file=say)
        for a in report.advice:
            print(f"advice: {a}", file=say)
    return 0, jpeg


def cmd_aim(args) -> int:
    setup = setup_from_args(args)
    detector, recognizer, tracker = load_stages(setup)
    aimer = Aimer(detector, recognizer, tracker, roi=setup.roi, roll=setup.roll, min_score=setup.min_score,
                  targets=setup.targets, window=args.window, vehicles=args.vehicles)
    limit = args.frames if args.frames is not None else (1 if args.once else 0)
    live = sys.stdout.isatty() and not args.json and not args.once
    last = time.monotonic()

    def show(final: bool = False) -> None:
        report = aimer.report(show_text=args.show_text)
        if args.json:
            print(json.dumps(dict(report.as_dict(), final=final)), flush=True)
            return
        if live:
            sys.stdout.write("\x1b[H\x1b[J")
        print("\n".join(report.lines()), flush=True)
        if not live:
            print(flush=True)

    lost = None
    try:
        for frame in frames(open_source(setup, args.timeout), limit, args.timeout):
            aimer.process(frame)
            if not args.once and time.monotonic() - last >= args.every:
                show()
                last = time.monotonic()
    except KeyboardInterrupt:
        pass
    except SourceError as e:
        if not aimer.frames:
            raise  # nothing to report: the error alone (exit 2)
        lost = e  # the camera went away mid-aim: the figures so far, then the reason
    aimer.finish()
    show(final=True)
    if lost is not None:
        print(f"anpr-edge camera aim: {lost}", file=sys.stderr)
        return 1
    return 0 if aimer.frames else 1


def _count(minimum: int):
    """argparse type: an integer of at least `minimum`, so a wrong value is a usage error naming the option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where frames and models come from (a config file, or flags)")
    g.add_argument("--config", help="unit config (camera source, ROI, models, thresholds)")
    g.add_argument("--source", help="camera or file instead of the config's, e.g. rtsp://..., v4l2:/dev/video0, "
                                    "picamera:0, file:video.mp4 or a plain path")
    g.add_argument("--models", help="folder with detector.onnx and recognizer.onnx (default: config or bundled)")
    g.add_argument("--threads", type=int, help="onnxruntime threads per model (default: config, else 1)")
    g.add_argument("--min-score", type=float, help="detector score threshold (default: config, else 0.4)")
    g.add_argument("--roll", type=roll_argument, help="degrees the scene leans clockwise on screen, searched turned level "
                                              "(default: config's camera.roll_degrees, else 0)")
    g.add_argument("--width-min", type=float, default=Targets.width_min, help="smallest good plate width, px")
    g.add_argument("--width-max", type=float, default=Targets.width_max, help="largest good plate width, px")
    g.add_argument("--timeout", type=_seconds, default=DEFAULT_TIMEOUT_S,
                   help=f"give up on a camera that sends no frame for this many seconds, with the reason "
                        f"(default {DEFAULT_TIMEOUT_S:g}; 0 = keep trying)")
    p.add_argument("--show-text", action="store_true",
                   help="also show what plates say (technician's terminal only; never logged)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_subparsers(subparsers) -> None:
    """Register `anpr-edge camera snapshot|aim`."""
    cam = subparsers.add_parser("camera", help="technician tools for mounting and aiming the camera")
    sub = cam.add_subparsers(dest="camera_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("snapshot", help="save one frame with the detected plates drawn")
    _common(p)
    p.add_argument("-o", "--output", required=True,
                   help="image file to write (.jpg or .png), or - for a JPEG on stdout and nothing else there "
                        "(messages go to stderr): ssh unit 'anpr-edge camera snapshot ... -o -' > aim.jpg keeps "
                        "the frame off the unit's storage. A file not in RAM (tmpfs) gets a warning")
    p.add_argument("--skip", type=_count(0), help="frames to let pass first (default 10 for cameras: exposure settles)")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("aim", help="live plate width, sharpness, exposure and read rate, with advice")
    _common(p)
    p.add_argument("--frames", type=_count(0), help="stop after this many frames (0 = until Ctrl-C or the end of a file; "
                                              "default 0, or 1 with --once)")
    p.add_argument("--once", action="store_true", help="print one report at the end only")
    p.add_argument("--every", type=_seconds, default=1.0, help="seconds between live reports")
    p.add_argument("--window", type=_count(1), default=25, help="frames the plate figures are taken over")
    p.add_argument("--vehicles", type=_count(1), default=20, help="vehicles the read rate is taken over")
    p.set_defaults(func=cmd_aim)


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.camera_tools aim ...` (the same as `anpr-edge camera aim ...`)."""
    parser = argparse.ArgumentParser(prog="anpr-edge")
    add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["camera", *(sys.argv[1:] if argv is None else argv)])
    from edge.modelcontract import ModelContractError

    try:
        return int(args.func(args) or 0)
    except (SourceError, ModelContractError, ValueError) as e:
        print(f"anpr-edge camera {args.camera_command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
