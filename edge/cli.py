"""The `anpr-edge` command line: the daemon, config checking, and tools for people and measurement.

`read` and `replay` print plate texts on purpose: they are the technician's and the evaluator's
tools on local media. The daemon (`run`) never prints or logs a read that is not a hit.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from edge import __version__
from edge.paths import default_models_dir

# cv2 and edge.sources are imported where needed: importing them takes a noticeable moment, and a
# Ctrl-C in that moment must end the command quietly (exit 130), not with a traceback.

log = logging.getLogger("anpr-edge")


def _images(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The image files named or in the folders named, and a message for each folder without images."""
    from edge.sources import IMAGE_SUFFIXES

    out: list[Path] = []
    problems: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                problems.append(f"{p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder")
            out.extend(found)
        else:
            out.append(p)
    return out, problems


def _plate_json(det, read) -> dict:
    return {
        "text": read.text,
        "formatted": read.formatted,
        "country": read.country,
        "confidence": round(float(read.confidence), 4),
        "box": [round(float(v), 1) for v in det.box],
        "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in det.corners],
    }


def _config(args):
    """The config named by --config, or None."""
    if not getattr(args, "config", None):
        return None
    from edge.config import load_config

    return load_config(args.config)


def _load_models(args, cfg):
    """The models `read` and `replay` run: with a config, its model files, and its folder and threads
    unless --models names another folder; without one, the standard files in --models."""
    from edge.factory import load_models, model_files

    models_dir, threads, files = Path(args.models), args.threads, {}
    if cfg is not None:
        files = model_files(cfg)
        if args.models == str(default_models_dir()):
            models_dir, threads = cfg.models.dir, cfg.models.threads
    return load_models(models_dir, threads=threads, **files)


def cmd_read(args) -> int:
    import cv2

    from edge.factory import pipeline_settings

    cfg = _config(args)
    detector, recognizer = _load_models(args, cfg)
    # what the unit would read: with a config, the pipeline's region of interest, roll, score and width limits
    unit = pipeline_settings(cfg) if cfg else dict(roi=None, roll=0.0, min_score=0.4, min_plate_width=0)
    min_score = args.min_score if args.min_score is not None else unit["min_score"]
    roll = args.roll if args.roll is not None else unit["roll"]
    roi, min_width = unit["roi"], unit["min_plate_width"]
    paths, problems = _images(args.inputs)
    for problem in problems:
        print(problem, file=sys.stderr)
    status = 1 if problems else 0
    for path in paths:
        if not path.exists():
            print(f"{path}: file not found", file=sys.stderr)
            status = 1
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            print(f"{path}: cannot read image (missing, unsupported or corrupt)", file=sys.stderr)
            status = 1
            continue
        t0 = time.perf_counter()
        plates = []
        for det in detector.detect(image, roi=roi, roll=roll):
            if det.score < min_score or det.box[2] - det.box[0] < min_width:
                continue
            read = recognizer.read(image, det.corners)
            if read.text:
                plates.append(_plate_json(det, read))
        ms = (time.perf_counter() - t0) * 1000
        if args.json:
            print(json.dumps({"image": str(path), "plates": plates, "ms": round(ms, 2)}), flush=True)
        else:
            found = ", ".join(f"{p['formatted']} ({p['country'] or '?'}, {p['confidence']:.2f})" for p in plates)
            print(f"{path}: {found or 'no plate'}  [{ms:.1f} ms]", flush=True)
    return status


def _passage_json(p) -> dict:
    return {
        "text": p.text,
        "formatted": p.formatted,
        "country": p.country,
        "confidence": round(float(p.confidence), 4),
        "first_seen_ms": round(float(p.first_seen_ms), 1),
        "last_seen_ms": round(float(p.last_seen_ms), 1),
        "frames": int(p.frames),
    }


def cmd_replay(args) -> int:
    from edge.factory import build_pipeline, pipeline_settings
    from edge.sources import iterate, source_for_path

    cfg = _config(args)
    detector, recognizer = _load_models(args, cfg)
    pipeline = build_pipeline(detector, recognizer, **(pipeline_settings(cfg) if cfg else {}))
    t0 = time.perf_counter()

    def emit(passages):
        for p in passages:
            if args.json:
                print(json.dumps(_passage_json(p)), flush=True)
            else:
                print(f"{p.formatted:>12}  {p.country or '?':2}  conf {p.confidence:.2f}  "
                      f"{p.first_seen_ms / 1000:7.2f}-{p.last_seen_ms / 1000:7.2f} s  {p.frames} frames  {p.direction}",
                      flush=True)

    source = source_for_path(args.video)
    try:
        for frame in iterate(source):
            emit(pipeline.process(frame))
    except KeyboardInterrupt:  # Ctrl-C: say how far it got; the passages still open are not printed
        s = pipeline.stats
        print(f"replay: interrupted after {s.frames} frames, {s.passages} passages", file=sys.stderr)
        return 130
    emit(pipeline.finish())
    s = pipeline.stats
    if s.frames == 0:
        print(f"anpr-edge replay: {args.video}: no frame could be decoded (not a video, or corrupt)", file=sys.stderr)
        return 2
    print(f"replay: {s.frames} frames, {s.passages} passages in {time.perf_counter() - t0:.1f} s "
          f"({s.frames / max(time.perf_counter() - t0, 1e-9):.1f} frames/s)", file=sys.stderr)
    return 0


