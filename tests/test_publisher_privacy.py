"""Privacy at the unit level: failing publishes, refusals and crashes log no plate text at DEBUG.

A non-hit plate ("NONHIT77") reaches these modules only by mistake (a cool-down lookup, a status
provider that misbehaves, an exception message from other code): it must not come out in logs,
files or on the wire. Hit plates ("HIT4242") may travel in the hit message, but never into logs.
"""

from __future__ import annotations

import json
import logging

from edge.hits import new_hit_id
from edge.outbox import Outbox
from edge.publisher import Publisher
from edge.status import write_status
from test_publisher import Collector, Proxy, cfg_for, wait_for

NONHIT, HIT = "NONHIT77", "HIT4242"


def test_no_plate_text_in_debug_logs_files_or_status(broker, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    # ACL: hits to anpr/denied/... are refused by the broker (MQTT 5 PUBACK 'not authorised').
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite anpr/politie/#\ntopic readwrite anpr/status/#\ntopic read anpr/#\n")
    acl.chmod(0o644)
    broker.stop()
    broker.extra_conf = f"acl_file {acl}\nuser root\n"
    broker.start()
    col = Collector(broker.port)
    proxy = Proxy(broker.port, listening=False)  # the unit's way to the broker is down at start-up

    calls = {"n": 0}

    def bad_status():
        calls["n"] += 1
        if calls["n"] % 2:
            raise ValueError(f"reader crashed on {NONHIT}")  # other code's exception text
        return {"fps": 5.0, "plate": NONHIT, "camera_state": "streaming"}

    ob = Outbox(tmp_path / "o.sqlite", max_items=12, cooldown_s=60)
    assert not ob.suppressed(NONHIT, "L1")
    pub = Publisher(cfg_for(proxy.port, protocol="5"), ob, "unit-1", bad_status)
    pub.start()
    good, denied = [], new_hit_id()
    try:
        for _ in range(10):
            h = new_hit_id()
            ob.put("anpr/politie/unit-1/hits", json.dumps({"hit_id": h, "plate": HIT}).encode(), h)
            good.append(h)
        ob.put("anpr/denied/unit-1/hits", json.dumps({"hit_id": denied, "plate": HIT}).encode(), denied)
        last = new_hit_id()
        ob.put("anpr/politie/unit-1/hits", json.dumps({"hit_id": last}).encode(), last)
        good.append(last)
        assert not ob.put("anpr/politie/unit-1/hits", json.dumps({"plate": HIT}).encode(), new_hit_id())  # full
        assert wait_for(lambda: "connection refused" in pub.last_error, timeout=5)
        proxy.listen()
        assert wait_for(lambda: col.unique() >= set(good) and pub.stats.refused >= 1, timeout=15), \
            (len(col.unique()), pub.stats)
        assert wait_for(lambda: any(s.get("fps") == 5.0 for s in col.status), timeout=5)
        # The refused hit is not lost: it waits in the outbox and is retried later.
        assert [p.hit_id for p in ob.pending(10, now=1e12)] == [denied]
        assert ob.pending(10, now=1e12)[0].attempts >= 1
        write_status(tmp_path / "status.json", {**pub.status_snapshot(), "plate": NONHIT})
    finally:
        pub.stop()
        col.close()
        proxy.close()
    logs = caplog.text
    assert "status provider failed ValueError" in logs and "broker refused hit" in logs and "outbox full" in logs
    assert NONHIT not in logs and HIT not in logs
    assert all(NONHIT not in json.dumps(s) for s in col.status)
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert NONHIT.encode() not in f.read_bytes(), f
