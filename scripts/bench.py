#!/usr/bin/env python3
"""Per-stage latency, frames/s and peak memory of the whole unit, on one thread and on all cores.

Stages, each timed around the real module's call (median per call over a run, then median over
runs): decode (cv2.VideoCapture.read of one frame), detect (PlateDetector.detect, frames the motion
gate let through), recognize (rectify + read_crop of one plate), track (PassageTracker.update per
frame), match (ListMatcher.match of one passage against a real signed, encrypted list package of
10,000+ keyed hashes), outbox (the rest of HitDispatcher.handle for a hit: build the hit message
with its crop evidence and store it durably in a real SQLite outbox, fsync included) and publish
(from the outbox put until the broker's PUBACK removed it, through edge.publisher.Publisher and a
Mosquitto this script starts on a free loopback port).

frames/s: frames of the whole video / wall time of the unit's loop on one thread (decode, motion
gate, detect, recognize, track, dispatch of passages; the publisher runs in its own threads).
One thread = onnxruntime intra-op threads 1, OMP/OPENBLAS/MKL threads 1, cv2.setNumThreads(1);
all cores = threads 0 and library defaults. Every run is its own process (fresh sessions, own
peak memory = VmHWM). Videos: the bundled demo/demo.mp4 (960x540), a 640x480 copy (cut to 4:3
around the centre, then scaled) and a 1920x1080 copy upscaled, both written at run time into a
temporary folder (never committed). After each video the passages that became
hits are dispatched again one at a time (outbox cool-down 0) to get enough outbox/publish samples.

    .venv/bin/python scripts/bench.py                    # 3 runs each, about 5-8 minutes
    .venv/bin/python scripts/bench.py --runs 5 --markdown docs/results/bench.md --json docs/results/bench.json \
        --update-doc docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

DEMO = ROOT / "demo"
STAGES = ("decode", "detect", "recognize", "track", "match", "outbox", "publish")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
EXTRA_PLATES = 10_000  # random plates on the bench list besides the demo's, so lookups search a real index
HIT_REPEATS = 30  # sequential hit dispatches after each video, for the outbox and publish medians
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)

# Raspberry Pi 5 estimate: how many times slower one Cortex-A76 core (2.4 GHz) is taken to run this
# workload than one core of the benchmark machine. See docs/performance.md for the basis.
PI5_CORE_RATIO = 3.0
PI5_CORE_RATIO_RANGE = (2.0, 4.0)
PI5_CORES = 4


# ---- worker: one video, one thread mode, one run, in its own process ------------------------

@dataclass
class WorkerSpec:
    video: str
    threads: int
    detector: str
    recognizer: str
    snapshot: str
    device_key: str
    trusted: str
    port: int | None
    workdir: str
    verifier: str = ""
    refiner: str = ""


class _Timed:
    """Forwards to a stage and appends the duration (ms) of the named calls to a list."""

    def __init__(self, inner, sink: list[float], *timed: str):
        self._inner, self._sink, self._timed = inner, sink, set(timed)

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name not in self._timed:
            return attr

        def call(*a, **kw):
            t0 = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self._sink.append((time.perf_counter() - t0) * 1000)
        return call


class _TimedRecognizer:
    """rectify + read_crop of one plate as one 'recognize' sample (the pipeline calls them in pairs)."""

    def __init__(self, inner, sink: list[float]):
        self._inner, self._sink, self._t = inner, sink, 0.0

    def rectify(self, image, corners):
        t0 = time.perf_counter()
        crop = self._inner.rectify(image, corners)
        self._t = time.perf_counter() - t0
        return crop

    def read_crop(self, crop):
        t0 = time.perf_counter()
        read = self._inner.read_crop(crop)
        self._sink.append((self._t + time.perf_counter() - t0) * 1000)
        return read


class _TimedTracker:
    def __init__(self, inner, sink: list[float]):
        self._inner, self._sink = inner, sink

    @property
    def active(self) -> int:
        return self._inner.active

    @property
    def settled(self) -> bool:
        return self._inner.settled

    def wants_read(self, detection, frame) -> bool:
        return self._inner.wants_read(detection, frame)

    def update(self, frame, observations):
        t0 = time.perf_counter()
        try:
            return self._inner.update(frame, observations)
        finally:
            self._sink.append((time.perf_counter() - t0) * 1000)

    def flush(self):
        return self._inner.flush()


def peak_rss_mib() -> float:
    """VmHWM of this process (ru_maxrss of a spawned child may include the parent's peak before exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(spec: WorkerSpec) -> dict:
    import cv2

    if spec.threads == 1:
        cv2.setNumThreads(1)
    from edge.config import DetectionConfig
    from edge.detector import CLOSE_UP_SCALE, PlateDetector
    from edge.dispatch import HitDispatcher
    from edge.factory import build_pipeline
    from edge.hits import EvidenceConfig, HitIdentity, Site
    from edge.lists import keys
    from edge.lists.matcher import ListMatcher
    from edge.lists.store import ListStore
    from edge.motion import MotionConfig
    from edge.outbox import Outbox
    from edge.corner_refiner import CornerRefiner
    from edge.plate_verifier import PlateVerifier
    from edge.publisher import MqttConfig, Publisher
    from edge.recognizer import PlateRecognizer
    from edge.tracker import TrackerConfig
    from edge.types import Frame

    t: dict[str, list[float]] = {s: [] for s in STAGES}
    dc = DetectionConfig()
    verifier = PlateVerifier(spec.verifier, threads=spec.threads) if spec.verifier else None
    refiner = CornerRefiner(spec.refiner, threads=spec.threads) if spec.refiner else None
    detector = PlateDetector(spec.detector, threads=spec.threads, verifier=verifier, verify_below=dc.verify_below,
                             refiner=refiner, close_up_scale=CLOSE_UP_SCALE if dc.close_ups else 0.0, close_up_below=dc.min_score)
    recognizer = PlateRecognizer(spec.recognizer, threads=spec.threads)
    pipe = build_pipeline(detector, recognizer, tracking=TrackerConfig(), motion=MotionConfig(),
                          min_score=dc.min_score, min_plate_width=dc.min_plate_width)
    pipe.detector = _Timed(detector, t["detect"], "detect")
    pipe.recognizer = _TimedRecognizer(recognizer, t["recognize"])
    pipe.tracker = _TimedTracker(pipe.tracker, t["track"])

    store = ListStore("bench-unit", keys.load_device_key(Path(spec.device_key)),
                      keys.load_trusted_signers(Path(spec.trusted)))
    applied = store.apply(Path(spec.snapshot).read_bytes(), persist=False)
    if not applied.ok:
        raise SystemExit(f"bench list package refused: {applied.status} {applied.message}")
    matcher = ListMatcher(store, ["*"])
    work = Path(spec.workdir)
    outbox = Outbox(work / "outbox.sqlite", cooldown_s=0.0)  # 0: repeated hits of one plate are all stored
    mqtt_cfg = MqttConfig(host="127.0.0.1", port=spec.port or 1883, reconnect_min_s=0.05, reconnect_max_s=0.5)
    publisher = Publisher(mqtt_cfg, outbox, "bench-unit") if spec.port else None
    if publisher:
        publisher.start()
        deadline = time.monotonic() + 10
        while not publisher.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        if not publisher.connected:
            raise SystemExit(f"publisher could not connect to the bench broker: {publisher.last_error}")

    last_match = [0.0]

    def timed_match(p, now):
        t0 = time.perf_counter()
        out = matcher.match(p.text, p.alternatives, p.country, now)
        last_match[0] = (time.perf_counter() - t0) * 1000
        t["match"].append(last_match[0])
        return out

    identity = HitIdentity("bench-unit", "cam1", Site(52.0907, 5.1214, "bench road", "north"), "synced")
    dispatcher = HitDispatcher(
        match=timed_match, outbox=outbox, identity=lambda: identity,
        versions=lambda: {"detector": detector.version, "recognizer": recognizer.contract.version,
                          "lists": store.version},
        evidence=EvidenceConfig(mode="crop"), default_topic=mqtt_cfg.hit_topic,
        min_confidence=dc.min_read_confidence)

    hit_passages = []

    def dispatch(p, timed: bool) -> bool:
        t0 = time.perf_counter()
        hits = dispatcher.handle(p, T0)
        total = (time.perf_counter() - t0) * 1000
        if hits:
            if timed:
                t["outbox"].append(total - last_match[0])
            if publisher:
                publisher.notify()
        return bool(hits)

    cap = cv2.VideoCapture(spec.video)
    if not cap.isOpened():
        raise SystemExit(f"cannot open video {spec.video}")
    fps_video = cap.get(cv2.CAP_PROP_FPS) or 12.5
    ok, first = cap.read()  # warm-up: allocate the sessions' buffers outside the timed loop
    if not ok:
        raise SystemExit(f"{spec.video}: no frames")
    detector.detect(first)
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)

    import resource

    frames = passages = 0
    load_1min = os.getloadavg()[0]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        ok, img = cap.read()
        if not ok:
            break
        t["decode"].append((time.perf_counter() - t0) * 1000)
        ms = frames * 1000.0 / fps_video
        frame = Frame(image=img, index=frames, mono_ms=ms, utc=T0 + timedelta(milliseconds=ms), source="bench")
        frames += 1
        for p in pipe.process(frame):
            passages += 1
            if dispatch(p, timed=True):
                hit_passages.append(p)
    for p in pipe.finish():
        passages += 1
        if dispatch(p, timed=True):
            hit_passages.append(p)
    wall = time.perf_counter() - start
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    cap.release()
    stats = pipe.stats

    # hits one at a time: match, outbox put, and put -> PUBACK with nothing else in flight
    if publisher:
        deadline = time.monotonic() + 30
        while outbox.depth() and time.monotonic() < deadline:
            time.sleep(0.002)
    for k in range(HIT_REPEATS if hit_passages else 0):
        p = hit_passages[k % len(hit_passages)]
        dispatch(p, timed=True)
        t1 = time.perf_counter()
        if publisher:
            deadline = time.monotonic() + 10
            while outbox.depth() and time.monotonic() < deadline:
                time.sleep(0.0005)
            if outbox.depth():
                raise SystemExit("bench hit not acknowledged by the broker within 10 s")
            t["publish"].append((time.perf_counter() - t1) * 1000)
    if publisher:
        publisher.stop()
    outbox.close()

    def med(xs: list[float]) -> float | None:
        return round(statistics.median(xs), 3) if xs else None

    return {
        "video": spec.video, "threads": spec.threads, "frames": frames, "wall_s": round(wall, 3),
        "fps": round(frames / wall, 2), "peak_rss_mib": round(peak_rss_mib(), 1),
        "cpu_cores_used": round(cpu_s / wall, 2), "load_1min_at_start": round(load_1min, 2),
        "frames_per_cpu_s": round(frames / cpu_s, 2) if cpu_s > 0 else None,
        "median_ms": {s: med(v) for s, v in t.items()},
        "per_frame_ms": {s: round(sum(t[s]) / max(frames, 1), 3) for s in ("decode", "detect", "recognize", "track")},
        "calls": {s: len(v) for s, v in t.items()},
        "detect_frames": stats.frames - stats.skipped_detection, "reads": stats.reads,
        "skipped_reads": stats.skipped_reads, "passages": passages, "hit_passages": len(hit_passages),
        "detector": detector.version, "recognizer": recognizer.contract.version,
        "verifier": verifier.version if verifier else "none",
        "refiner": refiner.version if refiner else "none",
    }


