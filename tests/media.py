"""Real media for tests: short videos written from real frames of the shared data sets."""

from __future__ import annotations

from pathlib import Path

import cv2

from conftest import SHARED_DATA

RO_FRAMES = SHARED_DATA / "detect" / "ro_dashcam" / "images"


def real_frames(n: int, pattern: str = "dayride_type1_002_*.jpg") -> list[Path]:
    files = sorted(RO_FRAMES.glob(pattern))[:n]
    assert len(files) == n, f"expected {n} frames matching {pattern} in {RO_FRAMES}"
    return files


def write_video(path: Path, n: int = 12, fps: float = 10.0, size: tuple[int, int] = (640, 360)) -> Path:
    """An MPEG-4 video of n real dashcam frames (decoded again by the code under test)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for f in real_frames(n):
        writer.write(cv2.resize(cv2.imread(str(f)), size))
    writer.release()
    return path