def cmd_check_config(args) -> int:
    from edge.config import load_config
    from edge.factory import model_problems

    cfg = load_config(args.config)
    problems = [] if args.syntax_only else model_problems(cfg)
    if problems:
        print(f"anpr-edge check-config: {args.config}: the configuration is valid, but:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK (device {cfg.device.id}, camera {cfg.camera.id}, source scheme "
          f"{cfg.camera.source.split(':', 1)[0]})")
    return 0


def cmd_run(args) -> int:
    from edge.config import load_config
    from edge.daemon import run_daemon

    cfg = load_config(args.config)
    return run_daemon(cfg, config_path=Path(args.config), max_frames=args.max_frames, exit_at_end=args.exit_at_end)


def build_parser() -> argparse.ArgumentParser:
    from edge.plate_lean import roll_argument  # cv2 is loaded with the camera commands' module anyway

    parser = argparse.ArgumentParser(prog="anpr-edge", description="Roadside ANPR unit that reports only list hits.")
    parser.add_argument("--version", action="version", version=f"anpr-edge {__version__}")
    parser.add_argument("--log-level", default="WARNING", help="log level for tools (the daemon uses its config)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the roadside daemon")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--max-frames", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--exit-at-end", action="store_true",
                   help="stop when a file source ends (after the outbox has drained), for demos")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file and explain every problem")
    p.add_argument("config")
    p.add_argument("--syntax-only", action="store_true",
                   help="check the file alone, not the model files it names (e.g. on a laptop before copying it to the unit)")
    p.set_defaults(func=cmd_check_config)

    models_default = str(default_models_dir())
    p = sub.add_parser("read", help="read plates in still images")
    p.add_argument("inputs", nargs="+", metavar="IMAGE|DIR")
    p.add_argument("--json", action="store_true", help="one JSON line per image")
    p.add_argument("--config", help="read as the unit would: its model files, region of interest, roll, "
                                     "detection.min_score and detection.min_plate_width from this config")
    p.add_argument("--models", default=models_default, help="folder with detector.onnx, plate_verifier.onnx, corner_refiner.onnx and recognizer.onnx")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model (0 = all)")
    p.add_argument("--min-score", type=float, default=None, help="detector score threshold (default 0.4, or the config's)")
    p.add_argument("--roll", type=roll_argument, default=None,
                   help="degrees the scene leans clockwise on screen (camera.roll_degrees): searched turned level")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("replay", help="run a video through the full pipeline as fast as possible")
    p.add_argument("video", metavar="VIDEO", help="video file or image folder")
    p.add_argument("--json", action="store_true", help="one JSON line per vehicle passage")
    p.add_argument("--config", help="take tracking, motion, detection and ROI settings from this config")
    p.add_argument("--models", default=models_default, help="folder with detector.onnx, plate_verifier.onnx, corner_refiner.onnx and recognizer.onnx")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model (0 = all)")
    p.set_defaults(func=cmd_replay)

    _add_module_commands(sub)
    return parser


def _add_module_commands(sub) -> None:
    """Commands owned by other modules register themselves here."""
    from edge.audit import add_subparsers as add_audit
    from edge.camera_tools import add_subparsers as add_camera
    from edge.hitsclient import add_subparsers as add_hits
    from edge.lists.cli import add_subparsers as add_lists

    add_lists(sub)
    add_hits(sub)
    add_camera(sub)
    add_audit(sub)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up (imports, parser) or outside a command's own handling
        print("anpr-edge: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    from edge.config import ConfigError
    from edge.lists.keys import KeyFileError
    from edge.modelcontract import ModelContractError
    from edge.outbox import OutboxError
    from edge.sources import SourceError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, ModelContractError, SourceError, KeyFileError, OutboxError) as e:
        print(f"anpr-edge {args.command}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"anpr-edge {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:  # a file or folder that cannot be read or written: name it, no traceback
        print(f"anpr-edge {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
