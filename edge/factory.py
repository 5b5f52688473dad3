"""Builds the inference stages from configuration, so the CLI and the daemon wire them alike."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from edge.corner_refiner import CornerRefiner
from edge.detector import CLOSE_UP_SCALE, PlateDetector
from edge.modelcontract import ModelContractError, read_metadata
from edge.motion import MotionConfig, MotionGate
from edge.pipeline import Pipeline
from edge.plate_verifier import PlateVerifier
from edge.recognizer import PlateRecognizer
from edge.tracker import PassageTracker, TrackerConfig
from edge.types import Point

if TYPE_CHECKING:
    from edge.config import EdgeConfig


def load_models(models_dir: Path, detector: str = "detector.onnx", recognizer: str = "recognizer.onnx",
                threads: int = 1, verifier: str = "plate_verifier.onnx",
                verify_below: float = 0.7,
                corner_refiner: str = "corner_refiner.onnx", close_ups: bool = True,
                close_up_below: float = 0.4) -> tuple[PlateDetector, PlateRecognizer]:
    """Load the ONNX models through their model contracts; verifier "" leaves the detector without
    its second look at doubtful boxes, corner_refiner "" with its own corners; close_ups searches a
    frame with no plate scored >= close_up_below again at a smaller size (edge.detector)."""
    second_look = PlateVerifier(models_dir / verifier, threads=threads) if verifier else None
    refiner = CornerRefiner(models_dir / corner_refiner, threads=threads) if corner_refiner else None
    return (PlateDetector(models_dir / detector, threads=threads, verifier=second_look, verify_below=verify_below,
                          refiner=refiner, close_up_scale=CLOSE_UP_SCALE if close_ups else 0.0, close_up_below=close_up_below),
            PlateRecognizer(models_dir / recognizer, threads=threads))


def build_pipeline(detector: PlateDetector, recognizer: PlateRecognizer, *,
                   tracking: TrackerConfig | None = None, motion: MotionConfig | None = None,
                   roi: Sequence[Point] | None = None, roll: float = 0.0, min_score: float = 0.4,
                   min_plate_width: float = 0, keep_frames: bool = False) -> Pipeline:
    """A fresh pipeline (new tracker state) over already loaded models."""
    return Pipeline(
        detector, recognizer, PassageTracker(tracking or TrackerConfig()),
        motion=MotionGate(motion or MotionConfig()), roi=roi, roll=roll, min_score=min_score,
        min_plate_width=min_plate_width, keep_frames=keep_frames,
    )


def model_files(cfg: EdgeConfig) -> dict:
    """The config's model files, verifier threshold and close-up search as load_models keywords
    (models_dir and threads apart), so `read --config`, `replay --config` and the daemon load the
    same models."""
    return dict(detector=cfg.models.detector, recognizer=cfg.models.recognizer, verifier=cfg.models.verifier,
                verify_below=cfg.detection.verify_below, corner_refiner=cfg.models.corner_refiner,
                close_ups=cfg.detection.close_ups, close_up_below=cfg.detection.min_score)


# config key under models -> the metadata kind its file must have (each model class names its own)
_MODEL_KINDS = {"detector": PlateDetector.kind, "recognizer": PlateRecognizer.kind, "verifier": PlateVerifier.kind,
                "corner_refiner": CornerRefiner.kind}


def model_problems(cfg: EdgeConfig) -> list[str]:
    """What would stop the config's models from loading, one line per model ("models.<key>: ..."):
    a file missing from models.dir, unreadable, or a model of another kind (a recognizer named as the
    detector). Reads only the files' metadata, so `check-config` finds these without loading a model."""
    problems = []
    for key, kind in _MODEL_KINDS.items():
        name = getattr(cfg.models, key)
        if not name:
            continue  # an optional model switched off
        path = cfg.models.dir / name
        if not path.is_file():
            problems.append(f"models.{key}: {name} not found in models.dir {cfg.models.dir}")
            continue
        try:
            found = read_metadata(path).get("kind", "")
        except ModelContractError as e:
            problems.append(f"models.{key}: {e}")
            continue
        if found != kind:
            problems.append(f"models.{key}: {path} is a {found or 'unlabelled'} model, expected a {kind}")
    return problems


def pipeline_settings(cfg: EdgeConfig) -> dict:
    """The config's pipeline settings as build_pipeline keywords, so `replay --config` and the daemon
    read the same keys."""
    return dict(tracking=cfg.tracking, motion=cfg.motion, roi=cfg.camera.roi, roll=cfg.camera.roll_degrees,
                min_score=cfg.detection.min_score, min_plate_width=cfg.detection.min_plate_width)
