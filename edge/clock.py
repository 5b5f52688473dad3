"""Clock-sync state and CPU temperature for status messages, read from the kernel without tools."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path

_TIME_ERROR = 5  # adjtimex(): the kernel's clock is not synchronised (NTP/PTP not locked)


def clock_sync_state() -> str:
    """'synced', 'unsynced' or 'unknown', from adjtimex(2) in read-only mode."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex with modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return "unknown"
    if state < 0:
        return "unknown"
    return "unsynced" if state == _TIME_ERROR else "synced"


def cpu_temperature_c() -> float | None:
    """The SoC temperature in degrees Celsius where the kernel exposes it (Raspberry Pi), else None."""
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        try:
            return round(int(zone.read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None
