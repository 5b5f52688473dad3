"""Technician camera commands: the figures on real plate crops and frames, and `camera snapshot` /
`camera aim` end to end on a real video with the real ONNX models."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MODELS, SHARED_DATA, free_port
from edge.camera_tools import Targets, advise, exposure, filesystem_type, plate_width, sharpness, storage_warning
from edge.plate_lean import lean_degrees
from edge.types import Detection
from media import real_frames, write_video

ROOT = Path(__file__).resolve().parents[1]
RO = SHARED_DATA / "detect" / "ro_dashcam"
DEMO_VIDEO = ROOT / "demo" / "demo.mp4"
HAVE_MODELS = (MODELS / "detector.onnx").is_file() and (MODELS / "recognizer.onnx").is_file()
needs_models = pytest.mark.skipif(
    not HAVE_MODELS, reason=f"{MODELS}/detector.onnx and recognizer.onnx are not there yet (trained in this "
                            "project; the end-to-end camera command tests run once they are committed)")


def labelled_plates(pattern: str = "dayride_type1_002_") -> list[tuple[str, tuple[float, float, float, float]]]:
    with open(RO / "labels.csv", newline="") as f:
        return [(r["image"], tuple(float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")))
                for r in csv.DictReader(f) if pattern in r["image"]]


def crop_of(image_rel: str, box) -> np.ndarray:
    img = cv2.imread(str(RO / image_rel))
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return img[y1:y2, x1:x2]


def run_camera(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """The command as the technician runs it, with this checkout's models unless --models/--config say otherwise."""
    if "--models" not in args and "--config" not in args:
        args = (*args, "--models", str(MODELS))
    return subprocess.run([sys.executable, "-m", "edge.camera_tools", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout)


# ----- figures on real data (no models needed) ----------------------------------------------------

def test_plate_width_follows_the_tilted_edges():
    det = Detection(box=(100, 50, 200, 90), corners=((100, 70), (196, 50), (200, 70), (104, 90)), score=0.9)
    assert plate_width(det) == pytest.approx(np.hypot(96, 20))


@pytest.mark.parametrize("turn", [0.0, 6.0, -10.0, 15.0])
def test_lean_is_measured_from_the_pixels(turn):
    """A drawn plate (border and characters) turned by `turn` degrees clockwise on screen."""
    img = np.full((300, 400, 3), 90, np.uint8)
    cv2.rectangle(img, (120, 125), (280, 165), (235, 235, 235), -1)
    cv2.rectangle(img, (120, 125), (280, 165), (20, 20, 20), 2)
    cv2.putText(img, "AB-123-C", (130, 157), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (10, 10, 10), 2)
    img = cv2.warpAffine(img, cv2.getRotationMatrix2D((200, 145), -turn, 1.0), (400, 300),
                         borderMode=cv2.BORDER_REPLICATE)
    det = Detection(box=(115, 105, 285, 185), score=0.9, corners=((120, 125), (280, 125), (280, 165), (120, 165)))
    assert lean_degrees(img, det.box) == pytest.approx(turn, abs=1.5)


def test_sharpness_drops_with_blur_and_with_too_few_pixels(shared_data):
    wide = [(img, box) for img, box in labelled_plates("") if box[2] - box[0] >= 120][:8]
    assert len(wide) == 8
    for img, box in wide:
        crop = crop_of(img, box)
        sharp = sharpness(crop)
        blurred = sharpness(cv2.GaussianBlur(crop, (0, 0), 2.0))
        assert blurred < 0.5 * sharp, (img, sharp, blurred)
        # the same plate with a quarter of the pixels (zoomed out): less detail at reading scale
        small = cv2.resize(crop, (crop.shape[1] // 4, max(crop.shape[0] // 4, 2)), interpolation=cv2.INTER_AREA)
        assert sharpness(small) < sharp, (img, sharp, sharpness(small))


def test_exposure_of_real_frames():
    frame = cv2.imread(str(real_frames(1)[0]))
    normal = exposure(frame)
    assert 40 < normal.mean < 200 and normal.clipped < 0.05 and normal.black < 0.3
    dark = exposure((frame * 0.05).astype(np.uint8))
    assert dark.mean < 12 and dark.black > 0.5
    bright = exposure(np.clip(frame.astype(np.float32) * 4, 0, 255).astype(np.uint8))
    assert bright.clipped > 0.3
    tips = advise(150, 200, 120, bright, 0, 0, 0, Targets())
    assert any("blown out white" in t for t in tips)
    tips = advise(150, 200, 120, dark, 0, 0, 0, Targets())
    assert any("of the frame is black" in t for t in tips)


def test_advice_names_the_figure_and_the_fix():
    ok = exposure(cv2.imread(str(real_frames(1)[0])))
    t = Targets()
    assert advise(45, 200, 120, ok, 0, 0, 0, t) == ["plates are 45 px wide: zoom in to reach 100-200 px"]
    assert "the unit ignores them" in advise(30, 200, 120, ok, 0, 0, 0, t)[0]
    assert advise(260, 200, 120, ok, 0, 0, 0, t)[0].startswith("plates are 260 px wide: zoom out")
    assert advise(150, 20, 120, ok, 0, 0, 0, t)[0].startswith("plates are blurred (sharpness 20")
    assert advise(150, 200, 30, ok, 0, 0, 0, t)[0].startswith("plates are dark (mean grey 30")
    assert advise(150, 200, 120, ok, 10, 6, 0, t) == [
        "only 6 of the last 10 vehicles were read (60%, want 80%): fix the figures above, "
        "or reduce the angle to the plates"]
    assert advise(150, 200, 120, ok, 3, 0, 0, t) == ["all figures in range"], "too few vehicles to judge"
    assert advise(None, None, None, ok, 0, 0, 30, t)[0].startswith("no plates seen in the last 30 frames")
    assert advise(150, 200, 120, ok, 10, 9, 0, t) == ["all figures in range"]
    assert advise(150, 200, 120, ok, 0, 0, 0, t, tilt=-3.0) == ["all figures in range"]
    assert advise(150, 200, 120, ok, 0, 0, 0, t, tilt=-11.4) == [
        "plates lean 11 degrees anticlockwise on screen (want at most 8 left over): set camera.roll_degrees: -11 "
        "so frames are searched turned level, or level the camera's roll"]
    # the unit already undoes the roll: only what is left over counts
    assert advise(150, 200, 120, ok, 0, 0, 0, t, tilt=-11.4, roll=-12) == ["all figures in range"]
    assert advise(150, 200, 120, ok, 0, 0, 0, t, tilt=13.0, roll=-12)[0].startswith(
        "plates lean 13 degrees clockwise on screen, camera.roll_degrees undoes -12 (want at most 8 left over): "
        "set camera.roll_degrees: 13")


def test_bad_invocations_are_named(tmp_path):
    video = write_video(tmp_path / "v.mp4", 2)
    r = run_camera("snapshot", "--source", str(video), "-o", str(tmp_path / "out.gif"))
    assert r.returncode == 2 and "use a .jpg or .png" in r.stderr
    r = run_camera("aim", "--once")
    assert r.returncode != 0 and "give --config FILE or --source URL" in r.stderr
    r = run_camera("aim", "--once", "--source", str(video), "--models", str(tmp_path / "no-models"))
    assert r.returncode == 2 and "model file not found" in r.stderr
    r = run_camera("aim", "--once", "--source", str(tmp_path / "missing.mp4"), "--models", str(MODELS))
    assert r.returncode == 2 and ("not found" in r.stderr)


# ----- the commands with the real models on a real video ---------------------------------------------

@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """12 real dashcam frames at their own 960x540 size, every one with at least one labelled plate."""
    return write_video(tmp_path_factory.mktemp("cam") / "road.mp4", 12, fps=2.0, size=(960, 540))


@pytest.fixture(scope="module")
def queue_video(tmp_path_factory) -> Path:
    """Slow traffic: 6 real frames, each held for 4 frames at 4 fps, so every plate is seen in a
    row of frames at one place and the tracker can make vehicle passages of them."""
    path = tmp_path_factory.mktemp("cam") / "queue.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 4.0, (960, 540))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for f in real_frames(7)[1:]:  # t0061 ... t0225: plates 84-160 px wide
        image = cv2.imread(str(f))
        for _ in range(4):
            writer.write(image)
    writer.release()
    return path


@dataclass
class ModelView:
    """What the real models find in each frame of a video, computed here independently of the tool."""

    widths: list[list[float]]  # per frame: width of each plate with score >= 0.4
    boxes: list[list[tuple[float, ...]]]
    texts: set[str]  # every read of 4+ characters, as text and as formatted


@pytest.fixture(scope="module")
def model_view(video) -> ModelView:
    from edge.factory import load_models

    det, rec = load_models(MODELS, threads=1)
    view = ModelView([], [], set())
    cap = cv2.VideoCapture(str(video))
    while True:
        ok, img = cap.read()
        if not ok:
            break
        widths, boxes = [], []
        for d in det.detect(img):
            if d.score < 0.4:
                continue
            tl, tr, br, bl = (np.asarray(c) for c in d.corners)
            widths.append(float(max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))))
            boxes.append(d.box)
            r = rec.read(img, d.corners)
            if len(r.text) >= 4:
                view.texts.update({r.text, r.formatted})
        view.widths.append(widths)
        view.boxes.append(boxes)
    cap.release()
    assert len(view.widths) == 12
    assert any(view.widths), "the detector finds no plate in 12 frames that each hold a labelled plate"
    return view


@needs_models
def test_snapshot_draws_the_plates(tmp_path, video, model_view):
    index = next(i for i, w in enumerate(model_view.widths) if w)  # the first frame with a plate
    out = tmp_path / "snap.jpg"
    r = run_camera("snapshot", "--source", f"file:{video}", "-o", str(out), "--skip", str(index), "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["frame_index"] == index and summary["frame_size"] == [960, 540]
    assert [p["width_px"] for p in summary["plates"]] == [round(w, 1) for w in model_view.widths[index]]
    image = cv2.imread(str(out))
    assert image is not None and image.shape == (540, 960, 3)
    cap = cv2.VideoCapture(str(video))
    cap.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, raw = cap.read()
    assert ok
    x1, y1, x2, y2 = (int(v) for v in summary["plates"][0]["box"])
    ring = np.zeros(raw.shape[:2], bool)  # a band just around the plate: where the outline goes
    ring[max(y1 - 3, 0):y2 + 4, max(x1 - 3, 0):x2 + 4] = True
    ring[y1 + 3:y2 - 3, x1 + 3:x2 - 3] = False
    diff = np.abs(image.astype(int) - raw.astype(int)).mean(axis=2)
    assert diff[ring].mean() > 2 * diff.mean() + 5, "the plate outline must be drawn around the detection"
    plain = run_camera("snapshot", "--source", str(video), "-o", str(tmp_path / "snap.png"), "--skip", str(index))
    assert plain.returncode == 0 and "plate(s), widths" in plain.stdout


@needs_models
def test_aim_figures_on_video_without_texts(tmp_path, video, model_view):
    r = run_camera("aim", "--source", f"file:{video}", "--frames", "12", "--once", "--json")
    assert r.returncode == 0, r.stderr
    reports = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(reports) == 1 and reports[0]["final"] is True
    rep = reports[0]
    assert rep["frames"] == 12 and rep["frame_size"] == [960, 540]
    widths = [w for frame in model_view.widths for w in frame]
    assert rep["plates"] == len(widths)
    assert rep["width_px"]["median"] == pytest.approx(float(np.median(widths)), abs=0.06)
    assert rep["width_px"]["min"] == pytest.approx(min(widths), abs=0.06)
    assert rep["plates_ignored"] == sum(1 for frame in model_view.boxes for b in frame if b[2] - b[0] < 40)
    assert rep["sharpness"] > 0 and 0 < rep["plate_mean"] < 255
    assert 0 < rep["exposure_mean"] < 255 and 0 <= rep["clipped"] <= 1
    assert rep["advice"], "there is always a verdict"
    assert "texts" not in rep
    assert model_view.texts, "the recognizer reads something in this video (else nothing could leak)"
    leaked = [t for t in model_view.texts if t in r.stdout or t in r.stderr]
    assert not leaked, "camera aim must not show plate texts without --show-text"


@needs_models
def test_aim_reports_how_far_plates_lean_and_advises_levelling(tmp_path, video):
    """The same real frames, level and with the camera rolled 12 degrees: the lean is measured from
    the plates' corners and, past Targets.tilt_max, the technician is told to level the camera."""
    rolled = tmp_path / "rolled.mp4"
    cap = cv2.VideoCapture(str(video))
    writer = cv2.VideoWriter(str(rolled), cv2.VideoWriter_fourcc(*"mp4v"), 2.0, (960, 540))
    turn = cv2.getRotationMatrix2D((480, 270), -12, 1.0)  # negative: clockwise on screen
    while True:
        ok, img = cap.read()
        if not ok:
            break
        writer.write(cv2.warpAffine(img, turn, (960, 540), borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    import yaml


    data = yaml.safe_load((ROOT / "config" / "edge.example.yaml").read_text())
    data["camera"]["source"] = f"file:{rolled}"
    data["camera"]["roll_degrees"] = 12
    data["models"]["dir"] = str(MODELS)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(data))
    reports = {}
    for name, path, extra in (("level", video, ()), ("rolled", rolled, ()), ("told", rolled, ("--roll", "12")),
                              ("configured", rolled, ("--config", str(cfg)))):
        r = run_camera("aim", "--source", f"file:{path}", "--frames", "12", "--once", "--json", *extra)
        assert r.returncode == 0, r.stderr
        reports[name] = json.loads(r.stdout.splitlines()[-1])
    level, rolled_rep, told = reports["level"], reports["rolled"], reports["told"]
    assert abs(level["tilt_deg"]) < 3, level["tilt_deg"]
    assert not any("lean" in a for a in level["advice"])
    assert rolled_rep["plates"] >= 0.7 * level["plates"]
    assert 8 < rolled_rep["tilt_deg"] < 16, rolled_rep["tilt_deg"]
    assert any(a.startswith("plates lean") and "clockwise" in a and "set camera.roll_degrees: 1" in a
               and "level the camera" in a for a in rolled_rep["advice"]), rolled_rep["advice"]
    # told the roll (as camera.roll_degrees would), the same frames are searched turned level: the
    # plates still lean on screen, but nothing is left over to advise about
    assert told["roll_deg"] == 12.0 and level["roll_deg"] == 0.0
    assert 8 < told["tilt_deg"] < 16, told["tilt_deg"]
    assert told["plates"] >= rolled_rep["plates"] and told["plates"] >= 0.85 * level["plates"], (told, level)
    assert not any("lean" in a for a in told["advice"]), told["advice"]
    same = ("plates", "plates_ignored", "width_px", "tilt_deg", "roll_deg")
    assert {k: reports["configured"][k] for k in same} == {k: told[k] for k in same}, "camera.roll_degrees = --roll"


@needs_models
def test_aim_text_report_and_show_text(video):
    r = run_camera("aim", "--source", str(video), "--frames", "6", "--every", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("frames ") >= 6, "a live report per frame with --every 0, plus the final one"
    assert "exposure: mean grey" in r.stdout and "read rate:" in r.stdout and "advice:" in r.stdout


@needs_models
def test_aim_read_rate_counts_the_vehicles_the_daemon_would(queue_video):
    """The read rate is over the passages the daemon's own pipeline makes of the same frames."""
    from edge.factory import build_pipeline, load_models
    from edge.motion import MotionConfig
    from edge.sources import iterate, source_for_path

    det, rec = load_models(MODELS, threads=1)
    pipeline = build_pipeline(det, rec, motion=MotionConfig(enabled=False), min_score=0.4, min_plate_width=40)
    passages = []
    for frame in iterate(source_for_path(queue_video)):
        passages += pipeline.process(frame)
    passages += pipeline.finish()
    assert passages, "the models make at least one vehicle passage of six queued cars"
    read = sum(1 for p in passages if p.text and p.confidence >= 0.5)

    r = run_camera("aim", "--source", str(queue_video), "--once", "--frames", "0", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["frames"] == 24
    assert (rep["vehicles"], rep["vehicles_read"]) == (len(passages), read)
    assert rep["read_rate"] == round(read / len(passages), 3)
    assert not any(p.text and p.text in r.stdout for p in passages), "no texts without --show-text"

    shown = run_camera("aim", "--source", str(queue_video), "--once", "--json", "--show-text", "--frames", "0")
    assert shown.returncode == 0, shown.stderr
    rep = json.loads(shown.stdout)
    assert len(rep["texts"]) == len(passages)
    assert all(t.startswith(p.formatted or "(unread)") for t, p in zip(rep["texts"], passages))


@needs_models
def test_aim_takes_source_roi_and_thresholds_from_the_config(tmp_path, video, model_view):
    import yaml

    data = yaml.safe_load((ROOT / "config" / "edge.example.yaml").read_text())
    data["camera"]["source"] = f"file:{video}"
    data["camera"]["roi"] = [[0, 0], [120, 0], [120, 60], [0, 60]]  # the sky corner: no lane, no plate
    data["models"]["dir"] = str(MODELS)
    cfg = tmp_path / "edge.yaml"
    cfg.write_text(yaml.safe_dump(data))
    r = run_camera("aim", "--config", str(cfg), "--frames", "12", "--once", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["frames"] == 12 and rep["plates"] == sum(len(w) for w in model_view.widths) > 0
    assert rep["plates_ignored"] == rep["plates"], "every plate lies outside the configured ROI"
    assert rep["vehicles"] == 0, "the daemon would read none of them"


# ----- a camera that cannot be reached -------------------------------------------------------------

@needs_models
def test_snapshot_of_an_unreachable_camera_fails_in_bounded_time_naming_it(tmp_path):
    """It used to retry for ever, printing "reconnecting" while the technician waited."""
    port = free_port()  # nobody listens there: the camera is off or the address is wrong
    out = tmp_path / "snap.jpg"
    t0 = time.monotonic()
    r = run_camera("snapshot", "--source", f"rtsp://admin:s3cret@127.0.0.1:{port}/stream1", "-o", str(out),
                   timeout=90)  # the default --timeout (15 s)
    assert r.returncode == 2, r.stderr
    assert time.monotonic() - t0 < 60
    assert (f"anpr-edge camera snapshot: rtsp://***@127.0.0.1:{port}/stream1: no frame within 15 s "
            "(last error: cannot open stream (unreachable, refused or not a video))") in r.stderr
    assert "s3cret" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert not out.exists()


@needs_models
def test_aim_at_a_camera_that_never_answers_stops_at_the_timeout(tmp_path):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        t0 = time.monotonic()
        r = run_camera("aim", "--once", "--timeout", "3", "--source", f"rtsp://admin:s3cret@127.0.0.1:{port}/x",
                       timeout=90)
    assert r.returncode == 2, r.stderr
    assert time.monotonic() - t0 < 30
    assert f"anpr-edge camera aim: rtsp://***@127.0.0.1:{port}/x: no frame within 3 s (" in r.stderr
    assert "s3cret" not in r.stderr + r.stdout and "Traceback" not in r.stderr


def test_camera_timeout_must_be_seconds():
    r = run_camera("snapshot", "--source", "rtsp://127.0.0.1:1/x", "-o", "x.jpg", "--timeout", "-1")
    assert r.returncode == 2 and "argument --timeout: must be 0 or more seconds" in r.stderr


# ----- keeping snapshots off the unit's storage ---------------------------------------------------

def mount_fstype(path: Path) -> str | None:
    """This test's own reading of /proc/mounts: the type of the longest mount point above `path`."""
    target, best = str(Path(path).resolve()), None
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, point, fstype, *_ = line.split() + ["", "", ""]
        point = point.replace("\\040", " ")
        if target == point or target.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best[0]):
                best = (point, fstype)
    return best[1] if best else None


def test_filesystem_type_reads_the_mount_table(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("/dev/vda / ext4 rw 0 0\n"
                     "tmpfs /run/ram tmpfs rw 0 0\n"
                     "/dev/sdb1 /media/my\\040stick vfat rw 0 0\n"
                     "tmpfs /var/lib/unit tmpfs rw 0 0\n"
                     "/dev/sdc1 /var/lib/unit xfs rw 0 0\n")  # mounted over the tmpfs: the later one counts
    assert filesystem_type(Path("/run/ram/aim.jpg"), table) == "tmpfs"
    assert filesystem_type(Path("/run/ramdisk/aim.jpg"), table) == "ext4", "a name prefix is not a mount point"
    assert filesystem_type(Path("/media/my stick/new/aim.jpg"), table) == "vfat"
    assert filesystem_type(Path("/var/lib/unit/aim.jpg"), table) == "xfs"
    assert filesystem_type(Path("/run/ram/aim.jpg"), tmp_path / "no-such-table") is None
    (tmp_path / "empty").write_text("")
    assert filesystem_type(Path("/run/ram/aim.jpg"), tmp_path / "empty") is None


def test_storage_warning_follows_the_mount_table(tmp_path):
    fstype = mount_fstype(tmp_path)
    warning = storage_warning(tmp_path / "aim.jpg")
    if fstype in ("tmpfs", "ramfs"):
        assert warning is None
    else:
        assert warning and "WARNING" in warning and "not in RAM" in warning and "-o -" in warning
        if fstype:
            assert f"type {fstype}," in warning
    if mount_fstype(Path("/dev/shm")) == "tmpfs":
        assert storage_warning(Path("/dev/shm/aim.jpg")) is None


def test_snapshot_refuses_to_write_a_jpeg_to_a_terminal(tmp_path):
    import pty

    master, slave = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "edge.camera_tools", "snapshot", "--source", str(DEMO_VIDEO),
                            "-o", "-", "--models", str(MODELS)], stdout=slave, stderr=subprocess.PIPE,
                           cwd=tmp_path, timeout=120)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 2 and b"stdout, which is a terminal" in r.stderr
    assert not list(tmp_path.iterdir())


@needs_models
def test_snapshot_to_stdout_writes_no_file(tmp_path):
    """`-o -`: the JPEG on stdout and nothing else there; the summary on stderr; no file anywhere."""
    work = tmp_path / "work"
    tmp = tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    r = subprocess.run([sys.executable, "-m", "edge.camera_tools", "snapshot", "--source", str(DEMO_VIDEO),
                        "--skip", "30", "-o", "-", "--json", "--models", str(MODELS)],
                       capture_output=True, cwd=work, env=env, timeout=240)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert r.stdout[:3] == b"\xff\xd8\xff" and r.stdout.endswith(b"\xff\xd9"), "stdout is one JPEG, no text"
    image = cv2.imdecode(np.frombuffer(r.stdout, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (540, 960, 3)
    cap = cv2.VideoCapture(str(DEMO_VIDEO))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, raw = cap.read()
    cap.release()
    assert ok and np.abs(image.astype(int) - raw.astype(int)).mean() < 20, "the snapshot is of frame 30"
    summary = json.loads(next(line for line in r.stderr.decode().splitlines() if line.startswith("{")))
    assert summary["output"] == "-" and summary["frame_index"] == 30 and summary["frame_size"] == [960, 540]
    assert b"WARNING" not in r.stderr
    assert not list(work.iterdir()), "nothing may be written on the unit"
    # onnxruntime (1.32) itself drops a 51-byte `.ses` (launch time and a random id, no frame data) into
    # TMPDIR whenever a model is loaded; anything else there would be ours
    written = [f for f in tmp.iterdir() if not (f.name == ".ses" and f.stat().st_size < 200)]
    assert not written, "nothing may be written on the unit"
    assert not (ROOT / "-").exists()


@needs_models
def test_snapshot_to_a_file_not_in_ram_warns(tmp_path):
    out = tmp_path / "aim.jpg"
    r = run_camera("snapshot", "--source", str(DEMO_VIDEO), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert out.is_file() and cv2.imread(str(out)).shape == (540, 960, 3)
    assert "WARNING" not in r.stdout
    fstype = mount_fstype(tmp_path)
    if fstype in ("tmpfs", "ramfs"):
        assert "WARNING" not in r.stderr
    else:
        assert f"WARNING: {out} is on" in r.stderr and "not in RAM" in r.stderr and "-o -" in r.stderr
