"""The whole unit as a process: real models, real demo video, real signed lists, real Mosquitto.

Covers: hits arrive for listed plates only; nothing about other vehicles reaches disk, logs or
the broker; broker down at start-up; SIGTERM and SIGKILL keep every accepted hit; SIGTERM stops
within 5 s; SIGHUP reloads a good config and refuses a bad one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT
from edge.outbox import Outbox
from unit_support import DEMO, Sniffer, Unit, demo_truth

LISTED = {"S30VST": "nl-stolen", "1888OD": "nl-warrant", "2095MM": "cjib-fines"}


@pytest.fixture
def unit(tmp_path, broker):
    u = Unit(tmp_path, broker)
    yield u
    u.stop()


def replay_texts() -> set[str]:
    res = subprocess.run([sys.executable, "-m", "edge.cli", "replay", "--json", str(DEMO / "demo.mp4")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    passages = [json.loads(line) for line in res.stdout.splitlines()]
    for p in passages:
        assert set(p) == {"text", "formatted", "country", "confidence", "first_seen_ms", "last_seen_ms", "frames"}
    return {p["text"] for p in passages} | {p["formatted"] for p in passages}


def test_only_listed_plates_arrive_and_no_other_plate_leaks(unit, broker):
    sealed = unit.build_lists(DEMO / "demo_list.csv")
    unit.publish(sealed)  # retained snapshot: the unit receives it on connect
    sniffer = Sniffer(broker.host, broker.port)
    unit.write_config(evidence={"mode": "both"})
    unit.start("--exit-at-end")
    assert unit.wait(180) == 0, unit.log_text()[-3000:]
    time.sleep(1.0)
    sniffer.close()

    hits = sniffer.hits()
    got = {h["plate"]: h for h in hits}
    assert set(got) == set(LISTED), f"hits for {sorted(got)}; expected {sorted(LISTED)}"
    for plate, list_id in LISTED.items():
        h = got[plate]
        assert h["matches"][0]["list_id"] == list_id
        assert h["device"] == "unit-t1" and h["passage"]["frames"] >= 3
        assert h["evidence"]["crop_jpeg"] and h["evidence"]["frame_jpeg"]
    fines = [t for t, p in sniffer.messages if b'"hit_id"' in p and b'"cjib-fines"' in p]
    assert fines and all(t == "anpr/cjib/unit-t1/hits" for t in fines)  # that list's own agency topic

    # Privacy: texts of every other vehicle, as in the truth and as the unit itself read them.
    truth = demo_truth()["vehicles"]
    others = {v["text"] for v in truth if v["text"] not in LISTED} | {v["formatted"] for v in truth if v["text"] not in LISTED}
    others |= {t for t in replay_texts() if t.replace("-", "") not in LISTED}
    assert len(others) >= 5
    leaks = []
    for path in unit.unit_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaks += [(str(path), t) for t in others if t.encode() in data]
    for topic, payload in sniffer.messages:
        leaks += [(topic, t) for t in others if t.encode() in payload or t in topic]
    assert not leaks, f"non-hit plate texts found: {leaks}"
    # the log above was written at its most verbose level (it has no per-passage DEBUG line to show it)
    assert yaml.safe_load(unit.config_path.read_text())["logging"]["level"] == "DEBUG"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_broker_down_hits_wait_in_outbox_across_stop_and_arrive_later(unit, broker, sig):
    unit.cache(unit.build_lists(DEMO / "demo_list.csv"))
    broker.stop()  # broker down at start-up
    unit.write_config(camera={"loop": True, "fps": 25})
    unit.start()
    st = unit.wait_status(lambda s: s.get("hits", 0) >= 2 and s.get("outbox_depth", 0) >= 2, timeout=120)
    assert st["mqtt_connected"] is False
    t0 = time.monotonic()
    unit.signal(sig)
    rc = unit.wait(10)
    if sig == signal.SIGTERM:
        assert rc == 0 and time.monotonic() - t0 < 5.0, "SIGTERM must stop the daemon within 5 s"
    ob = Outbox(unit.state_dir / "outbox.sqlite")
    waiting = {item.hit_id for item in ob.pending(1000, now=time.time() + 3600)}
    ob.close()
    assert len(waiting) >= 2

    broker.start()
    sniffer = Sniffer(broker.host, broker.port)
    unit.write_config(camera={"loop": False})
    unit.start("--exit-at-end")
    assert unit.wait(180) == 0, unit.log_text()[-3000:]
    time.sleep(0.5)
    sniffer.close()
    arrived = {h["hit_id"] for h in sniffer.hits()}
    arrived |= {f"audit-{e['seq']}-{e['hash'][:16]}" for e in
                (json.loads(p) for t, p in sniffer.messages if t == "anpr/unit-t1/audit")}
    assert any(not w.startswith("audit-") for w in waiting)  # hits, not only audit entries, waited
    assert waiting <= arrived, f"lost: {waiting - arrived}"


def test_sighup_reload_refuses_bad_config_and_applies_good_one(unit, broker):
    unit.publish(unit.build_lists(DEMO / "demo_list.csv"))
    unit.write_config(camera={"loop": True, "fps": 25})
    unit.start()
    unit.wait_status(lambda s: s.get("frames", 0) > 10 and s.get("list_version", 0) > 0)
    good = unit.config_path.read_text()

    unit.config_path.write_text(good.replace("source: file:", "source: rtps:"))
    unit.signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "config reload refused" not in unit.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "config reload refused" in unit.log_text()
    assert "camera.source: unknown scheme 'rtps'" in unit.log_text()
    frames = unit.status()["frames"]
    unit.wait_status(lambda s: s["frames"] > frames + 10)  # still running on the old config

    unit.config_path.write_text(good.replace("enabled:\n  - '*'", "enabled:\n  - nl-stolen"))
    unit.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "config reloaded" not in unit.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "config reloaded" in unit.log_text()
    unit.wait_status(lambda s: s.get("camera_state") == "streaming" and s.get("list_version", 0) > 0)
    unit.signal(signal.SIGTERM)
    assert unit.wait(10) == 0


def _audit_entries(unit) -> list[dict]:
    path = unit.state_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _wait_log(unit, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in unit.log_text() and time.monotonic() < deadline and unit.proc.poll() is None:
        time.sleep(0.2)


def test_sighup_reload_refuses_config_whose_password_file_is_missing_and_keeps_running(unit, broker, tmp_path):
    """A config that validates but cannot be put to work (here: the broker password file is missing)
    is refused before anything running is stopped: no exit into a systemd restart loop."""
    unit.publish(unit.build_lists(DEMO / "demo_list.csv"))
    unit.write_config(camera={"loop": True, "fps": 25})
    unit.start()
    unit.wait_status(lambda s: s.get("frames", 0) > 10 and s.get("list_version", 0) > 0 and s.get("mqtt_connected"))
    sniffer = Sniffer(broker.host, broker.port)
    missing = tmp_path / "no-such-mqtt.password"
    unit.write_config(camera={"loop": True, "fps": 25}, mqtt={"username": "edge", "password_file": str(missing)})
    unit.signal(signal.SIGHUP)
    _wait_log(unit, "config reload refused", 30)

    assert unit.proc.poll() is None, f"daemon exited on reload:\n{unit.log_text()[-3000:]}"
    log_text = unit.log_text()
    assert "config reload refused, keeping the running config" in log_text
    assert f"mqtt.password_file {missing}: cannot read" in log_text
    refused = [e for e in _audit_entries(unit) if e["event"] == "config_change"]
    assert refused and refused[-1]["data"]["accepted"] is False
    assert "mqtt.password_file" in refused[-1]["data"]["error"]
    # still running on the old config: reading frames, connected, and delivering (the audit entry
    # of the refused reload itself travels through the outbox to the broker)
    frames = unit.status()["frames"]
    unit.wait_status(lambda s: s["frames"] > frames + 10 and s["state"] == "online" and s["mqtt_connected"])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        sent = [json.loads(p) for t, p in sniffer.messages if t == "anpr/unit-t1/audit"]
        if any(e["event"] == "config_change" and e["data"]["accepted"] is False for e in sent):
            break
        time.sleep(0.2)
    sniffer.close()
    assert any(e["event"] == "config_change" and e["data"]["accepted"] is False for e in sent), sniffer.messages[-5:]
    assert "config reloaded" not in unit.log_text()
    unit.signal(signal.SIGTERM)
    assert unit.wait(10) == 0


def test_reload_whose_new_parts_fail_to_start_goes_back_to_the_previous_config(unit, broker, monkeypatch, caplog):
    """Built fine but failed to start after the running parts were stopped: the unit rebuilds and
    restarts from the config it ran before instead of exiting."""
    import logging
    import threading

    from edge.config import load_config
    from edge.daemon import Daemon
    from edge.lists.sync import ListSync

    unit.publish(unit.build_lists(DEMO / "demo_list.csv"))
    path = unit.write_config(camera={"loop": True, "fps": 25})
    starts = []
    real_start = ListSync.start

    def start_failing_on_reload(self):
        starts.append(self)
        if len(starts) == 2:  # 1: start-up, 2: the reload, 3: the way back
            raise RuntimeError("can't start new thread")
        return real_start(self)

    monkeypatch.setattr(ListSync, "start", start_failing_on_reload)
    caplog.set_level(logging.INFO, logger="edge.daemon")
    daemon = Daemon(load_config(path), path)
    result = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not (unit.status().get("frames", 0) > 10 and unit.status().get("mqtt_connected")):
            assert thread.is_alive() and time.monotonic() < deadline, caplog.text[-3000:]
            time.sleep(0.2)
        unit.write_config(camera={"loop": True, "fps": 25}, lists={"enabled": ["nl-stolen"]})
        daemon.request_reload()
        deadline = time.monotonic() + 60
        while "config reload rolled back" not in caplog.text:
            assert thread.is_alive() and time.monotonic() < deadline, caplog.text[-3000:]
            time.sleep(0.2)
        assert len(starts) == 3
        assert "config reload failed while starting the new parts (RuntimeError at" in caplog.text
        assert daemon.cfg.lists.enabled == ["*"]  # the previous config again
        entries = _audit_entries(unit)
        change = [e for e in entries if e["event"] == "config_change"][-1]
        assert change["data"]["accepted"] is False and change["data"]["error"].startswith("RuntimeError")
        frames = daemon.pipeline.stats.frames
        deadline = time.monotonic() + 60
        while not (daemon.pipeline.stats.frames > frames + 10 and daemon.publisher.connected):
            assert thread.is_alive() and time.monotonic() < deadline, caplog.text[-3000:]
            time.sleep(0.2)
    finally:
        daemon.request_stop()
        thread.join(30)
    assert result == [0]


def test_an_audit_file_that_cannot_be_written_is_logged_not_fatal(tmp_path, caplog):
    """A full disk (here: the audit file's folder replaced by a file) made the daemon crash at its
    start entry and systemd restart it into the same error; the unit must go on reading plates."""
    from edge.audit import AuditLog
    from edge.daemon import _record

    audit = AuditLog(tmp_path / "state" / "audit.jsonl", device="unit-t1")
    (tmp_path / "state" / "audit.jsonl").mkdir()  # now every append fails with an OSError
    _record(audit, "start", software="test")
    assert "audit entry 'start' not written" in caplog.text


def test_the_cameras_roll_reaches_the_running_pipeline(unit, broker):
    """camera.roll_degrees is what the daemon's detector searches with (frames turned level)."""
    import threading

    from edge.config import load_config
    from edge.daemon import Daemon

    unit.publish(unit.build_lists(DEMO / "demo_list.csv"))
    path = unit.write_config(camera={"loop": True, "fps": 25, "roll_degrees": -7.5})
    daemon = Daemon(load_config(path), path)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not unit.status().get("frames", 0) > 10:
            assert thread.is_alive() and time.monotonic() < deadline
            time.sleep(0.2)
        assert daemon.pipeline.roll == -7.5
    finally:
        daemon.request_stop()
        thread.join(30)


def test_a_status_file_that_cannot_be_written_does_not_stop_the_unit(unit, broker, caplog):
    """A full disk made the main loop's status write raise and the daemon exit; reading plates and
    sending hits matter more than the status file, whose trouble is logged once with its path."""
    import logging
    import threading

    from edge.config import load_config
    from edge.daemon import Daemon

    unit.publish(unit.build_lists(DEMO / "demo_list.csv"))
    path = unit.write_config(camera={"loop": True, "fps": 25})
    caplog.set_level(logging.INFO, logger="edge.daemon")
    daemon = Daemon(load_config(path), path)
    result = []
    thread = threading.Thread(target=lambda: result.append(daemon.run()), daemon=True)
    thread.start()
    status = unit.state_dir / "status.json"
    try:
        deadline = time.monotonic() + 60
        while not unit.status().get("frames", 0) > 10:
            assert thread.is_alive() and time.monotonic() < deadline, caplog.text[-3000:]
            time.sleep(0.2)
        status.unlink()
        status.mkdir()  # now every write of the status file fails with an OSError, as on a full disk
        frames = daemon.pipeline.stats.frames
        deadline = time.monotonic() + 60
        while not (daemon.pipeline.stats.frames > frames + 100):  # 4 s at 25 fps: two status writes at least
            assert thread.is_alive() and time.monotonic() < deadline, caplog.text[-3000:]
            time.sleep(0.2)
        assert caplog.text.count(f"cannot write status file {status}") == 1
        status.rmdir()
        deadline = time.monotonic() + 30
        while not status.is_file():
            assert thread.is_alive() and time.monotonic() < deadline, caplog.text[-3000:]
            time.sleep(0.2)
        assert f"status file {status} written again" in caplog.text
    finally:
        daemon.request_stop()
        thread.join(30)
    assert result == [0]
