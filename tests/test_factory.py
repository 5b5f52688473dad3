"""The config decides which models and pipeline settings the unit runs with (edge.factory), for the
daemon and `replay --config` alike."""
from __future__ import annotations

import yaml

from conftest import MODELS, ROOT
from edge.config import parse_config
from edge.detector import CLOSE_UP_SCALE
from edge.factory import build_pipeline, load_models, model_files, pipeline_settings

EXAMPLE = ROOT / "config" / "edge.example.yaml"


def _config(**models):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["models"] = {**data.get("models", {}), "dir": str(MODELS), **models}
    data["detection"] = {**data.get("detection", {}), "verify_below": 0.55}
    data["camera"] = {**data.get("camera", {}), "roll_degrees": 4.0}
    return parse_config(data, "edge.yaml")


def test_config_models_reach_the_loaded_detector():
    cfg = _config()
    detector, recognizer = load_models(cfg.models.dir, threads=1, **model_files(cfg))
    assert detector.verifier is not None and detector.refiner is not None
    assert detector.verify_below == 0.55
    assert recognizer.contract.input_height > 0


def test_config_can_switch_off_verifier_and_refiner():
    cfg = _config(verifier="", corner_refiner="")
    detector, _ = load_models(cfg.models.dir, threads=1, **model_files(cfg))
    assert detector.verifier is None and detector.refiner is None


def test_close_up_search_follows_the_config():
    cfg = _config()
    detector, _ = load_models(cfg.models.dir, threads=1, **model_files(cfg))
    assert detector.close_up_scale == CLOSE_UP_SCALE and detector.close_up_below == cfg.detection.min_score
    data = yaml.safe_load(EXAMPLE.read_text())
    data["models"]["dir"] = str(MODELS)
    data["detection"].update(close_ups=False, min_score=0.55)
    off = parse_config(data, "edge.yaml")
    detector, _ = load_models(off.models.dir, threads=1, **model_files(off))
    assert detector.close_up_scale == 0.0 and detector.close_up_below == 0.55


def test_pipeline_takes_the_config_settings():
    cfg = _config()
    detector, recognizer = load_models(cfg.models.dir, threads=1, **model_files(cfg))
    pipeline = build_pipeline(detector, recognizer, **pipeline_settings(cfg))
    assert pipeline.roll == 4.0
    assert pipeline.min_score == cfg.detection.min_score
    assert pipeline.min_plate_width == cfg.detection.min_plate_width
