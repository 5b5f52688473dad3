"""Central consumer (`python -m edge.hitsclient hits`) and the local `status` command, as real processes."""

from __future__ import annotations

import base64
import json
import os
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


def publish_all(port: int, payloads: list[bytes], topic: str = "anpr/politie/unit-9/hits") -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        for p in payloads:
            c.publish(topic, p, qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_bad_messages_are_kept_aside_and_do_not_stop_the_consumer(broker, tmp_path):
    # A non-string hit_id used to raise in paho's network thread: the consumer hung, printing nothing more.
    # A lone surrogate used to stop it with an "output" error, on every restart (the message is never acked).
    proc, out = start_consumer(tmp_path, "k", "--host", "127.0.0.1", "--port", str(broker.port), "--count", "2")
    good = [new_hit_id(), new_hit_id()]
    bad = [b'{"hit_id": ["x"]}', b'{"hit_id": "h-1", "s": "\\ud800"}']
    publish_all(broker.port, bad + [json.dumps({"hit_id": h}).encode() for h in good])
    try:
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            stop(proc)
    assert read_ids(out) == good
    err = (tmp_path / "k.err").read_text()
    kept = [json.loads(line.split("kept here: ", 1)[1]) for line in err.splitlines() if "kept here: " in line]
    assert [base64.b64decode(k["payload_b64"]) for k in kept] == bad  # nothing dropped silently
    assert "no hit_id string" in kept[0]["error"] and "UTF-8" in kept[1]["error"]


def test_rejects_file_gets_bad_and_oversized_messages(broker, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    proc, out = start_consumer(tmp_path, "r", "--host", "127.0.0.1", "--port", str(broker.port), "--count", "1",
                               "--rejects", str(rejects), "--max-bytes", "1000")
    h = new_hit_id()
    bad = [b"not json", b"[1, 2]", json.dumps({"hit_id": new_hit_id(), "pad": "x" * 2000}).encode()]
    publish_all(broker.port, bad + [json.dumps({"hit_id": h}).encode()])
    try:
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            stop(proc)
    assert read_ids(out) == [h]
    kept = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [base64.b64decode(k["payload_b64"]) for k in kept] == bad
    assert "larger than --max-bytes" in kept[2]["error"] and all(k["topic"] == "anpr/politie/unit-9/hits" for k in kept)


def test_persistent_without_client_id_is_refused(broker, tmp_path):
    # a generated client id differs on each start, so the kept session would never be resumed
    r = subprocess.run([sys.executable, "-m", "edge.hitsclient", "hits", "--host", "127.0.0.1",
                        "--port", str(broker.port), "--persistent", "--timeout", "1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--persistent needs a fixed --client-id" in r.stderr


def test_output_file_is_fsynced_before_each_ack(broker, tmp_path, monkeypatch):
    import argparse
    import threading

    from edge import hitsclient

    parser = argparse.ArgumentParser()
    hitsclient.add_subparsers(parser.add_subparsers(dest="command"))
    ready = tmp_path / "ready"
    args = parser.parse_args(["hits", "--host", "127.0.0.1", "--port", str(broker.port), "--count", "3",
                              "--timeout", "15", "--ready-file", str(ready)])
    events = []
    real_fsync, real_ack = os.fsync, mqtt.Client.ack
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", fd)), real_fsync(fd))[1])
    monkeypatch.setattr(mqtt.Client, "ack", lambda self, mid, qos: (events.append(("ack", mid)), real_ack(self, mid, qos))[1])
    path = tmp_path / "hits.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        rc = []
        t = threading.Thread(target=lambda: rc.append(hitsclient.run_hits_consumer(args, out=f)))
        t.start()
        assert wait_for(ready.exists, timeout=10)
        ids = [new_hit_id() for _ in range(3)]
        publish_all(broker.port, [json.dumps({"hit_id": h}).encode() for h in ids])
        t.join(20)
        fd = f.fileno()
    assert rc == [0] and read_ids(path) == ids
    assert [e[0] for e in events] == ["fsync", "ack"] * 3 and all(e[1] == fd for e in events[::2])


def test_output_file_torn_line_is_cut_and_written_hits_are_not_repeated_after_restart(broker, tmp_path):
    # A power cut mid-line leaves a fragment (never acknowledged, so it comes again); a hit written just
    # before a crash, whose PUBACK never left, is redelivered after the restart: both must end up once.
    a, b, c = new_hit_id(), new_hit_id(), new_hit_id()
    path = tmp_path / "hits.jsonl"
    path.write_text(json.dumps({"hit_id": a}, separators=(",", ":")) + "\n" + '{"hit_id":"' + b[:10])
    ready = tmp_path / "ready"
    with open(path, "ab") as outf, open(tmp_path / "t.err", "w") as errf:  # like `anpr-edge hits >> hits.jsonl`
        proc = subprocess.Popen([sys.executable, "-m", "edge.hitsclient", "hits", "--host", "127.0.0.1",
                                 "--port", str(broker.port), "--count", "2", "-v", "--ready-file", str(ready)],
                                cwd=ROOT, stdout=outf, stderr=errf)
    assert wait_for(lambda: ready.exists() or proc.poll() is not None, timeout=15)
    publish_all(broker.port, [json.dumps({"hit_id": h}).encode() for h in (a, b, c)])
    try:
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            stop(proc)
    assert read_ids(path) == [a, b, c]
    err = (tmp_path / "t.err").read_text()
    assert "torn last line" in err and "2 hits, 1 duplicates dropped" in err