# ---- parent: inputs, broker, runs, report ---------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(work: Path) -> tuple[subprocess.Popen | None, int | None, str]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        return None, None, "mosquitto not installed: publish column skipped"
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=open(work / "mosquitto.log", "wb"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port, f"{exe} on 127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit(f"mosquitto did not start; see {work / 'mosquitto.log'}")


def make_copy(src: Path, dst: Path, width: int, height: int) -> Path:
    """The demo video at width x height (same frames, same codec), written at run time: cut to the
    target's aspect ratio around the centre, then scaled, so plates keep their shape."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise SystemExit(f"cannot open {src}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 12.5
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    while True:
        ok, img = cap.read()
        if not ok:
            break
        h, w = img.shape[:2]
        if w * height > h * width:  # wider than the target: cut the sides
            cw = int(round(h * width / height))
            img = img[:, (w - cw) // 2: (w - cw) // 2 + cw]
        elif w * height < h * width:  # taller: cut top and bottom
            ch = int(round(w * height / width))
            img = img[(h - ch) // 2: (h - ch) // 2 + ch]
        shrink = img.shape[1] > width
        out.write(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC))
    cap.release()
    out.release()
    return dst


def build_list(work: Path) -> dict[str, str]:
    """A real signed, encrypted list package for device 'bench-unit': the demo lists, the plates of the
    demo video (so correct reads become hits) and EXTRA_PLATES random Dutch plates."""
    import random

    from bench_lists import random_nl

    from edge.lists import keys
    from edge.lists.central import Central

    central = Central(work / "central")
    trusted = central.init()
    key, pub = work / "device.key", work / "device.pub"
    keys.generate_device_key(key, pub)
    central.add_device("bench-unit", pub)
    truth = json.loads((DEMO / "demo_truth.json").read_text())
    rows = (DEMO / "demo_list.csv").read_text().strip().splitlines()
    rows += [f"{v['formatted']},nl-stolen,BENCH," for v in truth["vehicles"]]
    rng = random.Random(9)
    rows += [f"{random_nl(rng)},cjib-fines,BENCH-RANDOM," for _ in range(EXTRA_PLATES)]
    csv = work / "bench_list.csv"
    csv.write_text("\n".join(rows) + "\n")
    sealed, _ = central.build(DEMO / "lists.yaml", csv, skip_bad=True)
    snap = work / "snapshot.bin"
    snap.write_bytes(sealed.snapshot)
    return {"snapshot": str(snap), "device_key": str(key), "trusted": str(trusted),
            "entries": str(len(sealed.state.entries))}


def machine() -> dict:
    import cv2
    import onnxruntime

    info = {"cpu": "", "cores": os.cpu_count(), "ram_gib": None, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__, "os": platform.platform(),
            "isa": ""}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and not info["cpu"]:
                info["cpu"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not info["isa"]:
                flags = set(line.split(":", 1)[1].split())
                info["isa"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile",
                                                   "neon", "asimd") if f in flags)
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gib"] = round(int(line.split()[1]) / 2**20, 1)
        info["load_avg"] = os.getloadavg()
    except OSError:
        pass
    return info


def run_one(spec: WorkerSpec) -> dict:
    env = dict(os.environ)
    for k in THREAD_ENV:
        env.pop(k, None)
        if spec.threads == 1:
            env[k] = "1"
    res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec.__dict__)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"bench worker failed ({spec.video}, threads {spec.threads}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    """Medians over runs of every figure (peak memory: the largest)."""
    def med(key_fn):
        vals = [v for v in (key_fn(r) for r in runs) if v is not None]
        return round(statistics.median(vals), 3) if vals else None

    return {
        "runs": len(runs), "frames": runs[0]["frames"], "fps": med(lambda r: r["fps"]),
        "fps_runs": [r["fps"] for r in runs], "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "cpu_cores_used": med(lambda r: r["cpu_cores_used"]), "frames_per_cpu_s": med(lambda r: r["frames_per_cpu_s"]),
        "load_runs": [r["load_1min_at_start"] for r in runs],
        "median_ms": {s: med(lambda r, s=s: r["median_ms"][s]) for s in STAGES},
        "per_frame_ms": {s: med(lambda r, s=s: r["per_frame_ms"][s]) for s in runs[0]["per_frame_ms"]},
        "calls": runs[0]["calls"], "detect_frames": runs[0]["detect_frames"], "reads": runs[0]["reads"],
        "skipped_reads": runs[0]["skipped_reads"], "passages": runs[0]["passages"],
        "hit_passages": runs[0]["hit_passages"],
    }


def _f(v, nd=1) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def report(results: dict, info: dict, header: dict) -> str:
    cores = info["cores"]
    md = [f"Machine: {info['cpu']} ({info['isa']}), {cores} cores visible, {info['ram_gib']} GiB RAM; "
          f"Python {info['python']}, onnxruntime {info['onnxruntime']}, OpenCV {info['opencv']}; "
          f"load average at start {', '.join(f'{x:.2f}' for x in info.get('load_avg', ()))}.",
          f"Models: detector `{header['detector']}`, plate verifier `{header.get('verifier', 'none')}`, "
          f"corner refiner `{header.get('refiner', 'none')}`, recognizer `{header['recognizer']}`. "
          f"List package: {header['list_entries']} keyed hashes. Broker: {header['broker']}. "
          f"Medians of {header['runs']} runs per row; evidence mode crop; unit defaults for detection "
          f"(min score, min plate width 40 px), tracking and motion gate.", ""]
    md += ["| video | threads | frames/s | frames per CPU-s | " + " | ".join(f"{s} ms" for s in STAGES)
           + " | peak RSS MiB |",
           "|---|---|" + "---:|" * (len(STAGES) + 3)]
    for key, r in results.items():
        video, mode = key.split("|")
        m = r["median_ms"]
        md.append(f"| {video} | {mode} | {_f(r['fps'])} | {_f(r['frames_per_cpu_s'])} | "
                  + " | ".join(_f(m[s], 2) for s in STAGES)
                  + f" | {_f(r['peak_rss_mib'], 0)} |")
    md += ["", "frames/s: wall clock of the unit's loop; frames per CPU-s: frames / CPU time of the run's process "
           "(all its threads), i.e. close to what one core does when it is not shared with other jobs (cache and memory sharing still count). "
           "Stage figures are medians per call: decode per frame, detect per frame the motion gate let "
           "through, recognize per plate read, track per frame, match per passage, outbox per hit (message with "
           "crop + durable put), publish per hit (outbox put to broker PUBACK on loopback).", ""]
    md += ["| video | threads | frames | detector runs (frames that skipped detection) | plate reads (skipped, "
           "share of detections not read) | passages (hits) | "
           "per frame ms: decode + detect + recognize + track | frames/s of each run | CPU cores used | "
           "load avg at each start |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, r in results.items():
        video, mode = key.split("|")
        pf = r["per_frame_ms"]
        skip_det = 1 - r["detect_frames"] / max(r["frames"], 1)
        skip_read = r["skipped_reads"] / max(r["reads"] + r["skipped_reads"], 1)
        md.append(f"| {video} | {mode} | {r['frames']} | {r['detect_frames']} ({skip_det:.0%}) | {r['reads']} "
                  f"({r['skipped_reads']}, {skip_read:.0%}) | {r['passages']} ({r['hit_passages']}) | "
                  f"{_f(pf['decode'], 2)} + {_f(pf['detect'], 2)} + {_f(pf['recognize'], 2)} + {_f(pf['track'], 2)} | "
                  f"{', '.join(_f(x) for x in r['fps_runs'])} | "
                  f"{_f(r['cpu_cores_used'], 2)} | {', '.join(_f(x, 2) for x in r['load_runs'])} |")
    # Raspberry Pi 5 estimate from the one-thread figures
    lo, hi = PI5_CORE_RATIO_RANGE
    md += ["", "CPU cores used = CPU time of the run's process / wall time of its loop (1.00 = one core "
           "fully its own; less means it waited for a CPU that other work was using).", ""]
    md += [f"**Raspberry Pi 5 estimate** (Cortex-A76, 4 x 2.4 GHz): the one-thread frames per CPU-second here "
           f"(one core's worth of work, much less affected than wall time by other jobs on a shared machine) divided by "
           f"{PI5_CORE_RATIO:g} (range {lo:g}-{hi:g}); 4 cores = four independent pipelines, one per camera and core. "
           "An estimate, not a measurement; basis in docs/performance.md.", ""]
    md += ["| video | frames per CPU-s here, 1 thread | Pi 5 estimate, frames/s on 1 core | range | "
           "Pi 5 estimate, 4 cores (4 pipelines) |",
           "|---|---:|---:|---:|---:|"]
    for key, r in results.items():
        video, mode = key.split("|")
        f = r["frames_per_cpu_s"]
        if mode != "1" or f is None:
            continue
        md.append(f"| {video} | {_f(f)} | {_f(f / PI5_CORE_RATIO)} | {_f(f / hi)}-{_f(f / lo)} | "
                  f"{_f(PI5_CORES * f / PI5_CORE_RATIO)} |")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one run in a fresh process
    ap.add_argument("--runs", type=int, default=3, help="runs per video and thread mode (median; at least 3)")
    ap.add_argument("--videos", default="480p,demo,1080p",
                    help="480p (the demo cut to 4:3, 640x480), demo, 1080p, or paths of other videos, comma-separated")
    ap.add_argument("--threads", default="1,0", help="onnxruntime thread settings to run (1 = one thread, 0 = all)")
    ap.add_argument("--detector", type=Path, default=ROOT / "models" / "detector.onnx")
    ap.add_argument("--recognizer", type=Path, default=ROOT / "models" / "recognizer.onnx")
    ap.add_argument("--verifier", default=str(ROOT / "models" / "plate_verifier.onnx"),
                    help="plate verifier ONNX file (the unit's default models.verifier); '' for none")
    ap.add_argument("--refiner", default=str(ROOT / "models" / "corner_refiner.onnx"),
                    help="corner refiner ONNX file (the unit's default models.corner_refiner); '' for none")
    ap.add_argument("--markdown", type=Path, help="write the markdown tables here")
    ap.add_argument("--json", type=Path, help="write every figure as JSON here")
    ap.add_argument("--update-doc", type=Path, help="replace the bench.py block of this markdown file")
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(WorkerSpec(**json.loads(args.worker)))))
        return 0
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1 (3 or more for published figures)")
    for p in ((args.detector, args.recognizer) + ((Path(args.verifier),) if args.verifier else ())
              + ((Path(args.refiner),) if args.refiner else ())):
        if not p.exists():
            raise SystemExit(f"model {p} not found (trained by scripts/train_detector.py / train_recognizer.py / "
                             "train_verifier.py / train_corner_refiner.py)")
    threads = [int(x) for x in args.threads.split(",")]
    if any(t < 0 for t in threads):
        raise SystemExit("--threads: values must be 0 (all cores) or a positive thread count")

    info = machine()
    with tempfile.TemporaryDirectory(prefix="anpr-bench-") as tmp:
        work = Path(tmp)
        videos: dict[str, Path] = {}
        for v in args.videos.split(","):
            v = v.strip()
            if v == "demo":
                videos["demo 960x540"] = DEMO / "demo.mp4"
            elif v == "480p":
                print("[bench] writing the 640x480 video", file=sys.stderr, flush=True)
                videos["demo 4:3 640x480"] = make_copy(DEMO / "demo.mp4", work / "demo_480p.mp4", 640, 480)
            elif v == "1080p":
                print("[bench] writing the 1080p video", file=sys.stderr, flush=True)
                videos["demo upscaled 1920x1080"] = make_copy(DEMO / "demo.mp4", work / "demo_1080p.mp4", 1920, 1080)
            else:
                if not Path(v).exists():
                    raise SystemExit(f"--videos: {v} not found")
                videos[Path(v).name] = Path(v)
        lst = build_list(work)
        broker, port, broker_note = start_broker(work)
        results: dict[str, dict] = {}
        all_runs: dict[str, list[dict]] = {}
        try:
            for name, path in videos.items():
                for th in threads:
                    mode = str(th) if th else f"all ({info['cores']})"
                    key = f"{name}|{mode}"
                    runs = []
                    for i in range(args.runs):
                        run_dir = work / f"run-{len(all_runs)}-{i}"
                        run_dir.mkdir()
                        spec = WorkerSpec(str(path), th, str(args.detector), str(args.recognizer), lst["snapshot"],
                                          lst["device_key"], lst["trusted"], port, str(run_dir), args.verifier,
                                          args.refiner)
                        runs.append(run_one(spec))
                        print(f"[bench] {key} run {i + 1}: {runs[-1]['fps']} frames/s", file=sys.stderr, flush=True)
                    all_runs[key] = runs
                    results[key] = summarise(runs)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(5)
    first = next(iter(all_runs.values()))[0]
    header = {"detector": first["detector"], "recognizer": first["recognizer"], "runs": args.runs,
              "verifier": first.get("verifier", "none"), "refiner": first.get("refiner", "none"),
              "list_entries": lst["entries"], "broker": broker_note,
              "command": "scripts/bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "pi5_core_ratio": PI5_CORE_RATIO, "pi5_core_ratio_range": PI5_CORE_RATIO_RANGE}
    md = report(results, info, header)
    print(md)
    data = {"machine": info, "header": header, "results": results, "runs": all_runs,
            "utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    from evaluate import write_outputs
    write_outputs(args, "bench.py", md, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
