"""MotionGate on real dashcam frames (MIT, shared data): still scenes are skipped, movement is not."""

from __future__ import annotations

from datetime import datetime, timezone

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge.motion import MotionConfig, MotionGate
from edge.types import Frame

T0 = datetime(2026, 11, 28, tzinfo=timezone.utc)


def _car(img, x, y):
    """A light car body with a dark window and a white plate (a uniform patch could match the road's grey)."""
    cv2.rectangle(img, (x, y), (x + 120, y + 80), (210, 210, 215), -1)
    cv2.rectangle(img, (x + 15, y + 8), (x + 105, y + 35), (40, 40, 40), -1)
    cv2.rectangle(img, (x + 35, y + 55), (x + 85, y + 68), (250, 250, 250), -1)


def _frame(image, i, fps=10.0):
    return Frame(image=image, index=i, mono_ms=i * 1000 / fps, utc=T0)


@pytest.fixture(scope="module")
def background(shared_data):
    path = sorted((shared_data / "detect" / "ro_dashcam" / "images").glob("*.jpg"))[0]
    img = cv2.imread(str(path))
    assert img is not None, path
    return img


def test_still_scene_with_sensor_noise_is_skipped(background):
    gate = MotionGate(MotionConfig(max_idle_s=0))
    rng = np.random.default_rng(0)
    results = []
    for i in range(30):
        noisy = np.clip(background.astype(np.int16) + rng.normal(0, 3, background.shape), 0, 255).astype(np.uint8)
        results.append(gate.changed(_frame(noisy, i)))
    assert results[0] is True  # the first frame is always looked at
    assert not any(results[1:])


def test_a_moving_car_sized_patch_is_seen(background):
    gate = MotionGate(MotionConfig(max_idle_s=0))
    gate.changed(_frame(background, 0))
    moved = []
    for i in range(1, 15):
        img = background.copy()
        x = 100 + 25 * i
        _car(img, x, 300)  # a small car moving right
        moved.append(gate.changed(_frame(img, i)))
    assert all(moved)


def test_slow_creep_accumulates_against_the_last_frame_let_through(background):
    gate = MotionGate(MotionConfig(max_idle_s=0))
    gate.changed(_frame(background, 0))
    results = []
    for i in range(1, 40):
        img = background.copy()
        _car(img, 200 + i, 300)  # 1 px per frame
        results.append(gate.changed(_frame(img, i)))
    assert results[0] is True  # the patch appears
    assert 0 < sum(results[1:]) < 20  # single-pixel steps are skipped, but the creep adds up


def test_idle_frames_are_forced_through_now_and_then(background):
    gate = MotionGate(MotionConfig(max_idle_s=1.0))
    results = [gate.changed(_frame(background, i, fps=10)) for i in range(31)]
    assert [i for i, r in enumerate(results) if r] == [0, 10, 20, 30]


def test_disabled_gate_passes_everything_and_config_is_strict(background):
    gate = MotionGate(MotionConfig(enabled=False))
    assert all(gate.changed(_frame(background, i)) for i in range(3))
    for name, f in MotionConfig.model_fields.items():
        assert f.description, name
    with pytest.raises(ValidationError):
        MotionConfig(treshold=3)


def test_bad_frame_is_a_clear_error():
    gate = MotionGate(MotionConfig())
    with pytest.raises(ValueError, match="motion gate"):
        gate.changed(_frame(np.zeros((0, 0, 3), np.uint8), 0))


def test_clock_going_back_does_not_stop_the_idle_frames(background):
    # a day of uptime, then the source restarts its clock (a replayed file, a new capture): a still scene
    # must still get its idle frame every max_idle_s, not only once the clock has caught up a day later
    gate = MotionGate(MotionConfig(max_idle_s=1.0))
    day = 86_400_000.0
    assert gate.changed(Frame(image=background, index=0, mono_ms=day, utc=T0))
    results = [gate.changed(_frame(background, i, fps=10)) for i in range(31)]
    assert sum(results) >= 3
