"""The unit's YAML configuration: one schema, validated once at start-up.

Every section is a strict pydantic model (unknown keys are errors); sections that belong to one
module live beside that module and are assembled here. Errors name the key path, the bad value
and what is allowed, so a field technician can fix the file without reading code. Error texts are
logged and audited (a refused reload), so an echoed value has its URL credentials masked, and the
value of a secret-looking key is never echoed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator

from edge.audit import AuditConfig
from edge.configbase import Section
from edge.credentials import mask_credentials
from edge.hits import EvidenceConfig
from edge.lists.config import ListsConfig
from edge.motion import MotionConfig
from edge.outbox import OutboxConfig
from edge.plate_lean import MAX_ROLL_DEGREES
from edge.publisher import MqttConfig
from edge.tracker import TrackerConfig

SOURCE_SCHEMES = ("rtsp", "http", "https", "picamera", "v4l2", "file")


class ConfigError(ValueError):
    """A configuration problem, already phrased for the person who edits the YAML file."""


class DeviceConfig(Section):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$",
                    description="Unique id of this unit; used in topics and hit messages.")
    state_dir: Path = Field(Path("/var/lib/anpr-edge"),
                            description="Writable directory for the outbox, list cache and status file.")


class SiteConfig(Section):
    lat: float = Field(ge=-90, le=90, description="Latitude of the camera site, WGS84 degrees.")
    lon: float = Field(ge=-180, le=180, description="Longitude of the camera site, WGS84 degrees.")
    road: str = Field("", description="Road name or number, e.g. 'A13'.")
    direction: str = Field("", description="Direction of the traffic watched, e.g. 'southbound' or 'Rotterdam'.")


class ReconnectConfig(Section):
    initial_s: float = Field(1.0, gt=0, description="First wait before reopening a dropped stream.")
    max_s: float = Field(30.0, gt=0, description="Longest wait between reopening attempts (backoff doubles up to this).")


class CameraConfig(Section):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="Id of this camera on the unit.")
    source: str = Field(description=(
        "Where frames come from: rtsp://..., http(s)://... (MJPEG/HLS that OpenCV opens), "
        "picamera:0 (Raspberry Pi camera), v4l2:/dev/video0 (USB camera), file:PATH (a video file or an image folder)."))
    width: int | None = Field(None, gt=0, description="Requested capture width for picamera/v4l2 (None = camera default).")
    height: int | None = Field(None, gt=0, description="Requested capture height for picamera/v4l2.")
    fps: float = Field(0, ge=0, description="Frame rate limit for files and folders (0 = as fast as inference takes them).")
    loop: bool = Field(False, description="Replay a file source again from the start when it ends (demos, tests).")
    queue_size: int = Field(4, ge=1, le=256, description="Frames buffered between capture and inference; the oldest is dropped when full.")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig, description="Backoff for reopening a dropped stream.")
    roi: list[tuple[float, float]] | None = Field(None, description=(
        "Region of interest as a polygon of at least 3 [x, y] points in frame pixels; plates outside are ignored."))
    roll_degrees: float = Field(0.0, ge=-MAX_ROLL_DEGREES, le=MAX_ROLL_DEGREES, description=(
        "How far the scene leans on screen, clockwise positive: the 'plate lean' that `anpr-edge camera aim` "
        "prints. Each frame is searched turned back level by this much, so a camera mounted with a roll reads "
        "as well as a level one (0 = the camera is level)."))

    @field_validator("source")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        scheme = urlsplit(v).scheme if ":" in v else ""
        if scheme not in SOURCE_SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}, expected rtsp, http, picamera, v4l2, file")
        if scheme == "file" and not source_path(v):
            raise ValueError("file source needs a path, e.g. file:/data/video.mp4")
        return v

    @field_validator("roi")
    @classmethod
    def _polygon(cls, v):
        if v is not None and len(v) < 3:
            raise ValueError("a region of interest needs at least 3 points")
        return v


def source_path(source: str) -> str:
    """The path of a file: source (file:/a/b, file:rel/b or file:///a/b)."""
    rest = source.split(":", 1)[1]
    if rest.startswith("//"):
        rest = urlsplit(source).path
    return rest


class ModelsConfig(Section):
    dir: Path = Field(Path("models"), description="Folder holding the ONNX models and their sidecars.")
    detector: str = Field("detector.onnx", min_length=1, description="Plate detector model file inside models.dir.")
    recognizer: str = Field("recognizer.onnx", min_length=1, description="Plate recognizer model file inside models.dir.")
    verifier: str = Field("plate_verifier.onnx", description=(
        "Plate verifier model file inside models.dir: a second look at detector boxes of doubtful score, "
        "so badges, grilles and lettering are not taken for plates. Empty (\"\") switches it off."))
    corner_refiner: str = Field("corner_refiner.onnx", description=(
        "Corner refiner model file inside models.dir: places each detected plate's four corners from a "
        "closer look, so the recognizer reads a better straightened crop. Empty (\"\") switches it off."))
    threads: int = Field(1, ge=0, le=64, description="onnxruntime intra-op threads per model (0 = all cores).")


class DetectionConfig(Section):
    min_score: float = Field(0.4, ge=0, le=1, description="Detector score below which a box is ignored.")
    verify_below: float = Field(0.7, ge=0, le=1, description=(
        "Boxes the detector scores under this are looked at again by models.verifier; their score becomes "
        "the geometric mean of the detector's score and the verifier's plate probability."))
    min_plate_width: int = Field(40, ge=0, description="Plates narrower than this many pixels are ignored (too small to read).")
    close_ups: bool = Field(True, description=(
        "When a frame shows no plate scored at least min_score, search it again at a smaller size for a plate too "
        "large for the normal search (a car stopped close to the camera). Costs a quarter to a third of a search, "
        "and only on such frames."))
    min_read_confidence: float = Field(0.5, ge=0, le=1, description="Passages below this confidence are not matched.")


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level. No level ever logs plate text of non-hits.")
    format: Literal["text", "json"] = Field("text", description="Journal-friendly text or one JSON object per line.")


class EdgeConfig(Section):
    device: DeviceConfig = Field(description="Identity and state directory of this unit.")
    site: SiteConfig = Field(description="Where the camera stands; sent with every hit.")
    camera: CameraConfig = Field(description="The frame source.")
    models: ModelsConfig = Field(default_factory=ModelsConfig, description="ONNX models.")
    detection: DetectionConfig = Field(default_factory=DetectionConfig, description="Detector thresholds.")
    tracking: TrackerConfig = Field(default_factory=TrackerConfig, description="Tracking and multi-frame voting.")
    motion: MotionConfig = Field(default_factory=MotionConfig, description="Skip detection where nothing moves.")
    lists: ListsConfig = Field(description="Reference lists: keys, which lists are enabled, sync topic.")
    mqtt: MqttConfig = Field(description="Connection to the central MQTT broker.")
    outbox: OutboxConfig = Field(description="Durable store of hits until the broker acknowledges them.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Evidence images attached to hits only.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="Hash-chained audit trail (never plate texts).")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")


# keys whose values are never echoed in an error (passwords, tokens, keys or key files: someone
# may have pasted the secret itself where a file name belongs)
_SECRET_KEY = re.compile(r"pass|secret|token|key|credential|auth|cert", re.IGNORECASE)


def _shown_value(e: dict) -> str:
    """' (got VALUE)' for an error, or '' where the value is not shown (missing or unknown keys,
    whole sections, and keys that hold or point at secrets)."""
    value = e.get("input")
    if e["type"] in ("missing", "extra_forbidden") or isinstance(value, dict):
        return ""
    if any(isinstance(p, str) and _SECRET_KEY.search(p) for p in e["loc"]):
        return " (value not shown: it may be a secret)"
    return f" (got {mask_credentials(repr(value))})"


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the configuration; check spelling and indentation)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{path}: {mask_credentials(msg)}{_shown_value(e)}")
    return f"{origin}: invalid configuration:\n  " + "\n  ".join(lines)


