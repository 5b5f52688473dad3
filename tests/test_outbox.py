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
