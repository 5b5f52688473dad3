#!/usr/bin/env python3
"""Benchmark hit publishing on loopback: latency, sustained rate, and draining a 10,000-hit backlog.

Starts its own Mosquitto on a free port (persistence off) and a subscriber; hits are real hit
messages (schema v1, no evidence unless --evidence) going through the durable outbox, so every
figure includes the SQLite fsync on put and on acknowledgement.

    .venv/bin/python scripts/bench_publish.py [--latency-n 300] [--sustain-s 5] [--backlog 10000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge.hits import EvidenceConfig, HitIdentity, Site, build_hit_message, encode_hit  # noqa: E402
from edge.outbox import Outbox  # noqa: E402
from edge.publisher import MqttConfig, Publisher  # noqa: E402
from edge.types import Hit, ListMatch, Passage  # noqa: E402

TOPIC = "anpr/politie/bench-unit/hits"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen, int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


class Subscriber:
    """Records the arrival time of each hit id."""

    def __init__(self, port: int):
        self.arrived: dict[str, float] = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub", protocol=mqtt.MQTTv5)
        ready = threading.Event()
        self.c.on_connect = lambda cl, ud, f, rc, p: cl.subscribe(TOPIC, 1)
        self.c.on_subscribe = lambda *a: ready.set()
        self.c.on_message = self._msg
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        ready.wait(5)

    def _msg(self, cl, ud, m):
        hit_id = json.loads(m.payload)["hit_id"]
        with self.cond:
            self.arrived.setdefault(hit_id, time.perf_counter())
            self.cond.notify_all()

    def wait(self, hit_ids, timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self.cond:
            while not all(h in self.arrived for h in hit_ids):
                if not self.cond.wait(max(0.0, end - time.monotonic())):
                    return False
        return True

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def sample_hit(evidence: str) -> tuple[Hit, HitIdentity, EvidenceConfig]:
    t = datetime.now(timezone.utc)
    rng = np.random.default_rng(0)
    p = Passage(track_id=1, text="XSNB23", formatted="XS-NB-23", country="NL", confidence=0.97,
                char_confidences=(0.99,) * 6, alternatives=(), first_seen_ms=0.0, last_seen_ms=800.0,
                first_seen_utc=t - timedelta(milliseconds=800), last_seen_utc=t, frames=8, direction="approaching",
                best_crop=rng.integers(0, 255, (48, 200, 3), dtype=np.uint8),
                best_frame=rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8))
    m = ListMatch("L-stolen", "Stolen vehicles", "stolen_vehicle", "intercept", 9, "politie", "", "exact", "XSNB23",
                  "S1", 42)
    return Hit(p, (m,)), HitIdentity("bench-unit", "cam1", Site(52.0, 4.36, "A13", "Rotterdam"), "synced"), \
        EvidenceConfig(mode=evidence)


def message_factory(evidence: str):
    hit, ident, ev = sample_hit(evidence)
    template = build_hit_message(hit, ident, {"detector": "d1", "recognizer": "r1", "lists": 42}, ev)

    def make():
        msg = build_hit_message(hit, ident, {"detector": "d1", "recognizer": "r1", "lists": 42},
                                EvidenceConfig()) if evidence == "none" else dict(template)
        if evidence != "none":
            from edge.hits import new_hit_id
            msg["hit_id"] = new_hit_id()
        return msg["hit_id"], encode_hit(msg)
    return make


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latency-n", type=int, default=300, help="hits sent one at a time for the latency figures")
    ap.add_argument("--sustain-s", type=float, default=5.0, help="seconds of back-to-back hits for the rate")
    ap.add_argument("--backlog", type=int, default=10_000, help="hits queued while offline, then drained")
    ap.add_argument("--evidence", choices=["none", "crop", "frame", "both"], default="none")
    ap.add_argument("--max-inflight", type=int, default=20)
    args = ap.parse_args()

    make = message_factory(args.evidence)
    results: dict = {"evidence": args.evidence, "payload_bytes": len(make()[1]), "max_inflight": args.max_inflight}
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        work = Path(tmp)
        broker, port = start_broker(work)
        sub = Subscriber(port)
        cfg = MqttConfig(host="127.0.0.1", port=port, heartbeat_s=30, max_inflight=args.max_inflight,
                         reconnect_min_s=0.05, reconnect_max_s=0.5)
        try:
            # 1. latency: put -> durable -> published -> delivered to the subscriber, one hit at a time
            ob = Outbox(work / "lat.sqlite", max_items=1_000_000)
            pub = Publisher(cfg, ob, "bench-unit")
            pub.start()
            while not pub.connected:
                time.sleep(0.01)
            deliver, put_ms, acked = [], [], []
            for _ in range(args.latency_n):
                hit_id, payload = make()
                t0 = time.perf_counter()
                ob.put(TOPIC, payload, hit_id)
                t1 = time.perf_counter()
                pub.notify()
                if not sub.wait([hit_id], 10):
                    raise SystemExit("hit not delivered within 10 s")
                deliver.append((sub.arrived[hit_id] - t0) * 1000)
                put_ms.append((t1 - t0) * 1000)
                while ob.depth():
                    time.sleep(0.0005)
                acked.append((time.perf_counter() - t0) * 1000)
            results["latency_ms"] = {
                "put_durable_median": round(statistics.median(put_ms), 2), "put_durable_p99": round(pct(put_ms, 0.99), 2),
                "delivered_median": round(statistics.median(deliver), 2), "delivered_p99": round(pct(deliver, 0.99), 2),
                "acked_median": round(statistics.median(acked), 2), "acked_p99": round(pct(acked, 0.99), 2)}

            # 2. sustained: a producer puts back-to-back for sustain_s; rate of hits delivered and acknowledged
            ids: list[str] = []
            t0 = time.perf_counter()
            acked0 = pub.stats.acked
            while time.perf_counter() - t0 < args.sustain_s:
                hit_id, payload = make()
                ob.put(TOPIC, payload, hit_id)
                pub.notify()
                ids.append(hit_id)
            produced_s = time.perf_counter() - t0
            sub.wait(ids, 120)
            while ob.depth():
                time.sleep(0.005)
            total_s = time.perf_counter() - t0
            results["sustained"] = {"hits": len(ids), "put_per_s": round(len(ids) / produced_s, 1),
                                    "acked_per_s": round((pub.stats.acked - acked0) / total_s, 1),
                                    "max_lag_s": round(total_s - produced_s, 2)}
            pub.stop()
            ob.close()

            # 3. backlog: 10,000 hits stored while the publisher is off, then drained
            ob = Outbox(work / "backlog.sqlite", max_items=max(args.backlog, 10))
            ids = []
            t0 = time.perf_counter()
            for _ in range(args.backlog):
                hit_id, payload = make()
                ob.put(TOPIC, payload, hit_id)
                ids.append(hit_id)
            fill_s = time.perf_counter() - t0
            pub = Publisher(cfg, ob, "bench-unit")
            t0 = time.perf_counter()
            pub.start()
            ok = sub.wait(ids, 600)
            delivered_s = time.perf_counter() - t0
            while ob.depth():
                time.sleep(0.01)
            drained_s = time.perf_counter() - t0
            pub.stop()
            results["backlog"] = {"hits": args.backlog, "all_delivered": ok, "fill_s": round(fill_s, 2),
                                  "delivered_s": round(delivered_s, 2), "drained_s": round(drained_s, 2),
                                  "drain_per_s": round(args.backlog / drained_s, 1)}
        finally:
            sub.close()
            broker.terminate()
            broker.wait(5)
    lat, sus, bl = results["latency_ms"], results["sustained"], results["backlog"]
    print(f"payload {results['payload_bytes']} bytes (evidence={args.evidence}), max_inflight {args.max_inflight}")
    print(f"latency put->durable       median {lat['put_durable_median']:7.2f} ms   p99 {lat['put_durable_p99']:7.2f} ms")
    print(f"latency put->delivered     median {lat['delivered_median']:7.2f} ms   p99 {lat['delivered_p99']:7.2f} ms")
    print(f"latency put->PUBACK+delete median {lat['acked_median']:7.2f} ms   p99 {lat['acked_p99']:7.2f} ms")
    print(f"sustained: {sus['hits']} hits, put {sus['put_per_s']}/s, acknowledged {sus['acked_per_s']}/s, "
          f"lag at end {sus['max_lag_s']} s")
    print(f"backlog {bl['hits']}: filled in {bl['fill_s']} s, all delivered in {bl['delivered_s']} s, "
          f"outbox empty after {bl['drained_s']} s ({bl['drain_per_s']}/s), complete={bl['all_delivered']}")
    print(json.dumps(results))
    return 0 if bl["all_delivered"] else 1


if __name__ == "__main__":
    sys.exit(main())