def parse_config(data: Any, origin: str = "<config>", base_dir: Path | None = None) -> EdgeConfig:
    """Validate a decoded YAML mapping; relative paths are taken from base_dir (the file's folder)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(data).__name__}")
    data = _with_defaults(data)
    try:
        cfg = EdgeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, origin)) from None
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
    if cfg.outbox.path is None:
        cfg = cfg.model_copy(update={"outbox": cfg.outbox.model_copy(
            update={"path": cfg.device.state_dir / "outbox.sqlite"})})
    return cfg


def _with_defaults(data: dict) -> dict:
    """Defaults that depend on other keys: the list device id is the unit's id unless set."""
    lists, device = data.get("lists"), data.get("device")
    if isinstance(lists, dict) and isinstance(device, dict) and "device_id" not in lists and "id" in device:
        data = {**data, "lists": {**lists, "device_id": device["id"]}}
    return data


def _resolve_paths(model: Section, base: Path) -> Section:
    """Make every relative path relative to the config file's folder, so the unit does not depend
    on its working directory. File sources are paths too."""
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = base / value
        elif isinstance(value, Section):
            updates[name] = _resolve_paths(value, base)
        elif name == "source" and isinstance(value, str) and value.startswith("file:"):
            p = Path(source_path(value))
            if not p.is_absolute():
                updates[name] = f"file:{base / p}"
    return model.model_copy(update=updates) if updates else model


def _line_of_offset(path: Path, offset: int) -> int:
    """1-based line number of a byte offset in a file (for errors about its raw bytes)."""
    try:
        return path.read_bytes()[:offset].count(b"\n") + 1
    except OSError:
        return 0


def load_config(path: str | Path) -> EdgeConfig:
    """Read and validate a YAML config file; raises ConfigError with every problem listed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    except UnicodeDecodeError as e:  # e.g. saved as Latin-1 by an editor: name the spot, not a traceback
        line = _line_of_offset(path, e.start)
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); save the file as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    return parse_config(data, str(path), path.resolve().parent)
