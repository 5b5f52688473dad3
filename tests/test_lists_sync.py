"""End-to-end list sync through a real Mosquitto broker."""

from __future__ import annotations

import time

import pytest

from edge.lists.cli import main
from edge.lists.matcher import ListMatcher
from edge.lists.store import ListStore
from edge.lists.sync import ListSync, publish_blobs, sync_topics
from edge.publisher import MqttConfig
from lists_support import FRIDAY_NOON, make_fleet, write_csv


def wait_for(cond, timeout=5.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


@pytest.fixture
def setup(request, tmp_path, broker):
    fleet = make_fleet(tmp_path, devices=("cam1",))
    mqtt_cfg = MqttConfig(host=broker.host, port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5,
                          protocol=getattr(request, "param", "auto"))
    syncs = []

    def start(store=None):
        cfg = fleet.config("cam1")
        store = store or ListStore.from_config(cfg)
        s = ListSync(store, mqtt_cfg, cfg)
        s.start()
        syncs.append(s)
        return store, s

    def cli(*argv):
        return main(["lists", *map(str, argv), "--state", str(fleet.central.root), "--publish",
                     "--host", broker.host, "--port", str(broker.port)])

    yield fleet, mqtt_cfg, start, cli, tmp_path
    for s in syncs:
        s.stop()


def test_urgent_addition_is_matchable_within_2_s(setup, capsys):
    fleet, _, start, cli, tmp = setup
    assert cli("build", "--lists", tmp / "lists.yaml", "--csv", tmp / "plates.csv") == 0
    version = fleet.central.load().version
    store, sync = start()
    assert wait_for(lambda: store.version == version), store.status()  # the retained snapshot arrived
    assert wait_for(lambda: not sync.snapshot_subscribed)  # and the unit stopped listening for snapshots
    matcher = ListMatcher(store, ["stolen"])
    assert matcher.match("ZZ999Z", [], "NL", FRIDAY_NOON) == []
    write_csv(tmp / "urgent.csv", ["ZZ-999-Z,stolen,URGENT,"])
    t0 = time.monotonic()
    assert cli("delta", "--add", tmp / "urgent.csv") == 0  # seal + publish, all inside the measured time
    assert wait_for(lambda: matcher.match("ZZ999Z", [], "NL", FRIDAY_NOON) != [], timeout=2.0)
    elapsed = time.monotonic() - t0
    hit = matcher.match("ZZ999Z", [], "NL", FRIDAY_NOON)[0]
    assert (hit.list_id, hit.reason_code, hit.action, hit.match_type) == ("stolen", "URGENT", "intercept", "exact")
    assert elapsed < 2.0
    assert wait_for(lambda: sync.stats.applied == 2)  # counted just after the swap
    assert store.seq == 1 and sync.stats.rejected == 0
    print(f"urgent addition matchable after {elapsed * 1000:.0f} ms")


@pytest.mark.parametrize("setup", ["5", "3.1.1"], indirect=True)
def test_deltas_sent_while_offline_arrive_on_reconnect(setup, capsys):
    fleet, _, start, cli, tmp = setup
    assert cli("build", "--lists", tmp / "lists.yaml", "--csv", tmp / "plates.csv") == 0
    store, sync = start()
    assert wait_for(lambda: store.version == fleet.central.load().version and sync.stats.connected)
    time.sleep(0.2)
    sync.stop()
    write_csv(tmp / "a.csv", ["AA-11-AA,stolen,R,"])
    assert cli("delta", "--add", tmp / "a.csv") == 0
    assert cli("delta", "--activate", "obs") == 0
    assert store.seq == 0
    # a restarted unit: loads the sealed cache, then the broker hands over the queued deltas
    store2, sync2 = start()
    assert store2.seq == 0 and store2.version == store.version
    assert wait_for(lambda: store2.seq == 2), store2.status()
    m = ListMatcher(store2, ["*"])
    assert [x.list_id for x in m.match("AA11AA", [], "NL", FRIDAY_NOON)] == ["stolen"]
    assert [x.list_id for x in m.match("GB123X", [], "NL", FRIDAY_NOON)] == ["obs"]


def test_sequence_gap_fetches_the_retained_snapshot(setup, capsys):
    fleet, mqtt_cfg, start, cli, tmp = setup
    assert cli("build", "--lists", tmp / "lists.yaml", "--csv", tmp / "plates.csv") == 0
    store, sync = start()
    assert wait_for(lambda: store.version == fleet.central.load().version)
    time.sleep(0.2)  # the unit has dropped its snapshot subscription
    snap_topic, delta_topic = sync_topics("anpr/lists/cam1")
    write_csv(tmp / "a.csv", ["AA-11-AA,stolen,R,"])
    lost = fleet.central.delta(add_csv=tmp / "a.csv")[0]  # seq 1: never published (lost)
    write_csv(tmp / "b.csv", ["BB-22-BB,stolen,R,"])
    d2 = fleet.central.delta(add_csv=tmp / "b.csv")[0]
    publish_blobs([(delta_topic, d2.delta, False), (snap_topic, d2.snapshot, True)], mqtt_cfg)
    assert wait_for(lambda: store.seq == 2), store.status()
    assert sync.stats.snapshot_requests >= 1
    m = ListMatcher(store, ["*"])
    assert m.match("AA11AA", [], "NL", FRIDAY_NOON) and m.match("BB22BB", [], "NL", FRIDAY_NOON)
    assert lost.state.seq == 1


def test_garbage_on_the_topics_leaves_the_good_list_active(setup, capsys):
    fleet, mqtt_cfg, start, cli, tmp = setup
    assert cli("build", "--lists", tmp / "lists.yaml", "--csv", tmp / "plates.csv") == 0
    store, sync = start()
    version = fleet.central.load().version
    assert wait_for(lambda: store.version == version)
    snap_topic, delta_topic = sync_topics("anpr/lists/cam1")
    good = (fleet.central.root / "out" / "snapshot.bin").read_bytes()
    publish_blobs([(delta_topic, b"garbage" * 20, False), (delta_topic, good[:-10], False),
                   (snap_topic, good[:1000], True)], mqtt_cfg)
    sync.request_snapshot()
    assert wait_for(lambda: sync.stats.rejected >= 3)
    assert (store.version, store.seq) == (version, 0)
    rejected = store.status()["rejected"]  # the retained one may come twice: live and on re-subscribe
    assert set(rejected) == {"corrupt", "truncated"} and rejected["corrupt"] == 1 and rejected["truncated"] >= 2
    assert ListMatcher(store, ["*"]).match("XSNB23", [], "NL", FRIDAY_NOON)


def test_many_delta_changes_are_folded_in_by_the_retained_snapshot(setup, capsys, monkeypatch):
    import edge.lists.sync as sync_mod
    monkeypatch.setattr(sync_mod, "COMPACT_AT", 2)
    fleet, _, start, cli, tmp = setup
    assert cli("build", "--lists", tmp / "lists.yaml", "--csv", tmp / "plates.csv") == 0
    store, sync = start()
    assert wait_for(lambda: store.version == fleet.central.load().version)
    assert wait_for(lambda: not sync.snapshot_subscribed)
    write_csv(tmp / "a.csv", ["AA-11-AA,stolen,R,"])
    assert cli("delta", "--add", tmp / "a.csv") == 0
    assert wait_for(lambda: store.seq == 1)
    assert store.index.overlay_size == 1 and sync.stats.snapshot_requests == 0
    write_csv(tmp / "b.csv", ["BB-22-BB,stolen,R,"])
    assert cli("delta", "--add", tmp / "b.csv") == 0
    assert wait_for(lambda: store.seq == 2 and store.index.overlay_size == 0), store.status()
    assert sync.stats.snapshot_requests == 1
    m = ListMatcher(store, ["*"])
    assert m.match("AA11AA", [], "NL", FRIDAY_NOON) and m.match("BB22BB", [], "NL", FRIDAY_NOON)


# --- the worker, without a broker: a fake client records (un)subscriptions ------------------------
def _offline_sync(tmp_path):
    from unittest import mock

    fleet = make_fleet(tmp_path, devices=("cam1",))
    s0, _ = fleet.central.build(tmp_path / "lists.yaml", tmp_path / "plates.csv")
    store = fleet.store("cam1")
    assert store.apply(s0.snapshot).status == "applied"
    sync = ListSync(store, MqttConfig(host="127.0.0.1"), fleet.config("cam1"))
    sync._client = mock.Mock()
    sync.stats.connected = True
    sync._want_snapshot = sync.snapshot_subscribed = False  # as after the first snapshot
    return fleet, s0, store, sync


def _run(sync, *messages):
    for m in messages:
        sync._queue.put(m)
    sync._queue.put(("", b""))
    sync._work()


def test_stale_retained_snapshot_does_not_loop(tmp_path):
    """A gap delta whose snapshot the broker does not yet retain: the unit used to unsubscribe and
    subscribe again on every (stale) retained copy, so the broker resent the whole snapshot forever."""
    fleet, s0, store, sync = _offline_sync(tmp_path)
    fleet.central.delta_rows([], [], activate=("obs",))  # seq 1: lost
    d2 = fleet.central.delta_rows([], [], deactivate=("obs",))
    stale = (sync.snapshot_topic, s0.snapshot)
    _run(sync, (sync.delta_topic, d2.delta), (sync.delta_topic, d2.delta), stale, stale)
    assert sync._client.subscribe.call_count == 1 and sync._client.unsubscribe.call_count == 0
    assert store.seq == 0 and sync._want_snapshot
    _run(sync, (sync.snapshot_topic, d2.snapshot))  # the newer snapshot arrives live
    assert store.seq == 2 and not sync._pending and not sync._want_snapshot
    assert sync._client.unsubscribe.call_count == 1 and sync._client.subscribe.call_count == 1


def test_worker_survives_an_unexpected_error(tmp_path, monkeypatch, caplog):
    fleet, s0, store, sync = _offline_sync(tmp_path)
    d1 = fleet.central.delta_rows([], [], activate=("obs",))
    real, calls = store.apply, []

    def flaky(blob, *a, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(blob, *a, **kw)

    monkeypatch.setattr(store, "apply", flaky)
    _run(sync, (sync.delta_topic, b"anything"), (sync.delta_topic, d1.delta))
    assert store.seq == 1 and "RuntimeError" in sync.stats.last_error


def test_oversized_message_is_dropped_before_queueing(tmp_path, monkeypatch):
    import types

    import edge.lists.sync as sync_mod
    monkeypatch.setattr(sync_mod, "MAX_MESSAGE_BYTES", 1000)
    _, _, _, sync = _offline_sync(tmp_path)
    sync._on_message(None, None, types.SimpleNamespace(topic=sync.delta_topic, payload=b"x" * 1001))
    assert sync._queue.empty() and sync.stats.rejected == 1 and "1001 byte" in sync.stats.last_error
    sync._on_message(None, None, types.SimpleNamespace(topic=sync.delta_topic, payload=b"x" * 1000))
    assert sync._queue.qsize() == 1
