"""Central consumer (`python -m edge.hitsclient hits`) and the local `status` command, as real processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.hits import new_hit_id
from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.status import write_status
from test_publisher import cfg_for, wait_for

ROOT = Path(__file__).resolve().parents[1]


def start_consumer(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / f"{name}.jsonl"
    ready = tmp_path / f"{name}.ready"
    proc = subprocess.Popen([sys.executable, "-m", "edge.hitsclient", "hits", "--ready-file", str(ready), *args],
                            cwd=ROOT, stdout=open(out, "w"), stderr=open(tmp_path / f"{name}.err", "w"))
    assert wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=15), "consumer did not subscribe"
    assert proc.poll() is None, (tmp_path / f"{name}.err").read_text()
    return proc, out


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def read_ids(path: Path) -> list[str]:
    return [json.loads(line)["hit_id"] for line in path.read_text().splitlines() if line.strip()]


def test_two_shared_subscription_consumers_split_hits_exactly_once(broker, tmp_path):
    cfg_file = tmp_path / "central.yaml"
    cfg_file.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n  protocol: '5'\n")
    a, out_a = start_consumer(tmp_path, "a", "--config", str(cfg_file), "--group", "central",
                              "--topic", "anpr/+/+/hits")
    b, out_b = start_consumer(tmp_path, "b", "--host", "127.0.0.1", "--port", str(broker.port),
                              "--topic", "$share/central/anpr/+/+/hits")
    ob = Outbox(tmp_path / "o.sqlite")
    pub = Publisher(cfg_for(broker.port), ob, "unit-1")
    pub.start()
    ids = []
    try:
        for i in range(300):
            h = new_hit_id()
            agency = ("politie", "douane")[i % 2]
            ob.put(f"anpr/{agency}/unit-1/hits", json.dumps({"hit_id": h, "n": i}).encode(), h)
            ids.append(h)
        pub.notify()
        assert wait_for(lambda: len(read_ids(out_a)) + len(read_ids(out_b)) >= 300, timeout=20)
        time.sleep(0.3)  # nothing more may arrive
    finally:
        pub.stop()
        stop(a)
        stop(b)
    got_a, got_b = read_ids(out_a), read_ids(out_b)
    assert sorted(got_a + got_b) == sorted(ids)  # every hit, exactly once over both consumers
    assert got_a and got_b, "the broker did not split the stream"


def test_consumer_drops_duplicates_and_stops_at_count(broker, tmp_path):
    proc, out = start_consumer(tmp_path, "c", "--host", "127.0.0.1", "--port", str(broker.port),
                               "--count", "20", "--with-topic", "-v")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    ids = [new_hit_id() for _ in range(20)]
    c.publish("anpr/politie/unit-9/hits", b"not json", qos=1).wait_for_publish(5)
    for h in ids:
        for _ in range(3):  # at-least-once delivery: the same hit may come more than once
            c.publish("anpr/politie/unit-9/hits", json.dumps({"hit_id": h}), qos=1).wait_for_publish(5)
    try:
        assert proc.wait(15) == 0
    finally:
        c.disconnect()
        c.loop_stop()
        if proc.poll() is None:
            stop(proc)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["hit"]["hit_id"] for x in lines] == ids
    assert all(x["topic"] == "anpr/politie/unit-9/hits" for x in lines)
    err = (tmp_path / "c.err").read_text()
    # it stops at the 20th unique hit; that hit's 2 copies may or may not arrive before it disconnects
    assert re.search(r"20 hits, (38|39|40) duplicates dropped", err), err
    assert "is not a hit" in err


def test_persistent_consumer_gets_hits_published_while_it_was_down(broker, tmp_path):
    common = ("--host", "127.0.0.1", "--port", str(broker.port), "--persistent", "--client-id", "central-1")
    first, _ = start_consumer(tmp_path, "p1", *common)
    stop(first)  # the broker keeps the session and queues QoS 1 hits for it
    ob = Outbox(tmp_path / "o.sqlite")
    pub = Publisher(cfg_for(broker.port), ob, "unit-1")
    pub.start()
    ids = []
    try:
        for _ in range(25):
            h = new_hit_id()
            ob.put("anpr/politie/unit-1/hits", json.dumps({"hit_id": h}).encode(), h)
            ids.append(h)
        pub.notify()
        assert wait_for(lambda: ob.depth() == 0)
    finally:
        pub.stop()
    second, out = start_consumer(tmp_path, "p2", *common, "--count", "25")
    try:
        assert second.wait(15) == 0
    finally:
        if second.poll() is None:
            stop(second)
    got = read_ids(out)
    assert len(got) == 25 and sorted(got) == sorted(ids)  # order across a consumer restart is not guaranteed


def test_consumer_reports_refused_connection(tmp_path):
    from conftest import free_port

    r = subprocess.run([sys.executable, "-m", "edge.hitsclient", "hits", "--host", "127.0.0.1",
                        "--port", str(free_port()), "--timeout", "2"], cwd=ROOT, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1 and "connection refused" in r.stderr


def test_status_command_shows_the_status_file(tmp_path):
    state = tmp_path / "state"
    written = write_status(state / "status.json", {
        "device": "unit-1", "state": "online", "fps": 9.5, "frames_dropped": 3, "inference_ms": 71.2,
        "outbox_depth": 4, "list_version": 42, "cpu_temp_c": 51.3, "clock_sync": "synced",
        "camera_state": "streaming", "plate": "XSNB23", "last_read": {"text": "XSNB23"}})
    assert "plate" not in written and "last_read" not in written  # only whitelisted keys get in
    assert "XSNB23" not in (state / "status.json").read_text()
    r = subprocess.run([sys.executable, "-m", "edge.hitsclient", "status", "--state-dir", str(state)],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "outbox_depth      4" in r.stdout and "fps               9.5" in r.stdout and "status_age_s" in r.stdout
    cfg = tmp_path / "unit.yaml"
    cfg.write_text("device:\n  id: unit-1\n  state_dir: state\n")
    r = subprocess.run([sys.executable, "-m", "edge.hitsclient", "status", "--config", str(cfg), "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and json.loads(r.stdout)["list_version"] == 42
    r = subprocess.run([sys.executable, "-m", "edge.hitsclient", "status", "--state-dir", str(tmp_path / "none")],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no status file" in r.stderr
