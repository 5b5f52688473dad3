"""Shared fixtures: a real Mosquitto broker on a free loopback port, and paths to real data."""

from __future__ import annotations

import csv
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge.types import box_iou  # noqa: F401  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
SHARED_DATA = ROOT.parent / "shared" / "data"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free loopback ports: the sockets are held open together, so the kernel cannot hand
    the same port out twice (two separate free_port() calls can, and a broker then fails to bind)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mosquitto_binary() -> str:
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if exe is None:
        pytest.fail("mosquitto is not installed: .ci/run installs it (apt-get install -y mosquitto)")
    return exe


@dataclass
class Broker:
    """A Mosquitto process the test owns; stop()/start() simulate outages on the same port."""

    host: str
    port: int
    workdir: Path
    extra_conf: str = ""
    proc: subprocess.Popen | None = None

    def config_text(self) -> str:
        """The mosquitto.conf this broker runs with."""
        return f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n" + self.extra_conf

    def ports(self) -> tuple[int, ...]:
        """Every port the broker listens on: start() returns once all of them accept connections."""
        return (self.port,)

    def start(self, timeout: float = 10.0) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        log = open(self.workdir / "mosquitto.log", "ab")

        def launch() -> subprocess.Popen:
            return subprocess.Popen([_mosquitto_binary(), "-c", str(conf)], stdout=log, stderr=log)

        self.proc = launch()
        waiting = list(self.ports())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = (self.workdir / "mosquitto.log").read_text()
                # a restart on the same port can find it still held for a moment (the old broker's
                # socket, or another process's short-lived connection): try again until the deadline
                if text.rstrip().endswith("Address already in use") and time.monotonic() + 0.3 < deadline:
                    time.sleep(0.2)
                    self.proc = launch()
                    waiting = list(self.ports())
                    continue
                raise RuntimeError(f"mosquitto exited: {text}")
            try:
                with socket.create_connection((self.host, waiting[0]), timeout=0.2):
                    waiting.pop(0)
                if not waiting:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def broker(tmp_path):
    """A fresh anonymous Mosquitto on 127.0.0.1:<free port>, stopped after the test."""
    b = Broker("127.0.0.1", free_port(), tmp_path)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


def detect_val_frames(shared_data: Path, name: str, min_width: float = 0.0) -> list[tuple[Path, np.ndarray]]:
    """The val frames of one detection set with their labelled boxes (N x 4), sorted by file name;
    only frames whose narrowest plate is at least min_width pixels wide."""
    root = shared_data / "detect" / name
    boxes: dict[str, list] = {}
    with open(root / "labels.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r.get("split", "val") == "val":
                boxes.setdefault(r["image"], []).append([float(r[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
    out = [(root / k, np.asarray(v)) for k, v in sorted(boxes.items())]
    return [(p, b) for p, b in out if (b[:, 2] - b[:, 0]).min() >= min_width]
