"""sd_notify over a real AF_UNIX datagram socket bound as $NOTIFY_SOCKET, as systemd does."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from edge.sdnotify import SdNotifyError, Watchdog, notify, watchdog_interval_s


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A bound datagram socket standing in for systemd's notify socket (path form)."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket, without blocking."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(1.0)
    return out


def test_ready_status_stopping_arrive_as_datagrams(notify_socket):
    assert notify("READY=1", "STATUS=reading plates from v4l2:/dev/video0")
    assert notify_socket.recv(4096).decode() == "READY=1\nSTATUS=reading plates from v4l2:/dev/video0"
    assert notify("STOPPING=1")
    assert notify_socket.recv(4096).decode() == "STOPPING=1"


def test_status_newline_cannot_inject_an_assignment(notify_socket):
    assert notify("STATUS=camera lost\nREADY=1")
    assert notify_socket.recv(4096).decode() == "STATUS=camera lost READY=1"
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        notify("READY")


def test_abstract_socket(monkeypatch):
    name = f"anpr-edge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(1.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_noop_without_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify("READY=1") is False
    wd = Watchdog()
    assert not wd.enabled
    wd.frame_seen()
    assert wd.tick() is False


def test_send_failure_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert notify("READY=1") is False


def test_watchdog_env_parsing(monkeypatch):
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({}) is None
    with pytest.raises(SdNotifyError, match="WATCHDOG_USEC='soon'"):
        watchdog_interval_s({"WATCHDOG_USEC": "soon"})


def test_watchdog_feeds_only_while_frames_flow(notify_socket, monkeypatch):
    """Simulated clock, real socket: keep-alives stop once frames have been absent for WatchdogSec/2."""
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")  # WatchdogSec=20s: frames must be < 10 s old
    now = [1000.0]
    wd = Watchdog(clock=lambda: now[0])
    assert wd.enabled and wd.window_s == 10.0

    assert wd.tick() is False, "no frame yet: no keep-alive before the camera delivers"
    assert received(notify_socket) == []

    sent_while_flowing = 0
    for _ in range(60):  # 30 s of frames at 2 fps, a tick per frame
        now[0] += 0.5
        wd.frame_seen()
        sent_while_flowing += wd.tick()
    msgs = received(notify_socket)
    assert msgs == ["WATCHDOG=1"] * sent_while_flowing
    # rate-limited to one per WatchdogSec/4 = 5 s, yet well inside WatchdogSec
    assert 5 <= sent_while_flowing <= 7

    # the camera stops: ticks go on (the main loop is alive) but no frame arrives
    sent_after_stop = 0
    for _ in range(40):  # 20 s
        now[0] += 0.5
        sent_after_stop += wd.tick()
    assert sent_after_stop <= 2, "at most the keep-alives due within the 10 s grace window"
    assert received(notify_socket) == ["WATCHDOG=1"] * sent_after_stop
    late = [wd.tick() for _ in range(5)]
    assert late == [False] * 5 and received(notify_socket) == []
    assert wd.withheld > 0

    # frames again: feeding resumes at once
    now[0] += 0.5
    wd.frame_seen()
    assert wd.tick() is True
    assert received(notify_socket) == ["WATCHDOG=1"]


def test_watchdog_real_time(notify_socket, monkeypatch):
    """Wall clock, real socket: with WatchdogSec=0.4 s, a frame gap of 0.3 s stops the feeding."""
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    wd = Watchdog()
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        wd.frame_seen()
        wd.tick()
        time.sleep(0.02)
    fed = received(notify_socket)
    assert len(fed) >= 3 and set(fed) == {"WATCHDOG=1"}
    time.sleep(0.3)  # frames stopped for longer than WatchdogSec/2
    for _ in range(10):
        assert wd.tick() is False
        time.sleep(0.02)
    assert received(notify_socket) == []


# ----- the real daemon under a stand-in systemd ------------------------------------------------------

MODELS = Path(__file__).resolve().parents[1] / "models"
HAVE_MODELS = (MODELS / "detector.onnx").is_file() and (MODELS / "recognizer.onnx").is_file()


def drain(sock: socket.socket, seconds: float) -> list[tuple[float, str]]:
    """(monotonic time, datagram) for everything arriving within `seconds`."""
    out = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append((time.monotonic(), sock.recv(4096).decode()))
        except socket.timeout:
            break
    return out


@pytest.mark.skipif(not HAVE_MODELS, reason=f"{MODELS}/detector.onnx and recognizer.onnx are not there yet "
                                            "(the daemon cannot start without them)")
def test_daemon_feeds_the_watchdog_only_while_frames_flow(tmp_path, broker, notify_socket, monkeypatch):
    """`anpr-edge run` with NOTIFY_SOCKET and WATCHDOG_USEC as systemd sets them: READY=1, keep-alives
    while the video plays, none once it has ended (the process still alive), STOPPING=1 on SIGTERM."""
    from unit_support import Unit

    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2s: frames must be under 1 s old
    unit = Unit(tmp_path, broker)
    # the demo video, played once at 25 fps (~9 s, whatever the machine's speed), no lists: the daemon
    # idles after its end
    unit.write_config(camera={"queue_size": 64, "fps": 25})
    unit.start()
    try:
        ready: list[tuple[float, str]] = []
        deadline = time.monotonic() + 90  # models load, broker connects, capture starts
        while not ready and time.monotonic() < deadline:
            assert unit.proc.poll() is None, f"daemon exited:\n{unit.log_text()[-3000:]}"
            ready = drain(notify_socket, 0.5)
        assert ready and ready[0][1].startswith("READY=1\nSTATUS=reading plates from file:"), ready
        flowing: list[tuple[float, str]] = ready[1:]  # keep-alives that came with READY in the same drain
        st = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            flowing += drain(notify_socket, 0.5)
            st = unit.status()
            if st.get("camera_state") == "ended":
                break
            assert unit.proc.poll() is None, unit.log_text()[-3000:]
        assert st.get("camera_state") == "ended", f"the video never ended: {st}"
        assert st["frames"] > 50
        assert {m for _, m in flowing} == {"WATCHDOG=1"}, flowing
        assert len(flowing) >= 2, "keep-alives while frames flowed"
        drain(notify_socket, 1.5)  # the grace window (WatchdogSec/2) after the last frame
        idle = drain(notify_socket, 3.0)
        assert idle == [], f"keep-alives without frames: {idle}"
        assert unit.proc.poll() is None, "the daemon itself is alive: only the frames stopped"
        unit.signal()
        assert unit.wait(30) == 0, unit.log_text()[-3000:]
        assert "STOPPING=1" in [m for _, m in drain(notify_socket, 2)]
        # the same run left a sound audit trail of its start and stop
        import json

        from edge.audit import verify
        trail = unit.state_dir / "audit.jsonl"
        assert verify(trail).ok
        assert [json.loads(line)["event"] for line in trail.read_text().splitlines()] == ["start", "stop"]
    finally:
        unit.stop()
