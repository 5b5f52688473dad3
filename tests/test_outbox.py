"""Durable outbox: order, durability across reopen, WAL/FULL, bound + alarm, hashed cool-down."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from edge.hits import new_hit_id
from edge.outbox import Outbox, OutboxConfig


def test_put_pending_ack_in_order_and_survives_reopen(tmp_path):
    path = tmp_path / "state" / "outbox.sqlite"
    ids = [new_hit_id() for _ in range(5)]
    with Outbox(path, max_items=100) as ob:
        for i, h in enumerate(ids):
            assert ob.put(f"anpr/a/u/hits", f'{{"n":{i}}}'.encode(), h)
        assert ob.put("anpr/a/u/hits", b"again", ids[0])  # same hit id: idempotent
        assert ob.depth() == 5
        assert [p.hit_id for p in ob.pending(3)] == ids[:3]
        assert ob.ack(ids[1], "unknown-id") == 1
    with Outbox(path, max_items=100) as ob:  # a new process sees exactly what was not acknowledged
        items = ob.pending(10)
        assert [p.hit_id for p in items] == [ids[0]] + ids[2:]
        assert ob.depth() == 4
        assert items[0].payload == b'{"n":0}' and items[0].topic == "anpr/a/u/hits"


def test_acknowledged_hits_leave_no_copy_in_db_or_wal(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path)
    ids = [new_hit_id() for _ in range(50)]
    for h in ids:
        ob.put("t", b'{"plate":"HIT4242","pad":"' + b"x" * 500 + b'"}', h)
    assert any(b"HIT4242" in f.read_bytes() for f in tmp_path.iterdir())  # on disk while unacknowledged
    ob.ack(*ids[:25])
    ob.ack(*ids[25:])
    for f in tmp_path.iterdir():
        assert b"HIT4242" not in f.read_bytes(), f
    ob.close()


def test_sqlite_is_wal_with_full_sync(tmp_path):
    path = tmp_path / "o.sqlite"
    Outbox(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ob = Outbox(path)
    assert ob._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    ob.close()


def test_bounded_with_alarm_and_refusal_counted(tmp_path, caplog):
    ob = Outbox(tmp_path / "o.sqlite", max_items=10, alarm_at=8)
    caplog.set_level(logging.WARNING, logger="edge.outbox")
    ids = [new_hit_id() for _ in range(12)]
    results = [ob.put("t/x", b"{}", h) for h in ids]
    assert results == [True] * 10 + [False, False]
    assert ob.depth() == 10 and ob.rejected == 2 and ob.alarm
    assert "outbox alarm" in caplog.text and "outbox full" in caplog.text
    ob.ack(*ids[:5])
    assert not ob.alarm
    assert ob.put("t/x", b"{}", ids[10])


def test_defer_holds_back_and_counts_attempts(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    a, b = new_hit_id(), new_hit_id()
    ob.put("t", b"a", a, now=100.0)
    ob.put("t", b"b", b, now=100.0)
    ob.defer(a, 30.0, now=100.0)
    assert [p.hit_id for p in ob.pending(10, now=110.0)] == [b]
    later = ob.pending(10, now=131.0)
    assert [p.hit_id for p in later] == [a, b] and later[0].attempts == 1


def test_a_hit_marked_to_go_without_evidence_stays_marked_after_a_restart(tmp_path):
    path = tmp_path / "o.sqlite"
    with Outbox(path) as ob:
        ob.put("t", b'{"evidence": 1}', "big", now=100.0)
        ob.put("t", b"{}", "small", now=100.0)
        assert ob.omit_evidence("big", "broker closed the connection 3 times in a row while it was sent")
    with Outbox(path) as ob:
        items = {i.hit_id: i for i in ob.pending(10, now=200.0)}
        assert items["big"].evidence_omitted == "broker closed the connection 3 times in a row while it was sent"
        assert items["big"].payload == b'{"evidence": 1}'  # the full message is kept
        assert items["small"].evidence_omitted == ""


def test_cooldown_suppresses_same_plate_same_list_and_stores_no_text(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, cooldown_s=60)
    h = new_hit_id()
    assert not ob.suppressed("XSNB23", "L1", now=1000.0)
    ob.put("t", b"{}", h, cooldown=(("XSNB23", "L1"),), now=1000.0)
    assert ob.suppressed("XSNB23", "L1", now=1059.0)
    assert not ob.suppressed("XSNB23", "L2", now=1001.0)  # other list
    assert not ob.suppressed("XSNB24", "L1", now=1001.0)  # other plate
    assert not ob.suppressed("XSNB23", "L1", now=1061.0)  # expired
    ob.ack(h)
    ob.close()
    ob = Outbox(path, cooldown_s=60)  # the key file makes the cool-down survive a restart
    assert ob.suppressed("XSNB23", "L1", now=1030.0)
    assert ob.prune_cooldown(now=2000.0) == 1
    ob.close()
    for f in tmp_path.iterdir():  # neither the db, its WAL, nor the key file holds the plate text
        assert b"XSNB23" not in f.read_bytes(), f
    assert (path.with_name("o.sqlite.key").stat().st_mode & 0o777) == 0o600


def test_cooldown_zero_disables(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    ob.put("t", b"{}", new_hit_id(), cooldown=(("AB12CD", "L1"),))
    assert not ob.suppressed("AB12CD", "L1")


def test_config_resolution_and_errors(tmp_path):
    cfg = OutboxConfig().resolved(tmp_path / "cfg", tmp_path / "state")
    assert cfg.path == tmp_path / "state" / "outbox.sqlite"
    assert OutboxConfig(path=Path("rel/o.db")).resolved(tmp_path, tmp_path / "s").path == tmp_path / "rel/o.db"
    with pytest.raises(ValueError, match="alarm_at"):
        OutboxConfig(max_items=100, alarm_at=200)
    with pytest.raises(ValueError, match="Extra inputs"):
        OutboxConfig(bogus=1)
    ob = Outbox.from_config(cfg)
    assert ob.depth() == 0
    with pytest.raises(ValueError, match="topic and a hit_id"):
        ob.put("", b"{}", "x")
    with pytest.raises(TypeError, match="bytes"):
        ob.put("t", "text", "x")


# -- a full disk, a torn key file, cool-down pruning --------------------------------------------------

import json
import os
import subprocess
import sys
import textwrap

from edge.outbox import OutboxError

_DISK_FULL_SCRIPT = textwrap.dedent('''
    import json, resource, signal, sys
    from edge.outbox import Outbox, OutboxError
    path, stage = sys.argv[1], sys.argv[2]
    out = {}
    ob = Outbox(path, cooldown_s=0)
    if stage == "fill":
        for i in range(60):
            ob.put("t", b'{"pad":"' + b"x" * 1500 + b'"}', f"h{i:03d}")
        ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # an empty WAL: any write now has to grow a file
        # The "disk" is full: no file of this process may grow past 4 KiB (SQLite sees the failed write).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
        first = [p.hit_id for p in ob.pending(20)]
        out["ack1"] = ob.ack(*first)  # must not raise into the publisher
        out["pending1"] = [p.hit_id for p in ob.pending(20)]
        out["ack2"] = ob.ack(*out["pending1"])
        out["ack2_again"] = ob.ack(*out["pending1"])  # a second PUBACK of the same hits
        out["pending2"] = [p.hit_id for p in ob.pending(100)]
        out["depth_full"] = ob.depth()
        out["rows_full"] = ob._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        try:
            ob.put("t", b"{}", "while-full")
            out["put_full"] = "stored"
        except OutboxError:
            out["put_full"] = "OutboxError"
        if sys.argv[3] == "space-returns":
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
            import edge.outbox
            edge.outbox._monotonic = lambda: 1e12  # past the retry pause
            out["put_after"] = ob.put("t", b"{}", "after")
            out["rows_after"] = ob._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            out["depth_after"] = ob.depth()
    ob.close()  # with the disk still full, the deletes fail once more here: the rows stay for the next start
    if stage == "reopen":
        ob = Outbox(path, cooldown_s=0)
        out["pending_reopen"] = [p.hit_id for p in ob.pending(100)]
        ob.close()
    print(json.dumps(out))
''')


def _run_disk_full(path, stage, mode=""):
    if not hasattr(os, "getrlimit") and sys.platform != "linux":
        pytest.skip("needs RLIMIT_FSIZE (POSIX) to make SQLite's writes fail")
    r = subprocess.run([sys.executable, "-c", _DISK_FULL_SCRIPT, str(path), stage, mode],
                       capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE/SIGXFSZ as on Linux")
def test_ack_with_the_disk_full_does_not_raise_and_never_returns_acknowledged_hits(tmp_path):
    """The review's disk-full case: the DELETE of acknowledged hits fails (WAL + secure_delete need space).
    The publisher has already forgotten them, so pending() must not hand them out again, or the same
    oldest hits are sent forever and newer ones never."""
    path = tmp_path / "o.sqlite"
    ids = [f"h{i:03d}" for i in range(60)]
    out = _run_disk_full(path, "fill", "space-returns")
    assert out["ack1"] == 20 and out["ack2"] == 20 and out["ack2_again"] == 0
    assert out["pending1"] == ids[20:40]  # the next ones, not the acknowledged ones again
    assert out["pending2"] == ids[40:]
    assert out["rows_full"] == 60 and out["depth_full"] == 20  # depth: delivered hits are not waiting
    assert out["put_full"] == "OutboxError"  # a real write failure, not a test double
    # the disk has space again: the next put also deletes what was acknowledged
    assert out["put_after"] is True
    assert out["rows_after"] == 21 and out["depth_after"] == 21


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE/SIGXFSZ as on Linux")
def test_acknowledged_but_undeleted_hits_are_sent_again_after_a_restart(tmp_path):
    path = tmp_path / "o.sqlite"
    ids = [f"h{i:03d}" for i in range(60)]
    out = _run_disk_full(path, "fill", "stays-full")
    assert out["pending2"] == ids[40:]
    out = _run_disk_full(path, "reopen")  # in-memory only: duplicates after a restart, dedup by hit id
    assert out["pending_reopen"] == ids


def test_ack_on_a_real_full_file_system(tmp_path):
    """The reviewer's scenario on a tiny tmpfs (needs root to mount; the RLIMIT test above runs anywhere)."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux; covered without privileges by the RLIMIT_FSIZE test")
    mnt = tmp_path / "small"
    mnt.mkdir()
    # 4 MB: the 150 puts below leave ~3.1 MB of WAL (each commit also writes a page of the priority index)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        ob = Outbox(mnt / "o.sqlite", cooldown_s=0)
        ids = [f"h{i:03d}" for i in range(150)]
        for h in ids:
            ob.put("t", b'{"pad":"' + b"x" * 1500 + b'"}', h)
        ob._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        sent = []
        for _ in range(10):  # what the publisher does: send the pending window, then ack it
            batch = [p.hit_id for p in ob.pending(20)]
            sent += batch
            ob.ack(*batch)
        assert sent == ids[:150] and len(set(sent)) == 150  # every hit once, in order
        assert ob.pending(20) == [] and ob.depth() == 0
        assert ob._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] > 0  # the deletes did fail
        with pytest.raises(OutboxError):
            ob.put("t", b'{"pad":"' + b"y" * 1500 + b'"}', "while-full")
        filler.unlink()  # space again
        assert ob.put("t", b"{}", "after")
        ob.ack("after")
        ob.close()
        db = sqlite3.connect(mnt / "o.sqlite")
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
        db.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


