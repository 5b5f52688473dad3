"""Audit trail: chain building, tamper detection (edit, delete, reorder, insert, truncate), CLI, MQTT hook."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge.audit import (GENESIS, AuditConfig, AuditError, AuditLog, canonical, changed_sections, entry_hash,
                        file_sha256, verify)

ROOT = Path(__file__).resolve().parents[1]


def fixed_clock():
    t = [datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)]

    def now():
        t[0] += timedelta(seconds=1)
        return t[0]
    return now


def sample_log(path: Path, publish=None) -> AuditLog:
    log = AuditLog(path, device="nl-a13-01", publish=publish, clock=fixed_clock())
    log.record("start", software="0.1.0", config_sha256="ab" * 32, lists_version=7)
    log.record("list_activated", list_id="stolen-2026-11", category="stolen_vehicle", version=7, entries=1200)
    log.record("config_change", old_sha256="ab" * 32, new_sha256="cd" * 32, sections=["detection"], accepted=True)
    log.record("key_rotation", key="list_signing", old_kid="0011", new_kid="2233", reason="scheduled")
    log.record("list_deactivated", list_id="stolen-2026-11", version=7, reason="expired")
    log.record("stop", reason="SIGTERM", uptime_s=3600.5, outbox_depth=0)
    return log


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.audit", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def test_chain_links_every_entry_to_the_previous(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = sample_log(path)
    entries = [json.loads(line) for line in lines_of(path)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert entries[0]["prev"] == GENESIS
    for before, after in zip(entries, entries[1:]):
        assert after["prev"] == before["hash"] == entry_hash(before)
    assert log.head == entries[-1]["hash"]
    result = verify(path)
    assert result.ok and result.entries == 6 and result.head == log.head


def test_reopening_continues_the_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    head = sample_log(path).head
    again = AuditLog(path, device="nl-a13-01")
    assert again.head == head
    e = again.record("start", software="0.1.1")
    assert e["seq"] == 7 and e["prev"] == head
    assert verify(path).ok


def test_edited_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    lines = lines_of(path)
    lines[2] = lines[2].replace('"accepted":true', '"accepted":false')
    path.write_text("".join(lines))
    r = verify(path)
    assert not r.ok and r.bad_line == 3 and "edited" in r.reason


def test_edited_line_with_recomputed_hash_breaks_the_next_link(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    lines = lines_of(path)
    entry = json.loads(lines[1])
    entry["data"]["entries"] = 5
    entry["hash"] = entry_hash(entry)
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n"
    path.write_text("".join(lines))
    r = verify(path)
    assert not r.ok and r.bad_line == 3 and "previous line" in r.reason


def test_deleted_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    lines = lines_of(path)
    del lines[3]
    path.write_text("".join(lines))
    r = verify(path)
    assert not r.ok and r.bad_line == 4 and "deleted" in r.reason


def test_deleted_first_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    path.write_text("".join(lines_of(path)[1:]))
    r = verify(path)
    assert not r.ok and r.bad_line == 1


def test_reordered_lines_are_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    lines = lines_of(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines))
    r = verify(path)
    assert not r.ok and r.bad_line == 2


def test_inserted_forged_line_is_named(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    lines = lines_of(path)
    prev = json.loads(lines[1])
    forged = dict(prev, seq=3, event="stop", data={"reason": "maintenance"}, prev=prev["hash"])
    forged["hash"] = entry_hash(forged)
    lines.insert(2, json.dumps(forged, sort_keys=True, separators=(",", ":")) + "\n")
    path.write_text("".join(lines))
    r = verify(path)
    assert not r.ok and r.bad_line == 4


def test_truncated_end_needs_the_central_head(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = sample_log(path)
    path.write_text("".join(lines_of(path)[:-2]))
    assert verify(path).ok, "cutting off the end leaves a valid chain: that is what --head is for"
    r = verify(path, expect_head=log.head)
    assert not r.ok and r.bad_line == 5 and "expected head" in r.reason


def test_torn_last_line_is_kept_and_the_unit_goes_on(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    with open(path, "ab") as f:
        f.write(b'{"v":1,"seq":7,"ts":"2026-11-')  # power cut in the middle of a write
    log = AuditLog(path, device="nl-a13-01")
    e = log.record("start", software="0.1.0")
    lines = lines_of(path)
    assert json.loads(lines[7])["event"] == "audit_damaged_tail" and json.loads(lines[7])["data"]["line"] == 7
    assert e["seq"] == 8
    r = verify(path)
    assert not r.ok and r.bad_line == 7 and "torn" in r.reason


def test_no_free_text_fields(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl")
    with pytest.raises(AuditError, match="does not take field.*plate"):
        log.record("list_activated", list_id="x", plate="XS-NB-23")
    with pytest.raises(AuditError, match="unknown audit event 'read'"):
        log.record("read", list_id="x")
    with pytest.raises(AuditError, match="one-line"):
        log.record("stop", reason="a\nb")
    with pytest.raises(AuditError, match="unsupported type dict"):
        log.record("stop", reason={"x": 1})
    assert not (tmp_path / "audit.jsonl").exists() or verify(tmp_path / "audit.jsonl").entries == 0


def test_concurrent_writers_keep_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False)

    def work(i):
        for j in range(25):
            log.record("list_activated", list_id=f"l{i}", version=j)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = verify(path)
    assert r.ok and r.entries == 100


def test_helpers(tmp_path):
    cfg = tmp_path / "edge.yaml"
    cfg.write_text("device: {id: a}\n")
    assert len(file_sha256(cfg)) == 64
    a, b = AuditConfig(), AuditConfig(topic="x/audit")
    assert changed_sections(a, b) == ["topic"]
    log = AuditLog.from_config(AuditConfig(), tmp_path / "state", "dev1")
    assert log.path == tmp_path / "state" / "audit.jsonl"


def test_cli_verify(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = sample_log(path)
    ok = run_cli("verify", str(path))
    assert ok.returncode == 0 and "OK, 6 entries" in ok.stdout and log.head in ok.stdout
    ok = run_cli("verify", str(path), "--head", log.head, "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    lines = lines_of(path)
    del lines[4]
    path.write_text("".join(lines))
    bad = run_cli("verify", str(path))
    assert bad.returncode == 1 and f"{path}: line 5:" in bad.stderr
    missing = run_cli("verify", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    wrong_head = run_cli("verify", str(path), "--head", "xyz")
    assert wrong_head.returncode == 2 and "--head" in wrong_head.stderr


def test_publish_hook_to_real_broker(tmp_path, broker):
    """The daemon connects `publish` to MQTT; here a real Mosquitto carries the entries."""
    topic = "anpr/nl-a13-01/audit"
    got: list[dict] = []
    subscribed, done = threading.Event(), threading.Event()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="audit-sub")
    sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
    sub.on_subscribe = lambda *a: subscribed.set()

    def on_message(c, u, msg):
        got.append(json.loads(msg.payload))
        if len(got) == 6:
            done.set()
    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="audit-pub")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        assert subscribed.wait(5)
        log = sample_log(tmp_path / "audit.jsonl",
                         publish=lambda e: pub.publish(topic, json.dumps(e), qos=1).wait_for_publish(5))
        assert done.wait(5)
    finally:
        for c in (sub, pub):
            c.loop_stop()
            c.disconnect()
    assert [e["seq"] for e in got] == [1, 2, 3, 4, 5, 6]
    assert got[-1]["hash"] == log.head  # the centre holds the head for `verify --head`


def test_publish_failure_does_not_lose_the_local_entry(tmp_path):
    def broken(entry):
        raise ConnectionError("broker down")
    log = AuditLog(tmp_path / "audit.jsonl", publish=broken)
    log.record("start", software="0.1.0")
    assert verify(tmp_path / "audit.jsonl").entries == 1


def test_long_trail_reopens_from_its_tail(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False)
    for i in range(800):  # well over the 64 KiB read at start-up
        log.record("list_activated", list_id=f"list-{i}", version=i, name="stolen vehicles " * 5)
    assert path.stat().st_size > 3 * 65536
    again = AuditLog(path, fsync=False)
    assert again.head == log.head
    assert again.record("stop", reason="test")["seq"] == 801
    assert verify(path).ok


def test_edited_last_line_found_on_reopen(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    lines = lines_of(path)
    lines[-1] = lines[-1].replace('"SIGTERM"', '"upgrade"')
    path.write_text("".join(lines))
    log = AuditLog(path)
    assert json.loads(lines_of(path)[-1])["event"] == "audit_damaged_tail"
    assert json.loads(lines_of(path)[-1])["data"] == {"line": 6, "bytes": len(lines[5]) - 1}
    assert log.head == json.loads(lines_of(path)[-1])["hash"]
    r = verify(path)
    assert not r.ok and r.bad_line == 6 and "edited" in r.reason


def test_two_writers_on_one_file_keep_one_chain(tmp_path):
    """E.g. a config reload opens a new AuditLog while the old one still records: no fork."""
    path = tmp_path / "audit.jsonl"
    a = AuditLog(path, fsync=False)
    b = AuditLog(path, fsync=False)
    a.record("start", software="1")
    b.record("config_change", accepted=True)
    a.record("list_activated", list_id="x")
    b.record("stop", reason="test")
    r = verify(path)
    assert r.ok and r.entries == 4 and r.head == b.head


def test_writers_in_other_processes_keep_one_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    code = ("import sys; from edge.audit import AuditLog; log = AuditLog(sys.argv[1], fsync=False)\n"
            "for i in range(30): log.record('list_activated', list_id=f'p{sys.argv[2]}-{i}')")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)], cwd=ROOT) for n in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    r = verify(path)
    assert r.ok and r.entries == 90, r


# ----- power cuts, crashes and a stricter verify ---------------------------------------------------

def torn_then_reopened(path: Path) -> AuditLog:
    """Six entries, a power cut in the middle of the seventh, a restart that goes on writing."""
    sample_log(path)
    with open(path, "ab") as f:
        f.write(b'{"v":1,"seq":7,"ts":"2026-11-')
    log = AuditLog(path, device="nl-a13-01", clock=fixed_clock())
    for i in range(4):
        log.record("list_activated", list_id=f"after-{i}", version=8)
    return log


def test_after_a_power_cut_the_rest_of_the_trail_is_still_checked(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = torn_then_reopened(path)
    r = verify(path)
    assert not r.ok and r.bad_line == 7 and "torn" in r.reason and r.damaged == (7,)
    assert r.entries == 11 and r.head == log.head and "chain after it is intact" in r.reason
    # a line deleted after the power cut: it used to hide behind the torn line, which ended the check
    lines = lines_of(path)
    del lines[9]
    path.write_text("".join(lines))
    r = verify(path)
    assert not r.ok and r.bad_line == 10 and "deleted" in r.reason and r.damaged == (7,)


def test_after_a_power_cut_a_cut_off_end_is_still_found_with_the_head(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = torn_then_reopened(path)
    path.write_text("".join(lines_of(path)[:-2]))
    r = verify(path, expect_head=log.head)
    assert not r.ok and r.bad_line == 11 and "expected head" in r.reason


def test_the_expected_head_may_lag_behind_the_file(tmp_path):
    """The centre holds the last entry it *received*; later ones wait in the outbox (unit offline,
    the stop entry written at shutdown): that is no tampering."""
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    fourth = json.loads(lines_of(path)[3])["hash"]
    r = verify(path, expect_head=fourth)
    assert r.ok and r.after_head == 2 and "2 newer than the expected head" in r.describe("f")
    assert verify(path, expect_head=GENESIS).ok
    assert not verify(path, expect_head="ab" * 32).ok


def test_duplicate_keys_cannot_show_one_thing_and_hash_another(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    lines = lines_of(path)
    # JSON readers differ on which duplicate wins; this one hashes the last, a person may read the first
    lines[5] = lines[5].replace('{"data":', '{"data":{"reason":"maintenance"},"data":', 1)
    path.write_text("".join(lines))
    r = verify(path)
    assert not r.ok and r.bad_line == 6 and "canonical" in r.reason


def test_odd_event_values_are_named_not_a_crash(tmp_path):
    path = tmp_path / "audit.jsonl"
    forged = {"v": 1, "seq": 1, "ts": "t", "device": "d", "event": ["start"], "data": {}, "prev": GENESIS}
    forged["hash"] = entry_hash(forged)
    path.write_bytes(canonical(forged) + b"\n")
    r = verify(path)
    assert not r.ok and r.bad_line == 1 and "unknown event" in r.reason


def test_a_line_torn_by_another_writer_is_recorded_too(tmp_path):
    """Another process dies mid-append while this one runs: the damage gets its entry, so verify
    can chain past it, instead of a silent continuation behind a line nobody accounted for."""
    path = tmp_path / "audit.jsonl"
    log = sample_log(path)
    with open(path, "ab") as f:
        f.write(b'{"v":1,"seq":7,"ts":"2026-')
    e = log.record("stop", reason="test")
    events = [json.loads(line)["event"] for line in lines_of(path) if line.startswith('{"data"')]
    assert events[-2:] == ["audit_damaged_tail", "stop"] and e["seq"] == 8
    r = verify(path)
    assert r.bad_line == 7 and r.damaged == (7,) and r.head == log.head


def test_reading_the_tail_waits_for_a_writer_in_the_middle_of_its_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    entry = {"v": 1, "seq": 7, "ts": "t", "device": "nl-a13-01", "event": "stop", "data": {},
             "prev": json.loads(lines_of(path)[-1])["hash"]}
    entry["hash"] = entry_hash(entry)
    line = canonical(entry) + b"\n"
    import fcntl
    import os
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process, half way through its append
    os.write(fd, line[:40])
    opened: list[AuditLog] = []
    t = threading.Thread(target=lambda: opened.append(AuditLog(path, fsync=False)))
    t.start()
    t.join(0.3)
    os.write(fd, line[40:])
    os.close(fd)
    t.join(5)
    assert opened and opened[0].head == entry["hash"]
    r = verify(path)
    assert r.ok and r.entries == 7, r


def test_non_object_last_line_does_not_stop_the_unit(tmp_path):
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    with open(path, "ab") as f:
        f.write(b"123\n")
    log = AuditLog(path)
    assert log.record("start", software="1")["seq"] == 8
    assert verify(path).damaged == (7,)


def test_a_new_trail_file_is_made_durable_in_its_directory(tmp_path, monkeypatch):
    import os
    import stat

    import edge.audit as audit_mod
    synced: list[bool] = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real(fd)
    monkeypatch.setattr(audit_mod.os, "fsync", spy)
    log = AuditLog(tmp_path / "state" / "audit.jsonl")
    log.record("start", software="1")
    assert True in synced, "the directory entry of a new trail must be fsynced (else a power cut can lose the file)"
    synced.clear()
    log.record("stop", reason="x")
    assert synced == [False], "later appends sync the file only"


def test_a_short_write_on_a_full_disk_leaves_no_half_line(tmp_path, monkeypatch):
    import os

    import edge.audit as audit_mod
    path = tmp_path / "audit.jsonl"
    log = sample_log(path)
    real = os.write
    monkeypatch.setattr(audit_mod.os, "write", lambda fd, b: real(fd, b[: len(b) // 2]))
    with pytest.raises(OSError):
        log.record("stop", reason="disk full")
    monkeypatch.setattr(audit_mod.os, "write", real)
    log.record("stop", reason="space again")
    r = verify(path)
    assert r.ok and r.entries == 7, r


def test_an_entry_whose_publish_failed_goes_out_with_the_next_one(tmp_path):
    """At the first start the daemon's outbox is built after the audit log: the audit_damaged_tail
    entry for a power cut could not be published then, and was never sent to the centre."""
    path = tmp_path / "audit.jsonl"
    sample_log(path)
    with open(path, "ab") as f:
        f.write(b'{"v":1,"seq":7,"ts":"2026-11-')
    sent: list[dict] = []
    outbox: list | None = None

    def publish(entry):
        if outbox is None:
            raise AttributeError("'NoneType' object has no attribute 'put'")
        sent.append(entry)
    log = AuditLog(path, publish=publish)
    outbox = []
    log.record("start", software="1")
    assert [(e["seq"], e["event"]) for e in sent] == [(7, "audit_damaged_tail"), (8, "start")]
    assert sent[-1]["hash"] == log.head
