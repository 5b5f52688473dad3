"""Config validation: each kind of bad input gives a clear message naming key path, value and what is allowed."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from edge.config import ConfigError, load_config, parse_config

EXAMPLE = ROOT / "config" / "edge.example.yaml"


@pytest.fixture
def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def errors_of(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config(data, "edge.yaml")
    return str(e.value)


def test_example_config_is_valid_and_complete():
    cfg = load_config(EXAMPLE)
    assert cfg.device.id == "nl-a13-km12-01"
    assert cfg.lists.device_id == cfg.device.id
    assert cfg.outbox.path == Path("/var/lib/anpr-edge/outbox.sqlite")  # default inside state_dir
    assert cfg.mqtt.hit_topic == "anpr/{agency}/{device}/hits"


def test_every_section_of_the_schema_is_in_the_example(example):
    from edge.config import EdgeConfig

    assert set(example) == set(EdgeConfig.model_fields)
    for name, field in EdgeConfig.model_fields.items():
        sub = getattr(field.annotation, "model_fields", None)
        if sub:
            assert set(example[name]) == set(sub), f"example config section {name!r} does not show every key"


def test_unknown_scheme_names_key_value_and_allowed(example):
    example["camera"]["source"] = "rtps://cam/1"
    msg = errors_of(example)
    assert "camera.source: unknown scheme 'rtps', expected rtsp, http, picamera, v4l2, file" in msg


def test_unknown_key_is_an_error_not_ignored(example):
    example["camera"]["resolution"] = "1080p"
    example["mqtt"]["hostname"] = "x"
    msg = errors_of(example)
    assert "camera.resolution: unknown key" in msg
    assert "mqtt.hostname: unknown key" in msg


def test_missing_required_key_and_section(example):
    del example["device"]["id"]
    del example["site"]
    msg = errors_of(example)
    assert "device.id: required key is missing" in msg
    assert "site: required key is missing" in msg


def test_out_of_range_value_shows_the_value(example):
    example["site"]["lat"] = 123.4
    example["camera"]["queue_size"] = 0
    msg = errors_of(example)
    assert "site.lat:" in msg and "123.4" in msg and "less than or equal to 90" in msg
    assert "camera.queue_size:" in msg and "(got 0)" in msg


def test_wrong_type_and_bad_enum(example):
    example["logging"]["level"] = "LOUD"
    example["detection"]["min_score"] = "high"
    msg = errors_of(example)
    assert "logging.level:" in msg and "'LOUD'" in msg and "DEBUG" in msg
    assert "detection.min_score:" in msg and "'high'" in msg


def test_camera_password_is_not_echoed_in_errors(example):
    example["camera"]["source"] = "rtps://admin:S3cret@host/stream"  # typo in the scheme
    msg = errors_of(example)
    assert "camera.source: unknown scheme 'rtps'" in msg
    assert "(got 'rtps://***@host/stream')" in msg and "S3cret" not in msg
    # forms the URL parser does not take apart: bad port, no '//', '/' or '@' in the password, a token
    for source in ("rtps://admin:S3cret@host:55x/stream", "rtps:admin:S3cret@host", "rtsp//admin:S3cret@host",
                   "rtps://admin:S3/cret@host/s", "rtps://admin:S3@cret@host/s", "rtps://S3cret@host/s"):
        example["camera"]["source"] = source
        msg = errors_of(example)
        assert "camera.source:" in msg and "S3" not in msg and "cret" not in msg, msg


def test_values_of_secret_keys_are_never_echoed(example):
    example["mqtt"]["password_file"] = ["S3cret"]  # the password pasted where its file name belongs
    example["lists"]["device_key"] = 12345678
    msg = errors_of(example)
    assert "mqtt.password_file:" in msg and "lists.device_key:" in msg and "value not shown" in msg
    assert "S3cret" not in msg and "12345678" not in msg
    example["mqtt"]["password"] = "S3cret"  # not a key of the schema: named, value not shown
    msg = errors_of(example)
    assert "mqtt.password: unknown key" in msg and "S3cret" not in msg


def test_refused_reload_keeps_the_camera_password_out_of_log_and_audit(tmp_path, example, caplog):
    import json
    import logging
    from types import SimpleNamespace

    from edge.audit import AuditLog
    from edge.daemon import Daemon

    example["camera"]["source"] = "rtps://admin:S3cret@host/stream"
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(example))
    audit = AuditLog(tmp_path / "audit.jsonl", "t1", fsync=False)
    with caplog.at_level(logging.ERROR, logger="edge.daemon"):
        Daemon._do_reload(SimpleNamespace(config_path=path, audit=audit))  # only what a refused reload touches
    assert "config reload refused" in caplog.text and "camera.source" in caplog.text
    assert "S3cret" not in caplog.text
    entries = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert entries[-1]["event"] == "config_change" and entries[-1]["data"]["accepted"] is False
    assert "camera.source" in entries[-1]["data"]["error"]
    assert "S3cret" not in (tmp_path / "audit.jsonl").read_text()


def test_bad_roi_polygon(example):
    example["camera"]["roi"] = [[0, 0], [10, 10]]
    assert "camera.roi: a region of interest needs at least 3 points" in errors_of(example)


def test_roll_degrees_is_a_bounded_number_of_degrees(example):
    example["camera"]["roll_degrees"] = 60
    assert "camera.roll_degrees" in errors_of(example) and "45" in errors_of(example)
    example["camera"]["roll_degrees"] = "level"
    assert "camera.roll_degrees" in errors_of(example)
    example["camera"]["roll_degrees"] = -7.5
    assert parse_config(example, "edge.yaml").camera.roll_degrees == -7.5


def test_bad_id_characters(example):
    example["device"]["id"] = "unit 1/evil"
    assert "device.id:" in errors_of(example)


def test_top_level_not_a_mapping():
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config(["a", "b"], "edge.yaml")


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "edge.yaml"
    bad.write_text("device:\n  id: x\n  state_dir: [unclosed\n")
    with pytest.raises(ConfigError, match=r"edge.yaml: line \d+, column \d+: not valid YAML"):
        load_config(bad)


def test_a_config_not_in_utf8_names_line_and_byte(tmp_path):
    """An editor that saved the file as Latin-1 gave a UnicodeDecodeError traceback, and on SIGHUP
    stopped the daemon; it is a config error like any other."""
    bad = tmp_path / "edge.yaml"
    bad.write_bytes("device:\n  id: unit-1\nsite:\n  road: 'Stra\u00dfe'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"edge.yaml: line 4: not UTF-8 text \(byte 0xdf at offset 40\)"):
        load_config(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_relative_paths_are_relative_to_the_config_file(tmp_path, example):
    example["device"]["state_dir"] = "state"
    example["camera"]["source"] = "file:media/v.mp4"
    example["lists"]["device_key"] = "keys/device.key"
    example["models"]["dir"] = "models"
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "edge.yaml"
    path.write_text(yaml.safe_dump(example))
    cfg = load_config(path)
    assert cfg.device.state_dir == tmp_path / "sub" / "state"
    assert cfg.camera.source == f"file:{tmp_path / 'sub' / 'media' / 'v.mp4'}"
    assert cfg.lists.device_key == tmp_path / "sub" / "keys" / "device.key"
    assert cfg.outbox.path == tmp_path / "sub" / "state" / "outbox.sqlite"


def _check_config(path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", "check-config", *flags, str(path)],
                          capture_output=True, text=True)


def test_check_config_command(tmp_path, example):
    ok = _check_config(EXAMPLE, "--syntax-only")  # its models.dir is the unit's /opt/anpr-edge/models
    assert ok.returncode == 0 and "OK" in ok.stdout
    here = copy.deepcopy(example)
    here["models"]["dir"] = str(ROOT / "models")
    (tmp_path / "here.yaml").write_text(yaml.safe_dump(here))
    ok = _check_config(tmp_path / "here.yaml")
    assert ok.returncode == 0 and "OK" in ok.stdout, ok.stderr
    bad = copy.deepcopy(example)
    bad["camera"]["source"] = "rtps://x"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = subprocess.run([sys.executable, "-m", "edge.cli", "check-config", str(path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "camera.source: unknown scheme 'rtps'" in res.stderr


def test_check_config_names_model_files_that_would_not_load(tmp_path, example):
    """A technician learns from check-config, not from a service that fails to start, that a model
    file is missing from models.dir or is a model of another kind; switched-off models are not looked for."""
    bad = copy.deepcopy(example)
    bad["models"].update(dir=str(ROOT / "models"), detector="recognizer.onnx", recognizer="recognizer-int9.onnx",
                         verifier="", corner_refiner="corner_refiner.onnx")
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = _check_config(path)
    assert res.returncode == 2 and "OK" not in res.stdout
    lines = res.stderr.splitlines()
    assert lines[0].endswith("the configuration is valid, but:")
    assert lines[1:] == [
        f"  models.detector: {ROOT / 'models' / 'recognizer.onnx'} is a plate_recognizer model, expected a plate_detector",
        f"  models.recognizer: recognizer-int9.onnx not found in models.dir {ROOT / 'models'}",
    ]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "detector.onnx").write_bytes(b"not a model")
    (tmp_path / "models" / "recognizer.onnx").symlink_to(ROOT / "models" / "recognizer.onnx")
    bad["models"].update(dir=str(tmp_path / "models"), detector="detector.onnx", recognizer="recognizer.onnx",
                         corner_refiner="")
    path.write_text(yaml.safe_dump(bad))
    res = _check_config(path)
    problems = res.stderr.splitlines()[1:]
    assert res.returncode == 2 and len(problems) == 1, res.stderr
    assert problems[0].startswith("  models.detector: ") and str(tmp_path / "models" / "detector.onnx") in problems[0]
    assert _check_config(path, "--syntax-only").returncode == 0
    bad["models"]["recognizer"] = ""  # the detector and the recognizer cannot be switched off
    path.write_text(yaml.safe_dump(bad))
    res = _check_config(path, "--syntax-only")
    assert res.returncode == 2 and "models.recognizer: String should have at least 1 character" in res.stderr