class _FullDisk:
    """The outbox's connection with every write failing as SQLite reports a full disk."""

    def __init__(self, db):
        self.db = db
        self.full = True

    def execute(self, sql, *args):
        if self.full and sql.split()[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def test_failed_delete_is_retried_by_later_acks_and_logged_without_raising(tmp_path, caplog):
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    ids = [new_hit_id() for _ in range(6)]
    for h in ids:
        ob.put("t", b"{}", h, now=100.0)
    ob._db = conn = _FullDisk(ob._db)
    caplog.set_level(logging.INFO, logger="edge.outbox")
    assert ob.ack(ids[0], ids[1], "unknown-id") == 2
    assert "cannot delete acknowledged hits" in caplog.text
    assert [p.hit_id for p in ob.pending(10, now=200.0)] == ids[2:]
    assert ob.depth() == 4 and ob.oldest_age_s(now=200.0) == 100.0
    ob.defer(ids[2], 30.0, now=200.0)  # the broker refused one: held back in memory, no exception
    assert [p.hit_id for p in ob.pending(10, now=210.0)] == ids[3:]
    assert [p.hit_id for p in ob.pending(10, now=231.0)] == ids[2:]
    conn.full = False
    assert ob.ack(ids[2]) == 1  # the next ack deletes the earlier ones too
    assert conn.db.execute("SELECT hit_id FROM outbox ORDER BY seq").fetchall() == [(h,) for h in ids[3:]]
    assert ob.depth() == 3 and "deleted after an earlier failure" in caplog.text


def test_empty_key_file_from_a_power_cut_gives_a_new_key_and_resets_cooldowns(tmp_path, caplog):
    path = tmp_path / "o.sqlite"
    kp = tmp_path / "o.sqlite.key"
    with Outbox(path, cooldown_s=60) as ob:
        ob.put("t", b"{}", "h1", cooldown=(("XSNB23", "L1"),), now=1000.0)
    for torn in (b"", b"\x01\x02\x03"):  # a cut right after creating the file / during its first write
        kp.write_bytes(torn)
        caplog.set_level(logging.WARNING, logger="edge.outbox")
        with Outbox(path, cooldown_s=60) as ob:  # no OutboxError: the unit starts
            assert "key file" in caplog.text and "damaged" in caplog.text
            assert ob._db.execute("SELECT COUNT(*) FROM cooldown").fetchone()[0] == 0  # hashed with the lost key
            assert [p.hit_id for p in ob.pending(10)] == ["h1"]  # the stored hits do not depend on the key
            assert not ob.suppressed("XSNB23", "L1", now=1001.0)
            ob.put("t", b"{}", "h2", cooldown=(("XSNB23", "L1"),), now=1001.0)
        assert len(kp.read_bytes()) == 32 and (kp.stat().st_mode & 0o777) == 0o600
        with Outbox(path, cooldown_s=60) as ob:  # the new key is kept
            assert ob.suppressed("XSNB23", "L1", now=1002.0)
            ob.ack("h2")
        caplog.clear()
    assert sorted(f.name for f in tmp_path.iterdir() if "key" in f.name) == ["o.sqlite.key"]


def test_key_file_is_written_atomically(tmp_path, monkeypatch):
    """A cut before the rename leaves no key file (only a temporary one): the next start makes one."""
    import edge.outbox as mod

    path = tmp_path / "o.sqlite"

    def cut(*a):
        raise OSError(5, "power cut")

    monkeypatch.setattr(mod.os, "replace", cut)
    with Outbox(path) as ob:  # runs with a key of its own; not kept
        ob.put("t", b"{}", "h1")
    assert not (tmp_path / "o.sqlite.key").exists()
    monkeypatch.undo()
    with Outbox(path) as ob:
        assert [p.hit_id for p in ob.pending(10)] == ["h1"]
    assert len((tmp_path / "o.sqlite.key").read_bytes()) == 32
    assert not (tmp_path / "o.sqlite.key.tmp").exists()


def test_put_prunes_expired_cooldowns_now_and_then(tmp_path, monkeypatch):
    import edge.outbox as mod

    clock = [5000.0]
    monkeypatch.setattr(mod, "_monotonic", lambda: clock[0])
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=60)

    def rows():
        return ob._db.execute("SELECT COUNT(*) FROM cooldown").fetchone()[0]

    ob.put("t", b"{}", new_hit_id(), cooldown=(("AA11BB", "L1"), ("AA11BB", "L2")), now=1000.0)
    assert rows() == 2
    clock[0] += 60  # within prune_every_s: no pruning on every put
    ob.put("t", b"{}", new_hit_id(), cooldown=(("CC22DD", "L1"),), now=1100.0)
    assert rows() == 3
    clock[0] += ob.prune_every_s
    ob.put("t", b"{}", new_hit_id(), cooldown=(("EE33FF", "L1"),), now=1130.0)
    assert rows() == 2  # AA11BB's expired at 1060; CC22DD's (until 1160) and EE33FF's stay
    assert ob.suppressed("CC22DD", "L1", now=1131.0) and ob.suppressed("EE33FF", "L1", now=1131.0)
    ob.close()


