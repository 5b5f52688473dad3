"""Unit status: what the heartbeat publishes and what `anpr-edge status` shows locally.

Only whitelisted keys with numbers, booleans or short strings get through `sanitize_status`, so
no plate text can slip into the status topic or the status file by accident. The daemon writes
the file atomically (temp file, fsync, rename) in its state dir.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"

# key -> short description (also the order `anpr-edge status` prints them in)
STATUS_FIELDS: dict[str, str] = {
    "device": "unit id",
    "state": "online / offline / starting / stopping",
    "time": "UTC time of this status",
    "uptime_s": "seconds since the daemon started",
    "camera_state": "camera: streaming / reconnecting / stopped / error",
    "fps": "frames per second processed",
    "frames": "frames processed since start",
    "frames_dropped": "frames dropped because inference was busy",
    "inference_ms": "average inference time per frame (ms)",
    "passages": "vehicle passages since start",
    "hits": "hits since start",
    "hits_suppressed": "hits held back by the cool-down",
    "hits_acked": "hits acknowledged by the broker since start",
    "hits_evidence_omitted": "hits sent without their evidence images since start (broker would not take them whole)",
    "hits_too_large": "hits not sent since start: too large for the broker even without evidence (kept in the outbox)",
    "hits_held_back": "times since start a hit was held back: the broker kept dropping the connection for it",
    "outbox_depth": "hits waiting for the broker",
    "outbox_alarm": "outbox above its alarm level",
    "outbox_rejected": "hits refused because the outbox was full",
    "outbox_oldest_s": "age of the oldest waiting hit (s)",
    "mqtt_connected": "connected to the broker",
    "mqtt_error": "last broker connection problem",
    "list_version": "reference list version in use",
    "lists_active": "number of active lists",
    "cpu_temp_c": "CPU temperature (deg C)",
    "clock_sync": "clock synchronisation: synced / unsynced / unknown",
    "model_versions": "detector/recognizer versions",
    "version": "software version",
}
_MAX_STR = 300


def sanitize_status(data: dict) -> dict:
    """Keep only known status keys with plain values; drop (and name) anything else."""
    out: dict = {}
    for k, v in data.items():
        if k not in STATUS_FIELDS:
            log.warning("status key %r is not a known status field; dropped", k)
            continue
        if k == "model_versions" and isinstance(v, dict):
            out[k] = {str(a)[:64]: str(b)[:64] for a, b in v.items()}
        elif v is None or isinstance(v, (bool, int, float)):
            out[k] = v
        elif isinstance(v, str):
            out[k] = v[:_MAX_STR]
        else:
            log.warning("status key %r has a %s value; dropped", k, type(v).__name__)
    return out


def cpu_temperature() -> float | None:
    """Highest thermal-zone temperature in deg C (Raspberry Pi: the SoC), None when not available."""
    temps = []
    for zone in Path("/sys/class/thermal").glob("thermal_zone*/temp"):
        try:
            temps.append(int(zone.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return round(max(temps), 1) if temps else None


def clock_sync_state() -> str:
    """'synced' when the kernel clock is disciplined (NTP/chrony/timesyncd), 'unsynced', or 'unknown'."""
    if Path("/run/systemd/timesync/synchronized").exists():
        return "synced"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return "unknown"
    if state < 0:
        return "unknown"
    return "unsynced" if state == 5 else "synced"  # TIME_ERROR (5) = not synchronised


def write_status(path: str | Path, data: dict) -> dict:
    """Atomically replace the status file with the sanitised data; returns what was written."""
    path = Path(path)
    clean = sanitize_status(data)
    clean.setdefault("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".status-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(clean, f, indent=1, sort_keys=False)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return clean


def read_status(path: str | Path) -> dict:
    """The status file as a dict; raises FileNotFoundError / ValueError with the path in the message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no status file (is the anpr-edge daemon running with this state dir?)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: status file is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: status file does not hold a JSON object")
    return data


def format_status(data: dict, file_age_s: float | None = None) -> str:
    """Human-readable status lines, in the order of STATUS_FIELDS."""
    lines = []
    for k in STATUS_FIELDS:
        if k in data:
            v = data[k]
            if isinstance(v, dict):
                v = ", ".join(f"{a}={b}" for a, b in v.items())
            lines.append(f"{k:17} {v}")
    if file_age_s is not None:
        lines.append(f"{'status_age_s':17} {file_age_s:.0f}" + ("  (stale: daemon not updating?)" if file_age_s > 120 else ""))
    return "\n".join(lines)
