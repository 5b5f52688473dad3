"""A whole roadside unit for integration tests: central lists, device keys, config, daemon process,
and a sniffer that records every message that crosses the broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from conftest import ROOT, Broker
from edge.lists import keys
from edge.lists.central import Central
from edge.lists.config import ListsConfig
from edge.lists.store import ListStore
from edge.lists.sync import publish_blobs, sync_topics
from edge.publisher import MqttConfig

DEMO = ROOT / "demo"
DEVICE = "unit-t1"


def demo_truth() -> dict:
    return json.loads((DEMO / "demo_truth.json").read_text())


@dataclass
class Sniffer:
    """Subscribes to '#' and keeps every (topic, payload) the broker routes."""

    host: str
    port: int
    messages: list[tuple[str, bytes]] = field(default_factory=list)

    def __post_init__(self):
        self._ready = threading.Event()
        c = self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sniffer-{os.getpid()}-{time.time_ns()}")
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("#", qos=1)
        c.on_subscribe = lambda *a: self._ready.set()
        c.on_message = lambda cl, u, m: self.messages.append((m.topic, bytes(m.payload)))
        c.connect(self.host, self.port)
        c.loop_start()
        assert self._ready.wait(10), "sniffer could not subscribe"

    def hits(self) -> list[dict]:
        out, seen = [], set()
        for topic, payload in list(self.messages):
            if topic.endswith("/hits") or topic.startswith("anpr/cjib/"):
                msg = json.loads(payload)
                if msg["hit_id"] not in seen:
                    seen.add(msg["hit_id"])
                    out.append(msg)
        return out

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


@dataclass
class Unit:
    root: Path
    broker: Broker
    log_path: Path = None
    proc: subprocess.Popen | None = None

    def __post_init__(self):
        self.central = Central(self.root / "central")
        self.trusted = self.central.init()
        self.unit_dir = self.root / "unit"
        self.unit_dir.mkdir()
        self.device_key, pub = self.unit_dir / "device.key", self.unit_dir / "device.pub"
        keys.generate_device_key(self.device_key, pub)
        self.central.add_device(DEVICE, pub)
        self.config_path = self.unit_dir / "edge.yaml"
        self.log_path = self.unit_dir / "daemon.log"
        self.state_dir = self.unit_dir / "state"

    def lists_config(self) -> ListsConfig:
        return ListsConfig(enabled=["*"], store_dir=self.state_dir / "lists", device_id=DEVICE,
                           device_key=self.device_key, signing_public_key=self.trusted)

    def build_lists(self, csv_path: Path, lists_yaml: Path = DEMO / "lists.yaml"):
        sealed, errors = self.central.build(lists_yaml, csv_path)
        assert not errors
        return sealed

    def publish(self, sealed) -> None:
        snap, _ = sync_topics(f"anpr/lists/{DEVICE}")
        publish_blobs([(snap, sealed.snapshot, True)], MqttConfig(host=self.broker.host, port=self.broker.port))

    def cache(self, sealed) -> None:
        """Install the package as the unit had received it earlier (the broker may be down now)."""
        assert ListStore.from_config(self.lists_config()).apply(sealed.snapshot).status == "applied"

    def write_config(self, video: Path = DEMO / "demo.mp4", **sections) -> Path:
        cfg = yaml.safe_load((ROOT / "config" / "edge.example.yaml").read_text())
        cfg["device"] = {"id": DEVICE, "state_dir": str(self.state_dir)}
        cfg["camera"].update(source=f"file:{video}", width=None, height=None, fps=0, loop=False, queue_size=256)
        cfg["models"]["dir"] = str(ROOT / "models")
        cfg["lists"].update(enabled=["*"], device_id=DEVICE, device_key=str(self.device_key),
                            signing_public_key=str(self.trusted), store_dir=str(self.state_dir / "lists"))
        cfg["mqtt"] = {"host": self.broker.host, "port": self.broker.port, "heartbeat_s": 1,
                       "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "connect_timeout_s": 2}
        cfg["logging"]["level"] = "DEBUG"
        for name, values in sections.items():
            cfg[name].update(values)
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return self.config_path

    def start(self, *extra: str) -> subprocess.Popen:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(self.config_path), *extra],
                                     stdout=self.log, stderr=self.log, cwd=ROOT)
        return self.proc

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def status(self) -> dict:
        try:
            return json.loads((self.state_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def wait_status(self, pred, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st and pred(st):
                return st
            assert self.proc.poll() is None, f"daemon exited early:\n{self.log_text()}"
            time.sleep(0.2)
        raise AssertionError(f"status never satisfied the condition; last {self.status()}\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