# -- priority --------------------------------------------------------------------------------------

def test_higher_priority_first_then_oldest_first_also_with_held_and_undeleted_hits(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite", cooldown_s=0)
    order = [("fine-1", 100), ("fine-2", 100), ("stolen-1", 900), ("audit", 0), ("fine-3", 100), ("stolen-2", 900)]
    for h, prio in order:
        assert ob.put("t", b"{}", h, now=100.0, priority=prio)
    assert ob.put("t", b"{}", "fine-1", now=100.0, priority=999)  # already stored: keeps its own priority
    want = ["stolen-1", "stolen-2", "fine-1", "fine-2", "fine-3", "audit"]
    items = ob.pending(10, now=200.0)
    assert [i.hit_id for i in items] == want
    assert [i.priority for i in items] == [900, 900, 100, 100, 100, 0]
    assert [i.hit_id for i in ob.pending(3, now=200.0)] == want[:3]
    # the in-memory path (a hold-back and an acknowledged-but-undeleted hit) keeps the same order
    ob._db = conn = _FullDisk(ob._db)
    assert ob.ack("stolen-1") == 1
    ob.defer("fine-2", 30.0, now=200.0)
    assert [i.hit_id for i in ob.pending(10, now=210.0)] == ["stolen-2", "fine-1", "fine-3", "audit"]
    assert [i.hit_id for i in ob.pending(2, now=210.0)] == ["stolen-2", "fine-1"]
    assert [i.hit_id for i in ob.pending(10, now=231.0)] == ["stolen-2", "fine-1", "fine-2", "fine-3", "audit"]
    assert ob.depth() == 5
    conn.full = False
    assert ob.ack("stolen-2") == 1
    assert [i.hit_id for i in ob.pending(10, now=231.0)] == ["fine-1", "fine-2", "fine-3", "audit"]
    ob.close()


def test_outbox_file_of_the_old_schema_is_migrated_in_place(tmp_path, caplog):
    path = tmp_path / "o.sqlite"
    old = sqlite3.connect(path)  # the schema before hits had a priority
    old.executescript("""
        PRAGMA journal_mode=WAL;
        CREATE TABLE outbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, hit_id TEXT NOT NULL UNIQUE,
            topic TEXT NOT NULL, payload BLOB NOT NULL, created REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, not_before REAL NOT NULL DEFAULT 0);
        CREATE TABLE cooldown(key BLOB PRIMARY KEY, until REAL NOT NULL);
    """)
    old.executemany("INSERT INTO outbox(hit_id, topic, payload, created, attempts) VALUES (?,?,?,?,?)",
                    [("old-1", "t", b'{"n":1}', 100.0, 2), ("old-2", "t", b'{"n":2}', 101.0, 0)])
    old.commit()
    old.close()
    caplog.set_level(logging.INFO, logger="edge.outbox")
    with Outbox(path, cooldown_s=0) as ob:
        assert "added the priority column" in caplog.text and "added the evidence_omitted column" in caplog.text
        items = ob.pending(10, now=200.0)
        assert [(i.hit_id, i.priority, i.attempts, i.payload, i.evidence_omitted) for i in items] == \
            [("old-1", 0, 2, b'{"n":1}', ""), ("old-2", 0, 0, b'{"n":2}', "")]
        assert ob.put("t", b"{}", "urgent", now=150.0, priority=900)
        assert ob.put("t", b"{}", "new-0", now=150.0)
        assert [i.hit_id for i in ob.pending(10, now=200.0)] == ["urgent", "old-1", "old-2", "new-0"]
        plan = ob._db.execute("EXPLAIN QUERY PLAN SELECT seq FROM outbox WHERE not_before <= 0 "
                              "ORDER BY priority DESC, seq LIMIT 5").fetchall()
        assert "outbox_order" in str(plan)
    caplog.clear()
    with Outbox(path, cooldown_s=0) as ob:  # opening it again changes nothing
        assert "added the" not in caplog.text
        assert [i.hit_id for i in ob.pending(10, now=200.0)] == ["urgent", "old-1", "old-2", "new-0"]
    cols = {r[1]: (r[2], r[3], r[4]) for r in sqlite3.connect(path).execute("PRAGMA table_info(outbox)")}
    assert cols["priority"] == ("INTEGER", 1, "0")
